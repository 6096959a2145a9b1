"""Which TFLite variant is the default: parity with Keras, latency, and the choice.

The default, ``model.tflite``: every variant is timed on one face per call (1 thread, LiteRT's
default XNNPACK delegate, interleaved so that a busy machine slows all alike) and the fastest whose
top-1 agreement with Keras on ``parity_faces`` is at least :data:`PARITY_TOP1` is copied, with its
sidecar (which says which variant it is and why). Variants within :data:`LATENCY_TIE` of the
fastest count as equally fast, and of those the one closest to Keras is taken (higher agreement,
then smaller mean probability difference): timing noise alone never trades fidelity for nothing.
Without parity faces nothing can be checked, and ``fp32`` is the default.
"""

from __future__ import annotations

import time

import numpy as np

from fer_tf.deploy.runners import TFLiteRunner
from fer_tf.model.inference_model import as_faces, build_inference_model, check_classifier

#: The default model keeps at least this top-1 agreement with the Keras model on the parity faces.
PARITY_TOP1 = 0.99
#: Latencies within this fraction of the fastest variant's count as equally fast.
LATENCY_TIE = 0.05


def keras_probabilities(model, faces, batch_size=64):
    """Probabilities of an inference model (``[B,60,60,1]`` input) on ``faces``, batched.

    Batches go through ``predict_on_batch``, not ``predict``: Keras' ``predict`` on arrays builds a
    tf.data pipeline whose parallel map TensorFlow 2.19 rewrites under op determinism (as
    ``fer-tf train`` runs) with an E-line log about ``use_unbounded_threadpool``."""
    faces = as_faces(faces)
    if len(faces) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    return np.concatenate([np.asarray(model.predict_on_batch(faces[s:s + batch_size]), np.float32)
                           for s in range(0, len(faces), batch_size)])


def parity(keras_model, tflite_path, faces, num_threads=None):
    """Compare a TFLite file with the Keras inference model on ``faces``.

    Returns ``{"top1_agreement": fraction of faces with the same arg-max, "max_abs_prob_diff":
    largest absolute difference of any probability, "mean_abs_prob_diff": mean of the per-face
    maxima, "n": number of faces}``.
    """
    faces = as_faces(faces)
    if getattr(keras_model, "inputs", None):
        kind = check_classifier(keras_model)
        if kind != "face":
            keras_model = build_inference_model(keras_model, kind=kind)
    expected = keras_probabilities(keras_model, faces)
    runner = TFLiteRunner(tflite_path, num_threads=num_threads)
    got = runner(faces)
    n = len(faces)
    if n == 0:
        return {"top1_agreement": float("nan"), "max_abs_prob_diff": float("nan"),
                "mean_abs_prob_diff": float("nan"), "n": 0}
    diff = np.abs(expected - got)
    return {
        "top1_agreement": float(np.mean(expected.argmax(1) == got.argmax(1))),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.max(axis=1).mean()),
        "n": int(n),
    }


#: Single-face calls per timing round and rounds per variant when export times the variants.
LATENCY_CALLS = 40
LATENCY_ROUNDS = 5


def time_variants(paths, faces, calls=LATENCY_CALLS, rounds=LATENCY_ROUNDS, num_threads=1):
    """Milliseconds per single-face call of each ``.tflite`` in ``paths`` ({name: path}).

    Each model runs in :class:`~fer_tf.deploy.runners.TFLiteRunner` (``num_threads`` threads, LiteRT's
    default XNNPACK delegate) on one face per call; the rounds alternate between the models so
    that a busy machine slows them alike. Returns ``{name: {"median", "min", "max", "rounds",
    "calls_per_round"}}``: the median (and extremes) over rounds of each round's median call.
    """
    faces = as_faces(faces)[:32]
    runners = {name: TFLiteRunner(path, num_threads=num_threads) for name, path in paths.items()}
    for runner in runners.values():
        runner(faces[:1])
        runner(faces[:1])
    medians = {name: [] for name in runners}
    for r in range(rounds):
        for name, runner in runners.items():
            times = []
            for i in range(calls):
                face = faces[(r * calls + i) % len(faces)][None]
                start = time.perf_counter()
                runner(face)
                times.append(time.perf_counter() - start)
            medians[name].append(float(np.median(times)) * 1e3)
    return {name: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v)),
                   "rounds": int(rounds), "calls_per_round": int(calls)}
            for name, v in medians.items()}


def choose_default(entries, min_top1=PARITY_TOP1, tie=LATENCY_TIE):
    """``(variant, reason)``: the fastest variant that keeps parity (see the module docstring).

    ``entries`` is ``{variant: entry}`` as in an export report (``status``, ``parity``,
    ``latency_ms``). Returns ``(None, reason)`` when no variant is usable.
    """
    ok = {v: e for v, e in entries.items() if e.get("status") == "ok"}
    if not ok:
        return None, "no variant converted"
    measured = {v: e for v, e in ok.items() if e.get("parity")}
    if not measured:
        if "fp32" in ok:
            return "fp32", "no parity faces: fp32, the variant that needs no check"
        return None, "no parity faces and no fp32 variant: nothing can be shown to keep parity"
    keep = {v: e for v, e in measured.items() if e["parity"]["top1_agreement"] >= min_top1}
    if not keep:
        return None, (f"no variant keeps top-1 agreement >= {min_top1:.0%} with Keras: "
                      + ", ".join(f"{v} {e['parity']['top1_agreement']:.1%}"
                                  for v, e in measured.items()))

    def ms(v):
        return (keep[v].get("latency_ms") or {}).get("median", float("inf"))

    def fidelity(v):  # higher agreement first, then smaller probability differences
        par = keep[v]["parity"]
        return par["top1_agreement"], -par.get("mean_abs_prob_diff", 0.0)

    fastest = min(keep, key=ms)
    near = [v for v in keep if ms(v) <= ms(fastest) * (1 + tie)]
    best = max(near, key=lambda v: (*fidelity(v), -ms(v)))
    dropped = sorted(set(measured) - set(keep))
    reason = (f"fastest of the variants with top-1 agreement >= {min_top1:.0%}: "
              + ", ".join(f"{v} {ms(v):.3f} ms ({keep[v]['parity']['top1_agreement']:.1%})"
                          for v in sorted(keep, key=ms)))
    if best != fastest:
        reason += (f"; {best} is within {tie:.0%} of {fastest} and closer to Keras (top-1 agreement, "
                   f"then mean probability difference)")
    if dropped:
        reason += "; below the agreement bar: " + ", ".join(
            f"{v} {measured[v]['parity']['top1_agreement']:.1%}" for v in dropped)
    return best, reason

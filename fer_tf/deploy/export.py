"""Export a trained model for inference: SavedModel, ``inference.keras`` and four TFLite variants.

The exported model takes what :class:`~fer_tf.preprocess.align.FaceAligner` gives: one aligned grey
face ``[B, 60, 60, 1]`` float32 with raw pixel values 0..255. ``FacePreprocessing`` (normalisation
and centre crop to 48x48) is inside the model, then the EC branch returns ``[B, C]`` softmax
probabilities. Only the EC branch is exported; the metric-learning branch is a training aid.

``export_model`` writes into ``output_dir``::

    saved_model/            Keras 3 ``Model.export(format="tf_saved_model")``; signature
                            ``serving_default`` takes ``face`` [None, 60, 60, 1] float32
    saved_model.json        metadata sidecar (see :mod:`fer_tf.model.saving`)
    inference.keras         the same inference model as a Keras file (+ inference.json)
    model_fp32.tflite       float32, converted from saved_model/ (+ model_fp32.json)
    model_float16.tflite    float16 weights, float32 compute/io (+ .json)
    model_dynamic.tflite    dynamic-range quantisation: int8 weights, float32 io (+ .json)
    model_int8.tflite       int8 network calibrated on training faces, float32 preprocessing/io
    model.tflite            the default: a copy of the fastest variant that keeps parity (+ .json)
    export_report.json      sizes, conversion notes, parity, latency and XNNPACK coverage of
                            every variant, and which one is the default and why

All TFLite files are converted FROM the SavedModel with ``tf.lite.TFLiteConverter.from_saved_model``
using TFLite builtin operations only (no ``SELECT_TF_OPS``, no custom ops), so that the standalone
``ai_edge_litert`` runtime runs them.

Graph cleanup is the converter's: batch normalisation is folded into the convolutions (no MUL or
ADD is left in the network), dropout disappears, constants are folded. What the variants differ in:

- the preprocessing counts grey levels with ``UNSORTED_SEGMENT_SUM`` (``FacePreprocessing``'s
  ``histogram="segment_flat"``; about 0.03 ms per face, against 1.4 ms for the one-hot count of
  earlier exports);
- ``dynamic``: int8 weights; XNNPACK quantises each layer's input on the fly (per face) and runs
  int8 kernels, which on x86 with VNNI is several times faster than ``fp32``, and the per-face
  scales keep the top-1 class of almost every face;
- ``int8``: fixed activation scales from calibration (below).

int8 variant: the EC network's weights and activations are int8, calibrated with a representative
dataset of faces (training images). Everything but the preprocessing runs on XNNPACK. Three things
stay float32, by design:

- the **input and output**: the converter adds a quantize op after the input and a dequantize op
  before the output, so every variant, int8 included, is fed ``[B, 60, 60, 1]`` float32 pixels and
  returns float32 probabilities;
- the **preprocessing** (``FacePreprocessing``, layer ``face_preprocessing``): histogram
  equalisation, plane fit and z-normalisation lose too much in int8 (on an untrained 2B(N+M) model
  the top-1 agreement with Keras fell to 17%, against 98.5% with float preprocessing). It is kept
  float with selective quantisation (``tf.lite.experimental.QuantizationDebugger`` with the
  preprocessing's operations denylisted);
- ``PRELU`` and ``SOFTMAX`` (:data:`INT8_FLOAT_OPS`): XNNPACK has no int8 PReLU, so int8 PReLUs
  fall back to LiteRT's own kernels and cut the graph into one XNNPACK partition per layer (1.9 ms
  per face instead of 0.36 ms); in float32 they run inside XNNPACK between a dequantize and a
  quantize. An int8 softmax rounds probabilities to steps of 1/256, which ties close classes.

If selective quantisation fails, the whole model is quantised: first asking for int8 kernels only
(``TFLITE_BUILTINS_INT8``), then, if some operation has no int8 kernel, letting those operations run
in float32. The sidecar's ``quantization`` and ``float_ops`` keys and the report's ``note`` say what
was done.

The default, ``model.tflite``: every variant is timed on one face per call (1 thread, LiteRT's
default XNNPACK delegate, interleaved so that a busy machine slows all alike) and the fastest whose
top-1 agreement with Keras on ``parity_faces`` is at least :data:`PARITY_TOP1` is copied, with its
sidecar (which says which variant it is and why). Variants within :data:`LATENCY_TIE` of the
fastest count as equally fast, and of those the one closest to Keras is taken (higher agreement,
then smaller mean probability difference): timing noise alone never trades fidelity for nothing.
Without parity faces nothing can be checked, and ``fp32`` is the default.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
import warnings

import numpy as np

from fer_tf.model import saving
from fer_tf.data.labels import label_set
from fer_tf.errors import ConfigError, ModelFileError, OutputError
from fer_tf.files import atomic_write_bytes, atomic_write_text, fsync_dir
from fer_tf.deploy.inference import TFLiteRunner
from fer_tf.model.saving import build_inference_model  # also public here, as it always was

VARIANTS = ("fp32", "float16", "dynamic", "int8")

VARIANT_DESCRIPTIONS = {
    "fp32": "float32 weights and compute",
    "float16": "float16 weights (dequantised to float32 at load), float32 compute and io",
    "dynamic": "dynamic-range quantisation: int8 weights, float32 activations and io",
    "int8": "int8 network (weights and activations), float32 preprocessing and input/output",
}

#: At most this many calibration faces are fed to the int8 converter.
MAX_CALIBRATION = 300
#: The default model keeps at least this top-1 agreement with the Keras model on the parity faces.
PARITY_TOP1 = 0.99
#: Latencies within this fraction of the fastest variant's count as equally fast.
LATENCY_TIE = 0.05
#: The default TFLite model's file name in the export folder.
DEFAULT_TFLITE = "model.tflite"


def keras_probabilities(model, faces, batch_size=64):
    """Probabilities of an inference model (``[B,60,60,1]`` input) on ``faces``, batched."""
    faces = saving.as_faces(faces)
    if len(faces) == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    return np.asarray(model.predict(faces, batch_size=batch_size, verbose=0), dtype=np.float32)


def parity(keras_model, tflite_path, faces, num_threads=None):
    """Compare a TFLite file with the Keras inference model on ``faces``.

    Returns ``{"top1_agreement": fraction of faces with the same arg-max, "max_abs_prob_diff":
    largest absolute difference of any probability, "mean_abs_prob_diff": mean of the per-face
    maxima, "n": number of faces}``.
    """
    faces = saving.as_faces(faces)
    if getattr(keras_model, "inputs", None) and saving.check_classifier(keras_model) != "face":
        keras_model = build_inference_model(keras_model)
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


def _size(path):
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _converter(saved_model_dir):
    import tensorflow as tf  # deferred: TensorFlow (the converter)

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=["serving_default"]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    return converter


def _representative(calibration_faces):
    faces = saving.as_faces(calibration_faces)

    def generate():
        for face in faces:
            yield [face[None]]

    return generate


def _short_error(exc, limit=600):
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


#: Layers the int8 variant keeps in float32: the preprocessing (histogram equalisation, plane fit
#: and z-normalisation lose too much in int8: on an untrained 2B(N+M) model top-1 agreement with
#: Keras fell from 98.5% to 17% when they were quantised too).
KEEP_FLOAT = ("face_preprocessing",)
#: Operation types the int8 variant keeps in float32 (see the module docstring): XNNPACK has no int8
#: PRELU, and an int8 SOFTMAX rounds probabilities to steps of 1/256.
INT8_FLOAT_OPS = ("PRELU", "SOFTMAX")


def convert_variant(saved_model_dir, variant, calibration_faces=None, keep_float=KEEP_FLOAT,
                    fp32_flatbuffer=None, float_op_types=INT8_FLOAT_OPS):
    """Convert the SavedModel into one TFLite variant; return ``(flatbuffer bytes, info dict)``.

    For ``int8``, operations whose names contain one of ``keep_float``, and operations of the types
    in ``float_op_types``, stay float32 (selective quantisation with
    ``tf.lite.experimental.QuantizationDebugger``); ``fp32_flatbuffer`` (the fp32 variant,
    converted when not given) provides the operation names.
    """
    import tensorflow as tf  # deferred: TensorFlow (the converter)

    if variant not in VARIANTS:
        raise ConfigError(f"unknown TFLite variant {variant!r}; use {', '.join(VARIANTS)}")
    info = {"variant": variant, "description": VARIANT_DESCRIPTIONS[variant],
            "input_dtype": "float32", "output_dtype": "float32"}
    converter = _converter(saved_model_dir)
    if variant == "fp32":
        info["quantization"] = "none"
        return converter.convert(), info
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        info["quantization"] = "float16 weights"
        return converter.convert(), info
    if variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        info["quantization"] = "dynamic range (int8 weights)"
        return converter.convert(), info
    # int8: int8 network with float32 io; the preprocessing stays float (see the module docstring)
    if calibration_faces is None or len(calibration_faces) == 0:
        raise ConfigError("the int8 variant needs calibration faces (training images)")
    calibration = saving.as_faces(calibration_faces)[:MAX_CALIBRATION]
    info["calibration_faces"] = int(len(calibration))

    def int8_converter(strict=True):
        converter = _converter(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration)
        if strict:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter

    flatbuffer = None
    if keep_float:
        try:
            flatbuffer = _selective_int8(int8_converter(), calibration, keep_float,
                                         fp32_flatbuffer or _converter(saved_model_dir).convert(),
                                         float_op_types)
            info["float_layers"] = list(keep_float)
            info["float_op_types"] = list(float_op_types)
        except Exception as exc:  # the experimental debugger API failed: quantise everything
            info["selective_error"] = _short_error(exc)
    if flatbuffer is None:
        try:
            flatbuffer = int8_converter(strict=True).convert()
        except Exception as exc:  # an op without an int8 kernel
            info["int8_only_error"] = _short_error(exc)
            flatbuffer = int8_converter(strict=False).convert()
    ops = float_ops(flatbuffer)
    info["float_ops"] = ops
    if "float_layers" in info:
        kept = [*keep_float, *float_op_types]
        info["quantization"] = (
            f"int8 network (weights and activations); {', '.join(kept)} kept in float32"
        )
    elif ops:
        info["quantization"] = f"int8 weights and activations; float32 kept for {', '.join(ops)}"
    else:
        info["quantization"] = "full integer (int8 weights and activations)"
    return flatbuffer, info


def _selective_int8(converter, calibration, keep_float, fp32_flatbuffer, float_op_types=()):
    """Quantise everything except the operations whose names contain one of ``keep_float`` and
    the operations of the types in ``float_op_types``."""
    import tensorflow as tf  # deferred: TensorFlow (the converter)
    from ai_edge_litert.interpreter import Interpreter  # deferred: the LiteRT runtime

    names = [t["name"] for t in Interpreter(model_content=fp32_flatbuffer).get_tensor_details()]
    deny = sorted({n for n in names if any(k in n for k in keep_float)})
    if not deny:
        raise ValueError(f"no operation named like {list(keep_float)} in the model")
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=deny, denylisted_ops=list(float_op_types) or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the debugger uses the deprecated tf.lite.Interpreter
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_representative(calibration[:4]),
            debug_options=options)
        return debugger.get_nondebug_quantized_model()


def float_ops(model):
    """Sorted names of the operations of a ``.tflite`` (path or bytes) that compute in float32.

    QUANTIZE / DEQUANTIZE are not counted (they are the int8 model's float32 interface and the
    boundaries of float islands). Returns ``None`` when the runtime cannot list operations.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # deferred: LiteRT

    try:
        kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else \
            {"model_path": str(model)}
        interpreter = Interpreter(
            **kwargs, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        names = set()
        for op in interpreter._get_ops_details():
            if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "SHAPE"):
                continue
            ids = [i for i in list(op["inputs"]) + list(op["outputs"]) if i in tensors]
            if any(tensors[i]["dtype"] == np.float32 for i in ids):
                names.add(op["op_name"])
        return sorted(names)
    except Exception:  # private API; the list is informative only
        return None


def xnnpack_coverage(model, num_threads=1):
    """What LiteRT's default XNNPACK delegate takes of a ``.tflite`` (path or bytes), batch of 1.

    Returns ``{"partitions": XNNPACK subgraphs, "nodes": operations of the model, "delegated":
    how many run inside XNNPACK, "fallback_ops": {operation: count} of those that run on LiteRT's
    own kernels}``, or ``None`` when the runtime cannot list operations (private API). A node runs
    in XNNPACK when it produces, directly or through other delegated nodes, an output of one of the
    delegate's partition nodes.
    """
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT

    try:
        kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else \
            {"model_path": str(model)}
        with saving.quiet_native_stderr():
            interpreter = Interpreter(**kwargs, num_threads=num_threads)
            detail = interpreter.get_input_details()[0]
            if list(detail["shape_signature"])[:1] == [-1]:
                interpreter.resize_tensor_input(detail["index"], [1, *list(detail["shape"])[1:]])
            interpreter.allocate_tensors()
        nodes = interpreter._get_ops_details()
        delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
        own = [n for n in nodes if n["op_name"] != "DELEGATE"]
        producer = {int(t): n["index"] for n in own for t in n["outputs"]}
        by_index = {n["index"]: n for n in own}
        inside = set()
        for partition in delegates:
            boundary = {int(t) for t in partition["inputs"]}
            stack, seen = [int(t) for t in partition["outputs"]], set()
            while stack:
                tensor = stack.pop()
                if tensor in seen or tensor in boundary:
                    continue
                seen.add(tensor)
                node = producer.get(tensor)
                if node is None or node in inside:
                    continue
                inside.add(node)
                stack.extend(int(t) for t in by_index[node]["inputs"] if t >= 0)
        fallback = {}
        for n in own:
            if n["index"] not in inside:
                fallback[n["op_name"]] = fallback.get(n["op_name"], 0) + 1
        return {"partitions": len(delegates), "nodes": len(own), "delegated": len(inside),
                "fallback_ops": dict(sorted(fallback.items()))}
    except Exception:  # private API; informative only
        return None


#: Single-face calls per timing round and rounds per variant when export times the variants.
LATENCY_CALLS = 40
LATENCY_ROUNDS = 5


def time_variants(paths, faces, calls=LATENCY_CALLS, rounds=LATENCY_ROUNDS, num_threads=1):
    """Milliseconds per single-face call of each ``.tflite`` in ``paths`` ({name: path}).

    Each model runs in :class:`~fer_tf.deploy.inference.TFLiteRunner` (``num_threads`` threads, LiteRT's
    default XNNPACK delegate) on one face per call; the rounds alternate between the models so
    that a busy machine slows them alike. Returns ``{name: {"median", "min", "max", "rounds",
    "calls_per_round"}}``: the median (and extremes) over rounds of each round's median call.
    """
    faces = saving.as_faces(faces)[:32]
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


def _labels_of(model, labels):
    labels = labels if labels is not None else getattr(model, "labels", None)
    if labels is None:
        raise ConfigError(
            "the model does not say its expression labels; pass labels=[...] (canonical names)"
        )
    return tuple(label_set(list(labels)))


def export_model(
    checkpoint_or_model,
    output_dir,
    calibration_faces=None,
    variants=VARIANTS,
    labels=None,
    parity_faces=None,
    source=None,
    overwrite=True,
):
    """Export a checkpoint (path to ``.keras``) or a model; return a report dict.

    The report: ``{"output_dir", "labels", "source", "artefacts": {name: {"path", "size"}},
    "variants": {variant: {"path", "size", "status": "ok"|"failed"|"skipped", "note",
    "quantization", "parity"?, "latency_ms", "xnnpack"}}, "default": {"variant", "path",
    "reason"}}``. A variant that fails to convert is reported as ``failed`` with the converter's
    message and does not stop the others; ``int8`` without calibration faces is ``skipped``.
    ``parity_faces`` (``[n,60,60]``) adds each variant's :func:`parity`. ``model.tflite`` is the
    default variant (:func:`choose_default`); its sidecar holds the variant's keys plus
    ``default_of`` and ``default_reason``.

    Nothing is lost: the export is built in a folder beside ``output_dir`` and moved in only when
    complete, so a failure (a full disk included) leaves ``output_dir`` as it was, and a rerun
    removes what a failed one left. An earlier export's files in ``output_dir`` are all removed
    first (none mixes with the new ones); without ``overwrite`` they are refused
    (:class:`~fer_tf.errors.OutputError`), as is an export that would replace its own input.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # deferred: TensorFlow (the converter)

    variants = tuple(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown TFLite variants {unknown}; use {', '.join(VARIANTS)}")
    final = pathlib.Path(output_dir)
    check_output(final, checkpoint_or_model, overwrite)
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        source = source or str(checkpoint_or_model)
        model = saving.load_model(checkpoint_or_model)
        if labels is None and not hasattr(model, "labels"):  # an exported model: labels in its sidecar
            labels = (saving.read_metadata(checkpoint_or_model) or {}).get("labels")
    else:
        model = checkpoint_or_model
    labels = _labels_of(model, labels)
    inference = build_inference_model(model, labels)

    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    out = staging_folder(final)  # everything is written here first, then moved into final
    out.mkdir()
    try:
        report = _export_into(out, final, inference, labels, source, variants, calibration_faces,
                              parity_faces, tf)
        publish(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return report


#: What an export writes into its folder (another export's files are removed before a new one's
#: are moved in, so that the folder never mixes two exports).
EXPORT_NAMES = ("saved_model", "saved_model.json", "inference.keras", "inference.json",
                *(f"model_{v}.{ext}" for v in VARIANTS for ext in ("tflite", "json")),
                DEFAULT_TFLITE, "model.json", "export_report.json")
_STAGING = ".tmp-export-"


def check_output(folder, source=None, overwrite=False):
    """Refuse (:class:`~fer_tf.errors.OutputError`) an export into ``folder`` that would replace
    its own input ``source``, or, without ``overwrite``, any file of an earlier export."""
    folder = pathlib.Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; export into a folder")
    if isinstance(source, (str, os.PathLike)):
        src = pathlib.Path(source).resolve()
        if any(src == (folder / name).resolve() or (folder / name).resolve() in src.parents
               for name in EXPORT_NAMES):
            raise OutputError(f"{source}: the export into {folder} would replace its own input; "
                              "export into another folder")
    present = [name for name in EXPORT_NAMES if (folder / name).exists()]
    if present and not overwrite:
        raise OutputError(f"{folder} holds an earlier export ({', '.join(present[:4])}"
                          f"{', ...' if len(present) > 4 else ''}); pass --overwrite to replace it "
                          "(all of it), or export into another folder")


def staging_folder(final):
    """The folder an export into ``final`` is built in: beside it, named after this process."""
    return final.with_name(f"{_STAGING}{os.getpid()}-{final.name}")


def remove_stale_staging(final):
    """Remove what exports into ``final`` that were killed (or stopped by a full disk) left behind."""
    for path in final.parent.glob(f"{_STAGING}*-{final.name}"):
        pid = path.name[len(_STAGING):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another export into the same folder is running
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def publish(staging, final):
    """Replace the earlier export's files in ``final`` by the new ones of ``staging`` (other files
    of ``final`` are left alone)."""
    final.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_NAMES:
        old = final / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for item in sorted(staging.iterdir()):
        os.replace(item, final / item.name)
    fsync_dir(final)


def _paths_in(value, staging, final):
    """``value`` (a report) with ``staging``'s paths rewritten as ``final``'s."""
    if isinstance(value, dict):
        return {k: _paths_in(v, staging, final) for k, v in value.items()}
    if isinstance(value, list):
        return [_paths_in(v, staging, final) for v in value]
    if isinstance(value, str) and value.startswith(str(staging)):
        return str(final) + value[len(str(staging)):]
    return value


def _export_into(out, final, inference, labels, source, variants, calibration_faces, parity_faces, tf):
    """The body of :func:`export_model`: every artefact into ``out`` (the staging folder)."""
    report = {"output_dir": str(out), "labels": list(labels), "source": source,
              "artefacts": {}, "variants": {}}

    # inference.keras
    keras_path = out / "inference.keras"
    saving.save_model(inference, keras_path)
    saving.write_metadata(keras_path, labels, source=source, format="keras")
    report["artefacts"]["inference.keras"] = {"path": str(keras_path), "size": _size(keras_path)}

    # SavedModel
    sm_dir = out / "saved_model"
    inference.export(
        str(sm_dir),
        format="tf_saved_model",
        verbose=False,
        input_signature=[tf.TensorSpec([None, *saving.FACE_SHAPE], tf.float32, name="face")],
    )
    saving.write_metadata(sm_dir, labels, source=source, format="tf_saved_model",
                            signature="serving_default")
    report["artefacts"]["saved_model"] = {"path": str(sm_dir), "size": _size(sm_dir)}

    fp32_flatbuffer = None
    infos = {}
    for variant in variants:
        path = out / f"model_{variant}.tflite"
        entry = {"path": str(path), "size": None, "status": "ok", "note": ""}
        report["variants"][variant] = entry
        if variant == "int8" and (calibration_faces is None or len(calibration_faces) == 0):
            entry.update(status="skipped", note="no calibration faces given")
            continue
        started = time.perf_counter()
        try:
            with saving.quiet_native_stderr():  # calibration logs; errors come as exceptions
                flatbuffer, info = convert_variant(sm_dir, variant, calibration_faces,
                                                   fp32_flatbuffer=fp32_flatbuffer)
        except Exception as exc:
            entry.update(status="failed", note=_short_error(exc))
            continue
        atomic_write_bytes(path, flatbuffer)
        if variant == "fp32":
            fp32_flatbuffer = flatbuffer
        info["seconds"] = round(time.perf_counter() - started, 2)
        saving.write_metadata(path, labels, source=source, format="tflite", **info)
        entry.update(size=_size(path), quantization=info.get("quantization"),
                     note=info.get("quantization", ""))
        if "int8_only_error" in info:
            entry["int8_only_error"] = info["int8_only_error"]
        try:  # it must open in the standalone LiteRT runtime
            saving.load_tflite(path)
        except ModelFileError as exc:
            entry.update(status="failed", note=f"LiteRT cannot run it: {exc}")
            continue
        entry["xnnpack"] = xnnpack_coverage(path)
        infos[variant] = info
        if parity_faces is not None and len(parity_faces):
            entry["parity"] = parity(inference, path, parity_faces)

    converted = {v: e["path"] for v, e in report["variants"].items() if e["status"] == "ok"}
    if converted:
        timing_faces = next((f for f in (parity_faces, calibration_faces)
                             if f is not None and len(f)), None)
        if timing_faces is None:
            timing_faces = np.random.default_rng(0).integers(0, 256, (8, 60, 60), dtype=np.uint8)
        for variant, latency in time_variants(converted, timing_faces).items():
            report["variants"][variant]["latency_ms"] = latency
    default, reason = choose_default(report["variants"])
    report["default"] = {"variant": default, "path": None, "reason": reason}
    target = out / DEFAULT_TFLITE
    if default is not None:
        atomic_write_bytes(target, pathlib.Path(converted[default]).read_bytes())
        saving.write_metadata(target, labels, source=source, format="tflite", **infos[default],
                              default_of=default, default_reason=reason)
        report["default"]["path"] = str(target)
    report = _paths_in(report, out, final)
    atomic_write_text(out / "export_report.json", json.dumps(report, indent=2) + "\n")
    return report


def format_report(report):
    """Human-readable table of an export report."""
    lines = [f"exported to {report['output_dir']} (labels: {', '.join(report['labels'])})"]
    for name, art in report["artefacts"].items():
        lines.append(f"  {name:<22} {_human(art['size']):>10}")
    header = (f"  {'variant':<10} {'file':<22} {'size':>10}  {'status':<8} {'top-1 agree':>11} "
              f"{'max |dp|':>9} {'ms/face':>8}  note")
    lines.append(header)
    for variant, entry in report["variants"].items():
        name = pathlib.Path(entry["path"]).name
        par = entry.get("parity")
        agree = f"{100 * par['top1_agreement']:.1f}%" if par else "-"
        diff = f"{par['max_abs_prob_diff']:.4f}" if par else "-"
        size = _human(entry["size"]) if entry.get("size") else "-"
        latency = entry.get("latency_ms")
        ms = f"{latency['median']:.3f}" if latency else "-"
        lines.append(
            f"  {variant:<10} {name:<22} {size:>10}  {entry['status']:<8} {agree:>11} {diff:>9} "
            f"{ms:>8}  {entry.get('note', '')}"
        )
    if any(e.get("parity") for e in report["variants"].values()):
        n = next(e["parity"]["n"] for e in report["variants"].values() if e.get("parity"))
        lines.append(f"  parity against the Keras inference model on {n} faces; ms/face: one face "
                     f"per call, 1 thread, XNNPACK")
    default = report.get("default") or {}
    if default.get("variant"):
        lines.append(f"  default: {DEFAULT_TFLITE} = {default['variant']} ({default['reason']})")
    elif default:
        lines.append(f"  no default {DEFAULT_TFLITE}: {default['reason']}")
    return "\n".join(lines)


def _human(size):
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024

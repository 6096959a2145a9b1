"""TFLite conversion: the four variants of an inference SavedModel, and what LiteRT runs of them.

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
"""

from __future__ import annotations

import warnings

import numpy as np

from fer_tf.errors import ConfigError
from fer_tf.files import quiet_native_stderr
from fer_tf.model.inference_model import as_faces

VARIANTS = ("fp32", "float16", "dynamic", "int8")

VARIANT_DESCRIPTIONS = {
    "fp32": "float32 weights and compute",
    "float16": "float16 weights (dequantised to float32 at load), float32 compute and io",
    "dynamic": "dynamic-range quantisation: int8 weights, float32 activations and io",
    "int8": "int8 network (weights and activations), float32 preprocessing and input/output",
}

#: At most this many calibration faces are fed to the int8 converter.
MAX_CALIBRATION = 300


def _converter(saved_model_dir):
    import tensorflow as tf  # deferred: TensorFlow (the converter)

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=["serving_default"]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    return converter


def _representative(calibration_faces):
    faces = as_faces(calibration_faces)

    def generate():
        for face in faces:
            yield [face[None]]

    return generate


def short_error(exc, limit=600):
    """An exception's message on one line, cut to ``limit`` characters (for reports)."""
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
    calibration = as_faces(calibration_faces)[:MAX_CALIBRATION]
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
            info["selective_error"] = short_error(exc)
    if flatbuffer is None:
        try:
            flatbuffer = int8_converter(strict=True).convert()
        except Exception as exc:  # an op without an int8 kernel
            info["int8_only_error"] = short_error(exc)
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
        with quiet_native_stderr():
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

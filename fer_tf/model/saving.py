"""Model files: the one safe loader, the one atomic saver, LiteRT's loader and the JSON metadata.

This module reads and writes files only; what an inference model is, and how one is built from a
trained model, is :mod:`fer_tf.model.inference_model`.

:func:`load_model` loads every ``.keras`` file fer_tf reads (training checkpoints, the pretrained
backbone, exported inference models, the shipped model) in Keras' safe mode; :func:`save_model`
writes one atomically (:mod:`fer_tf.files`). Every failure a user can cause (a missing file, a truncated or corrupt ``.keras`` zip, a text file
with a model's name, a ``.tflite`` that is not a TFLite flatbuffer, a model whose input or output
does not fit a face classifier) is raised as :class:`~fer_tf.errors.ModelFileError` naming the file
and saying what to do.

Nothing heavy is imported at module import time: Keras and its backend load only when a Keras
model is loaded, saved or built, and :func:`load_tflite` uses ``ai_edge_litert`` alone (it does not
import TensorFlow).

Metadata sidecar
----------------
Each exported artefact ``<dir>/<stem>.<ext>`` (or the ``saved_model/`` folder) has a JSON file
``<dir>/<stem>.json`` beside it::

    {"format_version": 1,
     "labels": ["anger", ...],                       # canonical names, in output order
     "input": {"shape": [60, 60, 1], "dtype": "float32", "range": [0, 255],
               "kind": "aligned grey face crop, eye-levelled, 60x60"},
     "output": {"shape": [7], "dtype": "float32", "kind": "softmax probabilities"},
     "preprocessing": "...",                          # what the model does inside
     "source": "<checkpoint the artefact was exported from>",
     ...}                                             # variant-specific keys (quantization, io)

A JSON file without ``format_version`` beside a ``.keras`` file (the description that `make
pretrain` publishes with ``pretrained/fer2013_backbone.keras``) is read as version 0: only its
``labels`` are used.
"""

from __future__ import annotations

import json
import pathlib
import zipfile

from fer_tf.data.labels import canonical_expression
from fer_tf.errors import ModelFileError
from fer_tf.files import atomic_path, atomic_write_text, quiet_native_stderr
from fer_tf.model import inference_model
from fer_tf.model.inference_model import FACE_SHAPE, KERAS_ADVICE

FORMAT_VERSION = 1

INPUT_METADATA = {
    "shape": list(FACE_SHAPE),
    "dtype": "float32",
    "range": [0, 255],
    "kind": "aligned grey face crop, eye-levelled, 60x60",
}

PREPROCESSING = (
    "inside the model (FacePreprocessing): histogram equalisation, plane fit, zero mean / unit "
    "variance per face, centre crop 60x60 -> 48x48; feed raw grey pixels 0..255 as float32"
)

_WHAT_TO_DO_TFLITE = "pass a .tflite file written by `fer-tf export`"


def register_custom_objects():
    """Import the modules that register the Keras classes of a model for deserialisation: layers,
    losses and their parts, the preprocessing layer, the models. (A training checkpoint's optimizer
    and schedule are registered by :mod:`fer_tf.training`, which imports them before it loads one.)"""
    # deferred: these import keras, which loads its backend (TensorFlow by default)
    from fer_tf.metric import layers, losses  # noqa: F401
    from fer_tf.model import network  # noqa: F401
    from fer_tf.preprocess import normalize  # noqa: F401


def check_model_file(path, kind_hint):
    """``path`` as a Path, or :class:`ModelFileError` (ending with ``kind_hint``) when it is missing,
    a folder, unreadable or empty."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found; {kind_hint}")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file; {kind_hint}")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc}); {kind_hint}") from None
    if size == 0:
        raise ModelFileError(f"{path}: model file is empty; {kind_hint}")
    return path


def model_file_kind(path, advice="pass a .tflite or .keras model written by `fer-tf export`"):
    """``"tflite"`` or ``"keras"``: from the suffix, else from the file's first bytes."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tflite", ".keras"):
        return suffix[1:]
    check_model_file(path, advice)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":  # a TFLite flatbuffer's file identifier
        return "tflite"
    if head[:2] == b"PK":  # a zip archive, as .keras files are
        return "keras"
    raise ModelFileError(
        f"{path}: not a model file (neither a .tflite flatbuffer nor a .keras archive); {advice}"
    )


def check_keras_file(path, advice=KERAS_ADVICE):
    """Raise :class:`ModelFileError` (ending with ``advice``) unless ``path`` is an intact ``.keras``
    archive: missing, empty, unreadable, truncated, corrupt and non-Keras files are refused."""
    path = check_model_file(path, advice)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not, "
            f"or it is truncated); {advice}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated Keras model file ({exc}); {advice}") from None
    if bad is not None:
        raise ModelFileError(
            f"{path}: corrupt Keras model file (member {bad!r} fails its checksum); {advice}"
        )
    if not {"config.json", "model.weights.h5"} <= names:
        missing = " and ".join(sorted({"config.json", "model.weights.h5"} - names))
        raise ModelFileError(f"{path}: a zip file but not a Keras model (no {missing} inside); {advice}")
    return path


def load_model(path, check=True, compile=False, advice=KERAS_ADVICE):
    """Load a ``.keras`` file in safe mode: the one loader of fer_tf's Keras files.

    Safe mode never runs code from the file: a model holding a ``Lambda`` layer (pickled Python
    bytecode) is refused. ``compile=True`` restores the optimizer and its state too (training
    checkpoints, to resume). Raises :class:`ModelFileError` naming ``path``, and ending with
    ``advice`` (what to do), when the file is missing, truncated, corrupt, not a Keras model, unsafe,
    or (with ``check``) not a face classifier of the expected shape.
    """
    path = check_model_file(path, advice)
    if path.suffix.lower() == ".tflite":
        raise ModelFileError(
            f"{path}: a TFLite model cannot be loaded as a Keras model; use the LiteRT backend "
            f"(load_tflite) or {advice}"
        )
    check_keras_file(path, advice)
    register_custom_objects()
    import keras  # deferred: loads the backend (TensorFlow by default)

    try:
        model = keras.saving.load_model(str(path), safe_mode=True, compile=compile)
    except Exception as exc:  # Keras raises ValueError/TypeError/KeyError/OSError for bad files
        text = str(exc).strip()
        if "safe_mode" in text or "Lambda" in text or "unsafe" in text.lower():
            raise ModelFileError(
                f"{path}: refused to load: the file contains Python code (a Lambda layer or a "
                "pickled function) that would run on loading, and fer_tf only loads models in "
                "safe mode. Rebuild the model from fer_tf's layers, without Lambda layers.") from None
        reason = text.splitlines()[0] if text else type(exc).__name__
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise ModelFileError(
            f"{path}: cannot load this Keras model ({type(exc).__name__}: {reason}); it may come "
            f"from an incompatible version of fer_tf, or be damaged; {advice}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: holds a {type(model).__name__}, not a model; {advice}")
    if check:
        inference_model.check_classifier(model, path)
    return model


def save_model(model, path, extra=None):
    """``model.save(path)``, atomically (:mod:`fer_tf.files`); ``extra`` = ``{zip member: bytes}``
    added to the archive (Keras ignores members it does not know)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        if extra:
            with zipfile.ZipFile(tmp, "a") as archive:
                for name, data in extra.items():
                    archive.writestr(name, data)


# --- TFLite -----------------------------------------------------------------------------------

def _tflite_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # deferred: the LiteRT runtime
    except ImportError:  # pragma: no cover - ai-edge-litert is a hard dependency
        import tensorflow as tf  # deferred: TensorFlow, only where LiteRT is missing

        Interpreter = tf.lite.Interpreter
    return Interpreter


def _verify_tflite_structure(path):
    """Walk the flatbuffer's tables and vectors in Python before LiteRT sees the file.

    LiteRT's native loader does not verify every offset: a truncated or damaged ``.tflite`` can
    crash the process (segmentation fault) instead of raising. Every table, vector and buffer the
    runtime will touch is read here first, and any offset outside the file raises
    :class:`ModelFileError`.
    """
    try:
        from ai_edge_litert import schema_py_generated as schema  # deferred: LiteRT
    except ImportError:  # pragma: no cover - part of ai-edge-litert
        return
    data = pathlib.Path(path).read_bytes()
    size = len(data)
    try:
        model = schema.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.CustomCode()
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            graph.InputsAsNumpy(), graph.OutputsAsNumpy(), graph.Name()
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                tensor.ShapeAsNumpy(), tensor.ShapeSignatureAsNumpy(), tensor.Name()
                tensor.Type(), tensor.Buffer()
                quant = tensor.Quantization()
                if quant is not None:
                    quant.ScaleAsNumpy(), quant.ZeroPointAsNumpy()
            for o in range(graph.OperatorsLength()):
                op = graph.Operators(o)
                op.InputsAsNumpy(), op.OutputsAsNumpy(), op.OpcodeIndex()
                op.BuiltinOptionsType(), op.CustomOptionsAsNumpy()
        for b in range(model.BuffersLength()):
            buffer = model.Buffers(b)
            buffer.DataAsNumpy()  # np.frombuffer raises when the data runs past the end
            offset, length = buffer.Offset(), buffer.Size()
            if offset > 1 and offset + length > size:
                raise ValueError(f"buffer {b} ends at byte {offset + length} of {size}")
        for m in range(model.MetadataLength()):
            entry = model.Metadata(m)
            entry.Name(), entry.Buffer()
    except Exception as exc:  # struct.error, IndexError, ValueError, UnicodeDecodeError
        raise ModelFileError(
            f"{path}: cannot open this TFLite model: the file is truncated or damaged "
            f"({type(exc).__name__}: {exc}); {_WHAT_TO_DO_TFLITE}"
        ) from None


def load_tflite(path, num_threads=None, check=True):
    """Open a ``.tflite`` file in a LiteRT interpreter (tensors allocated).

    Raises :class:`ModelFileError` naming ``path`` for a missing, empty, truncated or garbage file,
    or (with ``check``) a model whose input is not one ``[1|batch, 60, 60, 1]`` face tensor or whose
    output is not ``[batch, classes]``.
    """
    path = check_model_file(path, _WHAT_TO_DO_TFLITE)
    with open(path, "rb") as f:
        head = f.read(8)
    # A TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelFileError(
            f"{path}: not a TFLite model (no TFL3 identifier; the file is damaged or of another "
            f"kind); {_WHAT_TO_DO_TFLITE}"
        )
    _verify_tflite_structure(path)
    Interpreter = _tflite_interpreter_class()
    try:
        with quiet_native_stderr():  # LiteRT prints "INFO: Created ... XNNPACK delegate" to fd 2
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            interpreter.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError for broken flatbuffers
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: cannot open this TFLite model ({reason}); it is truncated, damaged or uses "
            f"operations LiteRT does not have; {_WHAT_TO_DO_TFLITE}"
        ) from None
    if check:
        ins = interpreter.get_input_details()
        outs = interpreter.get_output_details()
        if len(ins) != 1 or tuple(int(d) for d in ins[0]["shape"][1:]) != FACE_SHAPE:
            shapes = [list(int(d) for d in i["shape"]) for i in ins]
            raise ModelFileError(
                f"{path}: the model's input is {shapes}, expected one [batch, 60, 60, 1] grey face; "
                f"this is not a fer_tf expression model; {_WHAT_TO_DO_TFLITE}"
            )
        if len(outs) != 1 or len(outs[0]["shape"]) != 2:
            shapes = [list(int(d) for d in o["shape"]) for o in outs]
            raise ModelFileError(
                f"{path}: the model's output is {shapes}, expected one [batch, classes] tensor of "
                f"probabilities; {_WHAT_TO_DO_TFLITE}"
            )
    return interpreter


# --- metadata sidecars ------------------------------------------------------------------------

def metadata_path(path):
    """The sidecar of ``path``: ``<dir>/<stem>.json`` (for a folder: ``<parent>/<name>.json``)."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".json":
        return path
    return path.with_name(path.stem + ".json") if path.suffix else path.with_name(path.name + ".json")


def make_metadata(labels, source=None, **extra):
    """The metadata dict for an exported artefact (see the module docstring)."""
    labels = [str(x) for x in labels]
    meta = {
        "format_version": FORMAT_VERSION,
        "labels": labels,
        "input": dict(INPUT_METADATA),
        "output": {"shape": [len(labels)], "dtype": "float32", "kind": "softmax probabilities"},
        "preprocessing": PREPROCESSING,
        "source": None if source is None else str(source),
    }
    meta.update(extra)
    return meta


def write_metadata(path, labels, source=None, **extra):
    """Write the sidecar of artefact ``path``; return the sidecar's path."""
    target = metadata_path(path)
    meta = make_metadata(labels, source=source, **extra)
    atomic_write_text(target, json.dumps(meta, indent=2) + "\n")
    return target


def read_metadata(path, required=False):
    """Read the sidecar of artefact ``path`` (or a ``.json`` file itself).

    Returns the dict, or ``None`` when there is no sidecar (unless ``required``). A sidecar that is
    not valid metadata raises :class:`ModelFileError`.
    """
    target = metadata_path(path)
    if not target.is_file():
        if required:
            raise ModelFileError(
                f"{path}: no metadata file {target.name} beside it; export the model with "
                f"`fer-tf export`, which writes one"
            )
        return None
    try:
        meta = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{target}: model metadata is not valid JSON ({exc}); re-export the model") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{target}: model metadata is not a JSON object; re-export the model")
    # A description written by training (pretrained/fer2013_backbone.json: labels, accuracy,
    # provenance) has no format_version: it is read as version 0, for its labels.
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= FORMAT_VERSION:
        raise ModelFileError(
            f"{target}: model metadata format_version {version!r} is not supported by this fer_tf "
            f"(reads up to {FORMAT_VERSION}); upgrade fer_tf or re-export the model"
        )
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelFileError(f"{target}: model metadata has no list of labels; re-export the model")
    canon = [canonical_expression(x) for x in labels]
    if any(c is None for c in canon):
        bad = [x for x, c in zip(labels, canon) if c is None]
        raise ModelFileError(f"{target}: unknown expression labels {bad}; re-export the model")
    meta["labels"] = canon
    if version == 0:  # a description, not an export's metadata: only its labels mean the same
        return {"format_version": 0, "labels": canon, "description": meta}
    return meta

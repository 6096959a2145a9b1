"""Recognise facial expressions in photos and videos: detect -> align -> classify.

:class:`Recognizer` runs an exported model (``.tflite`` through the standalone LiteRT runtime, or a
``.keras`` file / ``keras.Model`` through TensorFlow) on every face that
:class:`~fer_tf.preprocess.align.FaceAligner` finds. Results are plain dicts, ready for JSON::

    {"faces": [{"box": [x, y, w, h], "expression": "happiness",
                "probabilities": {"anger": 0.01, ..., "surprise": 0.02}}]}

Boxes are integer pixels of the input image (clipped to it), faces are ordered largest first, and
probability keys follow the model's label order (canonical names of :mod:`fer_tf.data.labels`).
When ``max_faces`` left some faces out, the result also says how many were found
(``"faces_found"``).

A model straight from training works too: ``Recognizer(model)`` with a ``JointModel`` (from
:func:`fer_tf.model.network.build_model` or a training checkpoint) uses its ``ec_model()`` and its
``labels``. ``model.ec_model()`` alone is a plain Keras model without labels: pass them,
``Recognizer(model.ec_model(), labels=model.labels)``.

Videos are decoded, recognised and (optionally) written back annotated one frame at a time:
:meth:`Recognizer.open_video` streams frames with bounded memory, :meth:`Recognizer.predict_video`
collects them into one dict. Annotated videos are H.264 ``.mp4`` where the installed OpenCV can
encode it and VP8 ``.webm`` otherwise (both play in web browsers); see :func:`video_codec`.

Import cost: the LiteRT backend never imports TensorFlow itself; TensorFlow loads only for Keras
models. MediaPipe's task modules try to import TensorFlow for documentation decorators; when
TensorFlow is not loaded yet, :func:`_make_aligner` gives them the no-op they fall back to, so a
LiteRT recogniser stays free of TensorFlow.
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
import sys
import tempfile
import types

import numpy as np

from fer_tf.model import saving
from fer_tf.data.labels import label_set
from fer_tf.errors import ConfigError, ImageError, ModelFileError, NoFaceError

#: The model shipped with the package, relative to the repository root.
SHIPPED_MODEL = "saved_models/fer_tf_basic7.tflite"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                    ".ppm", ".pbm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

#: Largest photo accepted by default, in pixels: 48 MP phone photos (8000 x 6000) pass.
MAX_PIXELS = 64_000_000
#: How a Recognizer runs MediaPipe's face networks by default: ``"litert"``, directly in LiteRT
#: with the fully convolutional small-face scan (fer_tf.preprocess.face_networks; about twice as
#: fast as the graphs on one photo, reports/engines), or ``"mediapipe"``, its ``solutions`` graphs,
#: as the training caches are built (reports/engines compares the two: about the same accuracy).
DETECTION_ENGINE = "litert"
#: Smallest face width (pixels) that detection looks for by default (see FaceAligner's min_face).
MIN_FACE = 40

#: A tracked face keeps its smoothing window while consecutive boxes overlap at least this much.
TRACK_IOU = 0.3


def shipped_model_path():
    """Path of the shipped model (it may not exist in a development checkout)."""
    return pathlib.Path(__file__).resolve().parents[2] / SHIPPED_MODEL


# --- model runners ----------------------------------------------------------------------------

class TFLiteRunner:
    """Run a face-classifier ``.tflite`` in ``ai_edge_litert``: ``runner(faces) -> [n, C]``.

    Fewer than :attr:`BATCH_FROM` faces are run one at a time; more are run in batches of up to
    ``max_batch`` in one invocation when the model's batch dimension is dynamic (it is for models
    from :func:`fer_tf.deploy.export.export_model`), on a second interpreter opened for them. Resizing an
    interpreter re-plans XNNPACK (about 1-3 ms), and a batch is no faster per face than single
    faces for this network on a CPU, so the single-face interpreter is never resized: photos and
    video frames with one or a few faces each pay no re-planning. Quantised (int8/uint8) inputs
    and outputs are (de)quantised with the tensors' own scale and zero point.
    """

    #: Calls with at least this many faces run as batches (when the model allows it).
    BATCH_FROM = 8

    def __init__(self, model, num_threads=None):
        self._num_threads = num_threads
        self._batch_runner = None
        if isinstance(model, (str, os.PathLike)):
            self.path = str(model)
            self.interpreter = saving.load_tflite(model, num_threads=num_threads)
        else:
            self.path = "<interpreter>"
            self.interpreter = model
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        signature = self._input.get("shape_signature")
        self.dynamic_batch = signature is not None and len(signature) and int(signature[0]) == -1
        self._batch = int(self._input["shape"][0])
        self.num_classes = int(self._output["shape"][-1])

    def _set_batch(self, n):
        if n == self._batch:
            return True
        if not self.dynamic_batch:
            return False
        with saving.quiet_native_stderr():
            self.interpreter.resize_tensor_input(self._input["index"], [n, *saving.FACE_SHAPE])
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = n
        return True

    def _quantize(self, x):
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.rint(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y):
        if self._output["dtype"] == np.float32:
            return y
        scale, zero = self._output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def _invoke(self, batch):
        self.interpreter.set_tensor(self._input["index"], self._quantize(batch))
        self.interpreter.invoke()
        return self._dequantize(self.interpreter.get_tensor(self._output["index"])).copy()

    def _batches(self):
        """The runner for batched calls: a second interpreter of the same file (the first one
        stays at batch 1), or this one when the model came as an interpreter object."""
        if self.path == "<interpreter>":
            return self
        if self._batch_runner is None:
            self._batch_runner = TFLiteRunner(self.path, num_threads=self._num_threads)
        return self._batch_runner

    def _run_batches(self, faces, max_batch):
        out = []
        for start in range(0, len(faces), max_batch):
            chunk = faces[start:start + max_batch]
            if self._set_batch(len(chunk)):
                out.append(self._invoke(chunk))
            else:
                self._set_batch(1)
                out.extend(self._invoke(face[None]) for face in chunk)
        return out

    def __call__(self, faces, max_batch=64):
        faces = saving.as_faces(faces)
        if len(faces) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        if len(faces) >= self.BATCH_FROM and self.dynamic_batch and max_batch > 1:
            out = self._batches()._run_batches(faces, max_batch)
        elif self._batch == 1 or self._set_batch(1):
            out = [self._invoke(face[None]) for face in faces]
        else:  # a fixed batch size other than 1
            out = self._run_batches(faces, max_batch)
        return np.concatenate(out, axis=0).astype(np.float32)


class KerasRunner:
    """Run an inference ``keras.Model`` (``[B,60,60,1]`` -> ``[B,C]``) through one ``tf.function``."""

    def __init__(self, model):
        import tensorflow as tf  # deferred: TensorFlow, only to run a Keras model through it

        self.model = model
        self.num_classes = int(model.outputs[0].shape[-1])
        self._tf = tf
        self._fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, *saving.FACE_SHAPE], tf.float32)],
            reduce_retracing=True,
        )

    def __call__(self, faces, max_batch=256):
        faces = saving.as_faces(faces)
        if len(faces) == 0:
            return np.zeros((0, self.num_classes), np.float32)
        out = [np.asarray(self._fn(self._tf.constant(faces[s:s + max_batch])))
               for s in range(0, len(faces), max_batch)]
        return np.concatenate(out, axis=0).astype(np.float32)


# --- helpers ----------------------------------------------------------------------------------

def _model_kind(path):
    """"tflite" or "keras" from the suffix, else from the file's first bytes."""
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".keras":
        return "keras"
    saving._check_file(path, "pass a .tflite or .keras model written by `fer-tf export`")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:2] == b"PK":
        return "keras"
    raise ModelFileError(
        f"{path}: not a model file (neither a .tflite flatbuffer nor a .keras archive); pass a "
        f".tflite or .keras model written by `fer-tf export`"
    )


def _avoid_tensorflow_via_mediapipe():
    """Give MediaPipe's optional TensorFlow doc decorators their no-op fallback.

    ``mediapipe.tasks.python.core.optional_dependencies`` imports ``tensorflow.tools.docs`` only
    for a documentation decorator and falls back to a no-op without TensorFlow; importing
    TensorFlow there would cost seconds for nothing, so when TensorFlow is not loaded yet the
    fallback module is installed first.
    """
    name = "mediapipe.tasks.python.core.optional_dependencies"
    if "tensorflow" in sys.modules or name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__doc__ = "fer_tf stand-in: MediaPipe's no-TensorFlow fallback."
    doc_controls = types.SimpleNamespace(do_not_generate_docs=lambda obj: obj)
    module.doc_controls = doc_controls
    sys.modules[name] = module


def _make_aligner(max_faces=None, min_face=MIN_FACE, engine=DETECTION_ENGINE):
    _avoid_tensorflow_via_mediapipe()
    from fer_tf.preprocess.align import FaceAligner  # deferred: OpenCV and MediaPipe

    return FaceAligner(max_faces=max_faces, min_face=min_face, engine=engine)


def _load_rgb(image, label, max_pixels=MAX_PIXELS):
    """An image path or array -> (RGB uint8 [H,W,3], label)."""
    if isinstance(image, (str, os.PathLike)):
        from fer_tf.data.images import load_image_rgb  # deferred: PIL

        return load_image_rgb(image, max_pixels=max_pixels), str(image)
    from fer_tf.data.images import as_uint8_rgb  # deferred: PIL

    return as_uint8_rgb(image, label), label


def _int_box(box, width, height):
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]


def _iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


# --- the recogniser ---------------------------------------------------------------------------

class Recognizer:
    """Facial expression recogniser: face detection + alignment + an exported classifier.

    Args:
        model: a ``.tflite`` or ``.keras`` path, or a ``keras.Model`` (an inference model taking
            ``[B,60,60,1]`` raw faces, an EC network taking ``[B,48,48,1]``, or a JointModel);
            ``None`` = the shipped model ``saved_models/fer_tf_basic7.tflite``.
        backend: ``"auto"`` (from the model), ``"litert"`` (``.tflite``) or ``"keras"``.
        window: frames averaged per face track in :meth:`predict_video`.
        num_threads: LiteRT interpreter threads (``None`` = LiteRT's default).
        labels: class names in output order; by default from the model's metadata sidecar
            (``<stem>.json``) or the model's ``labels`` attribute.
        aligner: a face aligner with ``align_all(image, size, label)`` (default: a
            :class:`~fer_tf.preprocess.align.FaceAligner`, created on first use).
        max_faces: at most this many faces per image or frame, the largest (``None``: all); the
            result says how many were found when some were left out.
        min_face: smallest face width in pixels that detection looks for (default 40); larger
            values make large photos and videos faster.
        engine: how the default aligner runs MediaPipe's face networks: ``"litert"`` (default:
            directly in LiteRT, faster) or ``"mediapipe"`` (its graphs, as the training caches do);
            see :data:`DETECTION_ENGINE`.
        max_pixels: image files with more pixels are refused with an :class:`ImageError`
            ("image too large"); the default, 64 million, lets 48 MP photos through.

    Not thread-safe (the aligner and the interpreter are not); use one recogniser per thread.
    """

    def __init__(self, model=None, backend="auto", window=5, num_threads=None, labels=None,
                 aligner=None, max_faces=None, min_face=MIN_FACE, max_pixels=MAX_PIXELS,
                 engine=DETECTION_ENGINE):
        if backend not in ("auto", "litert", "keras"):
            raise ConfigError(f"unknown backend {backend!r}; use auto, litert or keras")
        if engine not in ("litert", "mediapipe"):
            raise ConfigError(f"unknown detection engine {engine!r}; use litert or mediapipe")
        if int(window) < 1:
            raise ConfigError(f"window must be at least 1 frame, got {window}")
        if max_faces is not None and int(max_faces) < 1:
            raise ConfigError(f"max_faces must be at least 1, got {max_faces}")
        if min_face is not None and float(min_face) < 0:
            raise ConfigError(f"min_face must not be negative, got {min_face}")
        if int(max_pixels) < 1:
            raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
        self.window = int(window)
        self.max_faces = None if max_faces is None else int(max_faces)
        self.min_face = min_face
        self.engine = engine
        self.max_pixels = int(max_pixels)
        self._aligner = aligner
        meta = None
        if model is None:
            model = shipped_model_path()
            if not model.is_file():
                raise ModelFileError(
                    f"no model given and the shipped model {SHIPPED_MODEL} is not there "
                    f"({model}); pass a model (--model FILE.tflite or FILE.keras) exported with "
                    f"`fer-tf export`"
                )
        if isinstance(model, (str, os.PathLike)):
            path = pathlib.Path(model)
            self.model_path = str(path)
            kind = _model_kind(path)
            if backend == "auto":
                backend = "litert" if kind == "tflite" else "keras"
            if backend == "litert" and kind != "tflite":
                raise ConfigError(
                    f"{path}: the LiteRT backend needs a .tflite model; export one with "
                    f"`fer-tf export`, or use the keras backend"
                )
            if backend == "keras" and kind != "keras":
                raise ConfigError(f"{path}: the keras backend needs a .keras model; use the litert backend")
            meta = saving.read_metadata(path)
            if meta is not None and meta.get("input", {}).get("shape") not in (None, list(saving.FACE_SHAPE)):
                raise ModelFileError(
                    f"{path}: its metadata says the input is {meta['input']['shape']}, expected "
                    f"[60, 60, 1]; re-export the model with `fer-tf export`"
                )
            if backend == "litert":
                self._runner = TFLiteRunner(path, num_threads=num_threads)
                model_labels = None
            else:
                keras_model = saving.load_model(path)
                self._runner, model_labels = self._keras_runner(keras_model, labels)
        else:
            if backend == "litert":
                raise ConfigError("the LiteRT backend needs a .tflite path, not a Keras model object")
            backend = "keras"
            self.model_path = f"<{type(model).__name__} {getattr(model, 'name', '')}>"
            saving.check_classifier(model, self.model_path)
            self._runner, model_labels = self._keras_runner(model, labels)
        self.backend = backend
        self.metadata = meta
        if labels is None:
            labels = (meta or {}).get("labels") or model_labels
        if labels is None:
            raise ModelFileError(
                f"{self.model_path}: the model's expression labels are unknown (no metadata file "
                f"beside it and no labels in the model); export it with `fer-tf export`, which "
                f"writes the labels, pass labels=[...], or pass the JointModel itself instead of "
                f"its ec_model() (Recognizer(model) takes its labels)"
            )
        self.labels = tuple(label_set(list(labels)))
        if len(self.labels) != self._runner.num_classes:
            raise ModelFileError(
                f"{self.model_path}: the model has {self._runner.num_classes} outputs but "
                f"{len(self.labels)} labels ({', '.join(self.labels)}); re-export the model"
            )

    @staticmethod
    def _keras_runner(model, labels):
        kind = saving.check_classifier(model)
        model_labels = getattr(model, "labels", None)
        if kind != "face":
            model = saving.build_inference_model(
                model, labels if labels is not None else model_labels)
        return KerasRunner(model), (tuple(model_labels) if model_labels is not None else None)

    # -- lifetime --
    @property
    def aligner(self):
        if self._aligner is None:
            self._aligner = _make_aligner(self.max_faces, self.min_face, self.engine)
        return self._aligner

    def close(self):
        if self._aligner is not None and hasattr(self._aligner, "close"):
            self._aligner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- classification --
    def probabilities(self, crops):
        """``[n, C]`` float32 probabilities of aligned ``[n,60,60]`` crops, in one batch."""
        return self._runner(crops)

    def _entry(self, probs, box=None):
        probs = np.asarray(probs, dtype=np.float64)
        entry = {} if box is None else {"box": box}
        entry["expression"] = self.labels[int(np.argmax(probs))]
        entry["probabilities"] = {name: round(float(p), 6) for name, p in zip(self.labels, probs)}
        return entry

    def predict_faces(self, crops):
        """Classify already aligned 60x60 grey crops (batched): ``[{"expression", "probabilities"}]``."""
        return [self._entry(p) for p in self.probabilities(crops)]

    def _align(self, rgb, label):
        """``(aligned faces, faces found)``; found exceeds the list when max_faces cut it."""
        try:
            aligned = list(self.aligner.align_all(rgb, size=60, label=label))
        except NoFaceError:
            return [], 0
        found = getattr(self.aligner, "last_found", len(aligned)) or len(aligned)
        if self.max_faces is not None and len(aligned) > self.max_faces:  # a custom aligner
            found, aligned = max(found, len(aligned)), aligned[: self.max_faces]
        return aligned, max(found, len(aligned))

    def predict(self, image, label="image"):
        """Every face in ``image`` (RGB/grey array or a path): ``{"faces": [...]}``, largest first.

        An image without a face gives ``{"faces": []}``. When ``max_faces`` left faces out,
        ``"faces_found"`` holds how many there were.
        """
        rgb, label = _load_rgb(image, label, self.max_pixels)
        aligned, found = self._align(rgb, label)
        result = {"faces": self._classify(aligned, rgb.shape)}
        if found > len(aligned):
            result["faces_found"] = found
        return result

    def _classify(self, aligned, shape):
        if not aligned:
            return []
        probs = self.probabilities(np.stack([a.image for a in aligned]))
        h, w = shape[:2]
        return [self._entry(p, _int_box(a.box, w, h)) for a, p in zip(aligned, probs)]

    def predict_path(self, path):
        """``{"path": path, "faces": [...]}`` for an image file.

        Raises :class:`ImageError` (missing, unreadable, not an image, truncated, more than
        ``max_pixels``) or :class:`NoFaceError` (no face in it), each naming the file.
        """
        rgb, label = _load_rgb(pathlib.Path(path), str(path), self.max_pixels)
        result = self.predict(rgb, label=label)
        if not result["faces"]:
            raise NoFaceError(path)
        return {"path": str(path), **result}

    def open_video(self, path, window=None, every=1, max_frames=None, annotate_to=None):
        """A :class:`VideoStream` over ``path``: iterate it for one frame dict at a time.

        Memory stays bounded whatever the video's length: one decoded frame, the smoothing
        window, and (with ``annotate_to``) one annotated frame at a time.
        """
        return VideoStream(self, path, window=window, every=every, max_frames=max_frames,
                           annotate_to=annotate_to)

    def predict_video(self, path, window=None, every=1, max_frames=None, annotate_to=None):
        """Expressions in every ``every``-th frame of a video (OpenCV decodes it).

        The largest face of each frame is tracked (it keeps its track while consecutive boxes
        overlap with IoU >= :data:`TRACK_IOU`); its ``probabilities`` and ``expression`` are the
        mean over the last ``window`` frames of the track (``frame_probabilities`` keeps the frame's
        own) and it is marked ``"track": 0``. Other faces are per-frame. Returns ``{"path", "fps",
        "frames": [{"frame", "time", "faces"}], "summary"}``; ``annotate_to`` also writes an
        annotated copy of the video (codec from its suffix, see :func:`video_codec`).

        This collects every frame's result in one dict; for long videos iterate
        :meth:`open_video` instead.
        """
        with self.open_video(path, window=window, every=every, max_frames=max_frames,
                             annotate_to=annotate_to) as stream:
            frames = list(stream)
            return {"path": str(stream.path), "fps": stream.fps or None, "frames": frames,
                    "summary": stream.summary}


class VideoStream:
    """One video, recognised frame by frame: iterate for ``{"frame", "time", "faces"}`` dicts.

    Attributes: ``path``, ``fps`` (0.0 when the file does not say), ``frame_count`` (the
    container's estimate, 0 when unknown), ``expected`` (frames this stream will yield, estimated),
    ``codec`` and ``note`` of the annotated copy (see :func:`video_codec`), and after the
    iteration ``summary`` (``{"frames", "frames_with_face", "expressions"}``) and
    ``capped_frames`` (frames where ``max_faces`` left faces out). Raises :class:`ImageError` when
    the file cannot be opened, or when no frame at all could be decoded.
    """

    def __init__(self, recognizer, path, window=None, every=1, max_frames=None, annotate_to=None):
        import cv2  # deferred: OpenCV, only where images are warped or videos read

        self.recognizer = recognizer
        self.window = recognizer.window if window is None else int(window)
        if self.window < 1:
            raise ConfigError(f"window must be at least 1 frame, got {window}")
        self.every = max(1, int(every))
        self.max_frames = max_frames
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise ImageError(self.path, "file not found")
        if not self.path.is_file():
            raise ImageError(self.path, "not a file")
        self.annotate_to = None if annotate_to is None else pathlib.Path(annotate_to)
        self.codec, self.note = (None, None) if annotate_to is None else video_codec(annotate_to)
        with saving.quiet_native_stderr():
            self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            self._capture.release()
            raise ImageError(self.path, "cannot open as a video (not a video, or a codec OpenCV lacks)")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        count = float(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count = int(count) if np.isfinite(count) and count > 0 else 0
        expected = -(-self.frame_count // self.every) if self.frame_count else 0
        self.expected = min(expected, max_frames) if max_frames is not None else expected
        self.summary = None
        self.capped_frames = 0
        self._writer = None

    def __iter__(self):
        import cv2  # deferred: OpenCV, only where images are warped or videos read

        history = collections.deque(maxlen=self.window)
        last_box = None
        counts = collections.Counter()
        yielded = with_face = 0
        index = -1
        rec = self.recognizer
        try:
            while self.max_frames is None or yielded < self.max_frames:
                ok, bgr = self._capture.read()
                if not ok or bgr is None:
                    break
                index += 1
                if index % self.every:
                    continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else \
                    cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
                aligned, found = rec._align(rgb, f"{self.path} frame {index}")
                faces = rec._classify(aligned, rgb.shape)
                if found > len(aligned):
                    self.capped_frames += 1
                if faces:
                    with_face += 1
                    tracked = faces[0]  # largest first
                    if last_box is None or _iou(last_box, tracked["box"]) < TRACK_IOU:
                        history.clear()
                    last_box = tracked["box"]
                    history.append(np.array([tracked["probabilities"][n] for n in rec.labels]))
                    smooth = rec._entry(np.mean(history, axis=0), tracked["box"])
                    smooth["frame_probabilities"] = tracked["probabilities"]
                    smooth["track"] = 0
                    faces[0] = smooth
                    counts[smooth["expression"]] += 1
                else:
                    history.clear()
                    last_box = None
                frame = {"frame": index, "time": round(index / self.fps, 4) if self.fps else None,
                         "faces": faces}
                if self.annotate_to is not None:
                    drawn = annotate(rgb, frame)
                    if self._writer is None:
                        self._writer = _video_writer(self.annotate_to, self.codec, self.fps or 25.0,
                                                     drawn.shape)
                    self._writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                yielded += 1
                yield frame
        finally:
            self.close()
        if not yielded:
            raise ImageError(self.path, "no frames could be decoded (not a video, or a codec OpenCV lacks)")
        self.summary = {"frames": yielded, "frames_with_face": with_face,
                        "expressions": dict(counts.most_common())}

    def close(self):
        if self._capture is not None:
            self._capture.release()
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


_BROWSER_NOTE = ("web browsers do not play it; name it .webm for a browser-playable VP8 video")


def video_codec(path):
    """``(fourcc, note)`` for an annotated video written to ``path``, chosen by its suffix.

    ``.mp4``/``.m4v``/``.mov``: H.264 ('avc1') when the installed OpenCV can encode it, else
    MPEG-4 part 2 ('mp4v') with a ``note`` that says browsers do not play it. ``.webm``: VP8
    ('VP80'), which browsers play. ``.mkv``: VP8; ``.avi``: Motion JPEG ('MJPG'). ``note`` is
    ``None`` when the result plays in a browser, else one sentence saying why not.
    """
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        if can_encode("avc1"):
            return "avc1", None
        return "mp4v", (f"this OpenCV build has no H.264 encoder, so {pathlib.Path(path).name} is "
                        f"MPEG-4 part 2 (mp4v): {_BROWSER_NOTE}")
    if suffix == ".webm":
        return "VP80", None
    if suffix == ".mkv":
        return "VP80", f"{pathlib.Path(path).name} is VP8 in Matroska: {_BROWSER_NOTE}"
    if suffix == ".avi":
        return "MJPG", f"{pathlib.Path(path).name} is Motion JPEG in AVI: {_BROWSER_NOTE}"
    raise ConfigError(f"{path}: unknown video suffix; name the annotated video .mp4 or .webm")


def browser_video_suffix():
    """".mp4" when the installed OpenCV encodes H.264, else ".webm" (VP8): both play in browsers."""
    return ".mp4" if can_encode("avc1") else ".webm"


@functools.lru_cache(maxsize=None)
def can_encode(fourcc):
    """Whether the installed OpenCV writes video with ``fourcc`` (probed once, on a tiny file)."""
    import cv2  # deferred: OpenCV, only where images are warped or videos read

    suffix = ".webm" if fourcc.upper().startswith("VP") else ".mp4"
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, f"probe{suffix}")
        with saving.quiet_native_stderr():
            writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 64))
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((64, 64, 3), np.uint8))
            writer.release()
        return bool(ok and os.path.isfile(target) and os.path.getsize(target) > 0)


def _video_writer(path, fourcc, fps, shape):
    import cv2  # deferred: OpenCV, only where images are warped or videos read

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with saving.quiet_native_stderr():  # FFmpeg's notes on tag fallbacks go to fd 2
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                 (int(shape[1]), int(shape[0])))
    if not writer.isOpened():
        raise ImageError(path, f"cannot write the annotated video here (codec {fourcc})")
    return writer


def annotate(image, result):
    """An RGB uint8 copy of ``image`` with every face's box and expression drawn on it.

    ``image`` is an array (grey or RGB) or a path; ``result`` is what :meth:`Recognizer.predict`
    (or one frame of :meth:`Recognizer.predict_video`) returned.
    """
    from PIL import Image, ImageDraw, ImageFont  # deferred: PIL, only to draw annotations

    rgb, _ = _load_rgb(image, "image", max_pixels=2**62)
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    h, w = rgb.shape[:2]
    thickness = max(2, min(h, w) // 150)
    size = max(12, min(h, w) // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    colour = (255, 215, 0)
    for face in result.get("faces", []):
        x, y, bw, bh = face["box"]
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], outline=colour, width=thickness)
        name = face["expression"]
        text = f"{name} {face['probabilities'][name]:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 2 * thickness if y - th - 2 * thickness >= 0 else y + bh
        ty = min(max(0, ty), max(0, h - th - 2 * thickness))
        tx = min(max(0, x), max(0, w - tw - 2 * thickness))
        draw.rectangle([tx, ty, tx + tw + 2 * thickness, ty + th + 2 * thickness], fill=colour)
        draw.text((tx + thickness - left, ty + thickness - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)

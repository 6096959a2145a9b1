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

Videos: :meth:`Recognizer.open_video` streams frames with bounded memory, and
:meth:`Recognizer.predict_video` collects them into one dict (:mod:`fer_tf.deploy.video`).

Import cost: the LiteRT backend never imports TensorFlow itself; TensorFlow loads only for Keras
models. MediaPipe's task modules try to import TensorFlow for documentation decorators; when
TensorFlow is not loaded yet, :func:`_make_aligner` gives them the no-op they fall back to, so a
LiteRT recogniser stays free of TensorFlow.
"""

from __future__ import annotations

import os
import pathlib
import sys
import types

import numpy as np

from fer_tf.data.labels import label_set
from fer_tf.deploy.runners import KerasRunner, TFLiteRunner
from fer_tf.deploy.video import VideoStream
from fer_tf.errors import ConfigError, ModelFileError, NoFaceError
from fer_tf.model import inference_model, saving
from fer_tf.model.inference_model import FACE_SHAPE
from fer_tf.preprocess.align import MIN_FACE
from fer_tf.preprocess.boxes import int_box

#: The model shipped with the package, relative to the repository root.
SHIPPED_MODEL = "saved_models/fer_tf_basic7.tflite"

#: Largest photo accepted by default, in pixels: 48 MP phone photos (8000 x 6000) pass.
MAX_PIXELS = 64_000_000
#: How a Recognizer runs MediaPipe's face networks by default: ``"litert"``, directly in LiteRT
#: with the fully convolutional small-face scan (fer_tf.preprocess.face_networks; about twice as
#: fast as the graphs on one photo, reports/engines), or ``"mediapipe"``, its ``solutions`` graphs,
#: as the training caches are built (reports/engines compares the two: about the same accuracy).
DETECTION_ENGINE = "litert"


def shipped_model_path():
    """Path of the shipped model (it may not exist in a development checkout)."""
    return pathlib.Path(__file__).resolve().parents[2] / SHIPPED_MODEL


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


def open_classifier(model, backend="auto", num_threads=None, labels=None):
    """Open a classifier once: ``(runner, model labels or None, metadata or None, backend, name)``.

    ``model`` is a ``.tflite`` or ``.keras`` path, or a ``keras.Model``; ``backend`` is ``"auto"``,
    ``"litert"`` or ``"keras"``. A Keras model is checked once (:func:`check_classifier`) and
    wrapped into an inference model when it is a JointModel or an EC network.
    """
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model)
        name = str(path)
        kind = saving.model_file_kind(path)
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
        if meta is not None and meta.get("input", {}).get("shape") not in (None, list(FACE_SHAPE)):
            raise ModelFileError(
                f"{path}: its metadata says the input is {meta['input']['shape']}, expected "
                f"[60, 60, 1]; re-export the model with `fer-tf export`"
            )
        if backend == "litert":
            return TFLiteRunner(path, num_threads=num_threads), None, meta, backend, name
        model = saving.load_model(path, check=False)  # checked below, once
    else:
        if backend == "litert":
            raise ConfigError("the LiteRT backend needs a .tflite path, not a Keras model object")
        backend, meta = "keras", None
        name = f"<{type(model).__name__} {getattr(model, 'name', '')}>"
    kind = inference_model.check_classifier(model, name)
    model_labels = getattr(model, "labels", None)
    if kind != "face":
        model = inference_model.build_inference_model(
            model, labels if labels is not None else model_labels, kind=kind)
    model_labels = tuple(model_labels) if model_labels is not None else None
    return KerasRunner(model), model_labels, meta, backend, name


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
        if model is None:
            model = shipped_model_path()
            if not model.is_file():
                raise ModelFileError(
                    f"no model given and the shipped model {SHIPPED_MODEL} is not there "
                    f"({model}); pass a model (--model FILE.tflite or FILE.keras) exported with "
                    f"`fer-tf export`"
                )
        self._runner, model_labels, meta, backend, self.model_path = open_classifier(
            model, backend, num_threads, labels)
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
        return [self._entry(p, int_box(a.box, w, h)) for a, p in zip(aligned, probs)]

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

    def predict_people(self, inputs, baseline=None, enroll=None, embedder=None, progress=None):
        """Expressions and people of every face in ``inputs``: who is who, and each person's own
        baseline (:mod:`fer_tf.deploy.people`).

        Args:
            inputs: an image path, a folder (its images, recursively), an image array, or a list
                of these.
            baseline: ``None`` (raw scores), ``"self"`` (each person's own faces in the run) or
                neutral photos (paths, a folder, arrays), matched to the people by embedding.
            enroll: ``{name: photos}`` (or an enrolment folder's path: a subfolder or an image
                per name): matching people get the name, others are ``person-1``, ``person-2``...
            embedder: an :class:`~fer_tf.people.embedding.IdentityEmbedder` (default: a new one).

        Returns ``{"faces": [...], "people": {...}, "unmatched": [...], "images": [...],
        "baseline": {...}, "grouping": {...}}``. Each face: ``{"input", "face", "box", "person",
        "expression", "probabilities"}``; ``person`` is ``None`` with a ``person_reason`` for a
        face too small or blurred for identity; with a baseline, ``raw_expression`` and
        ``raw_probabilities`` keep the model's own scores. ``people``: per person, ``faces``,
        ``share`` and the count and share of each expression. ``unmatched``: enrolled names that
        matched no face. Neutral photos without a usable face raise :class:`NoUsableFaceError`.
        """
        from fer_tf.deploy.people import predict_people  # deferred: dlib

        return predict_people(self, inputs, baseline=baseline, enroll=enroll, embedder=embedder,
                              progress=progress)

    def open_video(self, path, window=None, every=1, max_frames=None, annotate_to=None, people=None):
        """A :class:`VideoStream` over ``path``: iterate it for one frame dict at a time.

        Memory stays bounded whatever the video's length: one decoded frame, the smoothing
        window, and (with ``annotate_to``) one annotated frame at a time. ``people``: a
        :class:`~fer_tf.deploy.people.VideoPeople` (or ``True`` for a default one) gives every
        face a ``track`` and a ``person``, smoothed per track.
        """
        return VideoStream(self, path, window=window, every=every, max_frames=max_frames,
                           annotate_to=annotate_to, people=people)

    def predict_video(self, path, window=None, every=1, max_frames=None, annotate_to=None,
                      people=False, baseline=None, enroll=None):
        """Expressions in every ``every``-th frame of a video (OpenCV decodes it).

        The largest face of each frame is tracked (it keeps its track while consecutive boxes
        overlap with IoU >= :data:`TRACK_IOU`); its ``probabilities`` and ``expression`` are the
        mean over the last ``window`` frames of the track (``frame_probabilities`` keeps the frame's
        own) and it is marked ``"track": 0``. Other faces are per-frame. Returns ``{"path", "fps",
        "frames": [{"frame", "time_s", "faces"}], "summary"}``; ``annotate_to`` also writes an
        annotated copy of the video (codec from its suffix, see :func:`video_codec`; as long as
        the video, and only when a face was found: see :class:`VideoStream`).

        ``people=True`` (implied by ``baseline`` or ``enroll``, as in :meth:`predict_people`):
        every face is tracked (``track``) and named (``person``) by
        :class:`~fer_tf.deploy.people.VideoPeople`, smoothed per track, and ``summary["people"]``
        gives each person's time and share in each expression; ``summary["unmatched"]`` the
        enrolled names no one matched. A baseline corrects the frames once the video is read.

        This collects every frame's result in one dict; for long videos iterate
        :meth:`open_video` instead.
        """
        from fer_tf.deploy import people as who  # deferred: dlib, only with people

        tracker = None
        if people or baseline is not None or enroll is not None:
            embedder = who.default_embedder()
            neutral = who.neutral_references(self, baseline, embedder)
            tracker = who.VideoPeople(embedder, who.enrolment(self, enroll, embedder))
        with self.open_video(path, window=window, every=every, max_frames=max_frames,
                             annotate_to=annotate_to, people=tracker) as stream:
            frames = list(stream)
            result = {"path": str(stream.path), "fps": stream.fps or None, "frames": frames,
                      "summary": stream.summary}
        if tracker is not None:
            who.finish_video(result, self.labels, tracker, baseline, neutral, max(1, int(every)))
        return result

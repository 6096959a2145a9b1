"""Identity embeddings: a 128-number vector per face, close for the same person, far for others.

The recogniser is dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``, a
ResNet-34-like network trained by Davis King on about 3 million faces; 99.38% on LFW by its
author's measurement). Its weights come inside the ``face-recognition-models`` package and the
network runs in the ``dlib-bin`` wheel; nothing is downloaded at run time.

The network sees a 150x150 colour "face chip" (the face rotated, scaled and centred by a similarity
transform that puts five landmarks on dlib's template: the four eye corners and the base of the
nose, with 25% padding). The chip is built from the face **our** detector and mesh already found
(:class:`fer_tf.preprocess.crop.Face`), never with a second detector:

- ``landmarks="mesh"`` (the default): the five points are read off the 468-point mesh (indices
  :data:`MESH_FIVE`, the mesh points nearest to dlib's five on KDEF and Yale faces);
- ``landmarks="dlib5"``: dlib's own 5-point shape predictor runs inside our detection box.

``reports/people/identity.md`` compares the two by verification ROC (made by
``pipelines/people_identity.py``).

**Bad faces.** An embedding of a face that is too small or too blurred is unreliable: such faces
get no vector, and a reason, so that callers never merge them into a person at random. Two
measures decide, both cut-offs measured in ``reports/people/identity.md``:

- ``eye_distance``: pixels between the eye centres in the original image (:data:`MIN_EYE_DISTANCE`);
- ``sharpness``: the standard deviation of the Laplacian of the grey chip's centre over that of
  the centre itself (contrast-free; low when the face is blurred; :data:`MIN_SHARPNESS`).

Example::

    from fer_tf.preprocess.align import FaceAligner
    from fer_tf.people.embedding import IdentityEmbedder

    with FaceAligner(engine="litert") as aligner:
        embedder = IdentityEmbedder()
        for face in aligner.detect(rgb):
            result = embedder.embed(rgb, face)
            if result.vector is None:
                print("no identity:", result.message)  # result.reason: "small" or "blurred"
            else:
                print(result.vector.shape)  # (128,) float32

Distances between vectors are Euclidean (:func:`distances`); dlib's author gives 0.6 as the
same-person threshold on LFW (:data:`REFERENCE_THRESHOLD`). :mod:`fer_tf.people.grouping` does not
rely on it: it chooses its cut from each run's own distances.

An :class:`IdentityEmbedder` loads the network once (shared by every embedder of the process); it is
not thread-safe, so give each thread its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import threading

import numpy as np

from fer_tf.data.images import as_uint8_rgb
from fer_tf.errors import ConfigError

#: Length of an identity vector.
DIMENSIONS = 128
#: dlib's face chip: side in pixels and padding around the five-point template.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: Mesh landmarks in dlib's five-point order: the eye on the image's right (outer, inner corner),
#: the eye on the image's left (outer, inner corner), the base of the nose.
MESH_FIVE = (263, 362, 33, 133, 2)
#: Smallest distance between the eye centres, in pixels of the original image, for an embedding
#: (measured: reports/people/identity.md, "Bad faces").
MIN_EYE_DISTANCE = 12.0
#: Smallest chip sharpness (std of the Laplacian over std of the grey chip) for an embedding
#: (measured: reports/people/identity.md, "Bad faces").
MIN_SHARPNESS = 1.0
#: Side (pixels) at which the chip's centre is measured for sharpness.
SHARPNESS_SIDE = 32
#: dlib's documented same-person distance on LFW (a reference only; grouping adapts its own cut).
REFERENCE_THRESHOLD = 0.6
LANDMARK_MODES = ("mesh", "dlib5")
_MODEL_PACKAGE = "face_recognition_models"
_DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_SHAPE5_FILE = "shape_predictor_5_face_landmarks.dat"
_MODELS = {}
_MODELS_LOCK = threading.Lock()


@dataclasses.dataclass
class IdentityResult:
    """The identity embedding of one face, or why there is none.

    ``vector``: ``(128,)`` float32, or ``None`` when the face is unusable; ``reason``: ``None``,
    ``"small"`` or ``"blurred"``; ``message``: the reason in words; ``eye_distance`` (pixels) and
    ``sharpness``: the measures the decision was made on.
    """

    vector: np.ndarray | None
    reason: str | None
    message: str | None
    eye_distance: float
    sharpness: float

    @property
    def ok(self) -> bool:
        return self.vector is not None


def model_folder() -> pathlib.Path:
    """Folder of the ``face-recognition-models`` package's ``.dat`` files (found without importing
    the package, whose ``__init__`` needs ``pkg_resources``, gone from recent setuptools)."""
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "identity embeddings need the face-recognition-models package: "
            "pip install face-recognition-models==0.3.0 (or `make install`)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "models"


def _load(name):
    """dlib's network or shape predictor ``name``, loaded once per process."""
    with _MODELS_LOCK:
        if name not in _MODELS:
            try:
                import dlib  # deferred: dlib loads only when identities are asked for
            except ImportError as exc:
                raise ConfigError("identity embeddings need dlib: pip install dlib-bin==20.0.1.post1 "
                                  "(or `make install`)") from exc
            path = model_folder() / name
            if not path.is_file():
                raise ConfigError(f"{path} is missing: reinstall face-recognition-models==0.3.0")
            loader = dlib.face_recognition_model_v1 if name == _DESCRIPTOR_FILE else dlib.shape_predictor
            _MODELS[name] = loader(str(path))
        return _MODELS[name]


def sharpness(chip) -> float:
    """Std of the Laplacian of the grey ``chip``'s centre over the std of that centre (0 when flat).

    The centre (the middle half of the chip on each axis: eyes, nose, mouth) leaves out the chip's
    border, where a face near the image's edge meets the black fill of dlib's chip: an edge that no
    blur softens."""
    import cv2  # deferred: OpenCV

    grey = chip if chip.ndim == 2 else cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape[:2]
    grey = grey[h // 4: h - h // 4, w // 4: w - w // 4].astype(np.float32)
    # at SHARPNESS_SIDE pixels: detail at the scale that identifies a face, and the 8-bit rounding
    # of a smooth (blurred) chip averaged away
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    spread = float(grey.std())
    if spread < 1e-6:
        return 0.0
    return float(cv2.Laplacian(grey, cv2.CV_32F, ksize=3).std() / spread)


def distances(a, b=None) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and those of ``b`` (of ``a`` when ``None``)."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


class IdentityEmbedder:
    """dlib's ResNet face descriptor on faces found by :class:`~fer_tf.preprocess.align.FaceAligner`.

    Args:
        landmarks: ``"mesh"`` (default: the chip from five mesh points) or ``"dlib5"`` (dlib's
            5-point shape predictor inside our detection box).
        min_eye_distance: faces whose eye centres are closer (pixels) get no vector (``"small"``).
        min_sharpness: faces whose chip is less sharp get no vector (``"blurred"``).
        jitters: dlib's ``num_jitters``: the vector is averaged over this many randomly jittered
            copies of the chip (0: the chip alone; each jitter costs one more network run).
    """

    def __init__(self, landmarks="mesh", min_eye_distance=MIN_EYE_DISTANCE, min_sharpness=MIN_SHARPNESS,
                 jitters=0):
        if landmarks not in LANDMARK_MODES:
            raise ConfigError(f"landmarks must be one of {', '.join(LANDMARK_MODES)}, got {landmarks!r}")
        if int(jitters) < 0:
            raise ConfigError(f"jitters must be 0 or more, got {jitters!r}")
        self.landmarks = landmarks
        self.min_eye_distance = float(min_eye_distance)
        self.min_sharpness = float(min_sharpness)
        self.jitters = int(jitters)
        self._net = _load(_DESCRIPTOR_FILE)
        self._shape5 = _load(_SHAPE5_FILE) if landmarks == "dlib5" else None

    def chip(self, rgb, face) -> np.ndarray:
        """The 150x150x3 uint8 chip that the network sees for ``face`` (a ``Face`` or
        ``AlignedFace`` in ``rgb``'s pixel coordinates)."""
        import dlib  # deferred (loaded by the constructor)

        face = getattr(face, "face", face)  # an AlignedFace holds its detection
        x, y, w, h = face.box
        rect = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
        if self._shape5 is not None:
            shape = self._shape5(rgb, rect)
        else:
            pts = np.asarray(face.landmarks, dtype=np.float64)[list(MESH_FIVE)]
            shape = dlib.full_object_detection(rect, [dlib.point(int(round(px)), int(round(py)))
                                                      for px, py in pts])
        return np.asarray(dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, image, face) -> IdentityResult:
        """The identity of ``face`` in ``image`` (grey or RGB array, as given to the aligner).

        Returns an :class:`IdentityResult`: ``vector`` is ``(128,)`` float32, or ``None`` with
        ``reason`` ``"small"`` / ``"blurred"`` when the face is too small or too blurred for a
        reliable embedding. Deterministic: the same image and face give the same vector.
        """
        rgb = np.ascontiguousarray(as_uint8_rgb(image))
        det = getattr(face, "face", face)
        eyes = float(np.linalg.norm(np.asarray(det.right_eye) - np.asarray(det.left_eye)))
        if eyes < self.min_eye_distance:
            return IdentityResult(None, "small", f"face too small for identity: eyes {eyes:.0f} px "
                                  f"apart, at least {self.min_eye_distance:.0f} needed", eyes, float("nan"))
        chip = self.chip(rgb, det)
        sharp = sharpness(chip)
        if sharp < self.min_sharpness:
            return IdentityResult(None, "blurred", f"face too blurred for identity: sharpness "
                                  f"{sharp:.2f}, at least {self.min_sharpness:.2f} needed", eyes, sharp)
        return IdentityResult(self.vector(chip), None, None, eyes, sharp)

    def vector(self, chip) -> np.ndarray:
        """The network's ``(128,)`` float32 vector of a 150x150x3 uint8 chip (no quality checks)."""
        chip = np.ascontiguousarray(chip, dtype=np.uint8)
        return np.asarray(self._net.compute_face_descriptor(chip, self.jitters), dtype=np.float32)

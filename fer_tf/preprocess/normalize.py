"""The one preprocessing function (Section 5.1), in ``keras.ops`` (TensorFlow and JAX alike).

Training, evaluation, export and inference all call :func:`normalize_faces`, so a face is always
normalised the same way. Steps, per image:

1. **Histogram equalisation** with 256 bins: a pixel of grey level ``v`` becomes ``cdf(v) / n``,
   the fraction of the image's pixels whose level is at most ``v`` (the classic CDF mapping; the
   offset and scale of other variants do not matter after step 3).
2. **Plane fitting**: the least-squares plane ``a*x + b*y + c`` through the equalised pixels is
   subtracted, removing linear illumination gradients. The plane's pseudo-inverse depends only on
   the image size, so it is a constant matrix.
3. **Zero mean, unit variance** per image. Images whose standard deviation after step 2 is at most
   :data:`MIN_STD` (constant or nearly constant images) give exact zeros, never NaN or inf.

Inputs are ``[..., H, W]`` or ``[..., H, W, 1]`` grey levels 0..255 (uint8 or float); H and W must
be known statically (60 x 60 faces in this package). The exported model's
:class:`FacePreprocessing` uses only ops that TensorFlow Lite has as builtins.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from fer_tf.data.crops import CROP_SIZE, FACE_SIZE, as_nhwc, center_crop

#: Floor of the per-image standard deviation in step 3 (equalised levels are in 0..1).
MIN_STD = 1e-3
HISTOGRAMS = ("segment", "onehot", "segment_flat")
#: How FacePreprocessing (the exported models) counts: every method gives the same integer counts
#: and the same output; this one is the fastest in TFLite (builtin ops only, see FacePreprocessing).
EXPORT_HISTOGRAM = "segment_flat"


def plane_pinv(height, width):
    """``[H*W, 3]`` matrix ``P`` such that ``v @ P`` gives the plane coefficients (a, b, c) of the
    least-squares fit ``a*x + b*y + c`` to the flattened image ``v``, and the design matrix
    ``[H*W, 3]`` (centred x, centred y, 1). NumPy, float64."""
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                         indexing="ij")
    xs = xs.ravel() - xs.mean()
    ys = ys.ravel() - ys.mean()
    design = np.stack([xs, ys, np.ones_like(xs)], axis=1)
    return np.linalg.pinv(design).T, design


def _split_shape(x):
    """(has_channel, H, W) from a tensor's static shape."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"faces must be [..., H, W] or [..., H, W, 1], got shape {shape}")
    has_channel = len(shape) >= 3 and shape[-1] == 1
    h, w = (shape[-3], shape[-2]) if has_channel else (shape[-2], shape[-1])
    if h is None or w is None:
        raise ValueError(f"face height and width must be known statically, got shape {shape}")
    return has_channel, int(h), int(w)


def _histograms(levels, method):
    """Per-row 256-bin histograms ``[B, 256]`` float32 of int32 levels ``[B, N]``."""
    if method == "onehot":  # one-hot sum: O(B * N * 256) memory, builtin TFLite ops only
        return ops.sum(ops.one_hot(levels, 256, dtype="float32"), axis=1)
    if method not in ("segment", "segment_flat"):
        raise ValueError(f"histogram must be one of {HISTOGRAMS}, got {method!r}")
    rows = ops.shape(levels)[0]
    ids = levels + 256 * ops.arange(rows, dtype="int32")[:, None]
    ones = ops.reshape(ops.ones_like(levels, dtype="float32"), (-1,))
    counts = ops.segment_sum(ones, ops.reshape(ids, (-1,)), num_segments=rows * 256)
    return ops.reshape(counts, (rows, 256))


def _equalize(levels, n, method):
    """Histogram equalisation of int32 levels ``[B, N]`` -> ``cdf(level) / n``, float32 ``[B, N]``."""
    if method != "segment_flat":
        cdf = ops.cumsum(_histograms(levels, method), axis=1) / float(n)  # [B, 256]
        return ops.take_along_axis(cdf, levels, axis=1)
    # One set of flat indices (level + 256 * row) serves the count (a segment sum: TFLite's
    # UNSORTED_SEGMENT_SUM) and the lookup (one flat GATHER): the same values as "segment"
    # without the broadcasting index arithmetic that take_along_axis adds to the graph.
    rows = ops.shape(levels)[0]
    ids = ops.reshape(levels + 256 * ops.arange(rows, dtype="int32")[:, None], (-1,))
    counts = ops.segment_sum(ops.ones_like(ids, dtype="float32"), ids, num_segments=rows * 256)
    cdf = ops.cumsum(ops.reshape(counts, (rows, 256)), axis=1) / float(n)
    return ops.reshape(_gather(ops.reshape(cdf, (-1,)), ids), (rows, n))


def _gather(params, indices):
    """``params[indices]`` for non-negative ``indices``. ``keras.ops.take`` also wraps negative
    indices, which adds LESS, SELECT_V2 and ADD over every pixel to an exported graph (about a fifth
    of the preprocessing's time in TFLite); TensorFlow's gather does without them."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # deferred: the backend in use, already loaded

        return tf.gather(params, indices)
    return ops.take(params, indices, axis=0)


def normalize_faces(x, histogram="segment"):
    """Histogram equalisation, plane fit, zero mean / unit variance on each face.

    Args:
        x: ``[..., H, W]`` or ``[..., H, W, 1]`` grey levels 0..255, uint8 or float.
        histogram: how the per-image histogram is counted; all give the same integer counts and
            the same output. ``"segment"`` (default) is a segment sum, O(B * 256) memory;
            ``"segment_flat"`` is the same segment sum with the CDF lookup done as one gather
            on flat indices (what the exported model uses: fastest in TFLite);
            ``"onehot"`` is a one-hot sum, O(B * H * W * 256) memory, for graphs that must
            avoid segment ops.
    Returns:
        float32 tensor of the same shape.
    """
    x = ops.convert_to_tensor(x)
    _, h, w = _split_shape(x)
    n = h * w
    out_shape = ops.shape(x)
    flat = ops.cast(ops.reshape(x, (-1, n)), "float32")  # [B, N]
    levels = ops.cast(ops.clip(ops.round(flat), 0.0, 255.0), "int32")  # [B, N]
    # 1. histogram equalisation: histogram, CDF by cumsum, lookup by gather
    eq = _equalize(levels, n, histogram)  # [B, N]
    # 2. plane fit: coefficients = eq @ pinv, fitted = coefficients @ design^T
    pinv, design = plane_pinv(h, w)
    # Written as multiply + sum rather than matmul so that TFLite's dynamic-range quantisation,
    # which quantises the constant operands of matmuls, leaves the plane fit in float32.
    pinv_t = ops.convert_to_tensor(pinv.T[None].astype(np.float32))  # [1, 3, N]
    design_t = ops.convert_to_tensor(design.T[None].astype(np.float32))  # [1, 3, N]
    coef = ops.sum(eq[:, None, :] * pinv_t, axis=2)  # [B, 3]
    fitted = ops.sum(coef[:, :, None] * design_t, axis=1)
    resid = eq - fitted
    # 3. zero mean, unit variance (floored std: constant images give zeros)
    mean = ops.mean(resid, axis=1, keepdims=True)
    centred = resid - mean
    std = ops.sqrt(ops.mean(ops.square(centred), axis=1, keepdims=True))
    # images flatter than MIN_STD (constant ones) become exact zeros, not amplified rounding noise
    keep = ops.cast(std > MIN_STD, "float32")
    out = centred * (keep / ops.maximum(std, MIN_STD))
    return ops.reshape(out, out_shape)


def normalize_many(faces, chunk=2048):
    """:func:`normalize_faces` over a large uint8 array in chunks -> NumPy float32 (same shape)."""
    faces = np.asarray(faces)
    if len(faces) == 0:
        return faces.astype(np.float32)
    return np.concatenate([ops.convert_to_numpy(normalize_faces(faces[i:i + chunk])).astype(np.float32)
                           for i in range(0, len(faces), chunk)])


def normalize_faces_numpy(x):
    """NumPy twin of :func:`normalize_faces` (float64), for checks and tools without TensorFlow."""
    x = np.asarray(x)
    has_channel = x.ndim >= 3 and x.shape[-1] == 1
    h, w = (x.shape[-3], x.shape[-2]) if has_channel else (x.shape[-2], x.shape[-1])
    flat = x.reshape(-1, h * w).astype(np.float64)
    levels = np.clip(np.rint(flat), 0, 255).astype(np.int64)
    out = np.empty_like(flat)
    pinv, design = plane_pinv(h, w)
    for i, v in enumerate(levels):
        cdf = np.cumsum(np.bincount(v, minlength=256)) / v.size
        eq = cdf[v]
        resid = eq - design @ (eq @ pinv)
        resid = resid - resid.mean()
        std = resid.std()
        out[i] = resid / std if std > MIN_STD else 0.0
    return out.reshape(x.shape)


def resize_face(img, size=FACE_SIZE):
    """Bilinear resize of a grey face (e.g. a 48x48 FER2013 crop) to ``size`` x ``size``.

    NumPy input (``[H, W]`` or ``[n, H, W]`` uint8) uses PIL and returns uint8; a backend tensor
    uses ``keras.ops.image.resize`` and returns float32 with the input's layout.
    """
    if not isinstance(img, np.ndarray) and keras.ops.is_tensor(img):
        x4, restore = as_nhwc(img)
        y = ops.image.resize(ops.cast(x4, "float32"), (size, size), interpolation="bilinear",
                             data_format="channels_last")
        return restore(y)
    from PIL import Image  # deferred: PIL, only for resizing outside a graph

    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        return np.stack([resize_face(a, size) for a in arr]) if len(arr) else (
            np.zeros((0, size, size), np.uint8))
    if arr.ndim != 2:
        raise ValueError(f"resize_face expects [H, W] or [n, H, W], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    if arr.shape == (size, size):
        return arr.copy()
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


@keras.saving.register_keras_serializable(package="fer_tf")
class FacePreprocessing(keras.layers.Layer):
    """Raw grey faces ``[B, 60, 60, 1]`` (or ``[B, 60, 60]``) 0..255 -> normalised centre crop
    ``[B, 48, 48, 1]`` float32: :func:`normalize_faces` then :func:`center_crop`.

    ``histogram`` picks how :func:`normalize_faces` counts grey levels (all methods give the same
    output). The default, :data:`EXPORT_HISTOGRAM` (``"segment_flat"``), converts to TFLite builtin
    operations only (``UNSORTED_SEGMENT_SUM``, ``CUMSUM``, ``GATHER``; no Flex op) and is the
    fastest there: about 0.03 ms per face against about 1.4 ms for ``"onehot"``, whose [3600 x 256]
    one-hot tensor per face used to be most of the exported model's time. Models saved before the
    option existed load with the default.
    """

    def __init__(self, crop_size=CROP_SIZE, histogram=EXPORT_HISTOGRAM, **kwargs):
        super().__init__(**kwargs)
        if histogram not in HISTOGRAMS:
            raise ValueError(f"histogram must be one of {HISTOGRAMS}, got {histogram!r}")
        self.crop_size = int(crop_size)
        self.histogram = histogram

    def call(self, inputs):
        x = ops.convert_to_tensor(inputs)
        if len(x.shape) == 3:
            x = x[..., None]
        x = normalize_faces(ops.cast(x, "float32"), histogram=self.histogram)
        return center_crop(x, self.crop_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.crop_size, self.crop_size, 1)

    def get_config(self):
        config = super().get_config()
        config.update(crop_size=self.crop_size, histogram=self.histogram)
        return config


@keras.saving.register_keras_serializable(package="fer_tf")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images left to right: ``[B, H, W, C]`` -> the same with the width axis reversed.

    Test-time flip averaging (``fer-tf export --flip-average``; not in the paper) runs the network
    on a face and on its mirror image and averages the two probability vectors."""

    def call(self, inputs):
        return ops.flip(ops.convert_to_tensor(inputs), axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

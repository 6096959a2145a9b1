"""The one preprocessing function (Section 5.1), in TensorFlow ops.

Training, evaluation, export and inference all call :func:`normalize_faces`, so a face is always
normalised the same way. It uses only ops that TensorFlow Lite has as builtins (one-hot, cumsum,
gather, matmul, reductions), so a model that starts with :class:`FacePreprocessing` converts to
TFLite without Flex ops. Steps, per image:

1. **Histogram equalisation** with 256 bins: a pixel of grey level ``v`` becomes ``cdf(v) / n``,
   the fraction of the image's pixels whose level is at most ``v`` (the classic CDF mapping; the
   offset and scale of other variants do not matter after step 3).
2. **Plane fitting**: the least-squares plane ``a*x + b*y + c`` through the equalised pixels is
   subtracted, removing linear illumination gradients. The plane's pseudo-inverse depends only on
   the image size, so it is a constant matrix (two matmuls per batch).
3. **Zero mean, unit variance** per image. Images whose standard deviation after step 2 is at most
   :data:`MIN_STD` (constant or nearly constant images) give exact zeros, never NaN or inf.

Inputs are ``[..., H, W]`` or ``[..., H, W, 1]`` grey levels 0..255 (uint8 or float); H and W must
be known statically (60 x 60 faces in this package).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

#: Faces are stored at this size; the network sees centre (or random) crops of CROP_SIZE.
FACE_SIZE = 60
CROP_SIZE = 48
#: Floor of the per-image standard deviation in step 3 (equalised levels are in 0..1).
MIN_STD = 1e-3


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
    shape = x.shape
    if shape.rank is None or shape.rank < 2:
        raise ValueError(f"faces must be [..., H, W] or [..., H, W, 1], got shape {shape}")
    has_channel = shape.rank >= 3 and shape[-1] == 1
    h, w = (shape[-3], shape[-2]) if has_channel else (shape[-2], shape[-1])
    if h is None or w is None:
        raise ValueError(f"face height and width must be known statically, got shape {shape}")
    return has_channel, int(h), int(w)


def normalize_faces(x, histogram="bincount"):
    """Histogram equalisation, plane fit, zero mean / unit variance on each face.

    Args:
        x: ``[..., H, W]`` or ``[..., H, W, 1]`` grey levels 0..255, uint8 or float.
        histogram: how the per-image histogram is counted; both give the same integer counts.
            ``"bincount"`` (default) needs O(B * 256) memory; ``"onehot"`` uses only TFLite
            builtin ops (one-hot sum) but O(B * H * W * 256) memory, so the exported model's
            :class:`FacePreprocessing` uses it on one face at a time.
    Returns:
        float32 tensor of the same shape.
    """
    x = tf.convert_to_tensor(x)
    has_channel, h, w = _split_shape(x)
    n = h * w
    out_shape = tf.shape(x)
    flat = tf.reshape(x, [-1, n])  # [B, N]
    if flat.dtype != tf.float32:
        flat = tf.cast(flat, tf.float32)
    levels = tf.cast(tf.clip_by_value(tf.round(flat), 0.0, 255.0), tf.int32)  # [B, N]
    # 1. histogram equalisation: histogram by one-hot sum, CDF by cumsum, lookup by gather
    if histogram == "onehot":
        hist = tf.reduce_sum(tf.one_hot(levels, 256, dtype=tf.float32), axis=1)  # [B, 256]
    else:
        rows = tf.shape(levels)[0]
        offsets = levels + 256 * tf.range(rows)[:, None]
        hist = tf.reshape(tf.math.bincount(tf.reshape(offsets, [-1]), minlength=256 * rows,
                                           maxlength=256 * rows, dtype=tf.float32), [rows, 256])
    cdf = tf.math.cumsum(hist, axis=1) / float(n)  # [B, 256]
    eq = tf.gather(cdf, levels, batch_dims=1)  # [B, N]
    # 2. plane fit: coefficients = eq @ pinv, fitted = coefficients @ design^T
    pinv, design = plane_pinv(h, w)
    # Written as multiply + sum rather than matmul so that TFLite's dynamic-range quantisation,
    # which quantises the constant operands of matmuls, leaves the plane fit in float32.
    pinv_t = tf.constant(pinv.T[None], dtype=tf.float32)  # [1, 3, N]
    coef = tf.reduce_sum(eq[:, None, :] * pinv_t, axis=2)  # [B, 3]
    fitted = tf.reduce_sum(coef[:, :, None] * tf.constant(design.T[None], dtype=tf.float32), axis=1)
    resid = eq - fitted
    # 3. zero mean, unit variance (floored std: constant images give zeros)
    mean = tf.reduce_mean(resid, axis=1, keepdims=True)
    centred = resid - mean
    std = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=1, keepdims=True))
    # images flatter than MIN_STD (constant ones) become exact zeros, not amplified rounding noise
    keep = tf.cast(std > MIN_STD, tf.float32)
    out = centred * (keep / tf.maximum(std, MIN_STD))
    return tf.reshape(out, out_shape)


def normalize_many(faces, chunk=2048):
    """:func:`normalize_faces` over a large uint8 array in chunks -> NumPy float32 (same shape)."""
    faces = np.asarray(faces)
    if len(faces) == 0:
        return faces.astype(np.float32)
    return np.concatenate([np.asarray(normalize_faces(faces[i:i + chunk]), np.float32)
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


def _as_nhwc(x):
    """-> (tensor [B, H, W, C], restore function)."""
    x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    if rank == 2:  # [H, W]
        return x[None, :, :, None], lambda y: y[0, :, :, 0]
    if rank == 3:
        if x.shape[-1] == 1:  # [H, W, 1]
            return x[None], lambda y: y[0]
        return x[..., None], lambda y: y[..., 0]  # [B, H, W]
    if rank == 4:
        return x, lambda y: y
    raise ValueError(f"faces must be [H, W], [H, W, 1], [B, H, W] or [B, H, W, 1], got {x.shape}")


def center_crop(x, size=CROP_SIZE):
    """Central ``size`` x ``size`` crop of ``[H,W]``, ``[H,W,1]``, ``[B,H,W]`` or ``[B,H,W,1]``."""
    x4, restore = _as_nhwc(x)
    h, w = int(x4.shape[1]), int(x4.shape[2])
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w} faces")
    top, left = (h - size) // 2, (w - size) // 2
    return restore(x4[:, top:top + size, left:left + size, :])


def random_crop_flip(x, size=CROP_SIZE, seed=None, flip=True):
    """Training augmentation: a random ``size`` x ``size`` crop and a random horizontal flip, drawn
    independently for every image of a batch (or for the single image given).

    Works eagerly, in ``tf.function`` and inside ``tf.data`` ``map``. ``seed`` may be ``None``, an
    int (op seed, reproducible together with the global seed) or a shape-[2] integer tensor
    (stateless: the same seed gives the same crops).
    """
    x4, restore = _as_nhwc(x)
    h, w = int(x4.shape[1]), int(x4.shape[2])
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w} faces")
    b = tf.shape(x4)[0]
    if seed is not None and not isinstance(seed, (int, np.integer)):
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        u = tf.random.stateless_uniform([b, 3], seed=seed)
    else:
        u = tf.random.uniform([b, 3], seed=seed)
    oy = tf.cast(tf.floor(u[:, 0] * (h - size + 1)), tf.int32)
    ox = tf.cast(tf.floor(u[:, 1] * (w - size + 1)), tf.int32)
    oy = tf.minimum(oy, h - size)
    ox = tf.minimum(ox, w - size)
    steps = tf.range(size, dtype=tf.int32)
    rows = oy[:, None] + steps[None, :]  # [B, size]
    cols = ox[:, None] + steps[None, :]
    if flip:
        do_flip = u[:, 2] < 0.5
        cols = tf.where(do_flip[:, None], tf.reverse(cols, axis=[1]), cols)
    out = tf.gather(x4, rows, axis=1, batch_dims=1)  # [B, size, W, C]
    out = tf.gather(out, cols, axis=2, batch_dims=1)  # [B, size, size, C]
    return restore(out)


def resize_face(img, size=FACE_SIZE):
    """Bilinear resize of a grey face (e.g. a 48x48 FER2013 crop) to ``size`` x ``size``.

    NumPy input (``[H, W]`` or ``[n, H, W]`` uint8) uses PIL and returns uint8; a TensorFlow tensor
    uses ``tf.image.resize`` and returns float32 with the input's layout.
    """
    if tf.is_tensor(img):
        x4, restore = _as_nhwc(img)
        y = tf.image.resize(tf.cast(x4, tf.float32), [size, size], method="bilinear")
        return restore(y)
    from PIL import Image

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
    ``[B, 48, 48, 1]`` float32: :func:`normalize_faces` then :func:`center_crop`."""

    def __init__(self, crop_size=CROP_SIZE, **kwargs):
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)

    def call(self, inputs):
        x = tf.convert_to_tensor(inputs)
        if x.shape.rank == 3:
            x = x[..., None]
        x = normalize_faces(tf.cast(x, tf.float32), histogram="onehot")
        return center_crop(x, self.crop_size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.crop_size, self.crop_size, 1)

    def get_config(self):
        config = super().get_config()
        config["crop_size"] = self.crop_size
        return config

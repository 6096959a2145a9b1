"""Faces as arrays of one layout, and the one centre crop of fer_tf.

Faces are stored at ``FACE_SIZE`` x ``FACE_SIZE`` (60); the network sees ``CROP_SIZE`` x
``CROP_SIZE`` (48) crops of them: the centre one (:func:`center_crop`: evaluation, inference,
``FacePreprocessing``) or random ones (:mod:`fer_tf.feeding.augment`: training).
"""

from __future__ import annotations

import numpy as np
from keras import ops

#: Faces are stored at this size; the network sees centre (or random) crops of CROP_SIZE.
FACE_SIZE = 60
CROP_SIZE = 48


def as_nhwc(x, keep_numpy=False):
    """-> (tensor [B, H, W, C], restore function); a NumPy array stays one with ``keep_numpy``."""
    if not (keep_numpy and isinstance(x, np.ndarray)):
        x = ops.convert_to_tensor(x)
    rank = len(x.shape)
    if rank == 2:  # [H, W]
        return x[None, :, :, None], lambda y: y[0, :, :, 0]
    if rank == 3:
        if x.shape[-1] == 1:  # [H, W, 1]
            return x[None], lambda y: y[0]
        return x[..., None], lambda y: y[..., 0]  # [B, H, W]
    if rank == 4:
        return x, lambda y: y
    raise ValueError(f"faces must be [H, W], [H, W, 1], [B, H, W] or [B, H, W, 1], got {tuple(x.shape)}")


def center_crop(x, size=CROP_SIZE):
    """Central ``size`` x ``size`` crop of ``[H,W]``, ``[H,W,1]``, ``[B,H,W]`` or ``[B,H,W,1]``.

    The one centre crop of fer_tf: a NumPy array gives a NumPy view (feeders without TensorFlow),
    anything else a backend tensor (inside the model, tf.data).
    """
    x4, restore = as_nhwc(x, keep_numpy=True)
    h, w = int(x4.shape[1]), int(x4.shape[2])
    if size > h or size > w:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w} faces")
    top, left = (h - size) // 2, (w - size) // 2
    return restore(x4[:, top:top + size, left:left + size, :])

"""Training-time augmentation of normalised faces, in ``keras.ops`` (TensorFlow and JAX alike).

:func:`augment_faces` turns normalised 60x60 faces into 48x48 training crops with one random affine
warp per image: a crop offset (the paper's random 48x48 crop of the 60x60 face), a horizontal flip,
and optionally a small rotation, scale change and extra translation, followed by optional random
erasing (Zhong et al., 2020). With rotation, scale, translation and erasing all off, it is exactly
the paper's random crop and flip (integer offsets, so bilinear sampling copies pixels).

The randomness comes in as an argument ``u``: ``[B, NUM_UNIFORMS]`` uniform numbers in [0, 1) drawn
by the caller (``tf.random.stateless_uniform`` in the ``tf.data`` pipeline, NumPy in the
backend-neutral :class:`keras.utils.PyDataset`), so a batch's augmentation depends only on
``(seed, epoch, step)`` on every backend and a resumed run draws the same crops.
"""

from __future__ import annotations

import dataclasses
import math

from keras import ops

#: Uniform numbers per image: crop y, crop x, flip, angle, scale, shift y, shift x, erase?, erase
#: area, erase aspect, erase y, erase x.
NUM_UNIFORMS = 12


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What :func:`augment_faces` draws. Defaults are the paper's: random crop and flip only."""

    crop_size: int = 48
    flip: bool = True
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    scale: float = 0.0  # zoom factor uniform in [1 - scale, 1 + scale]
    translation: float = 0.0  # extra shift in pixels, uniform in [-translation, translation]
    erasing: float = 0.0  # probability of erasing one random rectangle (set to 0, the mean)
    erasing_area: tuple = (0.02, 0.2)  # fraction of the crop's area
    erasing_aspect: float = 3.0  # aspect ratio uniform in log space in [1/a, a]

    @classmethod
    def from_config(cls, train_config, crop_size=48):
        """The augmentation a :class:`~fer_tf.config.TrainConfig` describes (``flip``, ``rotation``,
        ``scale``, ``translation``, ``random_erasing``) for crops of ``crop_size``."""
        return cls(crop_size=crop_size, flip=train_config.flip, rotation=train_config.rotation,
                   scale=train_config.scale, translation=train_config.translation,
                   erasing=train_config.random_erasing)

    @property
    def is_crop_flip_only(self):
        return not (self.rotation or self.scale or self.translation or self.erasing)


def as_augmentation(augment):
    """What a feeder's ``augment`` argument means: True, the paper's crop and flip
    (``Augmentation()``); False or None, no augmentation (None: the centre crop); an
    :class:`Augmentation`, itself."""
    if isinstance(augment, Augmentation):
        return augment
    return Augmentation() if augment else None


def _affine_rows(u, size, crop, aug: Augmentation):
    """``[B, 8]`` transforms mapping output pixels of a ``size`` image to input pixels."""
    margin = size - crop
    # integer crop offsets as in the paper: the crop's top-left corner is uniform in 0..margin
    oy = ops.minimum(ops.floor(u[:, 0] * (margin + 1)), margin) - margin / 2
    ox = ops.minimum(ops.floor(u[:, 1] * (margin + 1)), margin) - margin / 2
    fx = ops.where(u[:, 2] < 0.5, -1.0, 1.0) if aug.flip else ops.ones_like(u[:, 2])
    angle = (2.0 * u[:, 3] - 1.0) * (aug.rotation * math.pi / 180.0)
    zoom = 1.0 + (2.0 * u[:, 4] - 1.0) * aug.scale
    ty = oy + (2.0 * u[:, 5] - 1.0) * aug.translation
    tx = ox + (2.0 * u[:, 6] - 1.0) * aug.translation
    c = (size - 1) / 2.0
    cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
    # input = centre + R(angle) / zoom @ (flip * (x - c), y - c) + shift
    a0, a1 = cos * fx, -sin
    b0, b1 = sin * fx, cos
    a2 = c + tx - a0 * c - a1 * c
    b2 = c + ty - b0 * c - b1 * c
    zero = ops.zeros_like(a0)
    return ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def _erase(x, u, aug: Augmentation):
    """Zero one random rectangle in a fraction ``aug.erasing`` of the images ``[B, S, S, 1]``."""
    size = x.shape[1]
    lo, hi = aug.erasing_area
    area = (lo + (hi - lo) * u[:, 8]) * size * size
    log_a = math.log(aug.erasing_aspect)
    aspect = ops.exp((2.0 * u[:, 9] - 1.0) * log_a)
    h = ops.minimum(ops.sqrt(area * aspect), float(size))
    w = ops.minimum(ops.sqrt(area / aspect), float(size))
    top = u[:, 10] * (size - h)
    left = u[:, 11] * (size - w)
    grid = ops.arange(size, dtype="float32")
    in_rows = (grid[None, :] >= top[:, None]) & (grid[None, :] < (top + h)[:, None])  # [B, S]
    in_cols = (grid[None, :] >= left[:, None]) & (grid[None, :] < (left + w)[:, None])
    active = u[:, 7] < aug.erasing
    box = in_rows[:, :, None] & in_cols[:, None, :] & active[:, None, None]  # [B, S, S]
    return ops.where(box[..., None], ops.zeros_like(x), x)


def augment_faces(x, u, aug: Augmentation = Augmentation()):
    """Random training crops ``[B, crop, crop, 1]`` float32 of normalised faces ``x`` ``[B, S, S, 1]``.

    ``u`` is ``[B, NUM_UNIFORMS]`` uniform numbers in [0, 1) (see the module docstring). Pixels that
    a rotation or zoom pulls from outside the face repeat the nearest edge pixel.
    """
    x = ops.cast(x, "float32")
    if len(x.shape) == 3:
        x = x[..., None]
    u = ops.cast(u, "float32")
    size, crop = int(x.shape[1]), int(aug.crop_size)
    if crop > size or int(x.shape[2]) != size:
        raise ValueError(f"cannot crop {crop}x{crop} from faces of shape {tuple(x.shape[1:])}")
    transform = _affine_rows(u, size, crop, aug)
    warped = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest",
                                        data_format="channels_last")
    start = (size - crop) // 2
    out = warped[:, start:start + crop, start:start + crop, :]
    if aug.erasing > 0:
        out = _erase(out, u, aug)
    return out


def flip_horizontal(x):
    """Mirror ``[B, H, W, C]`` images left to right (test-time flip averaging)."""
    return ops.flip(x, axis=2)

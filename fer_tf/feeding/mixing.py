"""Mixing augmentations for classification batches: mixup and CutMix (not in the paper).

- **mixup** (Zhang et al., ICLR 2018): image ``i`` becomes ``lam x_i + (1 - lam) x_j`` and its
  target ``lam t_i + (1 - lam) t_j``;
- **CutMix** (Yun et al., ICCV 2019): a box of image ``j`` is pasted into image ``i``, and
  ``lam`` is the share of image ``i`` left visible.

``j`` is row ``i``'s partner in a permutation of the batch; ``lam`` is drawn per row from
``Beta(alpha, alpha)``, and a row is mixed at all with probability ``probability`` (else
``lam = 1``). What to mix with what (:func:`mix_plan`) is decided in NumPy from the batch's
augmentation seed, so both feed backends and a resumed run mix the same rows the same way; the
pixels are mixed after augmentation by :func:`mix_images`, in ``keras.ops``. Targets
(:func:`mixed_targets`) are mixed in NumPy: the (smoothed) one-hot labels, or the soft targets of
distillation when there are some. The integer labels stay the rows' own (the training accuracy
Keras logs compares them with the prediction for the mixed image, so it reads lower than without
mixing; validation is unmixed).

Only classification batches are mixed (FER2013 pretraining): a mixed face has no single identity or
expression for the metric loss's tuples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fer_tf.config import check_mixing
#: The target keys a mixed batch carries to the feed backend; removed once the pixels are mixed.
PARTNER, LAMBDA, BOX = "mix_partner", "mix_lambda", "mix_box"
_SALT = 0x6D6978  # keeps the mixing draws apart from the augmentation's, which use the same seed


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Which mixing, ``alpha`` of its Beta distribution, the probability that a row is mixed."""

    kind: str = "none"
    alpha: float = 1.0
    probability: float = 1.0

    def __post_init__(self):
        check_mixing(self.kind, self.alpha, self.probability)

    @classmethod
    def from_config(cls, train_config):
        """The mixing a :class:`~fer_tf.config.TrainConfig` describes (``mixing``, ``mixing_alpha``,
        ``mixing_probability``)."""
        return cls(train_config.mixing, train_config.mixing_alpha, train_config.mixing_probability)

    @property
    def active(self):
        return self.kind != "none" and self.probability > 0.0


def mix_plan(mixing: Mixing, rows, seed, size=48):
    """``{PARTNER: int32 [rows], LAMBDA: float32 [rows], BOX: int32 [rows, 4]}`` for one batch.

    ``seed``: the batch's augmentation seed ``[2]``. ``BOX`` is ``(top, left, bottom, right)`` of
    the pasted region (CutMix; empty for mixup), and for CutMix ``LAMBDA`` is the visible share of
    the row's own image after clipping the box to the ``size x size`` crop."""
    rng = np.random.default_rng([_SALT, *np.asarray(seed, np.int64).reshape(-1).tolist()])
    partner = rng.permutation(rows).astype(np.int32)
    lam = rng.beta(mixing.alpha, mixing.alpha, rows)
    mixed = rng.random(rows) < mixing.probability
    lam = np.where(mixed & (partner != np.arange(rows)), lam, 1.0)
    box = np.zeros((rows, 4), np.int32)
    if mixing.kind == "cutmix":
        side = np.round(np.sqrt(1.0 - lam) * size)  # a square box, its area the partner's share
        cy, cx = rng.integers(0, size, rows), rng.integers(0, size, rows)
        top, bottom = np.clip(cy - side // 2, 0, size), np.clip(cy + side - side // 2, 0, size)
        left, right = np.clip(cx - side // 2, 0, size), np.clip(cx + side - side // 2, 0, size)
        box = np.stack([top, left, bottom, right], 1).astype(np.int32)
        box[(bottom <= top) | (right <= left)] = 0  # nothing pasted: no box
        lam = 1.0 - (bottom - top) * (right - left) / float(size * size)
    return {PARTNER: partner, LAMBDA: lam.astype(np.float32), BOX: box}


def mixed_targets(plan, label_ids, num_classes, label_smoothing=0.0, soft_targets=None):
    """float32 ``[rows, C]``: ``lam t_i + (1 - lam) t_partner`` with ``t`` the soft targets, or
    else the one-hot labels smoothed as the cross-entropy would (``(1 - s) one_hot + s / C``)."""
    if soft_targets is None:
        t = np.eye(num_classes, dtype=np.float32)[np.asarray(label_ids)]
        if label_smoothing:
            t = t * (1.0 - label_smoothing) + label_smoothing / num_classes
    else:
        t = np.asarray(soft_targets, np.float32)
    lam = plan[LAMBDA][:, None]
    return (lam * t + (1.0 - lam) * t[plan[PARTNER]]).astype(np.float32)


def mix_images(images, plan):
    """Mix a batch's images ``[B, H, W, 1]`` as ``plan`` (tensors of :func:`mix_plan`) says:
    mixup where every box is empty, CutMix elsewhere. In ``keras.ops`` (tf.data maps, JAX)."""
    from keras import ops  # deferred: the backend

    x = ops.convert_to_tensor(images)
    other = ops.take(x, ops.cast(plan[PARTNER], "int32"), axis=0)
    box = ops.cast(plan[BOX], "int32")
    lam = ops.reshape(ops.cast(plan[LAMBDA], x.dtype), (-1, 1, 1, 1))
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    ys = ops.reshape(ops.arange(height, dtype="int32"), (1, -1, 1, 1))
    xs = ops.reshape(ops.arange(width, dtype="int32"), (1, 1, -1, 1))
    top, left = ops.reshape(box[:, 0], (-1, 1, 1, 1)), ops.reshape(box[:, 1], (-1, 1, 1, 1))
    bottom, right = ops.reshape(box[:, 2], (-1, 1, 1, 1)), ops.reshape(box[:, 3], (-1, 1, 1, 1))
    inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
    has_box = ops.reshape((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]), (-1, 1, 1, 1))
    own = ops.where(has_box, ops.cast(ops.logical_not(inside), x.dtype), lam)
    return own * x + (1.0 - own) * other


def split_plan(targets):
    """``(targets without the mixing keys, the plan or None)``."""
    if PARTNER not in targets:
        return targets, None
    plan = {k: targets[k] for k in (PARTNER, LAMBDA, BOX)}
    return {k: v for k, v in targets.items() if k not in plan}, plan

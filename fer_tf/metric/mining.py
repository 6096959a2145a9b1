"""Online positive mining (Algorithm 1 of Liu et al., CVPR-W 2017) as swappable miners.

A *tuple* holds ``M`` positives (same expression as the query, the query included) and ``N``
negatives (other expressions).  Algorithm 1 drops the positives that lie farther from the
positive centre than the nearest negative does, so that the (N+M)-tuple clusters loss is not
dominated by outlying positives:

1. ``c+`` = mean of the valid positives;
2. ``D*`` = distance from ``c+`` to the nearest valid negative;
3. keep every valid positive ``f+`` with ``D(f+, c+) <= D*``; if that keeps none (``M* = 0``),
   keep the positive nearest to ``c+``;
4. the updated centre is the mean of the kept positives.

Ties in the fallback (beyond the paper)
    Algorithm 1 keeps "the" nearest positive and does not say what happens when several are equally
    near.  That is not a corner case: with exactly two valid positives both lie at the same
    distance from their midpoint ``c+``, so whenever both are beyond the nearest negative, float
    rounding alone would pick one, that one would become the centre and its pull term would vanish.
    Our rule: the fallback keeps *every* valid positive whose distance is within a relative
    ``tie_tolerance`` (default 1e-4) of the smallest, ``D(f+, c+) - D_min <= tie_tolerance * D_min``.
    Two valid positives beyond the nearest negative are therefore both kept (the centre stays their
    midpoint and both are pulled towards it); a clear nearest positive is kept alone, as in the
    paper.  ``tie_tolerance=0`` keeps exact ties only.

Miners work at embedding level on gathered tuples and are swappable parts of the losses
(:mod:`fer_tf.metric.losses`): :class:`OnlinePositiveMiner` is Algorithm 1, :class:`KeepAllPositives`
(what ``miner=None`` means) keeps every valid positive.  A miner's decision is discrete: no
gradient flows through its mask, only through the centre.  The paper's *identity-aware negative
mining* works at sampling level instead (which images form a tuple): see
:mod:`fer_tf.data.sampling`.

``D`` is a :class:`fer_tf.metric.distances.Distance`, by default the paper's squared Euclidean distance
(a sum of squared differences: finite gradients everywhere, coincident points included).

Padded tuples: the optional ``positive_mask`` ``[B, M]`` and ``negative_mask`` ``[B, N]`` mark
valid entries with 1 and padding with 0.  Padded entries are replaced by zeros with ``where``
before any arithmetic, so even non-finite padding values cannot leak into the result or its
gradient.  With no valid negatives every valid positive is kept; with no valid positives the mask
row is all 0 and the centre is 0; the losses ignore such tuples.

Only ``keras.ops`` is used, with static shapes and no data-dependent Python control flow, so the
miners run on the TensorFlow and JAX backends (``tests/test_backends.py``), eagerly, in
``tf.function``/``jax.jit`` and under XLA.
"""

import inspect

import numpy as np
from keras import backend, ops, saving

from fer_tf.metric import distances
from fer_tf.errors import ConfigError
from fer_tf.metric.parts import Part, registered_class, resolve

__all__ = [
    "PositiveMiner",
    "OnlinePositiveMiner",
    "KeepAllPositives",
    "online_positive_mining",
    "prepare_tuples",
    "masked_mean",
    "squared_distances",
    "get",
]

_BIG = float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------
# Tensor helpers shared with fer_tf.metric.losses
# --------------------------------------------------------------------------------------------


def as_float(x):
    """``x`` as a float32 tensor of the current backend."""
    return ops.cast(ops.convert_to_tensor(x), "float32")


def validity(mask, points):
    """A float32 0/1 mask with the shape of ``points`` minus its last axis (all ones for None)."""
    if mask is None:
        return ops.ones_like(points[..., 0])
    mask = ops.convert_to_tensor(mask)
    if backend.standardize_dtype(mask.dtype) == "bool":
        return ops.cast(mask, "float32")
    return ops.cast(mask > 0, "float32")


def check_rank(name, x, rank):
    ndim = getattr(x, "ndim", None)
    if ndim is not None and ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(x.shape)}")


def zero_padding(points, mask):
    """``points`` ``[..., K, d]`` with the entries whose ``mask`` ``[..., K]`` is 0 set to 0."""
    return ops.where(mask[..., None] > 0, points, ops.zeros_like(points))


def prepare_tuples(positives, negatives, positive_mask=None, negative_mask=None):
    """Float32 ``(positives, negatives, pmask, nmask)`` with padded rows zeroed and 0/1 masks."""
    positives = as_float(positives)
    negatives = as_float(negatives)
    check_rank("positives", positives, 3)
    check_rank("negatives", negatives, 3)
    pmask = validity(positive_mask, positives)
    nmask = validity(negative_mask, negatives)
    return zero_padding(positives, pmask), zero_padding(negatives, nmask), pmask, nmask


def masked_mean(points, mask):
    """Mean of ``points`` ``[B, K, d]`` over the entries with ``mask`` ``[B, K]`` = 1; 0 when none."""
    total = ops.sum(points * mask[..., None], axis=-2)
    count = ops.sum(mask, axis=-1, keepdims=True)
    return total / ops.maximum(count, 1.0)


def squared_distances(points, centre):
    """Squared Euclidean distances from ``points`` ``[B, K, d]`` to ``centre`` ``[B, d]``: ``[B, K]``."""
    return distances.SquaredEuclidean().to_centre(points, centre)


# --------------------------------------------------------------------------------------------
# Miners
# --------------------------------------------------------------------------------------------


class PositiveMiner(Part):
    """Base class: chooses which valid positives of each tuple enter the loss.

    Subclasses implement :meth:`keep`; :meth:`mine` adds the centre of the kept positives and
    ``__call__`` takes raw (possibly padded) tuples.
    """

    def keep(self, positives, negatives, pmask, nmask):
        """The ``[B, M]`` float32 0/1 keep mask, on tuples prepared by :func:`prepare_tuples`."""
        raise NotImplementedError

    def mine(self, positives, negatives, pmask, nmask):
        """``(mask, centre)`` on prepared tuples: the keep mask (no gradient) and the mean of the
        kept positives (differentiable with respect to them; 0 for a tuple without any)."""
        mask = ops.stop_gradient(self.keep(positives, negatives, pmask, nmask))
        return mask, masked_mean(positives, mask)

    def __call__(self, positives, negatives, positive_mask=None, negative_mask=None):
        """``(mask [B, M], centre [B, d])`` for raw tuples; see :func:`online_positive_mining`."""
        return self.mine(*prepare_tuples(positives, negatives, positive_mask, negative_mask))


@saving.register_keras_serializable(package="fer_tf")
class KeepAllPositives(PositiveMiner):
    """No mining: every valid positive is kept (``miner=None`` in the losses)."""

    def keep(self, positives, negatives, pmask, nmask):
        return pmask


@saving.register_keras_serializable(package="fer_tf")
class OnlinePositiveMiner(PositiveMiner):
    """Algorithm 1 (online positive mining), with a swappable distance ``D``.

    Args:
        distance: a :class:`fer_tf.metric.distances.Distance` (or its config dict); default the
            squared Euclidean distance of the paper.
        tie_tolerance: relative tolerance of the fallback's tie rule (beyond the paper; see the
            module docstring): when no positive is within ``D*``, every valid positive within
            ``tie_tolerance * D_min`` of the nearest one's distance ``D_min`` is kept.

    The decision is computed on ``stop_gradient`` copies of the embeddings: it is discrete, so
    nothing of it needs to be on the gradient tape.
    """

    def __init__(self, distance=None, tie_tolerance=1e-4):
        self.distance = distances.get(distance)
        self.tie_tolerance = float(tie_tolerance)
        if not self.tie_tolerance >= 0.0:
            raise ConfigError(f"tie_tolerance must be >= 0, got {tie_tolerance!r}")

    def keep(self, positives, negatives, pmask, nmask):
        positives = ops.stop_gradient(positives)
        negatives = ops.stop_gradient(negatives)

        centre = masked_mean(positives, pmask)
        d_pos = self.distance.to_centre(positives, centre)  # [B, M]
        d_neg = self.distance.to_centre(negatives, centre)  # [B, N]

        valid_pos = pmask > 0
        valid_neg = nmask > 0
        nearest_negative = ops.min(
            ops.where(valid_neg, d_neg, ops.full_like(d_neg, _BIG)), axis=-1, keepdims=True
        )
        has_negative = ops.any(valid_neg, axis=-1, keepdims=True)
        keep = ops.logical_and(
            valid_pos, ops.logical_or(d_pos <= nearest_negative, ops.logical_not(has_negative))
        )

        # Fallback (M* = 0): keep the valid positives nearest to the centre, ties included.
        nearest = ops.min(ops.where(valid_pos, d_pos, ops.full_like(d_pos, _BIG)), axis=-1, keepdims=True)
        fallback = ops.logical_and(valid_pos, d_pos - nearest <= self.tie_tolerance * nearest)
        keep = ops.where(ops.any(keep, axis=-1, keepdims=True), keep, fallback)
        return ops.cast(keep, "float32")

    def get_config(self):
        return {"distance": saving.serialize_keras_object(self.distance),
                "tie_tolerance": self.tie_tolerance}


def get(identifier, distance=None):
    """A :class:`PositiveMiner` from a loss's ``miner`` argument or ``ModelConfig.miner``.

    ``"online"`` gives :class:`OnlinePositiveMiner` with ``distance``; ``None`` (or ``"none"``)
    gives :class:`KeepAllPositives`; another string names a registered miner class
    (``"OnlinePositiveMiner"``, ``"KeepAllPositives"``, or one of your own registered with
    ``keras.saving.register_keras_serializable``), built with ``distance`` when it takes one; a
    miner instance or a Keras config dict is used as is.
    """
    if isinstance(identifier, str):
        name = identifier.lower()
        if name == "online":
            return OnlinePositiveMiner(distance)
        if name == "none":
            return KeepAllPositives()
        cls = registered_class(identifier, PositiveMiner)
        if "distance" in inspect.signature(cls).parameters:
            return cls(distance=distance)
        return cls()
    return resolve(identifier, PositiveMiner, KeepAllPositives)


def online_positive_mining(positives, negatives, positive_mask=None, negative_mask=None):
    """Algorithm 1 (online positive mining) for a batch of tuples.

    Args:
        positives: ``[B, M, d]`` float32 embeddings of the positives of each tuple.
        negatives: ``[B, N, d]`` float32 embeddings of the negatives of each tuple.
        positive_mask: optional ``[B, M]`` (1/True valid, 0/False padding).
        negative_mask: optional ``[B, N]`` (1/True valid, 0/False padding).

    Returns:
        ``(mask, centre)``: ``mask`` ``[B, M]`` float32, 1 for kept positives and 0 for dropped or
        padded ones (a discrete decision, no gradient flows through it); ``centre`` ``[B, d]``, the
        mean of the kept positives (the updated ``c+``), differentiable with respect to them, and
        0 for a tuple without valid positives.
    """
    return OnlinePositiveMiner()(positives, negatives, positive_mask, negative_mask)

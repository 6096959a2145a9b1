"""Online positive mining (Algorithm 1 of Liu et al., CVPR-W 2017).

A *tuple* holds ``M`` positives (same expression as the query, the query included) and ``N``
negatives (other expressions).  Algorithm 1 drops the positives that lie farther from the
positive centre than the nearest negative does, so that the (N+M)-tuple clusters loss is not
dominated by outlying positives:

1. ``c+`` = mean of the valid positives;
2. ``D*`` = squared distance from ``c+`` to the nearest valid negative;
3. keep every valid positive ``f+`` with ``D(f+, c+) <= D*``; if that keeps none, keep the
   positive nearest to ``c+``;
4. the updated centre is the mean of the kept positives.

All distances are *squared* Euclidean distances, computed as sums of squared differences (never
with a square root and never in the expanded ``|a|^2 - 2ab + |b|^2`` form, which can go
negative), so gradients are finite everywhere, including for coincident points.

Padded tuples: the optional ``positive_mask`` ``[B, M]`` and ``negative_mask`` ``[B, N]`` mark
valid entries with 1 and padding with 0.  Padded entries are replaced by zeros before any
arithmetic (with ``tf.where``, so even non-finite padding values cannot leak into the result or
its gradient).  With no valid negatives every valid positive is kept; with no valid positives the
mask row is all 0 and the centre is 0; the losses ignore such tuples.

Everything is written with static shapes and no data-dependent control flow, so it runs eagerly,
in ``tf.function`` and under XLA.
"""

import tensorflow as tf

__all__ = ["online_positive_mining", "squared_distances"]


def squared_distances(points, centre):
    """Squared Euclidean distances from ``points`` ``[B, K, d]`` to ``centre`` ``[B, d]``: ``[B, K]``."""
    diff = points - tf.expand_dims(centre, axis=-2)
    return tf.reduce_sum(tf.square(diff), axis=-1)


def _as_float(x):
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _validity(mask, points):
    """A ``[B, K]`` float32 0/1 mask (all ones when ``mask`` is None)."""
    if mask is None:
        return tf.ones(tf.shape(points)[:-1], tf.float32)
    mask = tf.convert_to_tensor(mask)
    if mask.dtype == tf.bool:
        return tf.cast(mask, tf.float32)
    return tf.cast(mask > 0, tf.float32)


def _check_rank(name, x, rank):
    if x.shape.rank is not None and x.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {x.shape}")


def _prepare(positives, negatives, positive_mask, negative_mask):
    """Float32 tensors with padded rows zeroed, and float32 0/1 validity masks."""
    positives = _as_float(positives)
    negatives = _as_float(negatives)
    _check_rank("positives", positives, 3)
    _check_rank("negatives", negatives, 3)
    pmask = _validity(positive_mask, positives)
    nmask = _validity(negative_mask, negatives)
    positives = tf.where(pmask[..., None] > 0, positives, tf.zeros_like(positives))
    negatives = tf.where(nmask[..., None] > 0, negatives, tf.zeros_like(negatives))
    return positives, negatives, pmask, nmask


def masked_mean(points, mask):
    """Mean of ``points`` ``[B, K, d]`` over the entries with ``mask`` ``[B, K]`` = 1; 0 when none."""
    total = tf.reduce_sum(points * mask[..., None], axis=-2)
    count = tf.reduce_sum(mask, axis=-1, keepdims=True)
    return total / tf.maximum(count, 1.0)


def _mining_mask(positives, negatives, pmask, nmask):
    """The keep/drop decision of Algorithm 1 (no gradient): float32 ``[B, M]``."""
    positives = tf.stop_gradient(positives)
    negatives = tf.stop_gradient(negatives)
    big = tf.constant(tf.float32.max, tf.float32)

    centre = masked_mean(positives, pmask)
    d_pos = squared_distances(positives, centre)  # [B, M]
    d_neg = squared_distances(negatives, centre)  # [B, N]

    valid_pos = pmask > 0
    valid_neg = nmask > 0
    nearest_negative = tf.reduce_min(tf.where(valid_neg, d_neg, big), axis=-1, keepdims=True)
    has_negative = tf.reduce_any(valid_neg, axis=-1, keepdims=True)
    keep = tf.logical_and(
        valid_pos, tf.logical_or(d_pos <= nearest_negative, tf.logical_not(has_negative))
    )

    # Fallback: nothing kept -> keep the valid positive nearest to the centre.
    depth = positives.shape[-2]
    if depth is None:
        depth = tf.shape(positives)[-2]
    nearest = tf.argmin(tf.where(valid_pos, d_pos, big), axis=-1, output_type=tf.int32)
    fallback = tf.logical_and(tf.one_hot(nearest, depth, dtype=tf.float32) > 0, valid_pos)
    any_kept = tf.reduce_any(keep, axis=-1, keepdims=True)
    keep = tf.where(any_kept, keep, fallback)
    return tf.stop_gradient(tf.cast(keep, tf.float32))


def mine_prepared(positives, negatives, pmask, nmask):
    """Algorithm 1 on tensors already returned by ``_prepare``: ``(mask, centre)``."""
    mask = _mining_mask(positives, negatives, pmask, nmask)
    centre = masked_mean(positives, mask)
    return mask, centre


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
    positives, negatives, pmask, nmask = _prepare(positives, negatives, positive_mask, negative_mask)
    return mine_prepared(positives, negatives, pmask, nmask)

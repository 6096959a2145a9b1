"""Distances used by the miners and the losses (backend-agnostic: ``keras.ops`` only).

A :class:`Distance` maps two broadcastable ``[..., d]`` tensors to ``[...]``; the miners and the
losses take one as a swappable part.  The paper's ``D`` is :class:`SquaredEuclidean`, computed as
a sum of squared differences: never with a square root (whose gradient is infinite at 0) and never
in the expanded ``|a|^2 - 2 a.b + |b|^2`` form (which rounding can make negative), so values and
gradients stay finite for coincident points.  Only :meth:`SquaredEuclidean.matrix`, used by the
cubic batch-all triplet benchmark loss, trades that for memory.
"""

import keras
from keras import ops

from fer_tf.metric.parts import Part, resolve

__all__ = ["Distance", "SquaredEuclidean", "get"]


class Distance(Part):
    """Base class: subclasses implement :meth:`__call__`.

    - ``distance(a, b)``: ``[...]`` from two broadcastable ``[..., d]`` tensors;
    - ``distance.to_centre(points, centre)``: ``[B, K]`` from ``[B, K, d]`` points and ``[B, d]``
      centres (one centre per row);
    - ``distance.matrix(x)``: ``[B, B]`` between every pair of rows of ``[B, d]``.
    """

    def __call__(self, a, b):
        raise NotImplementedError

    def to_centre(self, points, centre):
        return self(points, ops.expand_dims(centre, axis=-2))

    def matrix(self, x):
        return self(ops.expand_dims(x, axis=-2), ops.expand_dims(x, axis=-3))


@keras.saving.register_keras_serializable(package="fer_tf")
class SquaredEuclidean(Distance):
    """``D(a, b) = sum_k (a_k - b_k)^2`` (the paper's ``D``)."""

    def __call__(self, a, b):
        return ops.sum(ops.square(a - b), axis=-1)

    def matrix(self, x):
        """All pairs in the Gram form ``|a|^2 - 2 a.b + |b|^2``, clamped at 0.

        ``O(B^2)`` memory instead of ``O(B^2 d)``; the clamp removes the negative values rounding
        can produce (values and gradients stay finite: there is no square root).
        """
        sq = ops.sum(ops.square(x), axis=-1)
        dist = sq[:, None] - 2.0 * ops.matmul(x, ops.transpose(x)) + sq[None, :]
        return ops.maximum(dist, 0.0)


def get(identifier):
    """A :class:`Distance` from ``None`` (:class:`SquaredEuclidean`), an instance or a config dict."""
    return resolve(identifier, Distance, SquaredEuclidean)

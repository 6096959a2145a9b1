"""Reducers: per-tuple losses ``[B]`` -> the scalar batch loss (backend-agnostic).

:class:`MeanOverValid` is the reduction of every tuple loss of :mod:`fer_tf.losses`: the mean over
the tuples that can be scored (``valid`` = 1).  Invalid tuples are replaced by 0 with ``where``
*before* the sum, so a non-finite value computed for a padded tuple can reach neither the result
nor its gradient, and a batch without any valid tuple gives exactly 0.0 with a zero gradient.

:func:`scale_for_replicas` is the ``tf.distribute`` scaling Keras applies to its own losses
(divide by the number of replicas in sync, so that summing gradients over replicas averages
them); it is the identity on one replica and on the JAX and torch backends.
"""

import keras
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution

from fer_tf.parts import Part, resolve

__all__ = ["Reducer", "MeanOverValid", "mean_over_valid", "scale_for_replicas", "get"]


class Reducer(Part):
    """Base class: ``reducer(per_tuple [B], valid [B] float 0/1) -> scalar``."""

    def __call__(self, per_tuple, valid):
        raise NotImplementedError


def mean_over_valid(per_tuple, valid):
    """Mean of ``per_tuple`` over the tuples with ``valid`` = 1; 0.0 (zero gradient) when none."""
    per_tuple = ops.where(valid > 0, per_tuple, ops.zeros_like(per_tuple))
    return ops.sum(per_tuple) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="fer_tf")
class MeanOverValid(Reducer):
    """:func:`mean_over_valid` as a part."""

    def __call__(self, per_tuple, valid):
        return mean_over_valid(per_tuple, valid)


def scale_for_replicas(value):
    """``value / num_replicas_in_sync`` under a ``tf.distribute`` strategy, else ``value``.

    Delegates to the helper Keras' own losses use (``keras.src.losses.loss``), which reads the
    strategy only on the TensorFlow backend.
    """
    return scale_loss_for_distribution(value)


def get(identifier):
    """A :class:`Reducer` from ``None`` (:class:`MeanOverValid`), an instance or a config dict."""
    return resolve(identifier, Reducer, MeanOverValid)

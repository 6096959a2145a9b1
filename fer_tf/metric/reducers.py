"""Reducers: per-tuple losses ``[B]`` -> the scalar batch loss (backend-agnostic).

:class:`MeanOverValid` is the reduction of every tuple loss of :mod:`fer_tf.metric.losses`: the mean over
the tuples that can be scored (``valid`` = 1).  Invalid tuples are replaced by 0 with ``where``
*before* the sum, so a non-finite value computed for a padded tuple can reach neither the result
nor its gradient, and a batch without any valid tuple gives exactly 0.0 with a zero gradient.

:func:`scale_for_replicas` is the ``tf.distribute`` scaling Keras applies to its own losses
(divide by the number of replicas in sync, so that summing gradients over replicas averages
them); it is the identity on one replica and on the JAX backend.
"""

import sys

import keras
from keras import ops

from fer_tf.metric.parts import Part, resolve

__all__ = ["Reducer", "MeanOverValid", "mean_over_valid", "replicas_in_sync", "scale_for_replicas", "get"]


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


def replicas_in_sync():
    """Replicas of the enclosing ``tf.distribute`` strategy: 1 outside one, and always 1 on the JAX
    backend (``keras.distribution`` hands one loss the whole global batch)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    # the TensorFlow backend has loaded TensorFlow already; this module never imports it itself
    tf = sys.modules["tensorflow"]
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def scale_for_replicas(value):
    """``value / num_replicas_in_sync`` under a ``tf.distribute`` strategy, else ``value``: the
    scaling Keras applies to its own losses, so that summing gradients over replicas averages them."""
    replicas = replicas_in_sync()
    if replicas > 1:
        value = ops.multiply(value, ops.cast(1.0 / replicas, value.dtype))
    return value


def get(identifier):
    """A :class:`Reducer` from ``None`` (:class:`MeanOverValid`), an instance or a config dict."""
    return resolve(identifier, Reducer, MeanOverValid)

"""The metric-learning layers of the 2B(N+M)Softmax network (Section 4): Eq. 13 and Eq. 5-8.

- :class:`ConnectingLayer` is FC4 = P1^T FC2 + P2^T FC3 (Eq. 13), joining the expression
  classification branch to the metric learning branch.
- :class:`AdaptiveThreshold` is the learned H(f1, f2) = T(f1, f2) - D(f1, f2) (Eq. 5-8).

Only ``keras`` / ``keras.ops``: the layers build and run on the TensorFlow and JAX backends
(``tests/test_backends.py``).  The backbone's convolutional blocks are in :mod:`fer_tf.model.blocks`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

PACKAGE = "fer_tf"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConnectingLayer(layers.Layer):
    """FC4 = P1^T FC2 + P2^T FC3 + bias (Eq. 13).

    Called on ``[fc2, fc3]``; ``P1`` maps the expression branch's last hidden layer and ``P2`` the
    metric branch's first layer into one space, so the metric loss also shapes the EC features.
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        fc2_shape, fc3_shape = input_shape
        self.p1 = self.add_weight(
            name="p1", shape=(fc2_shape[-1], self.units), initializer=self.kernel_initializer
        )
        self.p2 = self.add_weight(
            name="p2", shape=(fc3_shape[-1], self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        fc2, fc3 = inputs
        return ops.matmul(fc2, self.p1) + ops.matmul(fc3, self.p2) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveThreshold(layers.Layer):
    """The learned threshold H(f1, f2) = T(f1, f2) - D(f1, f2) of Eq. 5-8.

    ``H = -1/2 ||f1 L_A||^2 - 1/2 ||f2 L_A||^2 + (f1 L_B).(f2 L_B) + c.(f1 + f2) + b``

    Weights, in this order: ``L_A [d, units]``, ``L_B [d, units]``, ``c [d]``, ``b`` (scalar).
    A = -L_A L_A^T is negative and B = L_B L_B^T positive semi-definite by construction. (The paper
    states the opposite signs; that is an erratum: with them H would *grow* with the distance.)
    With L_A = L_B = L, c = 0 and b = T, H = T - 1/2 ||(f1 - f2) L||^2.

    Initialisation makes training start as a fixed-threshold loss: L_A = L_B = ``initial_scale`` * I
    (a truncated identity when units != d), c = 0, b = ``initial_threshold``; so at step 0
    H = b - s^2/2 ||f1 - f2||^2. The defaults (b = 2, s = 2) suit L2-normalised embeddings (squared
    distances in [0, 4]): the hinge max(0, l H + 1) then asks positives to lie within a squared
    distance of 0.5 of their centre and negatives beyond 1.5.

    H is part of the loss, so the layer computes in float32 unless a ``dtype`` is given, also under
    a mixed-precision global policy (its inputs are cast to float32).
    """

    def __init__(self, units=None, initial_threshold=2.0, initial_scale=2.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = None if units is None else int(units)
        self.initial_threshold = float(initial_threshold)
        self.initial_scale = float(initial_scale)

    def build(self, f1_shape, f2_shape=None):
        d = int(f1_shape[-1])
        units = self.units or d
        self.units = units
        scale = self.initial_scale

        def scaled_eye(shape, dtype=None):
            return ops.eye(shape[0], shape[1], dtype=dtype) * scale

        self.L_A = self.add_weight(name="L_A", shape=(d, units), initializer=scaled_eye)
        self.L_B = self.add_weight(name="L_B", shape=(d, units), initializer=scaled_eye)
        self.c = self.add_weight(name="c", shape=(d,), initializer="zeros")
        self.b = self.add_weight(
            name="b", shape=(), initializer=keras.initializers.Constant(self.initial_threshold)
        )

    def call(self, f1, f2):
        a1 = ops.matmul(f1, self.L_A)
        a2 = ops.matmul(f2, self.L_A)
        b1 = ops.matmul(f1, self.L_B)
        b2 = ops.matmul(f2, self.L_B)
        quadratic = -0.5 * ops.sum(a1 * a1, axis=-1) - 0.5 * ops.sum(a2 * a2, axis=-1)
        cross = ops.sum(b1 * b2, axis=-1)
        linear = ops.sum((f1 + f2) * self.c, axis=-1)
        return quadratic + cross + linear + self.b

    def compute_output_shape(self, f1_shape, f2_shape=None):
        return tuple(f1_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            initial_threshold=self.initial_threshold,
            initial_scale=self.initial_scale,
        )
        return config

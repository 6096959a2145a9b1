"""Optimizers with a smaller learning rate for some variables (e.g. a pretrained backbone).

Keras 3 optimizers have one learning rate. Fine-tuning often wants the pretrained backbone to move
more slowly than the freshly initialised heads; scaling the *gradients* would not do it under Adam
(its update is invariant to the gradient's scale), so these subclasses scale the learning rate
itself, per variable, in ``update_step``. The variables are named by their Keras paths (e.g.
``conv1_conv/kernel``), so the setting survives saving and loading a ``.keras`` checkpoint.
Backend-agnostic: the scale is looked up by the variable's index in the optimizer, which every
backend passes through ``update_step``.
"""

from __future__ import annotations

import keras

PACKAGE = "fer_tf"


class _ScaledLearningRate:
    """Mixin: ``learning_rate * lr_scale`` for the variables in ``scaled_paths``."""

    def __init__(self, *args, scaled_paths=(), lr_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.scaled_paths = tuple(scaled_paths)
        self.lr_scale = float(lr_scale)
        self._scales = []

    def build(self, variables):
        super().build(variables)
        wanted = set(self.scaled_paths)
        self._scales = [self.lr_scale if v.path in wanted else 1.0 for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[self._get_variable_index(variable)] if self._scales else 1.0
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": list(self.scaled_paths), "lr_scale": self.lr_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledAdam(_ScaledLearningRate, keras.optimizers.Adam):
    """:class:`keras.optimizers.Adam` with ``lr_scale`` x the learning rate for ``scaled_paths``."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledAdamW(_ScaledLearningRate, keras.optimizers.AdamW):
    """:class:`keras.optimizers.AdamW` with ``lr_scale`` x the learning rate for ``scaled_paths``
    (the decoupled weight decay is not scaled)."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaledSGD(_ScaledLearningRate, keras.optimizers.SGD):
    """:class:`keras.optimizers.SGD` with ``lr_scale`` x the learning rate for ``scaled_paths``."""


_PLAIN = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}
_SCALED = {"adam": ScaledAdam, "adamw": ScaledAdamW, "sgd": ScaledSGD}


def optimizer_class(name, scaled=False):
    """The optimizer class for ``name`` ("adam", "adamw", "sgd"), the scaled one if ``scaled``."""
    return (_SCALED if scaled else _PLAIN)[name]

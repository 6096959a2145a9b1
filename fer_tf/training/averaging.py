"""Stochastic weight averaging (not in the paper; Izmailov et al., UAI 2018).

:class:`WeightAverage` keeps the running mean of a model's weights at the end of each epoch from
``start_epoch`` on (the constant-rate tail of ``TrainConfig.swa_epochs``); its state travels in the
training checkpoint, so a resumed run averages the same epochs. The mean of weights is not the mean
of batch-norm statistics: :func:`recompute_batch_norm` estimates them afresh for the averaged
weights, as the mean of the per-batch statistics over training batches.
"""

from __future__ import annotations

import io

import keras
import numpy as np


class WeightAverage(keras.callbacks.Callback):
    """Running mean of ``model.get_weights()`` over the ends of epochs ``start_epoch + 1, ...``."""

    def __init__(self, start_epoch):
        super().__init__()
        self.start_epoch = int(start_epoch)
        self.average, self.count = None, 0

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        weights = self.model.get_weights()
        if self.average is None:
            self.average = [np.array(w, np.float64) for w in weights]
        else:
            for mean, w in zip(self.average, weights):
                mean += (w - mean) / (self.count + 1)
        self.count += 1

    def averaged_weights(self):
        """The mean weights in the model's own dtypes (``None`` before the first averaged epoch)."""
        if self.average is None:
            return None
        return [mean.astype(w.dtype) for mean, w in zip(self.average, self.model.get_weights())]

    def to_bytes(self):
        buffer = io.BytesIO()
        np.savez(buffer, count=np.int64(self.count), *([] if self.average is None else self.average))
        return buffer.getvalue()

    def restore(self, data):
        """Continue from :meth:`to_bytes`'s output (``None``: nothing averaged yet)."""
        self.average, self.count = None, 0
        if data is None:
            return
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            self.count = int(archive["count"])
            arrays = [archive[f"arr_{i}"] for i in range(len(archive.files) - 1)]
        self.average = arrays or None


def batch_norm_layers(layer):
    """Every ``BatchNormalization`` layer in ``layer``, nested models included."""
    found = [layer] if isinstance(layer, keras.layers.BatchNormalization) else []
    for child in getattr(layer, "layers", ()):
        found += batch_norm_layers(child)
    return found


def recompute_batch_norm(model, batches, steps):
    """Set each batch-norm layer's moving statistics to the mean of its per-batch statistics over
    the first ``steps`` batches of ``batches`` (``(inputs, targets)`` pairs, as ``fit`` takes).
    Returns the number of batches used; a model without batch norm is left as it is."""
    norms = batch_norm_layers(model)
    if not norms:
        return 0
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
        bn.moving_variance.assign(np.zeros(bn.moving_variance.shape, "float32"))
    used = 0
    try:
        for inputs, *_ in batches:
            if used >= steps:
                break
            for bn in norms:  # moving = k/(k+1) moving + 1/(k+1) batch: the running mean
                bn.momentum = used / (used + 1.0)
            model(inputs, training=True)
            used += 1
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
    return used

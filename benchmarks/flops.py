"""Count a Keras model's multiply-accumulates per image from its layer shapes.

Counted: ``Conv2D`` (``H_out * W_out * k_h * k_w * C_in * C_out``), ``Dense`` (``in * out``) and
:class:`fer_tf.metric.layers.ConnectingLayer` (``(d_fc2 + d_fc3) * units``), recursing into nested models.
Not counted (a few percent at most, and memory-bound rather than compute-bound): batch
normalisation, PReLU, pooling, concatenation, softmax, the normalisation of the embedding and the
loss. Training FLOPs per image = forward MACs x 2 (multiply + add) x 3 (forward, gradient with
respect to the activations, gradient with respect to the weights).
"""

from __future__ import annotations

import keras


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def layer_macs(layer):
    """Forward MACs of one layer for one image (0 for layers that are not counted)."""
    from fer_tf.metric.layers import ConnectingLayer

    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
        _, h, w, _ = layer.output.shape
        return int(h) * int(w) * kh * kw * cin * cout
    if isinstance(layer, keras.layers.Dense):
        cin, cout = (int(d) for d in layer.kernel.shape)
        return cin * cout
    if isinstance(layer, ConnectingLayer):
        return (int(layer.p1.shape[0]) + int(layer.p2.shape[0])) * layer.units
    return 0


def model_macs(model):
    """``(total forward MACs per image, {layer name: MACs})`` for the counted layers."""
    per_layer = {}
    for layer in _layers(model):
        macs = layer_macs(layer)
        if macs:
            per_layer[layer.name] = macs
    return sum(per_layer.values()), per_layer


def training_flops_per_image(model):
    """Forward MACs x 2 x 3."""
    return model_macs(model)[0] * 6

"""Building blocks of the convolutional backbone (Section 4, Fig. 4).

The convolutional groups of the inception FER network (Mollahosseini et al., WACV 2016), built
from standard Keras layers only (nothing here is registered: a saved model holds the Keras layers
these functions create), with per-channel PReLU (``PReLU(shared_axes=[1, 2])``: one slope per
channel, which is also what oneDNN runs fastest).

- :func:`conv_prelu`: convolution -> (batch norm) -> PReLU;
- :func:`inception_block`: a GoogLeNet-style inception module of four such branches.
"""

from __future__ import annotations

from keras import layers

__all__ = ["conv_prelu", "inception_block"]


def conv_prelu(x, filters, kernel_size, strides=1, batch_norm=True, name=None):
    """Convolution -> (batch norm) -> per-channel PReLU."""
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=not batch_norm,
        kernel_initializer="he_normal", name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)


def inception_block(x, b1, b3_reduce, b3, b5_reduce, b5, pool_proj, batch_norm=True, name="inception"):
    """GoogLeNet-style inception module: 1x1, 1x1->3x3, 1x1->5x5 and 3x3 pool->1x1 branches."""
    branch1 = conv_prelu(x, b1, 1, batch_norm=batch_norm, name=f"{name}_1x1")
    branch3 = conv_prelu(x, b3_reduce, 1, batch_norm=batch_norm, name=f"{name}_3x3r")
    branch3 = conv_prelu(branch3, b3, 3, batch_norm=batch_norm, name=f"{name}_3x3")
    branch5 = conv_prelu(x, b5_reduce, 1, batch_norm=batch_norm, name=f"{name}_5x5r")
    branch5 = conv_prelu(branch5, b5, 5, batch_norm=batch_norm, name=f"{name}_5x5")
    pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    pool = conv_prelu(pool, pool_proj, 1, batch_norm=batch_norm, name=f"{name}_poolproj")
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, pool])

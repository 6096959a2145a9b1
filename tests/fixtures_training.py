"""Small training setups for the tests: a tiny stand-in network and synthetic identity-labelled faces.

``pipelines/kill_resume.py --tiny`` (the kill -9 test) trains on them too.
"""

from __future__ import annotations

import numpy as np

TINY_LABELS = ("anger", "happiness", "surprise")

#: ModelConfig overrides that make every variant tiny.
TINY_MODEL = dict(ec_units=(32, 16), ml_units=16, connect_units=16, embedding_dim=8,
                  num_positives=3, num_negatives=3)


def tiny_backbone(input_size=48):
    """A two-layer stand-in for the inception backbone (fast on CPU)."""
    import keras

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = keras.layers.Conv2D(8, 5, strides=4, name="tiny_conv")(inputs)
    x = keras.layers.BatchNormalization(name="tiny_bn")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="tiny_prelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="tiny_gap")(x)
    return keras.Model(inputs, x, name="backbone")


def tiny_model(variant="2B(N+M)", labels=TINY_LABELS, **overrides):
    """A JointModel of ``variant`` on :func:`tiny_backbone` with the :data:`TINY_MODEL` sizes."""
    from fer_tf.config import ModelConfig
    from fer_tf.model.network import JointModel

    config = ModelConfig(variant=variant, labels=tuple(labels), **{**TINY_MODEL, **overrides})
    return JointModel(backbone=tiny_backbone(config.input_size), config=config, name="tiny")


def synthetic_data(subjects=6, labels=TINY_LABELS, frames=3, seed=0):
    """(table, faces uint8 [n, 60, 60]): every subject shows every expression, faces carry a
    class-dependent pattern plus noise, so a tiny network can learn something."""
    from fer_tf.data.table import FaceTable

    rng = np.random.default_rng(seed)
    rows, faces = [], []
    yy, xx = np.mgrid[0:60, 0:60]
    for s in range(subjects):
        for c, label in enumerate(labels):
            for f in range(frames):
                pattern = 127 + 60 * np.sin((c + 1) * (xx + yy) / 12.0 + s)
                faces.append(np.clip(pattern + rng.normal(0, 25, (60, 60)), 0, 255).astype(np.uint8))
                rows.append({"path": f"s{s}/{label}/{f}.png", "expression": label, "subject": f"S{s:03d}",
                             "sequence": f"S{s:03d}_{c}", "frame": f})
    return FaceTable.from_rows(rows, name="synthetic"), np.stack(faces)

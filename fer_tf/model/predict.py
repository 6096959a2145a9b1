"""A trained network's answers on faces: class probabilities (optionally flip-averaged), accuracy
and per-label recall. The one place the training code (distillation), the experiments and the
reports compute them."""

from __future__ import annotations

import numpy as np

from fer_tf.feeding.feeders import eval_dataset


def predict_probabilities(model, faces, batch_size=256, flip=False):
    """Class probabilities of the EC branch on centre-cropped faces (batched, not per image).

    ``flip=True`` averages them with those of the mirrored crops (test-time flip averaging)."""
    ec = model.ec_model() if hasattr(model, "ec_model") else model
    p = ec.predict(eval_dataset(faces, batch_size=batch_size), verbose=0)
    if flip:
        p = 0.5 * (p + ec.predict(eval_dataset(np.asarray(faces)[:, :, ::-1], batch_size=batch_size),
                                  verbose=0))
    return p


def per_label_recall(probabilities, label_ids, labels):
    """``{label: fraction of its images predicted as it}`` (labels with no image are left out)."""
    label_ids = np.asarray(label_ids)
    predicted = np.argmax(probabilities, axis=1)
    return {name: float(np.mean(predicted[label_ids == i] == i))
            for i, name in enumerate(labels) if np.any(label_ids == i)}


def accuracy(probabilities, label_ids):
    """Fraction of the rows with a label (``label_ids >= 0``) whose arg-max is that label."""
    label_ids = np.asarray(label_ids)
    keep = label_ids >= 0
    return float(np.mean(np.argmax(probabilities[keep], axis=1) == label_ids[keep]))

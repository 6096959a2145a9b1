"""Distillation targets: a trained teacher's probabilities mixed into the cross-entropy targets.

Not in the paper. Training a network again with its own (or a stronger network's) predictions as
soft targets ("born-again" networks, Furlanello et al., ICML 2018; knowledge distillation, Hinton
et al., 2015) passes on how similar the classes look to the teacher, e.g. that a face labelled
fear also looks surprised. FER2013's labels are noisy, and soft targets also soften the
penalty for the faces whose label is wrong.

The teacher's targets are computed once, before training, on each training face's centre crop
(averaged with its mirror image), and mixed with the (label-smoothed) one-hot labels::

    target = (1 - weight) * ((1 - s) * one_hot + s / C) + weight * temper(teacher, T)

Random augmentation moves the crop a few pixels at training time; the target stays the one of the
centre crop (labels are not changed by the augmentation either). ``temper`` raises the
probabilities to the power ``1 / T`` and renormalises them, which equals the softmax of the
teacher's logits divided by ``T``.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

from fer_tf.model import predict
from fer_tf.training import loop
from fer_tf.errors import ConfigError


def temper(probabilities, temperature=1.0):
    """``softmax(log(p) / T)`` row by row: ``T > 1`` softens the probabilities, ``T < 1`` sharpens."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    if temperature != 1.0:
        logits = np.log(p) / float(temperature)
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def soft_targets(label_ids, teacher_probabilities, weight=0.5, temperature=1.0, label_smoothing=0.0):
    """Cross-entropy targets ``[n, C]``: ``(1 - weight) x`` the smoothed one-hot labels ``+ weight x``
    the tempered teacher probabilities. Rows whose label is negative (not a query) get zeros."""
    label_ids = np.asarray(label_ids).reshape(-1)
    teacher = np.asarray(teacher_probabilities)
    if teacher.ndim != 2 or len(teacher) != len(label_ids):
        raise ConfigError(f"the teacher's probabilities must be [{len(label_ids)}, classes], got {teacher.shape}")
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"the distillation weight must be in [0, 1], got {weight}")
    num_classes = teacher.shape[1]
    if label_ids.max(initial=-1) >= num_classes:
        raise ConfigError(f"label id {int(label_ids.max())} is out of range for a teacher with {num_classes} classes")
    valid = label_ids >= 0
    hard = np.zeros(teacher.shape, np.float32)
    hard[np.flatnonzero(valid), label_ids[valid]] = 1.0
    hard = hard * (1.0 - label_smoothing) + label_smoothing / num_classes
    targets = (1.0 - weight) * hard + weight * temper(teacher, temperature)
    targets[~valid] = 0.0
    return targets.astype(np.float32)


def teacher_paths(value):
    """The teacher files ``train.distill_from`` names: one path, a list of paths, or paths
    separated by commas (an ensemble: their probabilities are averaged)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    paths = [pathlib.Path(str(item).strip()) for item in items if str(item).strip()]
    if not paths:
        raise ConfigError("train.distill_from names no teacher: give a .keras network, or several "
                          "(a list, or paths separated by commas) for an ensemble")
    return paths


def save_teacher_probabilities(model_path, faces, keys, labels, out):
    """Write what a trained network predicts on training faces, for later distillation without
    the network itself: ``out`` (``.npz``) holds ``probabilities`` ``[n, C]`` (float16; centre crop,
    flip-averaged, as :func:`teacher_targets` computes them), ``keys`` (one string per face, e.g.
    its path under the dataset folder: a run looks its faces up by them, and each must be there)
    and ``labels``. About 0.3 MB for FER2013's 28,709 training faces, against 6-12 MB for a
    network. Returns ``out``."""
    teacher = _load_teacher(pathlib.Path(model_path), labels)
    probabilities = predict.predict_probabilities(teacher, faces, flip=True)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, probabilities=probabilities.astype(np.float16),
                        keys=np.asarray([str(k) for k in keys]), labels=np.asarray(list(labels)))
    return out


def _load_teacher(path, labels):
    teacher = loop.load_checkpoint(path, compile=False)
    teacher_labels = list(getattr(teacher, "labels", labels))
    if teacher_labels != list(labels):
        raise ConfigError(f"the teacher {path} predicts {teacher_labels}, but this run trains "
                          f"{list(labels)}; distil from networks with the same labels in the same order")
    return teacher


def _member_probabilities(path, faces, labels, keys):
    """A teacher's flip-averaged probabilities on ``faces``: predicted by a ``.keras`` network, or
    read from a ``.npz`` of :func:`save_teacher_probabilities`, by face (every one of ``keys``
    must be stored; a run on a subset, e.g. ``--max-train-images``, takes its rows)."""
    if path.suffix.lower() != ".npz":
        print(f"distillation: predicting {len(faces)} training faces with the teacher {path}",
              file=sys.stderr)
        return predict.predict_probabilities(_load_teacher(path, labels), faces, flip=True)
    with np.load(path, allow_pickle=False) as stored:
        probabilities = stored["probabilities"].astype(np.float32)
        stored_labels, stored_keys = stored["labels"].tolist(), stored["keys"]
    if stored_labels != list(labels):
        raise ConfigError(f"the teacher probabilities {path} are over {stored_labels}, but this run "
                          f"trains {list(labels)}")
    if keys is None or len(keys) != len(faces):
        raise ConfigError(f"the teacher probabilities {path} are stored by face, but this run's "
                          f"{len(faces)} training faces are not named (keys)")
    row = {str(k): i for i, k in enumerate(stored_keys.tolist())}
    missing = [str(k) for k in keys if str(k) not in row]
    if missing:
        raise ConfigError(f"the teacher probabilities {path} were computed on other faces than this "
                          f"run's training faces: {len(missing)} of its {len(faces)} are not among the "
                          f"{len(stored_keys)} stored (e.g. {missing[0]}); make them again from the network "
                          "(fer_tf.training.distillation.save_teacher_probabilities)")
    print(f"distillation: the teacher probabilities of {path}", file=sys.stderr)
    return probabilities[[row[str(k)] for k in keys]]  # this run's faces, in its order (a subset too)


def teacher_targets(path, faces, label_ids, labels, weight=0.5, temperature=1.0, label_smoothing=0.0,
                    keys=None):
    """The soft targets of the teacher(s) at ``path`` (:func:`teacher_paths`: an ensemble when
    there are several): each a ``.keras`` network, which predicts the normalised 60x60 ``faces``
    (centre crop, flip-averaged), or a ``.npz`` of such predictions made earlier
    (:func:`save_teacher_probabilities`, checked against the faces' ``keys``). An ensemble's
    probabilities are averaged over its members. Returns ``(soft_targets, summary)``; ``summary``
    says how the teacher fares on these faces (for the run's results)."""
    paths = teacher_paths(path)
    for teacher_path in paths:
        if not teacher_path.is_file():
            raise ConfigError(f"distillation teacher {teacher_path} not found: train.distill_from must "
                              "name .keras networks (or .npz teacher probabilities), e.g. "
                              "pretrained/fer2013_backbone.keras")
    label_ids = np.asarray(label_ids)
    each, members = [], []
    for teacher_path in paths:
        probabilities = _member_probabilities(teacher_path, faces, labels, keys)
        each.append(probabilities)
        members.append({"teacher": str(teacher_path),
                        "train_accuracy": predict.accuracy(probabilities, label_ids)})
    probabilities = np.mean(each, axis=0)
    tempered = temper(probabilities, temperature)
    summary = {
        "teacher": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
        "weight": float(weight),
        "temperature": float(temperature),
        "teacher_train_accuracy": predict.accuracy(probabilities, label_ids),
        "teacher_mean_top_probability": float(np.mean(np.max(tempered, axis=1))),
    }
    if len(paths) > 1:
        summary["ensemble"] = members
    # already tempered: soft_targets' own temper(..., 1.0) only renormalises
    return soft_targets(label_ids, tempered, weight, 1.0, label_smoothing), summary

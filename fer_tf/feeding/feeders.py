"""The feeders: identity-aware, classification, evaluation and joint batches for ``model.fit``.

Each feeder is a :class:`fer_tf.feeding.feed.Feed` built from a NumPy index sampler of
:mod:`fer_tf.data.sampling` (which rows, which augmentation seeds) and the faces tensor of
:mod:`fer_tf.feeding.face_tensors`; :meth:`Feed.dataset` makes it a ``tf.data.Dataset`` under
TensorFlow and a ``keras.utils.PyDataset`` elsewhere, with the same rows and targets.

Batches follow docs/architecture.md "Batches": ``(images [X,48,48,1] float32,
{"expression": int32 [X], "tuples": int32 [X, M+N]})`` for the identity-aware feeders,
``(images [B,48,48,1], {"expression": int32 [B]})`` for classification.
"""

from __future__ import annotations

import numpy as np

from fer_tf.feeding.augment import as_augmentation
from fer_tf.feeding.face_tensors import CROP, face_tensor
from fer_tf.feeding.feed import Batch, Feed, join
from fer_tf.feeding.mixing import BOX, LAMBDA, PARTNER, mix_plan, mixed_targets
from fer_tf.data.sampling import (PAD, IdentitySampler, augment_seed, classification_batches, steps_per_epoch,
                                  to_global_indices)
from fer_tf.errors import ConfigError, DatasetError


def identity_aware_dataset(table, faces, labels, mode="in_batch", num_positives=6, num_negatives=6,
                           queries_per_batch=None, seed=0, augment=True, repeat=True, start_epoch=0,
                           preprocess=None, max_per_subject=None, balance=True, return_sampler=False,
                           min_batches=None):
    """Identity-aware training batches of an :class:`~fer_tf.data.sampling.IdentitySampler`.

    ``faces[i]`` is the face of ``table`` row i ([n, 60, 60]; float32 normalised, or uint8 that is
    normalised once here). Yields ``(images [X,48,48,1] float32, {"expression": int32 [X],
    "tuples": int32 [X, M+N]})``. With ``repeat=True`` the dataset is infinite (epochs
    ``start_epoch, start_epoch+1, ...``): pass ``steps_per_epoch=sampler.steps_per_epoch`` and
    ``initial_epoch=start_epoch`` to ``model.fit``. With ``repeat=False`` it is the one epoch
    ``start_epoch``, with a known cardinality. ``return_sampler=True`` returns ``(dataset, sampler)``.

    Under a backend other than TensorFlow the result is a ``keras.utils.PyDataset`` with the same
    batches: one epoch per pass, the next one after each of Keras' ``on_epoch_end`` calls
    (``min_batches``: consecutive epochs until a pass has at least that many batches, for
    ``steps_per_epoch`` beyond one sampler epoch).
    """
    if len(faces) != len(table):
        raise DatasetError(f"{len(faces)} faces for a table of {len(table)} rows; they must match row by row")
    sampler = IdentitySampler(table, labels, mode=mode, num_positives=num_positives,
                              num_negatives=num_negatives, queries_per_batch=queries_per_batch, seed=seed,
                              max_per_subject=max_per_subject, balance=balance)
    ds = index_batch_dataset(sampler, faces, lambda epoch: ([b] for b in sampler.epoch(epoch)),
                             sampler.steps_per_epoch, start_epoch=start_epoch, repeat=repeat,
                             augment=augment, preprocess=preprocess, min_batches=min_batches)
    return (ds, sampler) if return_sampler else ds


def _group_batch(sampler, group, global_indices):
    """A list of k index batches -> one :class:`Batch` (rows, targets, one seed per index batch)."""
    rows = np.concatenate([b.rows for b in group]).astype(np.int64)
    expression = np.concatenate([b.expression for b in group]).astype(np.int32)
    tuples = np.concatenate([b.tuples for b in group]).astype(np.int32)
    if global_indices:
        tuples = to_global_indices(tuples, len(group))
    seeds = np.stack([augment_seed(sampler.seed, b.epoch, b.step) for b in group]).astype(np.int64)
    return Batch(rows, {"expression": expression, "tuples": tuples}, seeds)


def index_batch_dataset(sampler, faces, epoch_groups, steps_per_epoch, group_size=1, start_epoch=0,
                        repeat=True, augment=True, preprocess=None, global_indices=False,
                        min_batches=None):
    """The one path from index batches to the model's batches, for :func:`identity_aware_dataset`
    and for the per-replica batches of :mod:`fer_tf.training.distribute`.

    ``epoch_groups(epoch)`` gives the epoch's elements, each a list of ``k = group_size``
    :class:`~fer_tf.data.sampling.IndexBatch` of ``sampler``. An element becomes one batch: the
    ``k`` batches' images and targets one after the other, ``[k*X, 48, 48, 1]``. Each index batch
    is augmented with its own seed from ``(seed, epoch, step)``. Tuple indices stay local to their
    own index batch (0..X-1; what a ``tf.distribute`` replica sees of its slice) or, with
    ``global_indices``, index the whole batch. ``steps_per_epoch`` elements make an epoch;
    ``repeat`` and ``min_batches`` as in :meth:`fer_tf.feeding.feed.Feed.dataset`.
    """
    k, x, w = int(group_size), sampler.batch_size, sampler.tuple_width

    def epoch_batches(epoch):
        for group in epoch_groups(epoch):
            yield _group_batch(sampler, group, global_indices)

    feed = Feed(face_tensor(faces, preprocess), epoch_batches, steps_per_epoch,
                targets={"expression": (np.int32, ()), "tuples": (np.int32, (w,))},
                augmentation=as_augmentation(augment), batch_rows=k * x, slices=k)
    return feed.dataset(start_epoch, repeat, min_batches)


def classification_dataset(faces, label_ids, batch_size=128, augment=True, shuffle=True, seed=0,
                           start_epoch=0, repeat=True, preprocess=None, soft_targets=None,
                           mixing=None, num_classes=None, label_smoothing=0.0):
    """``(images [B,48,48,1], {"expression": int32 [B]})`` batches for softmax training.

    ``soft_targets``: optional float ``[n, C]`` cross-entropy targets, one row per face (e.g.
    :func:`fer_tf.training.distillation.soft_targets`), served as ``"expression_target"`` beside the labels.

    ``augment``: True (the paper's random crop and flip), False (centre crop) or an
    :class:`fer_tf.feeding.augment.Augmentation` (rotation, zoom, shift, random erasing too).

    ``mixing``: a :class:`fer_tf.feeding.mixing.Mixing` (mixup or CutMix, not in the paper): the
    augmented images are mixed within each batch and ``"expression_target"`` holds the mixed
    targets: of ``soft_targets`` when given, else of the one-hot labels over ``num_classes``
    smoothed by ``label_smoothing`` (the cross-entropy applies no smoothing to given targets).

    Rows whose label id is negative are dropped. The faces are normalised once and kept in memory;
    epoch k's order depends only on ``(seed, k)``. One epoch has ``steps_per_epoch(n, batch_size)``
    batches (the last one may be short; under backends other than TensorFlow it is topped up with
    the epoch's first rows, so that the compiled step keeps one shape); ``repeat=True`` makes the
    dataset infinite.
    """
    label_ids = np.asarray(label_ids).astype(np.int32).reshape(-1)
    if len(label_ids) != len(faces):
        raise DatasetError(f"{len(faces)} faces but {len(label_ids)} labels; they must match")
    keep = np.flatnonzero(label_ids >= 0)
    if len(keep) == 0:
        raise DatasetError("no face has a label in the label set")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    faces = np.asarray(faces)
    if soft_targets is not None:
        soft_targets = np.asarray(soft_targets, np.float32)
        if soft_targets.ndim != 2 or len(soft_targets) != len(label_ids):
            raise DatasetError(f"soft_targets must have one row per face ([{len(label_ids)}, classes]), "
                               f"got shape {soft_targets.shape}")
    if len(keep) < len(label_ids):
        faces, label_ids = faces[keep], label_ids[keep]
        soft_targets = None if soft_targets is None else soft_targets[keep]
    n = len(label_ids)
    specs = {"expression": (np.int32, ())}
    if soft_targets is not None:
        specs["expression_target"] = (np.float32, soft_targets.shape[1:])
    augmentation = as_augmentation(augment)
    finish = None
    if mixing is not None and mixing.active:
        size = CROP if augmentation is None else augmentation.crop_size
        if soft_targets is None and not num_classes:
            raise ConfigError("mixing needs num_classes (the width of the mixed one-hot targets)")
        classes = soft_targets.shape[1] if soft_targets is not None else int(num_classes)
        specs.update({"expression_target": (np.float32, (classes,)), PARTNER: (np.int32, ()),
                      LAMBDA: (np.float32, ()), BOX: (np.int32, (4,))})

        def finish(batch):
            plan = mix_plan(mixing, len(batch.rows), batch.seeds[0], size=size)
            targets = dict(batch.targets)
            targets["expression_target"] = mixed_targets(
                plan, targets["expression"], classes, label_smoothing, targets.get("expression_target"))
            return Batch(batch.rows, {**targets, **plan}, batch.seeds)

    def epoch_batches(epoch):
        for rows, seed_ in classification_batches(n, batch_size, shuffle, seed, epoch, repeat=False):
            targets = {"expression": label_ids[rows]}
            if soft_targets is not None:
                targets["expression_target"] = soft_targets[rows]
            yield Batch(rows, targets, seed_[None])

    feed = Feed(face_tensor(faces, preprocess), epoch_batches, steps_per_epoch(n, batch_size), targets=specs,
                augmentation=augmentation, top_up=True, finish=finish)
    return feed.dataset(start_epoch, repeat)


def eval_dataset(faces, batch_size=256, preprocess=None, targets=None):
    """Centre-cropped images ``[B,48,48,1]`` in table order, no shuffling; with ``targets``
    (``{name: array [n, ...]}``, e.g. ``{"expression": ids}``) batches are ``(images, targets)``."""
    tensor = face_tensor(faces, preprocess)
    n = int(tensor.shape[0])
    targets = {name: np.asarray(value) for name, value in (targets or {}).items()}
    no_seed = np.zeros((1, 2), np.int64)  # centre crops draw nothing

    def epoch_batches(epoch):
        for i in range(0, n, batch_size):
            part = slice(i, i + batch_size)
            yield Batch(np.arange(n)[part], {name: value[part] for name, value in targets.items()}, no_seed)

    feed = Feed(tensor, epoch_batches, steps_per_epoch(n, batch_size),
                targets={name: (value.dtype, value.shape[1:]) for name, value in targets.items()})
    return feed.dataset(repeat=False)


def joint_dataset(identity, classification):
    """Joint batches: each is an identity-aware batch followed by a classification batch.

    ``identity`` yields ``(images, {"expression", "tuples"})`` (:func:`identity_aware_dataset`),
    ``classification`` yields ``(images, {"expression"})`` (:func:`classification_dataset`). The
    classification rows get tuple rows of ``-1``: they are not queries of the metric loss (their
    indices never appear in a tuple either), only of the cross-entropy. This is how the shipped
    model learns from FER2013 and the identity-labelled sets in one run.
    """
    return join(identity, classification, fill=PAD)

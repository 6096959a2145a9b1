"""Sequence voting and confusion matrices, and the training of one
variant on one fold (:func:`train_variant`, with model selection on an inner split of the
training subjects). Campaigns of many runs are :mod:`fer_tf.research.crossval`; their report is
:mod:`fer_tf.research.finetune_report`.

Model selection never looks at the test fold: with an inner split, the epoch with the best
accuracy on held-out *training* subjects is evaluated; without one, the lowest training loss
decides, or, with ``train.select_epoch: last``, the last epoch of a fixed count. The per-epoch
test-fold accuracy is recorded for the curves (and the report's bound on epoch choice) only.
"""

from __future__ import annotations

import hashlib
import time

import keras
import numpy as np

from fer_tf.model import network
from fer_tf.training import loop
from fer_tf.config import ModelConfig, TrainConfig, to_dict, variant_slug
from fer_tf.data.splits import subject_kfold
from fer_tf.feeding.augment import Augmentation
from fer_tf.feeding.feeders import eval_dataset, identity_aware_dataset
from fer_tf.model.predict import predict_probabilities
from fer_tf.data.sampling import DEFAULT_QUERIES_PER_BATCH

#: Table 3 of the paper: CK+ sequence-level accuracy (8-fold, subject-independent, 7 expressions).
PAPER_CKPLUS = {"softmax": None, "1B(N+1)": 0.9321, "2B(N+1)": 0.943, "1B(N+M)": 0.9655, "2B(N+M)": 0.971}


slug = variant_slug  # the name it always had here


def sequence_scores(probabilities, sequence, labels_ids):
    """Average the scores of each sequence's frames (the paper's sequence-level prediction).

    Rows with an empty sequence id are their own sequence. Returns (mean probabilities, label ids,
    sequence ids) per sequence.
    """
    keys = np.array([s if s != "" else f"#row{i}" for i, s in enumerate(sequence)], dtype=object)
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    sums = np.zeros((len(uniq), probabilities.shape[1]))
    np.add.at(sums, inverse, probabilities)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    seq_labels = np.full(len(uniq), -1)
    seq_labels[inverse] = labels_ids
    return sums / counts, seq_labels, uniq


def confusion(true_ids, pred_ids, n):
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_ids), np.asarray(pred_ids)), 1)
    return matrix


class FoldAccuracy(keras.callbacks.Callback):
    """Record the image-level accuracy on the held-out fold after each epoch (curves only)."""

    def __init__(self, faces, label_ids):
        super().__init__()
        self.dataset = eval_dataset(faces, batch_size=256)
        self.label_ids = np.asarray(label_ids)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "_ec_of", None) is not self.model:  # built once per model, not per epoch
            self._ec, self._ec_of = self.model.ec_model(), self.model
        probabilities = self._ec.predict(self.dataset, verbose=0)
        logs["fold_accuracy"] = float(np.mean(np.argmax(probabilities, 1) == self.label_ids))


def inner_split(table, train_rows, fraction, seed=0):
    """``(fit_rows, inner_rows)``: ``train_rows`` split by subject, about ``fraction`` of the
    training subjects held out as the inner validation split (model selection never sees the
    test fold). ``fraction`` 0 gives ``(train_rows, [])``."""
    train_rows = np.asarray(train_rows)
    if not fraction:
        return train_rows, train_rows[:0]
    k = max(2, round(1 / fraction))
    fit, inner = subject_kfold(table.take(train_rows), k=k, seed=seed)[0]
    return train_rows[fit], train_rows[inner]


def _rows_digest(rows):
    """A short digest of which rows a fold trains or tests on (for the checkpoint's settings)."""
    return hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]


def train_variant(variant, table, faces, train_rows, test_rows, model_config: ModelConfig,
                  train_config: TrainConfig, pretrained=None, workdir=None, mode="in_batch",
                  verbose=2, extra_faces=None):
    """Fine-tune one variant on ``train_rows``; evaluate on ``test_rows``. Returns a result dict.

    With ``train_config.inner_validation`` > 0, that fraction of the training subjects is held
    out; the model is trained on the others and the epoch with the best image-level accuracy on
    the held-out ones (ties: the later epoch) is the one evaluated on ``test_rows``. The test
    fold's accuracy after every epoch is recorded as ``fold_accuracy`` for the curves only.
    ``extra_faces``: other faces whose FC2 features are returned too (``extra_features``).
    """
    train_config.refuse_mixing("fine-tuning (make finetune, fer-tf train)")
    labels = model_config.labels
    ids = table.expression_ids(labels)
    values = {k: v for k, v in to_dict(model_config).items() if k != "variant"}
    # the new layers' initial weights come from the seed alone, not from what ran before in this
    # process (a campaign trains many runs in one process)
    loop.set_seed(train_config.seed)
    model = network.build_model(variant, **values)
    copied = []
    if pretrained is not None:
        copied = network.transfer_weights(pretrained, model)
    fit_rows, inner_rows = inner_split(table, train_rows, train_config.inner_validation,
                                       seed=train_config.seed)
    train_table = table.take(fit_rows)
    queries = train_config.queries_per_batch if mode == "in_batch" else DEFAULT_QUERIES_PER_BATCH["tuple"]
    train_faces = faces[fit_rows]  # one array: its tensor is reused every epoch
    sampler_args = dict(mode=mode, num_positives=model_config.num_positives,
                        num_negatives=model_config.num_negatives, queries_per_batch=queries,
                        seed=train_config.seed,
                        augment=Augmentation.from_config(train_config, model_config.input_size))

    def make_train(start_epoch):
        return identity_aware_dataset(train_table, train_faces, labels, start_epoch=start_epoch,
                                      **sampler_args)

    _, sampler = identity_aware_dataset(train_table, train_faces, labels, repeat=False,
                                        return_sampler=True, **sampler_args)
    steps = train_config.steps_per_epoch or sampler.steps_per_epoch
    validation = (eval_dataset(faces[inner_rows], batch_size=256, targets={"expression": ids[inner_rows]})
                  if len(inner_rows) else None)
    started = time.time()
    model, history = loop.fit(
        model, make_train, train_config, steps, validation_data=validation, workdir=workdir,
        verbose=verbose, callbacks=[FoldAccuracy(faces[test_rows], ids[test_rows])],
        settings={"variant": variant, "mode": mode, "model": values,
                  "train_rows": _rows_digest(train_rows), "test_rows": _rows_digest(test_rows)})
    selected = _selected_epoch(history, len(inner_rows) > 0, train_config.schedule != "halve_reload",
                               rule=train_config.select_epoch)
    probabilities = predict_probabilities(model, faces[test_rows])
    feature_model = model.feature_model()
    features = feature_model.predict(eval_dataset(faces[test_rows]), verbose=0)
    extra = None if extra_faces is None else feature_model.predict(eval_dataset(extra_faces), verbose=0)
    return {
        "variant": variant, "mode": mode, "train_rows": len(fit_rows), "inner_rows": len(inner_rows),
        "test_rows": len(test_rows), "transferred_layers": len(copied), "steps_per_epoch": int(steps),
        "selected_epoch": selected, "train_seconds": round(time.time() - started, 1),
        "history": history, "probabilities": probabilities, "features": features,
        "extra_features": extra, "model": model,
    }


def _selected_epoch(history, validated, prefer_later=True, rule="best"):
    """The 1-based epoch whose weights :func:`fer_tf.training.loop.fit` returned: the last one with
    ``rule="last"``; else the best ``val_accuracy`` or, without validation, the lowest training
    loss (ties: the later epoch with ``prefer_later``, as under a decaying schedule; else the
    earlier)."""
    if not history:
        return 0
    if rule == "last":
        return int(history[-1]["epoch"])

    def score(i):
        row = history[i]
        value = row.get("val_accuracy", -1.0) if validated else -row.get("loss", float("inf"))
        return (value, i if prefer_later else -i)

    return int(history[max(range(len(history)), key=score)]["epoch"])

"""Identity probes: how much of a person's identity a network's features still carry.

The paper claims that identity-aware (N+M) training leaves features with less identity than
softmax training. A linear probe that predicts the subject from features of faces *in an
expression it never saw for that subject* measures the identity that survives a change of
expression: lower is what the paper expects.

- :func:`identity_probe`: one held-out sequence per subject (CK+: each sequence is one expression),
  softmax-regression probe trained with Keras.
- :func:`cross_expression_probe`: leave one expression out (KDEF: every subject shows every
  expression), closed-form ridge probe in NumPy, so it is cheap enough to run after every fold.
"""

from __future__ import annotations

import keras
import numpy as np


def identity_probe(features, subjects, sequences, seed=0, steps=300):
    """Accuracy of a linear probe that predicts the subject from features of held-out images.

    For subjects with two or more sequences (or images, when there are no sequences), one sequence
    per subject is held out; a softmax-regression probe is trained on the others and tested on the
    held-out ones. Chance level is 1 / (number of probed subjects). Returns (accuracy, subjects).
    """
    rng = np.random.default_rng(seed)
    subjects = np.asarray(subjects).astype(str)
    groups = np.asarray([s if s != "" else f"#{i}" for i, s in enumerate(sequences)]).astype(str)
    train_rows, test_rows = [], []
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        seqs = np.unique(groups[rows])
        if len(seqs) < 2:
            continue
        held = rng.choice(seqs)
        test_rows.extend(rows[groups[rows] == held])
        train_rows.extend(rows[groups[rows] != held])
    if not test_rows:
        return None, 0
    probed = np.unique(subjects[test_rows])
    index = {s: i for i, s in enumerate(probed)}
    x = np.asarray(features, np.float32)
    x = (x - x[train_rows].mean(0)) / (x[train_rows].std(0) + 1e-6)
    y = np.array([index.get(s, -1) for s in subjects])
    keras.utils.set_random_seed(seed)
    probe = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(len(probed))])
    probe.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe.fit(x[train_rows], y[train_rows], batch_size=len(train_rows), epochs=steps, verbose=0)
    predicted = np.argmax(probe.predict(x[test_rows], verbose=0), axis=1)
    return float(np.mean(predicted == y[test_rows])), len(probed)



def _standardise(x, rows):
    mean, std = x[rows].mean(0), x[rows].std(0) + 1e-6
    return (x - mean) / std


def cross_expression_probe(features, subjects, expressions, ridge=1.0):
    """Leave-one-expression-out identity probe; returns ``(accuracy, subjects probed)``.

    The features of each expression are first centred on that expression's mean, so that the
    probe is not thrown by the shift an expression causes in everyone's features (which says
    nothing about identity). Then, for each expression ``e``, a ridge-regression probe (one-hot
    subject targets, closed form, features standardised on its training rows) is fitted on the
    faces of the other expressions and predicts the subject of the faces showing ``e``; only
    subjects that also appear in the other expressions are scored. The accuracy is over all scored
    faces; chance is ``1 / subjects``. ``(None, 0)`` when no subject shows two expressions.
    """
    x = np.asarray(features, np.float64)
    subjects = np.asarray(subjects).astype(str)
    expressions = np.asarray(expressions).astype(str)
    x = x.copy()
    for e in np.unique(expressions):
        x[expressions == e] -= x[expressions == e].mean(0)
    names = np.unique(subjects)
    index = {s: i for i, s in enumerate(names)}
    y = np.array([index[s] for s in subjects])
    correct = total = 0
    probed = set()
    for held in np.unique(expressions):
        fit = np.flatnonzero(expressions != held)
        test = np.flatnonzero((expressions == held) & np.isin(subjects, subjects[fit]))
        if not len(fit) or not len(test):
            continue
        z = _standardise(x, fit)
        z = np.concatenate([z, np.ones((len(z), 1))], axis=1)  # bias column
        targets = np.eye(len(names))[y[fit]]
        a = z[fit]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ targets)
        predicted = np.argmax(z[test] @ w, axis=1)
        correct += int(np.sum(predicted == y[test]))
        total += len(test)
        probed.update(subjects[test])
    if not total:
        return None, 0
    return correct / total, len(probed)

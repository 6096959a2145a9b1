"""Subject-independent splits: no person appears in both the training and the test rows.

All functions return row indices into a :class:`FaceTable` (sorted ``int64`` arrays), never copies
of the data. Because whole subjects go to one fold, a sequence (which belongs to one subject) is
never split either.
"""

from __future__ import annotations

import numpy as np

from fer_tf.errors import DatasetError


def _require_subjects(table, what):
    if len(table) == 0:
        raise DatasetError(f"{what} needs a non-empty table")
    if not table.has_subjects:
        missing = int(sum(1 for s in table.subject if s == ""))
        raise DatasetError(
            f"{what} needs a subject id on every row, but {missing} of {len(table)} rows have none "
            f"(dataset {table.name or '?'}); use a dataset with identities or its official splits"
        )


def subject_kfold(table, k=8, seed=0):
    """``k`` subject-disjoint folds, stratified by expression as far as subjects allow.

    Subjects are taken largest first (ties in a seeded random order) and each goes to the fold
    that most needs its expressions: the fold maximising ``sum_c n_c * (target_c - fold_c) /
    target_c`` where ``n_c`` is the subject's image count of expression ``c`` and ``target_c`` the
    class total divided by ``k``. Ties between folds are broken by the same seeded RNG, so the
    folds depend only on the table and ``seed``. Every fold gets at least one subject.

    Returns a list of ``k`` pairs ``(train_idx, test_idx)``.
    """
    _require_subjects(table, "subject_kfold")
    k = int(k)
    subjects, subject_of_row = np.unique(table.subject.astype(str), return_inverse=True)
    if k < 2:
        raise DatasetError(f"subject_kfold needs k >= 2, got {k}")
    if len(subjects) < k:
        raise DatasetError(
            f"subject_kfold: {len(subjects)} subjects cannot fill {k} folds; use k <= {len(subjects)}"
        )
    classes, class_of_row = np.unique(table.expression.astype(str), return_inverse=True)
    counts = np.zeros((len(subjects), len(classes)), dtype=np.float64)
    np.add.at(counts, (subject_of_row, class_of_row), 1.0)
    target = counts.sum(axis=0) / k

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(subjects))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]

    fold_counts = np.zeros((k, len(classes)))
    fold_subjects = np.zeros(k, dtype=np.int64)
    fold_of_subject = np.empty(len(subjects), dtype=np.int64)
    for position, s in enumerate(order):
        candidates = np.arange(k)
        empty = np.flatnonzero(fold_subjects == 0)
        if len(empty) >= len(subjects) - position:  # the remaining subjects must fill empty folds
            candidates = empty
        need = (target - fold_counts[candidates]) / np.maximum(target, 1e-12)
        score = need @ counts[s]
        best = candidates[np.flatnonzero(score >= score.max() - 1e-9)]
        fold = int(rng.choice(best))
        fold_of_subject[s] = fold
        fold_counts[fold] += counts[s]
        fold_subjects[fold] += 1

    fold_of_row = fold_of_subject[subject_of_row]
    return [_pair(fold_of_row == f) for f in range(k)]


def leave_one_subject_out(table):
    """One split per subject (in sorted subject order): that subject's rows are the test rows."""
    _require_subjects(table, "leave_one_subject_out")
    subjects, subject_of_row = np.unique(table.subject.astype(str), return_inverse=True)
    if len(subjects) < 2:
        raise DatasetError("leave_one_subject_out needs at least 2 subjects")
    return [_pair(subject_of_row == i) for i in range(len(subjects))]


def _pair(test_mask):
    """``(train_idx, test_idx)`` from a boolean mask of test rows."""
    return (np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64))


def split_by_column(table, column="split"):
    """Row indices per value of ``column`` (e.g. FER2013's Training/PublicTest/PrivateTest).

    Returns ``{value: idx}`` in sorted order of values; rows with an empty value are left out.
    Raises :class:`DatasetError` when no row has a value.
    """
    values = getattr(table, column, None)
    if values is None:
        raise DatasetError(f"FaceTable has no column {column!r}")
    names = sorted({str(v) for v in values if str(v) != ""})
    if not names:
        raise DatasetError(
            f"dataset {table.name or '?'} has no {column!r} values; use subject_kfold instead"
        )
    values = values.astype(str)
    return {name: np.flatnonzero(values == name).astype(np.int64) for name in names}

"""Subject-independent splits on CK+48 and on small synthetic tables."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fer_tf.data.readers import read_dataset
from fer_tf.data.splits import leave_one_subject_out, split_by_column, subject_kfold
from fer_tf.data.table import FaceTable
from fer_tf.errors import DatasetError


@pytest.fixture(scope="module")
def ck(ckplus48_dir):
    return read_dataset(ckplus48_dir, "ckplus48")


def _check_partition(table, folds):
    n = len(table)
    tests = [te for _, te in folds]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(n))  # union = all rows, disjoint
    for train, test in folds:
        assert len(train) + len(test) == n and not set(train) & set(test)
        assert not set(table.subject[train]) & set(table.subject[test])
        assert not set(table.sequence[train]) & set(table.sequence[test])
        assert train.dtype == np.int64 and np.all(np.diff(test) > 0)


@pytest.mark.integration
def test_kfold_ckplus48(ck):
    folds = subject_kfold(ck, k=8, seed=0)
    assert len(folds) == 8
    _check_partition(ck, folds)
    subjects_per_class = {e: len(set(ck.subject[ck.expression == e])) for e in set(ck.expression)}
    for _, test in folds:
        present = set(ck.expression[test])
        assert {e for e, n in subjects_per_class.items() if n >= 8} <= present
        # roughly stratified: each class's share within 6 points of the overall share
        for e in subjects_per_class:
            share = np.mean(ck.expression[test] == e)
            assert abs(share - np.mean(ck.expression == e)) < 0.06
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) < 0.3 * np.mean(sizes)


@pytest.mark.integration
def test_kfold_deterministic(ck):
    a = subject_kfold(ck, k=8, seed=3)
    b = subject_kfold(ck, k=8, seed=3)
    c = subject_kfold(ck, k=8, seed=4)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


@pytest.mark.integration
def test_loso_ckplus48(ck):
    folds = leave_one_subject_out(ck)
    assert len(folds) == 118
    _check_partition(ck, folds)
    assert all(len(set(ck.subject[te])) == 1 for _, te in folds)


def _table(subjects, expressions=None, split=None):
    n = len(subjects)
    expressions = expressions or ["happiness"] * n
    return FaceTable.from_rows([
        {"path": f"{i}.png", "expression": expressions[i], "subject": subjects[i],
         "sequence": f"{subjects[i]}_1" if subjects[i] else "", "split": split[i] if split else ""}
        for i in range(n)
    ], name="t")


def test_errors():
    with pytest.raises(DatasetError, match="subject id"):
        subject_kfold(_table(["a", "", "b"]), k=2)
    with pytest.raises(DatasetError, match="3 subjects cannot fill 4 folds"):
        subject_kfold(_table(["a", "b", "c"]), k=4)
    with pytest.raises(DatasetError, match="subject id"):
        leave_one_subject_out(_table(["", ""]))
    with pytest.raises(DatasetError, match="at least 2"):
        leave_one_subject_out(_table(["a", "a"]))
    with pytest.raises(DatasetError, match="non-empty"):
        subject_kfold(FaceTable.from_rows([]), k=2)


def test_split_by_column():
    t = _table(["", "", ""], split=["Training", "PublicTest", "Training"])
    parts = split_by_column(t)
    assert list(parts) == ["PublicTest", "Training"]
    assert parts["Training"].tolist() == [0, 2]
    with pytest.raises(DatasetError, match="no 'split' values"):
        split_by_column(_table(["a"]))


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 12), st.sampled_from(["anger", "fear", "happiness"])),
                  min_size=1, max_size=60),
    k=st.integers(2, 6), seed=st.integers(0, 5),
)
def test_kfold_property(rows, k, seed):
    t = _table([f"s{s}" for s, _ in rows], [e for _, e in rows])
    n_subjects = len({s for s, _ in rows})
    if n_subjects < k:
        with pytest.raises(DatasetError):
            subject_kfold(t, k=k, seed=seed)
        return
    folds = subject_kfold(t, k=k, seed=seed)
    _check_partition(t, folds)
    assert all(len(te) > 0 for _, te in folds)  # every fold gets a subject

"""Identity-aware samplers (tuple and in_batch), classification and evaluation pipelines."""

import numpy as np
import pytest

from fer_tf.data import sampling
from fer_tf.feeding import feeders
from fer_tf.data.labels import CKPLUS7
from fer_tf.data.table import FaceTable
from fer_tf.errors import MiningError
from fer_tf.data.sampling import IdentitySampler, check_tuples

M = N = 6


def _table(spec):
    """spec: list of (subject, expression, count) -> FaceTable, one sequence per (subject, expr)."""
    rows = []
    for subject, expression, count in spec:
        for f in range(count):
            rows.append({"path": f"{subject}_{expression}_{f}.png", "expression": expression,
                         "subject": subject, "sequence": f"{subject}_{expression}", "frame": f})
    return FaceTable.from_rows(rows, name="synthetic")


def _row_faces(n):
    """Faces whose pixels all equal the row number: an output image tells which row it came from."""
    return np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 60, 60)).copy()


def _assert_batch_shape(sampler, batch):
    x, w = sampler.batch_size, sampler.tuple_width
    assert batch.rows.shape == (x,) and batch.expression.shape == (x,) and batch.tuples.shape == (x, w)
    assert batch.expression.dtype == np.int32 and batch.tuples.dtype == np.int32


def _check_epoch(table, sampler, epoch):
    """Check every batch of one epoch; return summed stats and how often each row was a query."""
    total, queried = {}, np.zeros(len(table), dtype=np.int64)
    ids = table.expression_ids(sampler.labels)
    batches = list(sampler.epoch(epoch))
    assert len(batches) == sampler.steps_per_epoch
    for b in batches:
        _assert_batch_shape(sampler, b)
        pool = b.rows if sampler.mode == "in_batch" else sampler.kept
        stats, problems = check_tuples(table, b, pool_rows=pool, replace=sampler.mode == "tuple")
        assert problems == []
        q = b.expression >= 0
        np.testing.assert_array_equal(b.expression[q], ids[b.rows[q]])
        queried[b.rows[q]] += 1
        for k, v in stats.items():
            total[k] = total.get(k, 0) + v
    return total, queried


@pytest.fixture(scope="module")
def ckplus48(ckplus48_dir):
    from fer_tf.data.readers import read_dataset

    return read_dataset(ckplus48_dir, "ckplus48")


# -- CK+48 invariants ----------------------------------------------------------------------------


@pytest.mark.integration
def test_tuple_mode_on_ckplus48(ckplus48):
    s = IdentitySampler(ckplus48, CKPLUS7, mode="tuple", num_positives=M, num_negatives=N, seed=3)
    assert s.batch_size == 144 and s.steps_per_epoch == int(np.ceil(981 / 12))
    for epoch in (0, 1):
        stats, queried = _check_epoch(ckplus48, s, epoch)
        assert stats["queries"] == 12 * s.steps_per_epoch
        assert queried.min() >= 1 and queried.sum() - len(ckplus48) == 12 * s.steps_per_epoch - 981
        assert stats["own"] > stats["fallback"] > 0
    b = next(s.epoch(0))
    np.testing.assert_array_equal(np.flatnonzero(b.expression >= 0), np.arange(12) * 12)
    assert (b.tuples[b.expression < 0] == -1).all()
    q = np.arange(12) * 12
    np.testing.assert_array_equal(b.tuples[q, 0], q)


@pytest.mark.integration
def test_in_batch_mode_on_ckplus48(ckplus48):
    s = IdentitySampler(ckplus48, CKPLUS7, mode="in_batch", num_positives=M, num_negatives=N, seed=3)
    assert s.batch_size == 64 and s.steps_per_epoch == 16
    for epoch in (0, 1):
        stats, queried = _check_epoch(ckplus48, s, epoch)
        assert stats["queries"] == 64 * 16  # every image of every batch is a query
        assert queried.min() >= 1 and queried.sum() == 64 * 16
        slots = sum(stats[k] for k in ("own", "fallback", "negative_padded"))
        assert stats["own"] / slots > 0.75 and stats["negative_padded"] / slots < 0.1
        assert stats["positive_padded"] / (stats["positive"] + stats["positive_padded"]) < 0.1
    for b in s.epoch(0):
        assert len(set(b.rows.tolist())) == len(b.rows)  # each row once per batch
        np.testing.assert_array_equal(b.tuples[:, 0], np.arange(64))
        assert (b.expression >= 0).all()


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
def test_deterministic_and_resumable(ckplus48, mode):
    def take(sampler, start_epoch, count):
        it = sampler.batches(start_epoch=start_epoch, repeat=True)
        return [next(it) for _ in range(count)]

    a = IdentitySampler(ckplus48, CKPLUS7, mode=mode, seed=7)
    steps = a.steps_per_epoch
    run = take(a, 0, 2 * steps + 2)
    again = take(IdentitySampler(ckplus48, CKPLUS7, mode=mode, seed=7), 0, 2 * steps + 2)
    resumed = take(IdentitySampler(ckplus48, CKPLUS7, mode=mode, seed=7), 1, steps + 2)
    for x, y in zip(run, again):
        np.testing.assert_array_equal(x.rows, y.rows)
        np.testing.assert_array_equal(x.tuples, y.tuples)
    for x, y in zip(run[steps:], resumed):
        assert (x.epoch, x.step) == (y.epoch, y.step)
        np.testing.assert_array_equal(x.rows, y.rows)
        np.testing.assert_array_equal(x.tuples, y.tuples)
    other = next(IdentitySampler(ckplus48, CKPLUS7, mode=mode, seed=8).batches())
    assert not np.array_equal(other.rows, run[0].rows)
    assert not np.array_equal(run[0].rows, run[steps].rows)  # epochs differ
    assert sum(1 for _ in a.batches(start_epoch=4, repeat=False)) == steps


# -- synthetic tables: fallback, padding, errors --------------------------------------------------


@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
def test_fallback_and_padding(mode):
    table = _table([
        ("S1", "happiness", 3),                          # one expression: negatives need the fallback
        ("S2", "happiness", 2), ("S2", "sadness", 2),
        ("S3", "sadness", 2), ("S3", "anger", 1),
        ("S4", "fear", 2), ("S5", "fear", 2),             # fear subjects show nothing else: no negative
        ("S6", "neutral", 4),                            # not in CKPLUS7: dropped
    ])
    s = IdentitySampler(table, CKPLUS7, mode=mode, num_positives=3, num_negatives=3,
                        queries_per_batch=4 if mode == "tuple" else 100, seed=0)
    assert s.num_queries == 14
    seen = set()
    total = {}
    for b in s.epoch(0):
        pool = b.rows if mode == "in_batch" else s.kept
        stats, problems = check_tuples(table, b, pool_rows=pool, replace=mode == "tuple")
        assert problems == []
        for k, v in stats.items():
            total[k] = total.get(k, 0) + v
        seen.update(b.rows.tolist())
        for i in np.flatnonzero(b.expression >= 0):
            row = b.rows[i]
            negatives = b.tuples[i, 3:]
            if table.subject[row] == "S1":  # all its negatives come from S2, the only other happy subject
                assert (negatives >= 0).all() if mode == "tuple" else (negatives >= 0).sum() == 2
                assert set(table.subject[b.rows[negatives[negatives >= 0]]]) == {"S2"}
            if table.expression[row] == "fear":
                assert (negatives == -1).all()
    assert not any(table.expression[r] == "neutral" for r in seen)
    assert total["fallback"] > 0 and total["own"] > 0 and total["negative_padded"] > 0


def test_mining_error_without_multi_expression_subjects():
    table = _table([("S1", "happiness", 3), ("S2", "sadness", 3), ("S3", "happiness", 2),
                    ("S4", "anger", 2), ("S4", "neutral", 2)])  # neutral is dropped by CKPLUS7
    with pytest.raises(MiningError, match="at least two expressions.*softmax"):
        IdentitySampler(table, CKPLUS7, mode="in_batch")
    with pytest.raises(MiningError):
        feeders.identity_aware_dataset(table, _row_faces(len(table)), CKPLUS7, mode="tuple")
    no_ids = FaceTable.from_rows([{"expression": "happiness"}, {"expression": "anger"}])
    with pytest.raises(MiningError, match="subject"):
        IdentitySampler(no_ids, CKPLUS7)


# -- tf.data pipelines ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
def test_identity_aware_dataset_matches_sampler(ckplus48, mode):
    import tensorflow as tf

    faces = _row_faces(len(ckplus48))
    ds, sampler = feeders.identity_aware_dataset(ckplus48, faces, CKPLUS7, mode=mode, seed=5,
                                                  augment=True, repeat=True, start_epoch=2,
                                                  return_sampler=True)
    x, w = sampler.batch_size, M + N
    images_spec, targets_spec = ds.element_spec
    assert images_spec.shape.as_list() == [x, 48, 48, 1] and images_spec.dtype == tf.float32
    assert targets_spec["expression"].shape.as_list() == [x] and targets_spec["expression"].dtype == tf.int32
    assert targets_spec["tuples"].shape.as_list() == [x, w] and targets_spec["tuples"].dtype == tf.int32
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    expected = sampler.batches(start_epoch=2)
    for images, targets in ds.take(3):
        b = next(expected)
        images = images.numpy()
        np.testing.assert_array_equal(images[:, 0, 0, 0], b.rows.astype(np.float32))
        assert (images == images[:, :1, :1, :]).all()
        np.testing.assert_array_equal(targets["expression"].numpy(), b.expression)
        np.testing.assert_array_equal(targets["tuples"].numpy(), b.tuples)

    one_epoch = feeders.identity_aware_dataset(ckplus48, faces, CKPLUS7, mode=mode, repeat=False)
    assert one_epoch.cardinality().numpy() == sampler.steps_per_epoch


@pytest.mark.integration
def test_augmentation_is_reproducible(ckplus48):
    rng = np.random.default_rng(0)
    faces = rng.normal(size=(len(ckplus48), 60, 60)).astype(np.float32)
    runs = []
    for _ in range(2):
        ds = feeders.identity_aware_dataset(ckplus48, faces, CKPLUS7, mode="in_batch", seed=1)
        runs.append([images.numpy() for images, _ in ds.take(2)])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    plain = feeders.identity_aware_dataset(ckplus48, faces, CKPLUS7, mode="in_batch", seed=1, augment=False)
    images, _ = next(iter(plain))
    rows = next(IdentitySampler(ckplus48, CKPLUS7, mode="in_batch", seed=1).batches()).rows
    np.testing.assert_allclose(images.numpy()[..., 0], faces[rows][:, 6:54, 6:54])


def test_classification_dataset():
    import tensorflow as tf

    n = 300
    faces = _row_faces(n)
    labels = np.arange(n) % 7
    labels[::10] = -1  # dropped
    kept = np.flatnonzero(labels >= 0)
    ds = feeders.classification_dataset(faces, labels, batch_size=64, seed=2, repeat=False)
    images_spec, targets_spec = ds.element_spec
    assert images_spec.shape.as_list() == [None, 48, 48, 1] and images_spec.dtype == tf.float32
    assert set(targets_spec) == {"expression"} and targets_spec["expression"].dtype == tf.int32
    assert ds.cardinality().numpy() == sampling.steps_per_epoch(len(kept), 64)
    seen = []
    for images, targets in ds:
        rows = images.numpy()[:, 0, 0, 0].astype(int)  # each face holds its original row number
        np.testing.assert_array_equal(targets["expression"].numpy(), labels[rows])
        seen.extend(rows.tolist())
    assert sorted(seen) == kept.tolist()  # one epoch = every labelled face once

    def first(start_epoch, seed=2):
        ds = feeders.classification_dataset(faces, labels, batch_size=64, seed=seed, start_epoch=start_epoch)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first(1), first(1))
    assert not np.array_equal(first(0), first(1))
    repeated = feeders.classification_dataset(faces, labels, batch_size=64, seed=2)
    assert repeated.cardinality().numpy() == tf.data.INFINITE_CARDINALITY


def test_eval_dataset_centre_crop_in_order():
    rng = np.random.default_rng(0)
    faces = rng.normal(size=(10, 60, 60)).astype(np.float32)
    batches = [b.numpy() for b in feeders.eval_dataset(faces, batch_size=4)]
    assert [b.shape for b in batches] == [(4, 48, 48, 1), (4, 48, 48, 1), (2, 48, 48, 1)]
    np.testing.assert_allclose(np.concatenate(batches)[..., 0], faces[:, 6:54, 6:54])


def test_uint8_faces_are_normalised():
    from fer_tf.data.crops import center_crop
    from fer_tf.preprocess.normalize import normalize_faces

    faces = np.random.default_rng(0).integers(0, 256, size=(5, 60, 60), dtype=np.uint8)
    out = next(iter(feeders.eval_dataset(faces))).numpy()
    np.testing.assert_allclose(out, center_crop(normalize_faces(faces[..., None])).numpy(), atol=1e-5)

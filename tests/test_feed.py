"""fer_tf.feeding.feed: one Feed, two backends (tf.data and keras PyDataset) with the same batches.

The PyDataset backend is what JAX and PyTorch use; here it runs under TensorFlow (a PyDataset
works on every backend), so both backends of the same feeder can be compared in one process.
"""

import numpy as np
import pytest

from fer_tf.feeding import feed, feeders
from fer_tf.feeding.augment import Augmentation

LABELS = ("anger", "happiness", "surprise")


def _synthetic():
    from fer_tf.data.table import FaceTable

    rows = [{"expression": e, "subject": f"S{s}", "sequence": f"S{s}/{e}", "frame": f}
            for s in range(5) for e in LABELS[: 2 + s % 2] for f in range(2)]
    n = len(rows)
    faces = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 60, 60)).copy()
    return FaceTable.from_rows(rows, name="synthetic"), faces  # each face's pixels = its row


def _both(monkeypatch, build):
    """``build()`` on the tf.data backend, then on the PyDataset backend: two lists of batches as
    NumPy ``(images, targets)``."""
    tf_batches = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()}) for x, y in build()]
    monkeypatch.setattr(feed, "uses_tf_data", lambda: False)
    py = build()
    assert isinstance(py, feed.FeedBatches | feed.JointBatches)
    py_batches = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()}) for x, y in
                  (py[i] for i in range(len(py)))]
    return tf_batches, py_batches


def _assert_same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        assert sorted(ya) == sorted(yb)
        for k in ya:
            np.testing.assert_array_equal(ya[k], yb[k])
            assert ya[k].dtype == yb[k].dtype


@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
def test_identity_batches_are_the_same_on_both_backends(monkeypatch, mode):
    table, faces = _synthetic()

    def build():
        return feeders.identity_aware_dataset(table, faces, LABELS, mode=mode, num_positives=2, num_negatives=2,
                                              queries_per_batch=4, seed=3, augment=False, repeat=False,
                                              start_epoch=1)

    tf_batches, py_batches = _both(monkeypatch, build)
    _assert_same(tf_batches, py_batches)
    assert len(tf_batches) > 1


def test_classification_tops_up_the_last_batch_only_on_pydataset(monkeypatch):
    table, faces = _synthetic()
    labels = np.arange(len(faces)) % 3

    def build():
        return feeders.classification_dataset(faces, labels, batch_size=10, seed=1, augment=False, repeat=False)

    tf_batches, py_batches = _both(monkeypatch, build)
    short = len(faces) % 10
    assert short and len(tf_batches[-1][0]) == short and len(py_batches[-1][0]) == 10
    _assert_same(tf_batches[:-1], py_batches[:-1])
    first, last = py_batches[0], py_batches[-1]
    np.testing.assert_array_equal(last[0][:short], tf_batches[-1][0])
    np.testing.assert_array_equal(last[0][short:], first[0][:10 - short])  # the epoch's first rows
    np.testing.assert_array_equal(last[1]["expression"][short:], first[1]["expression"][:10 - short])
    rows = last[0][:, 0, 0, 0].astype(int)
    np.testing.assert_array_equal(last[1]["expression"], labels[rows])


def test_eval_and_joint_batches_are_the_same_on_both_backends(monkeypatch):
    table, faces = _synthetic()
    labels = (np.arange(len(faces)) % 3).astype(np.int64)

    def build_eval():
        return feeders.eval_dataset(faces, batch_size=7, targets={"expression": labels})

    _assert_same(*_both(monkeypatch, build_eval))
    monkeypatch.undo()

    def build_joint():
        identity = feeders.identity_aware_dataset(table, faces, LABELS, num_positives=2, num_negatives=2,
                                                  queries_per_batch=6, seed=0, augment=False, repeat=False)
        return feeders.joint_dataset(identity, feeders.classification_dataset(faces, labels, batch_size=4,
                                                                              augment=False, repeat=False))

    tf_batches, py_batches = _both(monkeypatch, build_joint)
    _assert_same(tf_batches, py_batches)
    x, y = py_batches[0]
    assert len(x) == 10 and (y["tuples"][6:] == -1).all()
    monkeypatch.undo()

    soft = np.random.default_rng(0).dirichlet(np.ones(3), len(faces)).astype(np.float32)

    def build_distilled_joint():  # soft targets for the second source's rows only (make ship)
        identity = feeders.identity_aware_dataset(table, faces, LABELS, num_positives=2, num_negatives=2,
                                                  queries_per_batch=6, seed=0, augment=False, repeat=False)
        return feeders.joint_dataset(identity, feeders.classification_dataset(
            faces, labels, batch_size=4, augment=False, repeat=False, soft_targets=soft))

    tf_batches, py_batches = _both(monkeypatch, build_distilled_joint)
    _assert_same(tf_batches, py_batches)
    x, y = py_batches[0]
    rows = np.asarray(x)[6:, 0, 0, 0].astype(int)
    assert (y["expression_target"][:6] == -1).all() and (y["tuples"][6:] == -1).all()
    np.testing.assert_allclose(y["expression_target"][6:], soft[rows])


def test_pydataset_crops_depend_only_on_the_seeds_per_slice(monkeypatch):
    """Augmented PyDataset batches are reproducible, and a batch of two index batches draws each
    half from its own seed: the same crops as the two batches alone."""
    table, faces = _synthetic()
    faces = faces + np.random.default_rng(0).normal(size=faces.shape).astype(np.float32)
    monkeypatch.setattr(feed, "uses_tf_data", lambda: False)
    aug = Augmentation(rotation=5)
    rows = np.arange(8)
    seeds = np.array([[1, 2], [3, 4]], np.int64)

    def batches(seeds_list):
        f = feed.Feed(faces, lambda epoch: [feed.Batch(r, {}, s) for r, s in seeds_list], len(seeds_list),
                      augmentation=aug, slices=len(seeds_list[0][1]))
        ds = f.dataset()
        return [np.asarray(ds[i][0]) for i in range(len(ds))]

    together = batches([(rows, seeds)])[0]
    again = batches([(rows, seeds)])[0]
    alone = batches([(rows[:4], seeds[:1]), (rows[4:], seeds[1:])])
    np.testing.assert_array_equal(together, again)
    np.testing.assert_array_equal(together, np.concatenate(alone))
    assert not np.array_equal(alone[0], batches([(rows[:4], seeds[1:])])[0])


def test_tf_data_under_op_determinism_logs_nothing(tmp_path):
    """TensorFlow 2.19 rewrites a parallel map after a generator into a sequential one under op
    determinism and logs an E-line about `use_unbounded_threadpool`; the feed builds the sequential
    map itself, so stderr stays empty (and the batches match the non-deterministic pipeline's).
    Export's Keras probabilities (Keras' own predict would build such a map) are silent too."""
    import os
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    script = (
        "import sys\n"
        "import numpy as np, tensorflow as tf\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_feed import _synthetic, LABELS\n"
        "from fer_tf.feeding import feeders\n"
        "def batches():\n"
        "    table, faces = _synthetic()\n"
        "    return [np.asarray(x) for x, _ in feeders.identity_aware_dataset(\n"
        "        table, faces, LABELS, mode='tuple', num_positives=2, num_negatives=2,\n"
        "        queries_per_batch=4, seed=3, augment=True, repeat=False, start_epoch=1)]\n"
        "free = batches()\n"
        "tf.config.experimental.enable_op_determinism()\n"
        "fixed = batches()\n"
        "assert len(free) == len(fixed) > 1\n"
        "assert all(np.array_equal(a, b) for a, b in zip(free, fixed))\n"
        "import keras\n"
        "from fer_tf.deploy.choose import keras_probabilities\n"
        "model = keras.Sequential([keras.Input((60, 60, 1)), keras.layers.Flatten(),\n"
        "                          keras.layers.Dense(3, activation='softmax')])\n"
        "faces = np.random.default_rng(0).random((10, 60, 60), np.float32)\n"
        "p = keras_probabilities(model, faces, batch_size=4)\n"
        "assert p.shape == (10, 3) and np.allclose(p, np.asarray(model(faces[..., None])), atol=1e-6)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env.update(PYTHONPATH=str(repo), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", script, str(repo / "tests")], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    assert "node_def_util" not in done.stderr and "use_unbounded_threadpool" not in done.stderr, \
        done.stderr[-3000:]

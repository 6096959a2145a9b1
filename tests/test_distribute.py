"""Distributed training (fer_tf.training.distribute): replica-whole identity batches, MirroredStrategy on two
logical CPUs equals the single-device computation, and two local workers train together.

TensorFlow's logical devices and multi-worker runtimes can only be configured before TensorFlow
initialises, so those tests run small scripts in fresh subprocesses.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_tf.data.table import FaceTable

REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = ("anger", "happiness", "surprise")

# A synthetic table: 6 subjects x 3 expressions x 2 frames, random faces (importable by the scripts).
COMMON = textwrap.dedent('''
    import os, sys, json
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    from fer_tf.data.table import FaceTable

    LABELS = ("anger", "happiness", "surprise")

    def synthetic(subjects=6, frames=2, seed=0):
        rows = [{"expression": e, "subject": f"S{s}", "sequence": f"S{s}/{e}", "frame": f}
                for s in range(subjects) for e in LABELS for f in range(frames)]
        faces = np.random.default_rng(seed).integers(0, 256, (len(rows), 60, 60), dtype=np.uint8)
        return FaceTable.from_rows(rows, name="synthetic"), faces

    def tiny_model(**extra):
        import keras
        from fer_tf.model.network import build_model
        keras.utils.set_random_seed(0)
        return build_model("2B(N+M)", labels=LABELS, dropout=0.0, num_positives=3,
                           num_negatives=3, ec_units=(32, 16), ml_units=16, connect_units=16,
                           embedding_dim=8, **extra)
''')


def _synthetic(subjects=6, frames=2):
    namespace = {}
    exec(COMMON, namespace)
    return namespace["synthetic"](subjects, frames)


def _run(script, env=None, timeout=240):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", COMMON + textwrap.dedent(script)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc, timeout=240):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"subprocess timed out\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result line\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# -- pure Python: the grouping of sub-batches ---------------------------------------------------


def test_replica_batches_keep_subjects_whole_and_indices_local():
    from fer_tf.training import distribute

    table, faces = _synthetic(subjects=8)
    sampler = distribute._make_sampler(table, LABELS, "in_batch", 3, 3, 8, 0, None, True)
    batcher = distribute.ReplicaBatches(sampler, 2)
    assert batcher.steps_per_epoch == -(-sampler.steps_per_epoch // 2)
    seen = []
    for epoch, step, group in batcher.steps(0, repeat=False):
        assert len(group) == 2
        for sub in group:
            assert len(sub.rows) == 8
            valid = sub.tuples[sub.tuples >= 0]
            assert valid.min() >= 0 and valid.max() < 8  # local to the sub-batch
            seen.extend(sub.rows.tolist())
    assert set(seen) == set(range(len(table)))  # every image is a query in the epoch
    # the epoch depends only on (seed, epoch): resuming at epoch 1 gives the same steps
    a = [g for _, _, g in batcher.steps(1, repeat=False)]
    b = batcher.epoch(1)
    assert all(np.array_equal(x.rows, y.rows) for ga, gb in zip(a, b) for x, y in zip(ga, gb))


def test_replica_dataset_global_and_local_indices():
    from fer_tf.data.sampling import to_global_indices
    from fer_tf.training import distribute

    table, faces = _synthetic()
    kwargs = dict(num_positives=3, num_negatives=3, queries_per_replica=6, augment=False, repeat=False)
    local, batcher = distribute.replica_identity_dataset(table, faces, LABELS, 2, return_batcher=True,
                                                         **kwargs)
    global_ = distribute.replica_identity_dataset(table, faces, LABELS, 2, global_indices=True, **kwargs)
    (xl, yl), (xg, yg) = next(iter(local)), next(iter(global_))
    assert xl.shape == (12, 48, 48, 1) and yl["tuples"].shape == (12, 6)
    np.testing.assert_array_equal(xl.numpy(), xg.numpy())
    np.testing.assert_array_equal(to_global_indices(yl["tuples"].numpy(), 2), yg["tuples"].numpy())
    first = batcher.epoch(0)[0]
    np.testing.assert_array_equal(yl["tuples"].numpy()[6:], first[1].tuples)
    assert sum(1 for _ in local) == batcher.steps_per_epoch


def test_get_strategy_errors(monkeypatch):
    from fer_tf.training import distribute
    from fer_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown strategy"):
        distribute.get_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        distribute.get_strategy("multi_worker")
    with pytest.raises(ConfigError, match="task index"):
        distribute.read_tf_config({"TF_CONFIG": json.dumps(
            {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})})
    assert distribute.get_strategy("default").num_replicas_in_sync == 1


# -- MirroredStrategy on two logical CPUs == one device ------------------------------------------

MIRRORED = '''
import tensorflow as tf
from fer_tf.training import distribute
devices = distribute.split_cpu(2)
import keras
from fer_tf.model.network import query_cross_entropy

table, faces = synthetic()
strategy = distribute.get_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
ds = distribute.replica_identity_dataset(table, faces, LABELS, 2, num_positives=3, num_negatives=3,
                                         queries_per_replica=8, augment=False, repeat=False)
images, targets = next(iter(ds))
X = 8

# one device: each sub-batch is a batch of its own; the step's loss is the mean of the two
reference = tiny_model()
reference.compile(optimizer=keras.optimizers.SGD(0.5))
with tf.GradientTape() as tape:
    total = 0.0
    for r in range(2):
        part = slice(r * X, (r + 1) * X)
        y = {k: v[part] for k, v in targets.items()}
        pred = reference(images[part], training=True)
        total += reference.compute_loss(images[part], y, pred) / 2.0
        ref_ce = float(query_cross_entropy(y["expression"], pred["expression"],
                                           reference.config.label_smoothing)) / 2.0 + (ref_ce if r else 0.0)
ref_grads = tape.gradient(total, reference.trainable_variables)

with strategy.scope():
    model = tiny_model()
    model.set_weights(reference.get_weights())
    model.compile(optimizer=keras.optimizers.SGD(0.5))

@tf.function
def step(x, y):
    def replica(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = model.compute_loss(x, y, pred)
        return loss, tape.gradient(loss, model.trainable_variables), tf.shape(x)[0]
    loss, grads, sizes = strategy.run(replica, args=(x, y))
    return (strategy.reduce("SUM", loss, axis=None),
            [strategy.reduce("SUM", g, axis=None) for g in grads],
            strategy.experimental_local_results(sizes))

dist = iter(strategy.experimental_distribute_dataset(ds))
loss, grads, sizes = step(*next(dist))
def rel_err(grads):
    return max(float(np.max(np.abs(a.numpy() - b.numpy())) / (np.max(np.abs(b.numpy())) + 1e-12))
               for a, b in zip(grads, ref_grads))

grad_err = rel_err(grads)
# the same sub-batches through distribute_datasets_from_function (the multi-worker path)
per_worker = distribute.distributed_identity_dataset(strategy, table, faces, LABELS, num_positives=3,
                                                     num_negatives=3, queries_per_replica=8,
                                                     augment=False, repeat=False)
loss_fn, grads_fn, sizes_fn = step(*next(iter(per_worker)))

# and a real Keras step: weights move by -lr * the single-device gradient
before = [v.numpy() for v in model.trainable_variables]
history = model.fit(ds.take(1), epochs=1, steps_per_epoch=1, verbose=0)
step_err = max(float(np.max(np.abs((b - v.numpy()) / 0.5 - g.numpy())) / (np.max(np.abs(g.numpy())) + 1e-12))
               for b, v, g in zip(before, model.trainable_variables, ref_grads))
print("RESULT " + json.dumps({"loss": float(loss), "reference_loss": float(total), "grad_err": grad_err,
                              "step_err": step_err, "sizes": [int(s) for s in sizes],
                              "from_function_loss": float(loss_fn), "from_function_grad_err": rel_err(grads_fn),
                              "from_function_sizes": [int(s) for s in sizes_fn],
                              "fit_ce_loss": float(history.history["ce_loss"][0]), "reference_ce": ref_ce,
                              "replicas": strategy.num_replicas_in_sync,
                              "fit_loss": float(history.history["loss"][0])}))
'''


def test_mirrored_step_equals_single_device():
    result = _result(_run(MIRRORED))
    assert result["replicas"] == 2 and result["sizes"] == [8, 8]
    assert abs(result["loss"] - result["reference_loss"]) <= 1e-5 * max(1.0, abs(result["reference_loss"]))
    assert result["grad_err"] < 1e-4, result
    assert result["from_function_sizes"] == [8, 8]
    assert abs(result["from_function_loss"] - result["reference_loss"]) <= 1e-5 * max(1.0, abs(result["reference_loss"]))
    assert result["from_function_grad_err"] < 1e-4, result
    assert result["step_err"] < 1e-3, result
    assert abs(result["fit_loss"] - result["reference_loss"]) <= 1e-4 * max(1.0, abs(result["reference_loss"]))
    # the logged ce_loss metric must not depend on the number of replicas
    assert abs(result["fit_ce_loss"] - result["reference_ce"]) <= 1e-4 * max(1.0, result["reference_ce"]), result


# -- two workers on localhost --------------------------------------------------------------------

WORKER = '''
import tensorflow as tf
from fer_tf.training import distribute
strategy = distribute.get_strategy("multi_worker", communication="ring")
import keras
from fer_tf.config import TrainConfig

table, faces = synthetic()
config = TrainConfig(epochs=2, learning_rate=1e-3, seed=0)
made = {}

def make(start_epoch):
    ds, batcher = distribute.distributed_identity_dataset(
        strategy, table, faces, LABELS, num_positives=3, num_negatives=3, queries_per_replica=6,
        start_epoch=start_epoch, return_batcher=True)
    return ds

_, batcher = distribute.replica_identity_dataset(table, faces, LABELS, strategy.num_replicas_in_sync,
                                                 num_positives=3, num_negatives=3,
                                                 queries_per_replica=6, return_batcher=True)
steps = min(3, batcher.steps_per_epoch)
model, history = distribute.fit(tiny_model, make, config, steps, strategy=strategy,
                                workdir=os.environ["WORKDIR"], verbose=0)
task, index, chief = distribute.worker_info(strategy)
checksum = float(sum(np.sum(v.numpy()) for v in model.trainable_variables))
stats = float(sum(np.sum(v.numpy()) for v in model.non_trainable_variables))
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "epochs": len(history),
                              "loss": history[-1]["loss"], "chief": chief, "checksum": checksum,
                              "stats": stats}))
'''


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_local_workers_train(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(_run(WORKER, env={"TF_CONFIG": json.dumps(tf_config), "WORKDIR": str(tmp_path),
                                       "OMP_NUM_THREADS": "1"}))
    results = [_result(p, timeout=300) for p in procs]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["epochs"] == 2 and np.isfinite(r["loss"]) for r in results)
    # the workers' trainable weights stay in sync (batch-norm moving statistics are per replica)
    assert abs(results[0]["checksum"] - results[1]["checksum"]) <= 1e-4 * max(1.0, abs(results[0]["checksum"]))
    assert (tmp_path / "last.keras").is_file() and (tmp_path / "state.json").is_file()


# -- JAX: keras.distribution.DataParallel on two virtual CPU devices == one device ----------------

DATA_PARALLEL = '''
import json, sys
import jax
import keras
import numpy as np
from fixtures_training import TINY_LABELS, synthetic_data, tiny_model
from fer_tf.feeding.feeders import identity_aware_dataset

assert len(jax.devices()) == 2, jax.devices()
table, faces = synthetic_data(subjects=4)
ds = identity_aware_dataset(table, faces, TINY_LABELS, num_positives=3, num_negatives=3,
                            queries_per_batch=12, seed=0, repeat=False, augment=False)
x, y = ds[0]
x, y = np.asarray(x), {k: np.asarray(v) for k, v in y.items()}


def loss_and_grads(model, x, y):
    def loss_of(trainable, non_trainable, metrics, x, y):
        y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        loss, _ = model.stateless_compute_loss(trainable, non_trainable, metrics, x=x, y=y,
                                               y_pred=y_pred, training=True)
        return loss

    values = lambda variables: [v.value for v in variables]
    loss, grads = jax.jit(jax.value_and_grad(loss_of))(
        values(model.trainable_variables), values(model.non_trainable_variables),
        values(model.metrics_variables), x, y)
    return float(loss), [np.asarray(g) for g in grads]


keras.utils.set_random_seed(0)
single = tiny_model(labels=TINY_LABELS, dropout=0.0)
ref_loss, ref_grads = loss_and_grads(single, x, y)

distribution = keras.distribution.DataParallel(devices=jax.devices())
with distribution.scope():
    model = tiny_model(labels=TINY_LABELS, dropout=0.0)
    model.set_weights(single.get_weights())
put = lambda a: jax.device_put(a, distribution.get_data_layout(a.shape).backend_layout)
xs, ys = put(x), {k: put(v) for k, v in y.items()}
shard_rows = sorted(int(s.data.shape[0]) for s in xs.addressable_shards)
loss, grads = loss_and_grads(model, xs, ys)

# relative to each gradient's size, at least a tenth of the largest one (a conv bias before batch
# normalisation has a gradient of about 0, where only float32 rounding is left)
scale = max(float(np.max(np.abs(g))) for g in ref_grads)

def rel_err(grads):
    return max(float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 0.1 * scale)
               for a, b in zip(grads, ref_grads))

# a real Keras step under the distribution: the weights move by -lr * the single-device gradient
keras.distribution.set_distribution(distribution)
model.compile(optimizer=keras.optimizers.SGD(0.5))
before = [np.asarray(v.value) for v in model.trainable_variables]
logs = model.train_on_batch(x, y, return_dict=True)
step_err = rel_err([(b - np.asarray(v.value)) / 0.5 for b, v in zip(before, model.trainable_variables)])
print("RESULT " + json.dumps({
    "devices": len(jax.devices()), "shard_rows": shard_rows, "batch": int(len(x)),
    "cross_shard_indices": int(np.sum(y["tuples"][: len(x) // 2] >= len(x) // 2)),
    "loss": loss, "reference_loss": ref_loss, "grad_err": rel_err(grads), "step_err": step_err,
    "fit_loss": float(logs["loss"]), "tensorflow_imported": "tensorflow" in sys.modules}))
'''


def test_jax_data_parallel_loss_and_gradients_equal_one_device(tmp_path):
    """Under JAX, DataParallel shards the batch but one loss sees the whole global batch, so the
    tuple indices stay global: loss and gradients on two devices equal those on one."""
    from conftest import jax_environment

    proc = subprocess.Popen([sys.executable, "-c", DATA_PARALLEL], cwd=REPO,
                            env=jax_environment(tmp_path, devices=2, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = _result(proc, timeout=600)
    assert result["devices"] == 2 and result["shard_rows"] == [6, 6] and result["batch"] == 12
    assert result["cross_shard_indices"] > 0  # tuples of device 0's rows point into device 1's
    assert not result["tensorflow_imported"]
    assert abs(result["loss"] - result["reference_loss"]) <= 1e-5 * max(1.0, abs(result["reference_loss"]))
    assert result["grad_err"] < 1e-4, result
    assert result["step_err"] < 1e-3, result
    assert abs(result["fit_loss"] - result["reference_loss"]) <= 1e-4 * max(1.0, abs(result["reference_loss"]))

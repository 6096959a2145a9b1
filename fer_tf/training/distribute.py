"""Distributed training: strategies, and identity-aware batches that stay whole on every replica.

Strategies (:func:`get_strategy`):

- ``"default"``: no distribution (TensorFlow's default strategy, one device);
- ``"mirrored"``: :class:`tf.distribute.MirroredStrategy` over the local GPUs, or, on a machine
  without GPUs, over all logical CPU devices (see :func:`split_cpu`, which must run before
  TensorFlow initialises);
- ``"multi_worker"``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, configured by the
  ``TF_CONFIG`` environment variable (``{"cluster": {"worker": ["host:port", ...]}, "task":
  {"type": "worker", "index": i}}``). Create it at the start of the program, before other
  TensorFlow work.

Why batches need care. ``tf.distribute`` hands each replica an even, contiguous slice of the batch
dimension, and every replica computes the loss on its own slice only. The tuple indices of an
identity-aware batch (docs/architecture.md "Batches") point at other images of the batch; if a
subject's images, or a tuple's members, landed on two replicas, the indices would point at the
wrong images. So a distributed global batch here is ``R`` complete, independent sub-batches
(``R`` = replicas in sync), each drawn by :class:`fer_tf.data.sampling.IdentitySampler` on its own
(in ``in_batch`` mode: whole subject groups; in ``tuple`` mode: whole tuples), each with tuple
indices *local to its own slice* (0 .. X-1). Replica ``r`` receives exactly sub-batch ``r``.

- :func:`replica_identity_dataset`: a plain ``tf.data.Dataset`` of global batches
  ``[R * X, ...]``; for single-worker ``MirroredStrategy`` (Keras' ``fit`` splits it evenly).
  With ``global_indices=True`` the indices are shifted to the whole batch instead, so the same
  data can be fed to a single device.
- :func:`distributed_identity_dataset`: the same sub-batches through
  ``strategy.distribute_datasets_from_function``: each worker builds only its own replicas'
  sub-batches; use it for ``multi_worker`` (and it works for ``mirrored`` too).
- :func:`fit`: :func:`fer_tf.training.loop.fit` under a strategy: the model is built, compiled (and
  restored on resume) inside ``strategy.scope()``; on workers other than the chief the
  checkpoints go to a private folder, so that only the chief writes the real ones.

Each replica averages the loss over its own queries and Keras divides by ``R`` before gradients
are summed across replicas, so a step's gradient is the mean of the replicas' gradients. Batch
normalisation statistics are per replica (not synchronised), exactly as if each sub-batch were a
separate batch on one device; ``tests/test_distribute.py`` checks that one mirrored step equals
that single-device computation.

Epochs: global step ``g`` of epoch ``k`` takes the sampler's batches ``g*R .. g*R+R-1`` of epoch
``k`` (wrapping around to the epoch's first batches to fill the last step), so epoch ``k`` still
depends only on ``(seed, k)`` and resuming works as without distribution.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib

from fer_tf.training import loop
from fer_tf.errors import ConfigError, DatasetError
from fer_tf.feeding.feeders import index_batch_dataset
from fer_tf.data.sampling import IdentitySampler

STRATEGIES = ("default", "mirrored", "multi_worker")


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------


def split_cpu(count):
    """Split the first physical CPU into ``count`` logical devices (for tests and CPU-only machines).

    Must be called before TensorFlow initialises its devices (before the first op); raises
    :class:`ConfigError` otherwise.
    """
    import tensorflow as tf  # deferred: tf.distribute is TensorFlow only

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))])
    except RuntimeError as exc:
        raise ConfigError(f"cannot split the CPU into {count} devices: {exc}; call split_cpu before "
                          "any other TensorFlow work") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def read_tf_config(environ=None):
    """The parsed ``TF_CONFIG`` (``None`` when unset), checked for the fields multi-worker needs."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc})") from None
    workers = (config.get("cluster") or {}).get("worker")
    task = config.get("task") or {}
    if not workers or not isinstance(workers, list):
        raise ConfigError('TF_CONFIG needs "cluster": {"worker": ["host:port", ...]}')
    if task.get("type") not in ("worker", "chief") or not isinstance(task.get("index"), int):
        raise ConfigError('TF_CONFIG needs "task": {"type": "worker", "index": <int>}')
    if task["type"] == "worker" and not 0 <= task["index"] < len(workers):
        raise ConfigError(f"TF_CONFIG task index {task['index']} is not among the "
                          f"{len(workers)} workers")
    return config


def get_strategy(name="default", devices=None, communication="auto"):
    """A ``tf.distribute.Strategy`` by name: ``default``, ``mirrored`` or ``multi_worker``.

    ``devices`` (mirrored only): device names; default all GPUs, else all logical CPUs.
    ``communication`` (multi_worker only): ``"auto"``, ``"ring"`` (gRPC, works on CPUs) or
    ``"nccl"`` (GPUs).
    """
    import tensorflow as tf  # deferred: tf.distribute is TensorFlow only

    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        cross = None
        if not any("GPU" in d.upper() for d in devices):
            cross = tf.distribute.ReductionToOneDevice(reduce_to_device=devices[0])
        return tf.distribute.MirroredStrategy(devices=list(devices), cross_device_ops=cross)
    if read_tf_config() is None:
        raise ConfigError(
            "the multi_worker strategy reads the cluster from TF_CONFIG, which is not set; e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}\'')
    implementations = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                       "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                       "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
    if communication not in implementations:
        raise ConfigError(f"unknown communication {communication!r}; use auto, ring or nccl")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementations[communication])
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


# ----------------------------------------------------------------------------------------------
# Replica-whole identity-aware batches
# ----------------------------------------------------------------------------------------------


class ReplicaBatches:
    """Groups an :class:`~fer_tf.data.sampling.IdentitySampler`'s index batches ``R`` per global step.

    Each :class:`~fer_tf.data.sampling.IndexBatch` is one replica's complete sub-batch, with tuple
    indices local to it. ``steps_per_epoch = ceil(sampler.steps_per_epoch / R)``; the last step of
    an epoch is filled with the epoch's first batches again.
    """

    def __init__(self, sampler, num_replicas):
        if int(num_replicas) < 1:
            raise ConfigError(f"num_replicas must be >= 1, got {num_replicas!r}")
        self.sampler = sampler
        self.num_replicas = int(num_replicas)
        self.steps_per_epoch = math.ceil(sampler.steps_per_epoch / self.num_replicas)
        self.sub_batch_size = sampler.batch_size
        self.global_batch_size = sampler.batch_size * self.num_replicas

    def epoch(self, epoch):
        """The global steps of ``epoch``: lists of ``R`` index batches."""
        batches = list(self.sampler.epoch(epoch))
        r, s = self.num_replicas, len(batches)
        return [[batches[(g * r + i) % s] for i in range(r)] for g in range(self.steps_per_epoch)]

    def steps(self, start_epoch=0, repeat=True, replicas=None):
        """``(epoch, step, [IndexBatch for each replica in replicas])`` from ``start_epoch`` on."""
        replicas = list(range(self.num_replicas)) if replicas is None else list(replicas)
        epoch = int(start_epoch)
        while True:
            for step, group in enumerate(self.epoch(epoch)):
                yield epoch, step, [group[i] for i in replicas]
            if not repeat:
                return
            epoch += 1


def _make_sampler(table, labels, mode, num_positives, num_negatives, queries_per_replica, seed,
                  max_per_subject, balance):
    return IdentitySampler(table, labels, mode=mode, num_positives=num_positives,
                           num_negatives=num_negatives, queries_per_batch=queries_per_replica,
                           seed=seed, max_per_subject=max_per_subject, balance=balance)


def _dataset(batcher, faces, augment, start_epoch, repeat, preprocess, replicas, global_indices,
             together=True):
    """The sub-batches of ``replicas`` through :func:`fer_tf.feeding.feeders.index_batch_dataset`, per
    global step: one element with all of them one after the other (``together``), or one element
    per sub-batch."""

    def epoch_groups(epoch):
        steps = [[group[i] for i in replicas] for group in batcher.epoch(epoch)]
        return steps if together else [[sub_batch] for step in steps for sub_batch in step]

    k = len(replicas) if together else 1
    return index_batch_dataset(batcher.sampler, faces, epoch_groups,
                               batcher.steps_per_epoch * (len(replicas) // k), group_size=k,
                               start_epoch=start_epoch, repeat=repeat, augment=augment,
                               preprocess=preprocess, global_indices=global_indices)


def replica_identity_dataset(table, faces, labels, num_replicas, mode="in_batch", num_positives=6,
                             num_negatives=6, queries_per_replica=None, seed=0, augment=True,
                             repeat=True, start_epoch=0, preprocess=None, max_per_subject=None,
                             balance=True, global_indices=False, return_batcher=False):
    """Global batches of ``num_replicas`` whole identity-aware sub-batches (see the module doc).

    Yields ``(images [R*X,48,48,1], {"expression": [R*X], "tuples": [R*X, M+N]})`` where rows
    ``r*X .. r*X+X-1`` are sub-batch ``r`` and its tuple indices are local to it (0..X-1), as a
    replica sees them after ``tf.distribute`` splits the batch evenly; ``global_indices=True``
    offsets them to index the whole batch (to train the same data on one device).
    ``queries_per_replica`` is the sampler's ``queries_per_batch`` (one sub-batch).
    ``steps_per_epoch`` is ``batcher.steps_per_epoch`` (``return_batcher=True`` returns
    ``(dataset, batcher)``).
    """
    if len(faces) != len(table):
        raise DatasetError(f"{len(faces)} faces for a table of {len(table)} rows; they must match row by row")
    sampler = _make_sampler(table, labels, mode, num_positives, num_negatives, queries_per_replica,
                            seed, max_per_subject, balance)
    batcher = ReplicaBatches(sampler, num_replicas)
    ds = _dataset(batcher, faces, augment, start_epoch, repeat, preprocess,
                  list(range(batcher.num_replicas)), global_indices)
    return (ds, batcher) if return_batcher else ds


def distributed_identity_dataset(strategy, table, faces, labels, mode="in_batch", num_positives=6,
                                 num_negatives=6, queries_per_replica=None, seed=0, augment=True,
                                 repeat=True, start_epoch=0, preprocess=None, max_per_subject=None,
                                 balance=True, return_batcher=False):
    """The replica-whole batches, built per worker with ``distribute_datasets_from_function``.

    Worker ``p`` with ``L`` local replicas produces, for every global step, the sub-batches of its
    replicas ``p*L .. p*L+L-1`` one after the other; ``tf.distribute`` hands consecutive elements
    to its local replicas, so global replica ``i`` gets sub-batch ``i``. All workers sample with
    the same seed, so they agree on the global batch without communicating. Pass the result to
    ``model.fit`` with ``steps_per_epoch=batcher.steps_per_epoch``.
    """
    import tensorflow as tf  # deferred: tf.distribute is TensorFlow only

    if len(faces) != len(table):
        raise DatasetError(f"{len(faces)} faces for a table of {len(table)} rows; they must match row by row")
    replicas = int(strategy.num_replicas_in_sync)
    sampler = _make_sampler(table, labels, mode, num_positives, num_negatives, queries_per_replica,
                            seed, max_per_subject, balance)
    batcher = ReplicaBatches(sampler, replicas)

    def dataset_fn(context):
        pipelines = int(context.num_input_pipelines)
        if replicas % pipelines:
            raise ConfigError(f"{replicas} replicas cannot be split evenly over {pipelines} workers")
        local = replicas // pipelines
        first = int(context.input_pipeline_id) * local
        return _dataset(batcher, faces, augment, start_epoch, repeat, preprocess,
                        list(range(first, first + local)), global_indices=False, together=False)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    dist = strategy.distribute_datasets_from_function(dataset_fn, options=options)
    return (dist, batcher) if return_batcher else dist


# ----------------------------------------------------------------------------------------------
# Training under a strategy
# ----------------------------------------------------------------------------------------------


def worker_info(strategy=None):
    """``(task_type, task_id, is_chief)`` of this process (``("worker", 0, True)`` when alone)."""
    resolver = getattr(getattr(strategy, "cluster_resolver", None), "task_type", None)
    if strategy is None or resolver is None:
        return "worker", 0, True
    task_type = strategy.cluster_resolver.task_type
    task_id = int(strategy.cluster_resolver.task_id or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0)
    return task_type, task_id, is_chief


def worker_workdir(workdir, strategy=None):
    """Where this worker writes checkpoints: ``workdir`` on the chief, a private folder elsewhere.

    Every worker has to run the same saving code (collective variable reads), but only the chief's
    files are the run's checkpoint; the others write into ``workdir/.workers/<type>-<id>``.
    """
    if workdir is None:
        return None
    task_type, task_id, chief = worker_info(strategy)
    if chief:
        return pathlib.Path(workdir)
    return pathlib.Path(workdir) / ".workers" / f"{task_type}-{task_id}"


@contextlib.contextmanager
def keras_multi_worker_fix(strategy):
    """Work around two places where Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``.

    Before training, Keras (3.15) takes one distributed batch and all-reduces it with
    ``strategy.reduce("MEAN", batch)`` only to learn the input shapes for its symbolic build; the
    collective implementation cannot reduce that nested structure and ``fit`` fails with "Attempt
    to convert a value (PerReplica...) to a Tensor" (keras-team/keras#20585). Only the shapes
    matter, so inside this context the build uses this worker's first local replica's batch
    instead. No effect for other strategies.
    """
    import tensorflow as tf  # only under tf.distribute, i.e. the TensorFlow backend
    from keras import tree

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        yield
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer  # imports TensorFlow

    TensorFlowTrainer = tf_trainer.TensorFlowTrainer
    original = TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def local_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return None
        if iterator is not None and data_batch is None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: (self.distribute_strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v), batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)
        return None

    TensorFlowTrainer._maybe_symbolic_build = local_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        TensorFlowTrainer._maybe_symbolic_build = original
        tf_trainer.reduce_per_replica = original_reduce


def scope(strategy):
    """``strategy.scope()``, or a no-op context for ``None``."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def fit(build_model, make_train_dataset, config, steps_per_epoch, strategy=None, workdir=None,
        **kwargs):
    """:func:`fer_tf.training.loop.fit` under ``strategy``: returns ``(model, history)``.

    ``build_model()`` is called inside ``strategy.scope()`` (so the variables are mirrored), and
    compiling, restoring a checkpoint and ``model.fit`` run there too. ``make_train_dataset``
    receives the start epoch and returns a ``tf.data.Dataset`` of global batches (e.g.
    :func:`replica_identity_dataset`) or a distributed dataset (:func:`distributed_identity_dataset`).
    Other keyword arguments go to :func:`fer_tf.training.loop.fit`. Only the chief worker writes
    checkpoints into ``workdir`` (see :func:`worker_workdir`).
    """
    with scope(strategy):
        model = build_model()
    if strategy is None:
        return loop.fit(model, make_train_dataset, config, steps_per_epoch, workdir=workdir, **kwargs)
    with strategy.scope(), keras_multi_worker_fix(strategy):
        return loop.fit(model, make_train_dataset, config, steps_per_epoch,
                        workdir=worker_workdir(workdir, strategy), **kwargs)

"""The one feeder abstraction: a :class:`Feed` says what each batch is, a backend makes the batches.

A feed is backend-neutral and decided in NumPy: for every epoch, a list of :class:`Batch` (the
table rows of the batch's images, their targets, one augmentation seed per slice of rows), plus
the faces tensor to gather from and the augmentation to apply. Every feeder of
:mod:`fer_tf.feeding.feeders` (identity-aware, classification, evaluation) is such a feed; only
:func:`Feed.dataset` and :func:`join` look at the backend:

- **TensorFlow: ``tf.data``.** A generator yields each batch's rows, targets and seeds; a map
  gathers the faces and crops them, with uniforms from ``tf.random.stateless_uniform`` seeded by
  the slice's seed; the dataset is infinite (``repeat``) or one epoch, with its cardinality set.
- **Other backends (JAX, PyTorch): ``keras.utils.PyDataset``.** One epoch per pass, the next one
  after each of Keras' ``on_epoch_end`` calls; uniforms from NumPy generators seeded by the same
  seeds; the gather-and-augment step is compiled with ``jax.jit`` under JAX (it runs on the
  accelerator, the host only sends row indices). Backends that compile one step shape get a
  short last batch topped up (``Feed.top_up``).

On both, a batch holds the same rows and targets, and its crops depend only on its seeds, so a
resumed run sees the same images. The element is ``(images [B, 48, 48, 1] float32, targets)``, or
``images`` alone (``(images,)`` for a PyDataset) when the feed has no targets.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import keras
import numpy as np
from keras import ops

from fer_tf.feeding.augment import NUM_UNIFORMS, Augmentation, augment_faces
from fer_tf.data.crops import center_crop
from fer_tf.feeding.face_tensors import CROP
from fer_tf.feeding.mixing import mix_images, split_plan


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch as table rows: ``rows [B]`` (indices into the feed's faces), ``targets``
    (``{name: array [B, ...]}``), ``seeds [k, 2]`` int64 (slice i, rows ``i*B/k .. (i+1)*B/k - 1``,
    is augmented with ``seeds[i]``)."""

    rows: np.ndarray
    targets: dict
    seeds: np.ndarray


@dataclasses.dataclass(frozen=True)
class Feed:
    """What a feeder serves, independent of the backend that serves it.

    Args:
        faces: the normalised faces ``[n, 60, 60]`` float32 (a backend tensor or an array).
        epoch_batches: ``epoch -> iterable of Batch``: the batches of that epoch, from
            ``(seed, epoch)`` alone.
        steps_per_epoch: how many batches ``epoch_batches`` gives per epoch.
        targets: ``{name: (dtype, shape of one row)}``, the targets every batch carries.
        augmentation: an :class:`~fer_tf.feeding.augment.Augmentation`, or None for centre crops.
        batch_rows: the rows of every batch, or None when they vary (a short last batch).
        slices: ``k``, the augmentation seeds per batch (``batch_rows`` divisible by it).
        top_up: on backends that compile one step shape (PyDataset), fill a short last batch up
            with the epoch's first batch's leading rows and targets.
        finish: ``Batch -> Batch``, applied to every batch last (after topping up), e.g. to add a
            mixing plan (:mod:`fer_tf.feeding.mixing`; the backends then mix the augmented images
            and drop the plan's keys from the targets).
    """

    faces: object
    epoch_batches: Callable[[int], Iterable[Batch]]
    steps_per_epoch: int
    targets: dict = dataclasses.field(default_factory=dict)
    augmentation: Augmentation | None = None
    batch_rows: int | None = None
    slices: int = 1
    top_up: bool = False
    finish: Callable[[Batch], Batch] | None = None

    def batches(self, epoch):
        """The batches of ``epoch`` as the backend serves them: topped up (PyDataset) and
        finished."""
        batches = self.epoch_batches(epoch)
        if self.top_up and not uses_tf_data():
            batches = _topped_up(list(batches))
        return batches if self.finish is None else (self.finish(b) for b in batches)

    def dataset(self, start_epoch=0, repeat=True, min_batches=None):
        """The batches from ``start_epoch`` on, for ``model.fit``/``predict``.

        TensorFlow: a ``tf.data.Dataset``, infinite with ``repeat`` (epochs ``start_epoch,
        start_epoch+1, ...``), else the one epoch with its cardinality. Other backends: a
        ``keras.utils.PyDataset`` serving one epoch per pass (``repeat`` is Keras' business there);
        ``min_batches``: consecutive epochs until a pass has at least that many batches (for
        ``steps_per_epoch`` beyond one epoch of the feed).
        """
        if uses_tf_data():
            return _tf_dataset(self, start_epoch, repeat)
        return FeedBatches(self, start_epoch, min_batches=min_batches)


def uses_tf_data():
    """True when feeds become ``tf.data`` datasets (TensorFlow backend); else ``keras.utils.PyDataset``."""
    return keras.backend.backend() == "tensorflow"


def join(first, second, fill=-1):
    """Batch i of ``first`` followed by batch i of ``second``: images and every target; a target
    only one of them has (e.g. ``tuples`` of the first, ``expression_target`` of the second) is
    ``fill`` for the other's rows. Both must be datasets of :func:`Feed.dataset` on the current
    backend."""
    if uses_tf_data():
        return _tf_join(first, second, fill)
    return JointBatches(first, second, fill)


# ----------------------------------------------------------------------------------------------
# tf.data backend
# ----------------------------------------------------------------------------------------------


def _tf_images(feed):
    """``(rows, seed) -> images`` in TensorFlow ops: gather, then augment or centre-crop."""
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    faces_t, aug = feed.faces, feed.augmentation
    size = aug.crop_size if aug is not None else CROP

    def images_of(rows, seed):
        x = tf.gather(faces_t, rows)[..., None]
        if aug is None:
            x = center_crop(x, size=CROP)
        else:
            u = tf.random.stateless_uniform([tf.shape(rows)[0], NUM_UNIFORMS], seed=tf.cast(seed, tf.int64))
            x = augment_faces(x, u, aug)
        x = tf.reshape(x, [-1, size, size, 1])
        return tf.cast(x, tf.float32)

    return images_of


def _map_calls(tf):
    """``num_parallel_calls`` of the maps below: AUTOTUNE, or ``None`` (a sequential map) under
    op determinism. There TensorFlow's MakeDeterministic rewrite turns a parallel map after the
    generator into a sequential one anyway, and copies an attribute that the sequential op lacks,
    so TensorFlow 2.19 logs an E-line ("NodeDef mentions attribute use_unbounded_threadpool") on
    every pipeline; building the sequential map directly gives the same batches in silence."""
    enabled = getattr(tf.config.experimental, "is_op_determinism_enabled", None)
    if enabled is None:  # TensorFlow 2.19 exports enable_ but keeps the query private
        # deferred: tensorflow (its private config module; only reached under TensorFlow)
        from tensorflow.python.framework.config import is_op_determinism_enabled as enabled
    return None if enabled() else tf.data.AUTOTUNE


def _tf_dataset(feed, start_epoch, repeat):
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    has_targets = bool(feed.targets)

    def generate():
        epoch = int(start_epoch)
        while True:
            for b in feed.batches(epoch):
                yield (b.rows, b.targets, b.seeds) if has_targets else (b.rows, b.seeds)
            if not repeat:
                return
            epoch += 1

    b, k = feed.batch_rows, int(feed.slices)
    specs = {name: tf.TensorSpec([b, *shape], tf.as_dtype(np.dtype(dtype)))
             for name, (dtype, shape) in feed.targets.items()}
    signature = ((tf.TensorSpec([b], tf.int64),) + ((specs,) if has_targets else ())
                 + (tf.TensorSpec([k, 2], tf.int64),))
    images_of = _tf_images(feed)

    def assemble(rows, *rest):
        seeds = rest[-1]
        if k == 1:
            images = images_of(rows, seeds[0])
        else:
            x = b // k
            images = tf.concat([images_of(rows[i * x:(i + 1) * x], seeds[i]) for i in range(k)], axis=0)
        if not has_targets:
            return images
        targets, plan = split_plan(rest[0])
        return (images, targets) if plan is None else (mix_images(images, plan), targets)

    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(assemble, num_parallel_calls=_map_calls(tf))
    steps = int(feed.steps_per_epoch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if repeat else steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def _tf_join(first, second, fill):
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    def filled(like, rows):
        shape = tf.concat([tf.shape(rows)[:1], tf.shape(like)[1:]], axis=0)
        return tf.fill(shape, tf.constant(fill, like.dtype))

    def merge(a, b):
        (xa, ya), (xb, yb) = a, b
        targets = {}
        for name, value in ya.items():
            other = tf.cast(yb[name], value.dtype) if name in yb else filled(value, xb)
            targets[name] = tf.concat([value, other], 0)
        for name, value in yb.items():  # e.g. distillation targets of the second's rows only
            if name not in ya:
                targets[name] = tf.concat([filled(value, xa), value], 0)
        return tf.concat([xa, tf.cast(xb, xa.dtype)], 0), targets

    ds = tf.data.Dataset.zip((first, second)).map(merge, num_parallel_calls=_map_calls(tf))
    return ds.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------
# keras.utils.PyDataset backend
# ----------------------------------------------------------------------------------------------


def _compile(fn):
    """``fn`` compiled where the backend allows it cheaply (JAX); as it is elsewhere."""
    if keras.backend.backend() == "jax":
        import jax  # only under the JAX backend

        return jax.jit(fn)
    return fn


def _uniforms(seeds, rows):
    """``[rows, NUM_UNIFORMS]`` float32 uniforms: each slice of ``rows / len(seeds)`` rows from a
    NumPy generator seeded with its seed."""
    per_slice = rows // len(seeds)
    return np.concatenate([np.random.default_rng(np.asarray(seed, np.int64)).random((per_slice, NUM_UNIFORMS),
                                                                                     dtype=np.float32)
                           for seed in seeds])


def _topped_up(batches):
    """An epoch's batches with a short last one filled up from the first one's leading rows."""
    if len(batches) < 2 or len(batches[-1].rows) >= len(batches[0].rows):
        return batches
    first, last = batches[0], batches[-1]
    need = len(first.rows) - len(last.rows)
    targets = {name: np.concatenate([value, first.targets[name][:need]]) for name, value in last.targets.items()}
    return batches[:-1] + [Batch(np.concatenate([last.rows, first.rows[:need]]), targets, last.seeds)]


class FeedBatches(keras.utils.PyDataset):
    """A :class:`Feed` as a ``keras.utils.PyDataset``: one epoch per pass (see :func:`Feed.dataset`)."""

    def __init__(self, feed: Feed, start_epoch=0, min_batches=None):
        super().__init__()
        faces = ops.cast(ops.convert_to_tensor(feed.faces), "float32")
        self.faces = faces[..., None] if len(faces.shape) == 3 else faces
        self.feed, self.min_batches = feed, min_batches
        self.epoch = int(start_epoch)
        self._load()
        aug = feed.augmentation
        if aug is None:
            self._images = _compile(lambda faces, rows: center_crop(ops.take(faces, rows, axis=0)))
        else:
            self._images = _compile(lambda faces, rows, u: augment_faces(ops.take(faces, rows, axis=0), u, aug))

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        batch = self._batches[index]
        rows = np.asarray(batch.rows, np.int32)
        if self.feed.augmentation is None:
            images = self._images(self.faces, rows)
        else:
            images = self._images(self.faces, rows, _uniforms(batch.seeds, len(rows)))
        if not self.feed.targets:
            return (images,)
        targets, plan = split_plan(batch.targets)
        return (images, targets) if plan is None else (mix_images(images, plan), targets)

    def _epoch(self, epoch):
        return list(self.feed.batches(epoch))

    def _load(self):
        self._batches = self._epoch(self.epoch)
        while self.min_batches and len(self._batches) < self.min_batches:
            self.epoch += 1
            self._batches += self._epoch(self.epoch)

    def on_epoch_end(self):
        self.epoch += 1
        self._load()


class JointBatches(keras.utils.PyDataset):
    """:func:`join` for PyDatasets."""

    def __init__(self, first, second, fill=-1):
        super().__init__()
        self.first, self.second, self.fill = first, second, fill

    def __len__(self):
        return min(len(self.first), len(self.second))

    def __getitem__(self, index):
        (xa, ya), (xb, yb) = self.first[index], self.second[index]
        rows_b = int(xb.shape[0])
        rows_a = int(xa.shape[0])
        targets = {}
        for name, value in ya.items():
            other = yb.get(name)
            if other is None:
                other = np.full((rows_b,) + tuple(np.shape(value)[1:]), self.fill, np.asarray(value).dtype)
            targets[name] = np.concatenate([np.asarray(value), np.asarray(other).astype(np.asarray(value).dtype)])
        for name, value in yb.items():  # e.g. distillation targets of the second's rows only
            if name not in ya:
                value = np.asarray(value)
                targets[name] = np.concatenate([np.full((rows_a,) + value.shape[1:], self.fill, value.dtype), value])
        return ops.concatenate([xa, ops.cast(xb, xa.dtype)], axis=0), targets

    def on_epoch_end(self):
        self.first.on_epoch_end()
        self.second.on_epoch_end()


"""Batches as ``keras.utils.PyDataset``: how :mod:`fer_tf.data.sampling` feeds ``model.fit`` without TensorFlow.

Under the TensorFlow backend the pipelines of :mod:`fer_tf.data.sampling` are ``tf.data`` datasets; under
JAX they are these classes, built from the same NumPy index samplers, so a batch holds
the same rows and targets on every backend. Two kinds:

- :class:`ArrayBatches`: consecutive slices of in-memory arrays (evaluation, validation);
- :class:`FaceBatches`: the faces of given table rows, augmented (:func:`fer_tf.data.augment.augment_faces`)
  or centre-cropped, with their targets. The augmentation's uniforms come from NumPy generators
  seeded with ``(seed, epoch, step)``, so a resumed run sees the same images.

Under JAX the gather-and-augment step is compiled once with ``jax.jit`` and runs on the default
device (the accelerator when there is one), so the host only sends row indices.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from fer_tf.data.augment import NUM_UNIFORMS, Augmentation, augment_faces
from fer_tf.preprocess.normalize import center_crop


def _compile(fn):
    """``fn`` compiled where the backend allows it cheaply (JAX); as it is elsewhere."""
    if keras.backend.backend() == "jax":
        import jax  # only under the JAX backend

        return jax.jit(fn)
    return fn


class ArrayBatches(keras.utils.PyDataset):
    """``x[i:i+batch_size]`` (and the same slice of every array in ``y``), in order."""

    def __init__(self, x, y=None, batch_size=256):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, int(batch_size)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.y is None:
            return (self.x[part],)
        return self.x[part], {k: v[part] for k, v in self.y.items()}


class FaceBatches(keras.utils.PyDataset):
    """Batches of faces picked by row, from one epoch's list of index batches.

    Args:
        faces: normalised faces ``[n, 60, 60]``, an array or a backend tensor (kept on the device).
        epoch_batches: ``epoch -> list of (rows [X], targets {name: array [X, ...]}, seed)``.
        augmentation: an :class:`~fer_tf.data.augment.Augmentation`, or None for centre crops.
        start_epoch: the epoch this dataset serves first; Keras' ``on_epoch_end`` moves it on, so
            ``model.fit(dataset, epochs=k)`` sees epochs ``start_epoch .. start_epoch + k - 1``.
        min_batches: serve consecutive epochs until there are at least this many batches (one
            pass then spans several sampler epochs, as a repeated ``tf.data`` pipeline would).
    """

    def __init__(self, faces, epoch_batches, augmentation: Augmentation | None = None, start_epoch=0,
                 min_batches=None):
        super().__init__()
        faces = ops.cast(ops.convert_to_tensor(faces), "float32")
        self.faces = faces[..., None] if len(faces.shape) == 3 else faces
        self.epoch_batches, self.augmentation = epoch_batches, augmentation
        self.min_batches = min_batches
        self.epoch = int(start_epoch)
        self._load()
        aug = augmentation
        if aug is None:
            self._images = _compile(lambda faces, rows: center_crop(ops.take(faces, rows, axis=0)))
        else:
            self._images = _compile(
                lambda faces, rows, u: augment_faces(ops.take(faces, rows, axis=0), u, aug))

    def __len__(self):
        return len(self._batches)

    def __getitem__(self, index):
        rows, targets, seed = self._batches[index]
        rows = np.asarray(rows, np.int32)
        if self.augmentation is None:
            images = self._images(self.faces, rows)
        else:
            u = np.random.default_rng(np.asarray(seed, np.int64)).random((len(rows), NUM_UNIFORMS),
                                                                         dtype=np.float32)
            images = self._images(self.faces, rows, u)
        return images, targets

    def _load(self):
        self._batches = list(self.epoch_batches(self.epoch))
        while self.min_batches and len(self._batches) < self.min_batches:
            self.epoch += 1
            self._batches += list(self.epoch_batches(self.epoch))

    def on_epoch_end(self):
        self.epoch += 1
        self._load()


class JointBatches(keras.utils.PyDataset):
    """Batch i = batch i of ``first`` followed by batch i of ``second`` (images and every target;
    a target only ``first`` has, e.g. ``tuples``, is padded for ``second``'s rows with ``fill``)."""

    def __init__(self, first, second, fill=-1):
        super().__init__()
        self.first, self.second, self.fill = first, second, fill

    def __len__(self):
        return min(len(self.first), len(self.second))

    def __getitem__(self, index):
        (xa, ya), (xb, yb) = self.first[index], self.second[index]
        rows_b = int(xb.shape[0])
        targets = {}
        for name, value in ya.items():
            other = yb.get(name)
            if other is None:
                other = np.full((rows_b,) + tuple(np.shape(value)[1:]), self.fill, np.asarray(value).dtype)
            targets[name] = np.concatenate([np.asarray(value), np.asarray(other).astype(np.asarray(value).dtype)])
        return ops.concatenate([xa, ops.cast(xb, xa.dtype)], axis=0), targets

    def on_epoch_end(self):
        self.first.on_epoch_end()
        self.second.on_epoch_end()

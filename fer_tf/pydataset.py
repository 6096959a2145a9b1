"""Batches as ``keras.utils.PyDataset``: how :mod:`fer_tf.sampling` feeds ``model.fit`` without TensorFlow.

Under the TensorFlow backend the pipelines of :mod:`fer_tf.sampling` are ``tf.data`` datasets; under
JAX (or PyTorch) they are these classes, built from the same NumPy index samplers, so a batch holds
the same rows and targets on every backend. Two kinds:

- :class:`ArrayBatches`: consecutive slices of in-memory arrays (evaluation, validation);
- :class:`FaceBatches`: the faces of given table rows, augmented (:func:`fer_tf.augment.augment_faces`)
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

from fer_tf.augment import NUM_UNIFORMS, Augmentation, augment_faces
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
        faces: normalised faces, float32 ``[n, 60, 60]`` (kept on the device as one tensor).
        epoch_batches: ``epoch -> list of (rows [X], targets {name: array [X, ...]}, seed)``.
        augmentation: an :class:`~fer_tf.augment.Augmentation`, or None for centre crops.
        start_epoch: the epoch this dataset serves first; Keras' ``on_epoch_end`` moves it on, so
            ``model.fit(dataset, epochs=k)`` sees epochs ``start_epoch .. start_epoch + k - 1``.
    """

    def __init__(self, faces, epoch_batches, augmentation: Augmentation | None = None, start_epoch=0):
        super().__init__()
        faces = np.asarray(faces, np.float32)
        self.faces = ops.convert_to_tensor(faces[..., None] if faces.ndim == 3 else faces)
        self.epoch_batches, self.augmentation = epoch_batches, augmentation
        self.epoch = int(start_epoch)
        self._batches = list(epoch_batches(self.epoch))
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

    def on_epoch_end(self):
        self.epoch += 1
        self._batches = list(self.epoch_batches(self.epoch))

"""The faces a feeder gathers from: normalised once, held as one backend tensor, shared while alive.

Every feeder of :mod:`fer_tf.feeding.feeders` gathers its batches' faces by table row from one
in-memory float32 tensor ``[n, 60, 60]``. This module makes that tensor (:func:`normalised_faces`,
then :func:`face_tensor`) and keeps a weak cache of it, so the pipelines that training builds anew
every epoch share one copy of the faces.
"""

from __future__ import annotations

import weakref

import numpy as np

from fer_tf.data.crops import CROP_SIZE
from fer_tf.errors import DatasetError

#: The smallest face side a feeder accepts: the 48x48 crop of the paper.
CROP = CROP_SIZE


def normalised_faces(faces, preprocess=None, chunk=128):
    """Faces as one in-memory float32 array [n, 60, 60], preprocessed once.

    ``preprocess`` is applied once to all faces (in chunks): pass
    :func:`fer_tf.preprocess.normalize.normalize_faces` for raw faces. With ``preprocess=None``,
    uint8 faces are normalised with ``normalize_faces`` and float faces are taken as normalised.
    """
    import keras  # deferred: keras loads its backend; importing this module needs neither

    faces = np.asarray(faces)
    if faces.ndim == 4 and faces.shape[-1] == 1:
        faces = faces[..., 0]
    if faces.ndim != 3 or faces.shape[1] < CROP or faces.shape[2] < CROP:
        raise DatasetError(f"faces must be an array [n, 60, 60], got shape {faces.shape}")
    if preprocess is None and faces.dtype == np.uint8:
        from fer_tf.preprocess.normalize import normalize_faces  # deferred with keras (imports it)

        preprocess = normalize_faces
    if preprocess is None:
        return faces.astype(np.float32, copy=False)
    parts = [keras.ops.convert_to_numpy(preprocess(faces[i:i + chunk])).astype(np.float32)
             for i in range(0, len(faces), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0,) + faces.shape[1:], np.float32)


#: ``(weak reference to a faces array, preprocess, weak reference to its tensor)`` of the
#: tensors made so far; weak both ways, so the cache keeps nothing alive by itself.
_FACE_TENSORS = []


def face_tensor(faces, preprocess=None, chunk=128):
    """:func:`normalised_faces` as one backend tensor ([n, 60, 60] float32), shared while alive.

    Training builds a fresh pipeline every epoch from the same faces; without this each epoch
    would hold its own copy of them (about 0.4 GB for FER2013) for as long as the framework keeps
    the old pipelines. The cache keys on the array's identity, so an array must not be changed in
    place while pipelines of it are in use.
    """
    import keras  # deferred: keras loads its backend; importing this module needs neither

    if isinstance(faces, np.ndarray):
        for array_ref, prep, tensor_ref in _FACE_TENSORS:
            tensor = tensor_ref()
            if array_ref() is faces and prep is preprocess and tensor is not None:
                return tensor
    tensor = keras.ops.convert_to_tensor(normalised_faces(faces, preprocess, chunk))
    if isinstance(faces, np.ndarray):
        _FACE_TENSORS[:] = [e for e in _FACE_TENSORS if e[0]() is not None and e[2]() is not None]
        _FACE_TENSORS.append((weakref.ref(faces), preprocess, weakref.ref(tensor)))
    return tensor

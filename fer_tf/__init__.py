"""fer_tf: identity-aware facial expression recognition (Liu et al., CVPR-W 2017) in Keras 3.

The public API, in the order data flows (each name is imported from its module on first use, so
``import fer_tf`` and ``fer-tf --help`` load neither NumPy nor Keras)::

    from fer_tf import read_dataset, prepare_faces, identity_aware_dataset, build_model
    table = read_dataset("../shared/datasets/ckplus48", "ckplus48")
    faces, table, skipped = prepare_faces(table)
    ...
    Recognizer("saved_models/fer_tf_basic7.tflite").predict_path("photo.jpg")

Everything else is imported from its subpackage (``fer_tf.data``, ``fer_tf.preprocess``,
``fer_tf.metric``, ``fer_tf.model``, ``fer_tf.training``, ``fer_tf.deploy``, ``fer_tf.research``).
"""

import importlib as _importlib
import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    # data
    "BASIC7": "fer_tf.data.labels",
    "CKPLUS7": "fer_tf.data.labels",
    "FaceTable": "fer_tf.data.table",
    "read_dataset": "fer_tf.data.readers",
    "identity_aware_dataset": "fer_tf.data.sampling",
    # preprocess
    "FaceAligner": "fer_tf.preprocess.align",
    "prepare_faces": "fer_tf.preprocess.cache",
    # model
    "ModelConfig": "fer_tf.config",
    "TrainConfig": "fer_tf.config",
    "JointModel": "fer_tf.model.network",
    "build_model": "fer_tf.model.network",
    "load_model": "fer_tf.model.saving",
    "save_model": "fer_tf.model.saving",
    # deploy
    "export_model": "fer_tf.deploy.export",
    "Recognizer": "fer_tf.deploy.recognizer",
    # errors
    "FerTfError": "fer_tf.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_tf' has no attribute {name!r}")
    # deferred: NumPy, Keras, LiteRT or MediaPipe load only when a public name is first used
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))

"""fer_tf: identity-aware facial expression recognition (Liu et al., CVPR-W 2017) in Keras 3.

The public API, in the order data flows (each name is imported from its module on first use, so
``import fer_tf`` and ``fer-tf --help`` load neither NumPy nor Keras)::

    from fer_tf import read_dataset, prepare_faces, identity_aware_dataset, build_model
    table = read_dataset("../shared/datasets/ckplus48", "ckplus48")
    faces, table, skipped = prepare_faces(table)
    ...
    Recognizer("saved_models/fer_tf_basic7.tflite").predict_path("photo.jpg")

Everything else is imported from its subpackage (``fer_tf.data``, ``fer_tf.preprocess``,
``fer_tf.feeding``, ``fer_tf.metric``, ``fer_tf.model``, ``fer_tf.training``, ``fer_tf.people``,
``fer_tf.deploy``, ``fer_tf.research``).

``import fer_tf`` is cheap (no Keras, no TensorFlow), yet a ``.keras`` file that holds fer_tf's
classes (``JointModel``, its layers, losses and schedules) loads with plain
``keras.saving.load_model`` afterwards: fer_tf's classes are registered with Keras the first time
Keras looks up a class it does not know (see :func:`_register_lazily`), whether Keras was imported
before or after fer_tf.
"""

import importlib as _importlib
import importlib.util as _importlib_util
import os as _os
import sys as _sys

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    # data
    "BASIC7": "fer_tf.data.labels",
    "CKPLUS7": "fer_tf.data.labels",
    "FaceTable": "fer_tf.data.table",
    "read_dataset": "fer_tf.data.readers",
    "identity_aware_dataset": "fer_tf.feeding.feeders",
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


def _register_lazily():
    """Make Keras' registry of serialisable classes import fer_tf's on its first miss.

    Keras resolves a saved class through ``keras.src.saving.object_registration.
    get_registered_object``; it is wrapped so that, when a name is not registered, the modules that
    register fer_tf's classes are imported (:func:`fer_tf.model.saving.register_custom_objects`)
    and the name is looked up again. Nothing is imported before a model is actually loaded. When
    that internal function is not there (another Keras version), fer_tf's classes are registered
    right away instead.
    """
    try:
        from keras.src.saving import object_registration as registry  # deferred: keras (loaded by now)
    except ImportError:  # pragma: no cover - a Keras without this module: register eagerly
        _register_now()
        return
    lookup = getattr(registry, "get_registered_object", None)
    if lookup is None:  # pragma: no cover
        _register_now()
        return
    if getattr(lookup, "_fer_tf_lazy", False):
        return
    state = {"registered": False}

    def get_registered_object(name, custom_objects=None, module_objects=None):
        found = lookup(name, custom_objects, module_objects)
        if found is None and not state["registered"]:
            state["registered"] = True
            _register_now()
            found = lookup(name, custom_objects, module_objects)
        return found

    get_registered_object._fer_tf_lazy = True
    registry.get_registered_object = get_registered_object


def _register_now():
    from fer_tf.model.saving import register_custom_objects  # deferred: keras
    from fer_tf.training import optimizers, schedules  # noqa: F401  (a checkpoint's optimizer)

    register_custom_objects()


class _WhenKerasLoads:
    """A one-shot import hook: once ``import keras`` has run, call :func:`_register_lazily`."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        with _suppress_value_error():
            _sys.meta_path.remove(self)
        spec = _importlib_util.find_spec(name)  # the other finders
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _register_lazily()

        loader.exec_module = exec_module
        return spec


class _suppress_value_error:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, ValueError)


if "keras" in _sys.modules:
    _register_lazily()
elif not any(isinstance(f, _WhenKerasLoads) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _WhenKerasLoads())

"""Datasets: readers for each layout, the FaceTable they return, and subject-independent splits.

The names below load on first use (``fer_tf.data.formats`` stays free of NumPy for the CLI)."""

import importlib as _importlib

_NAMES = {"BASIC7": "labels", "CKPLUS7": "labels", "EXPRESSIONS": "labels",
          "canonical_expression": "labels", "label_set": "labels", "FaceTable": "table"}


def __getattr__(name):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'fer_tf.data' has no attribute {name!r}")
    return getattr(_importlib.import_module(f"fer_tf.data.{module}"), name)

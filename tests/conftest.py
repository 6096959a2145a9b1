import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASETS = pathlib.Path(os.environ.get("FER_TF_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir():
    """The shared real datasets (../shared/datasets); integration tests skip when absent locally."""
    if not DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared datasets not found at {DATASETS}")
        pytest.skip(f"shared datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def ckplus48_dir(datasets_dir):
    return datasets_dir / "ckplus48"


def jax_environment(tmp_path, devices=None, **extra):
    """Environment of a subprocess on the JAX backend (CPU) in which ``import tensorflow`` fails:
    a ``tensorflow`` package that raises ImportError comes first on PYTHONPATH, then the repository
    and tests/. ``devices``: that many virtual CPU devices (XLA_FLAGS)."""
    blocked = tmp_path / "no_tensorflow"
    (blocked / "tensorflow").mkdir(parents=True, exist_ok=True)
    (blocked / "tensorflow" / "__init__.py").write_text(
        'raise ImportError("tensorflow is blocked in this test")\n')
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(blocked), str(REPO), str(REPO / "tests")]), **extra}
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={int(devices)}"
    return env

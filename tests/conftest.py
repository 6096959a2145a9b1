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


def load_pipeline(name):
    """Import pipelines/<name>.py as a module (the pipelines folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

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

"""README "Train on your own data": the command-line block and the notebook block, as written
(slow: each fine-tunes and the command exports; about a minute each on 2 free cores)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _section_blocks(kind):
    text = (REPO / "README.md").read_text()
    section = text.split("## Train on your own data", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", section, flags=re.S)


def _shared_datasets(datasets_dir):
    if datasets_dir.resolve() != (REPO.parent / "shared" / "datasets").resolve():
        pytest.skip("the README blocks read ../shared/datasets")


def test_the_section_has_both_blocks():
    (sh,), (python,) = _section_blocks("sh"), _section_blocks("python")
    assert sh.startswith("fer-tf train ") and "fer-tf predict -m " in sh
    assert "keras.saving.load_model" in python and "subject_split" in python


@pytest.mark.slow
@pytest.mark.integration
def test_command_line_block_runs_as_written(tmp_path, datasets_dir):
    """In a copy of the layout (a work folder beside ../shared), with `fer-tf` the module's CLI."""
    _shared_datasets(datasets_dir)
    (block,) = _section_blocks("sh")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    script = f'fer-tf() {{ "{sys.executable}" -m fer_tf.cli "$@"; }}\nset -e\n{block}'
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_TF_CACHE": str(REPO / "runs" / "cache")}
    proc = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True, env=env,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out accuracy" in proc.stdout and "subject01.happy: 1 face" in proc.stdout
    for name in ("model.keras", "model.tflite", "model.json", "report.md", "results.json"):
        assert (work / "runs" / "train-yale" / name).is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_notebook_block_runs_as_written(datasets_dir, monkeypatch):
    _shared_datasets(datasets_dir)
    (block,) = _section_blocks("python")
    monkeypatch.chdir(REPO)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    scores = namespace["scores"]
    assert scores["images"] == 12 and set(scores["recall"]) <= set(namespace["labels"])
    assert scores["accuracy"] == pytest.approx(namespace["run"]["evaluation"]["accuracy"])
    assert type(namespace["model"]).__name__ == "JointModel"

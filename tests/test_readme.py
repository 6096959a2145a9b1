"""The README's notebook block runs exactly as written (from the repository root)."""

import os
import re

import pytest

from conftest import REPO


def _notebook_block():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python block"
    return blocks[0]


@pytest.mark.integration
def test_readme_notebook_block_runs(datasets_dir, monkeypatch):
    if datasets_dir.resolve() != (REPO.parent / "shared" / "datasets").resolve():
        pytest.skip("the README block reads ../shared/datasets")
    monkeypatch.chdir(REPO)
    namespace = {}
    exec(compile(_notebook_block(), "README.md", "exec"), namespace)
    classifier = namespace["classifier"]
    assert classifier.output_shape == (None, 7)
    assert not any(w.name.startswith(("fc3", "fc4", "fc5")) for w in classifier.weights)
    assert namespace["model"].history.history["loss"][0] > 0


RUN_BLOCK = '''
import json, sys
block = open(sys.argv[1], encoding="utf-8").read()
namespace = {}
exec(compile(block, "README.md", "exec"), namespace)
import keras
classifier = namespace["classifier"]
print("RESULT " + json.dumps({
    "backend": keras.backend.backend(), "output_shape": list(classifier.output_shape),
    "metric_weights": [w.path for w in classifier.weights if w.path.startswith(("fc3", "fc4", "fc5"))],
    "loss": float(namespace["model"].history.history["loss"][0]),
    "tensorflow_imported": "tensorflow" in sys.modules}))
'''


@pytest.mark.slow
@pytest.mark.integration
def test_readme_notebook_block_runs_on_jax_without_tensorflow(datasets_dir, tmp_path):
    """The same block, unchanged, under KERAS_BACKEND=jax in a process where `import tensorflow`
    fails (slow: JAX compiles the train step for about a minute on a CPU)."""
    import json
    import subprocess
    import sys

    from conftest import jax_environment

    if datasets_dir.resolve() != (REPO.parent / "shared" / "datasets").resolve():
        pytest.skip("the README block reads ../shared/datasets")
    block = tmp_path / "readme_block.py"
    block.write_text(_notebook_block(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", RUN_BLOCK, str(block)], cwd=REPO, capture_output=True,
                          text=True, timeout=1200, env=jax_environment(tmp_path))
    assert proc.returncode == 0, proc.stderr[-5000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    assert result["backend"] == "jax" and not result["tensorflow_imported"]
    assert result["output_shape"] == [None, 7]
    assert result["metric_weights"] == []
    assert result["loss"] > 0


def _people_block():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## People"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the People section has one python block"
    return blocks[0]


@pytest.mark.integration
def test_readme_people_block_runs(datasets_dir, monkeypatch, capsys):
    """The People section's notebook block, as written: people found, named, baseline kept raw."""
    if datasets_dir.resolve() != (REPO.parent / "shared" / "datasets").resolve():
        pytest.skip("the README block reads ../shared/datasets")
    monkeypatch.chdir(REPO)
    namespace = {}
    exec(compile(_people_block(), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert [f["person"] for f in result["faces"]] == ["alice"] * 3 + ["person-1"] * 3 + ["person-2"] * 3
    assert result["unmatched"] == ["zoe"]
    assert all("raw_probabilities" in f for f in result["faces"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("subject01.happy alice ") and printed[-1] == "['zoe']"

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

"""The metric-learning core (distances, miners, reducers, losses, layers) on the supported Keras
backends, TensorFlow and JAX (both in the test extras, so neither check can skip).

Keras fixes its backend once per process, so each backend runs ``tests/backend_checks.py`` in a
subprocess with ``KERAS_BACKEND`` set (once per backend, side by side, about 10-20 s of CPU
each); each check of that
script is one test here.  The checks compare the functional API and the Keras ``Loss`` classes
with NumPy forms of Eq. 1, 3, 5-8, 10 and Algorithm 1, take gradients with the backend's own
autodiff (``tf.GradientTape``, ``jax.grad``) and swap or switch off the miner and the reducer.
PyTorch is not a supported backend: nothing installs it, so nothing here claims it.
"""

import ast
import atexit
import functools
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "backend_checks.py"
BACKENDS = ["tensorflow", "jax"]
CHECKS = [
    "no_tensorflow_import",
    "mining_matches_numpy",
    "eq3_matches_numpy",
    "eq10_matches_numpy_and_erratum",
    "eq1_and_triplet_match_numpy",
    "classes_match_numpy",
    "gradients_finite",
    "miners_and_reducers_swappable",
    "compiled_equals_eager",
    "scaled_learning_rate",
    "mixing_matches_numpy",
]
CORE_MODULES = ["metric/distances", "metric/reducers", "metric/parts", "metric/mining", "metric/losses", "metric/layers",
                "training/optimizers", "research/stats", "research/probes", "feeding/mixing"]


@functools.lru_cache(maxsize=None)
def started():
    """One ``backend_checks.py`` process per installed backend, all started at once."""
    processes = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        processes[backend] = subprocess.Popen(
            [sys.executable, str(SCRIPT)], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    atexit.register(lambda: [p.kill() for p in processes.values() if p.poll() is None])
    return processes


@functools.lru_cache(maxsize=None)
def run_checks(backend):
    process = started()[backend]
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("check", CHECKS)
def test_core_on_backend(backend, check):
    result = run_checks(backend)
    assert result["backend"] == backend
    assert sorted(result["results"]) == sorted(CHECKS)  # no check runs without a test
    outcome = result["results"][check]
    assert outcome["ok"], outcome["info"]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_tensorflow(module):
    tree = ast.parse((REPO / "fer_tf" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] == "tensorflow"}

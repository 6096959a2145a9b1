"""Run metadata for reports: the exact command, config, seed, git commit, machine and date."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys

import numpy as np

from fer_tf.files import atomic_write_text
from fer_tf.training.precision import cpu_flags


def git_commit(cwd=None, outputs=()):
    """HEAD's commit, with ``-dirty`` when tracked files differ from it. Where the tree is no git
    checkout (a copy sent to another machine), ``FER_TF_SOURCE_COMMIT`` (written from git when the
    copy was packed, see pipelines/device/pack.py) names it, else "unknown".

    ``outputs``: folders that the caller itself rewrites and never reads (a campaign's report):
    their changes do not make the tree dirty, so that a campaign resumed after it rebuilt its
    report still records the commit its code and configs come from."""
    where = cwd or pathlib.Path(__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=where,
                             timeout=10)
        top = outputs and subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                                         text=True, cwd=where, timeout=10).stdout.strip()
        inside = [os.path.relpath(os.path.abspath(o), top) for o in outputs if top]
        excluded = [f":(top,exclude){rel}" for rel in inside if rel != "." and not rel.startswith("..")]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)", *excluded],
                               capture_output=True, text=True, cwd=where, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is None or out.returncode != 0 or not out.stdout.strip():
        return os.environ.get("FER_TF_SOURCE_COMMIT") or "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The CPU features that decide which kernels (XNNPACK, oneDNN) run and so how fast a network is:
#: int8 dot products (VNNI, ARM's dotprod and i8mm), bfloat16, AMX.
VECTOR_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
                   "amx_int8", "amx_bf16", "asimddp", "i8mm", "bf16")


def cpu_label(info):
    """A short name of the vector instructions that set a machine's speed (``info``: a
    :func:`machine` record): ``"AVX512-VNNI"``, ``"AVX-VNNI"``, ``"AVX2"``, ``"ARM dotprod"``...;
    None for a record written before ``cpu_features`` was (or where they cannot be read)."""
    features = (info or {}).get("cpu_features")
    if not features:
        return None
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512f", "AVX512"), ("avx2", "AVX2"), ("i8mm", "ARM i8mm"),
                       ("asimddp", "ARM dotprod")):
        if flag in features:
            return name
    return "no AVX2"


def other_cpu_benches(bench_dir):
    """The inference benches of other CPUs kept beside ``make bench``'s committed one
    (``bench_dir/cpus/NAME/results.json``, each written by ``python benchmarks/run.py --sections
    inference --output reports/bench/cpus/NAME``), as ``[(NAME, results)]``. One that cannot be read
    is named on stderr and left out, so that it does not stop a report."""
    found = []
    for path in sorted(pathlib.Path(bench_dir).glob("cpus/*/results.json")):
        try:
            found.append((path.parent.name, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as error:
            print(f"left out {path}: it cannot be read as JSON ({error}); run the bench for that CPU "
                  "again", file=sys.stderr)
    return found


def machine():
    import keras  # deferred: keras loads its backend; reading a commit needs none

    flags = cpu_flags()
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_features": [f for f in VECTOR_FEATURES if f in flags],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only under the TensorFlow backend

        info["tensorflow"] = tf.__version__
        info["gpus"] = len(tf.config.list_physical_devices("GPU"))
    elif keras.backend.backend() == "jax":
        import jax  # only under the JAX backend

        info["jax"] = jax.__version__
        info["devices"] = [str(d.device_kind) for d in jax.devices()]
        info["gpus"] = sum(d.platform == "gpu" for d in jax.devices())
    return info


def run_info(config=None, seed=None, started=None, commit=None):
    """Everything a report needs to be reproduced. ``commit``: the :func:`git_commit` taken when
    the run started (a run that rewrites tracked artefacts, e.g. `make ship`, would otherwise
    find its own outputs as changes)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    info = {
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "make_command": os.environ.get("FER_TF_MAKE_COMMAND"),
        "git_commit": commit or git_commit(),
        "date": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "seed": seed,
        "config": config,
    }
    if started is not None:
        info["wall_time_s"] = round(now.timestamp() - started, 1)
    return info


def write_json(path, data):
    """``data`` as indented JSON (NumPy values as numbers and lists), written atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, default=_default) + "\n")


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)

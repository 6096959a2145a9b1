"""`fer-tf bench [--quick] [--output DIR] [--sections S,...]`: run the performance benchmarks.

Runs ``benchmarks/run.py`` of the source checkout this package was installed from (the benchmarks
are not part of the installed package); see reports/bench/README.md for what it measures.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import fer_tf
from fer_tf.errors import ConfigError


def register(subparsers):
    parser = subparsers.add_parser("bench", help="measure training/inference performance (make bench)",
                                   description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--output", "-o", default=None, help="report folder (default reports/bench)")
    parser.add_argument("--datasets", default=None, help="datasets folder (default ../shared/datasets)")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of training,race,loss,inference,preprocess")
    parser.set_defaults(func=run)


def script_path():
    return pathlib.Path(fer_tf.__file__).resolve().parents[1] / "benchmarks" / "run.py"


def run(args):
    script = script_path()
    if not script.is_file():
        raise ConfigError(f"{script} not found: `fer-tf bench` runs from a source checkout of fer_tf")
    argv = [sys.executable, str(script)]
    if args.quick:
        argv.append("--quick")
    for flag in ("output", "datasets", "sections"):
        value = getattr(args, flag)
        if value:
            argv += [f"--{flag}", str(value)]
    return subprocess.run(argv, cwd=script.parents[1]).returncode

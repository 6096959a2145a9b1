"""`fer-tf` command line.

Each subcommand lives in a small module under :mod:`fer_tf.commands` that defines
``register(subparsers)``; those modules import nothing heavy at import time, so `fer-tf --help`
is quick and TensorFlow loads only for the commands that need it. Errors caused by the user's input
(:class:`fer_tf.errors.FerTfError`) are printed as one clear line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules, in the order data flows.
COMMANDS = ("data", "preprocess", "export", "predict", "bench")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fer-tf",
        description="Identity-aware facial expression recognition (2B(N+M)Softmax) in Keras 3.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"fer_tf.commands.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not installed yet
            if exc.name != f"fer_tf.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fer_tf.errors import FerTfError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except FerTfError as exc:
        print(f"fer-tf {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fer-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

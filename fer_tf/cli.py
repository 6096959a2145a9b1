"""`fer-tf` command line.

Each subcommand lives in a small module under :mod:`fer_tf.commands` that defines
``register(subparsers)``; those modules import nothing heavy at import time, so `fer-tf --help`
is quick and TensorFlow loads only for the commands that need it. Errors caused by the user's input
(:class:`fer_tf.errors.FerTfError`) are printed as one clear line, without a traceback, and
warnings of the :class:`fer_tf.errors.FerTfWarning` family as one ``warning:`` line.

Exit codes, the same for every subcommand:

- 0: done;
- 1: nothing could be done (for example no input of ``predict`` could be processed);
- 2: a usage, option, model, dataset or output error (nothing, or nothing more, was done);
- 3: ``predict`` processed some inputs but not all (each failure has its line on stderr);
- 130: interrupted (Ctrl-C);
- 141: the output pipe was closed by the reader (``fer-tf predict DIR | head``): the command
  stops quietly, as a command killed by SIGPIPE does in a shell.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from fer_tf.errors import FerTfError, FerTfWarning

# Subcommand modules, in the order data flows.
COMMANDS = ("data", "preprocess", "train", "export", "predict", "bench")

EXIT_OK, EXIT_NOTHING_DONE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 130, 141


def version():
    """The installed package's version (``setup.cfg``), or "unknown" outside an install."""
    # deferred: importlib.metadata (email, zipfile, ...) costs more than the rest of --help
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("fer_tf")
    except PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (the usage itself is in ``--help``)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked for (not for every --help)."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(f"fer-tf {version()}\n", sys.stdout)
        parser.exit()


def build_parser():
    parser = _Parser(
        prog="fer-tf",
        description="Identity-aware facial expression recognition (2B(N+M)Softmax) in Keras 3.",
        epilog="Exit codes: 0 done, 1 nothing done, 2 usage/input error, 3 some inputs failed, "
               "130 interrupted, 141 output pipe closed.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
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


def _show_warnings(command):
    """Print fer_tf's warnings as one ``fer-tf CMD: warning: ...`` line each."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, FerTfWarning):
            print(f"fer-tf {command}: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _stdout_closed():
    """The reader of our stdout went away: send the rest of our output to /dev/null, so that
    the interpreter's final flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a descriptor (tests)
        pass


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _show_warnings(args.command)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed()
        return EXIT_PIPE_CLOSED
    except FerTfError as exc:
        print(f"fer-tf {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"fer-tf {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a file we could not read or write, named by the OS
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"fer-tf {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

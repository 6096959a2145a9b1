"""The `fer-tf` entry point: --version, flags that mean the same everywhere, one-line errors,
and no mention of subcommands that do not exist."""

import pathlib
import re

import pytest

from fer_tf.cli import COMMANDS, build_parser, main

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert re.fullmatch(r"fer-tf \S+\n", capsys.readouterr().out)


def test_usage_errors_are_one_line(capsys):
    assert main(["predict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fer-tf predict: error: ") and len(err.strip().splitlines()) == 1
    assert main(["no-such-command"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _options(parser):
    """``{subcommand path: {option string: dest}}`` of every (nested) subparser."""
    import argparse

    found = {}

    def walk(p, name):
        found[name] = {s: a.dest for a in p._actions for s in a.option_strings}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}".strip())

    walk(parser, "")
    return found


def test_flags_mean_the_same_in_every_subcommand():
    meanings = {}
    for command, options in _options(build_parser()).items():
        for flag, dest in options.items():
            meanings.setdefault(flag, set()).add(dest)
    conflicting = {flag: dests for flag, dests in meanings.items() if len(dests) > 1}
    assert not conflicting
    assert meanings["-o"] == {"output"} and meanings["-f"] == {"format"}
    assert meanings["-q"] == {"quiet"} and meanings["-m"] == {"model"}
    options = _options(build_parser())
    for command in ("preprocess", "export", "bench"):
        assert options[command]["-o"] == "output", command


def test_no_mention_of_subcommands_that_do_not_exist():
    texts = [p for p in (REPO / "fer_tf").rglob("*.py")] + [REPO / "README.md", REPO / "Makefile"]
    texts += list((REPO / "docs").glob("*.md")) + list((REPO / "saved_models").glob("*.md"))
    wrong = []
    for path in texts:
        for match in re.finditer(r"fer-tf ([a-z][a-z-]+)", path.read_text(encoding="utf-8")):
            if match.group(1) not in COMMANDS:
                wrong.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    assert not wrong


@pytest.mark.parametrize("argv", [["data", "--help"], ["predict", "--help"], ["--help"]])
def test_help_exits_zero(argv, capsys):
    assert main(argv) == 0
    assert "usage:" in capsys.readouterr().out

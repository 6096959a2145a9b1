"""`fer-tf data summary`."""

import json
import subprocess
import sys

import fixtures_data as fx
import pytest

from fer_tf.cli import main
from fer_tf.commands.data import parse_options


@pytest.mark.integration
def test_summary_json_ckplus48(ckplus48_dir, capsys):
    assert main(["data", "summary", str(ckplus48_dir), "--format", "ckplus48", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["images"], info["subjects"], info["sequences"]) == (981, 118, 327)
    assert info["skipped"] == 0 and len(info["single_expression_subjects"]) == 21


@pytest.mark.integration
def test_summary_text_autodetect(datasets_dir, capsys):
    assert main(["data", "summary", str(datasets_dir / "yalefaces")]) == 0
    out = capsys.readouterr().out
    assert "format yale" in out and "images:     60" in out and "skipped files: 104" in out


@pytest.mark.integration
def test_summary_subprocess(ckplus48_dir):
    proc = subprocess.run([sys.executable, "-m", "fer_tf.cli", "data", "summary", str(ckplus48_dir),
                           "--format", "ckplus48", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"] == 981


def test_bad_path_one_line(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "missing"), "--format", "ckplus48"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing" in err and err.startswith("fer-tf data: error:")


def test_undetectable_layout(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["data", "summary", str(tmp_path)]) == 2
    assert "pass --format" in capsys.readouterr().err


def test_manifest_with_options(tmp_path, capsys):
    path = fx.build_manifest(tmp_path)
    assert main(["data", "summary", str(path), "--json", "-o", "require_subject=false"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "manifest" and info["images"] == 4
    assert info["skipped_reasons"] == {"file not found": 1, "unknown label": 1}
    assert main(["data", "summary", str(path), "-o", "nonsense=1"]) == 2
    assert "unknown option(s) nonsense for format manifest" in capsys.readouterr().err


def test_parse_options():
    assert parse_options(["poses=S,FL", "include-neutral=true", "frames_per_sequence=2", "x=a"]) == {
        "poses": ("S", "FL"), "include_neutral": True, "frames_per_sequence": 2, "x": "a"}


def test_format_choices_match_readers():
    from fer_tf.commands.data import _FORMATS
    from fer_tf.data.readers import FORMATS

    assert _FORMATS == FORMATS

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
    assert main(["data", "summary", str(path), "--json", "--option", "require_subject=false"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "manifest" and info["images"] == 4
    assert info["skipped_reasons"] == {"file not found": 1, "unknown label": 1}
    assert main(["data", "summary", str(path), "--option", "nonsense=1"]) == 2
    assert "unknown option(s) nonsense for format manifest" in capsys.readouterr().err


def test_parse_options():
    assert parse_options(["poses=S,FL", "include-neutral=true", "frames_per_sequence=2", "x=a"]) == {
        "poses": ("S", "FL"), "include_neutral": True, "frames_per_sequence": 2, "x": "a"}


def test_format_choices_match_readers():
    """One list of layouts: every command's --format choices come from fer_tf.data.formats, and
    the readers read each of them."""
    import inspect

    from fer_tf.commands import data, export, preprocess, train
    from fer_tf.data import readers
    from fer_tf.data.formats import FORMATS, IMAGE_FORMATS

    assert readers.FORMATS is FORMATS
    for module in (data, export, train):
        assert module._FORMATS is FORMATS
    assert preprocess._FORMATS is IMAGE_FORMATS and "cache" not in IMAGE_FORMATS
    source = inspect.getsource(readers)
    for name in FORMATS:
        assert f'"{name}"' in source, name


def test_cli_choices_that_stay_copies_match_their_homes():
    """Names the light command modules keep a copy of (their homes load NumPy or YAML)."""
    from fer_tf.commands import export, train
    from fer_tf.config import VARIANTS
    from fer_tf.deploy.convert import VARIANTS as TFLITE_VARIANTS

    assert train._VARIANTS == VARIANTS
    assert export._VARIANTS == TFLITE_VARIANTS


def test_manifest_outside_paths_need_allow_outside(tmp_path, capsys):
    fx.save(tmp_path / "outside.png", 5)
    fx.save(tmp_path / "m" / "in.png", 6)
    (tmp_path / "m" / "manifest.csv").write_text(
        "path,expression,subject\nin.png,happy,p1\n../outside.png,sad,p1\n")
    assert main(["data", "summary", str(tmp_path / "m"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 1 and list(info["skipped_reasons"]) == [
        "outside the manifest's folder (allow with --allow-outside)"]
    assert main(["data", "summary", str(tmp_path / "m"), "--json", "--allow-outside"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2
    # the flag belongs to manifests only
    assert main(["data", "summary", str(tmp_path / "m"), "--format", "yale", "--allow-outside"]) == 2
    assert "applies to manifest" in capsys.readouterr().err


def test_latin1_manifest_warns_in_one_line(tmp_path, capsys):
    fx.save(tmp_path / "Zoë.png", 7)
    (tmp_path / "manifest.csv").write_bytes("path,expression,subject\nZoë.png,happy,Zoë\n"
                                            .encode("latin-1"))
    assert main(["data", "summary", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 1
    (warning,) = captured.err.strip().splitlines()
    assert warning.startswith("fer-tf data: warning: ") and "Latin-1" in warning

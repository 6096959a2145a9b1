"""Nothing is lost: atomic writes under a full disk or a file-size limit, and `fer-tf export` that
never replaces a file without --overwrite, never its own input, and never mixes two exports."""

import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from fer_tf import files
from fer_tf.errors import OutputError


def _temporaries(folder):
    return sorted(p.name for p in pathlib.Path(folder).rglob(files.TEMPORARY_PREFIX + "*"))


def test_full_disk_names_the_file_and_keeps_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"results.json: cannot be written \(No space left on "
                                          r"device\); it keeps its previous content"):
        files.atomic_write(target, full)
    assert target.read_text() == "old" and _temporaries(tmp_path) == []
    with pytest.raises(OutputError, match="was not written"):
        files.atomic_write(tmp_path / "new.bin", full)
    assert not (tmp_path / "new.bin").exists() and _temporaries(tmp_path) == []
    files.atomic_write_text(target, "new")  # a rerun is not blocked by anything left behind
    assert target.read_text() == "new"


def test_a_missing_input_inside_the_block_is_not_called_a_write_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with files.atomic_path(tmp_path / "out.bin"):
            open(tmp_path / "no-such-input", "rb")
    assert _temporaries(tmp_path) == []


FSIZE = '''
import resource, sys
from fer_tf import files
from fer_tf.errors import OutputError
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    files.atomic_write_bytes(sys.argv[1], b"x" * (3 << 20))
except OutputError as exc:
    print("ERROR", exc)
'''


def test_file_size_limit_leaves_no_half_written_output(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old model")
    proc = subprocess.run([sys.executable, "-c", FSIZE, str(target)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR" in proc.stdout and str(target) in proc.stdout and "File too large" in proc.stdout
    assert target.read_bytes() == b"old model" and _temporaries(tmp_path) == []


# --- fer-tf export ---------------------------------------------------------------------------------

def test_export_refuses_an_earlier_export_and_its_own_input(tmp_path):
    from fer_tf.deploy.export import check_output

    out = tmp_path / "export"
    check_output(out, None, overwrite=False)  # a new folder
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    check_output(out, None, overwrite=False)  # other files are not an export's
    (out / "model_fp32.tflite").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"holds an earlier export \(model_fp32.tflite\); pass --overwrite"):
        check_output(out, None, overwrite=False)
    check_output(out, None, overwrite=True)
    (out / "inference.keras").write_bytes(b"x")
    with pytest.raises(OutputError, match="would replace its own input"):
        check_output(out, out / "inference.keras", overwrite=True)
    with pytest.raises(OutputError, match="would replace its own input"):
        check_output(out, out / "saved_model" / "x.keras", overwrite=True)


def test_publish_replaces_all_of_an_old_export_and_nothing_else(tmp_path):
    from fer_tf.deploy.export import publish, remove_stale_staging, staging_folder

    final = tmp_path / "export"
    final.mkdir()
    for name in ("model_int8.tflite", "model_int8.json", "model.tflite", "export_report.json"):
        (final / name).write_text("old")
    (final / "saved_model").mkdir()
    (final / "notes.txt").write_text("mine")
    staging = staging_folder(final)
    staging.mkdir()
    for name in ("model_fp32.tflite", "model.tflite", "export_report.json"):
        (staging / name).write_text("new")
    publish(staging, final)
    assert sorted(p.name for p in final.iterdir()) == [
        "export_report.json", "model.tflite", "model_fp32.tflite", "notes.txt"]
    assert all((final / n).read_text() == "new" for n in ("model.tflite", "model_fp32.tflite"))
    dead = final.with_name(f".tmp-export-999999999-{final.name}")  # a killed export's leftovers
    dead.mkdir()
    remove_stale_staging(final)
    assert not dead.exists()


@pytest.fixture(scope="module")
def tiny_model():
    pytest.importorskip("tensorflow")
    from test_export import tiny_ec_model

    return tiny_ec_model()


@pytest.mark.slow  # four TFLite conversions: about a minute on 2 busy cores
def test_export_twice_and_a_failed_export(tmp_path, tiny_model, monkeypatch):
    from fer_tf.data.labels import BASIC7
    from fer_tf.deploy import export

    out = tmp_path / "export"
    export.export_model(tiny_model, out, variants=("fp32", "dynamic"), labels=BASIC7, overwrite=False)
    first = sorted(p.name for p in out.iterdir())
    assert "model_dynamic.tflite" in first
    with pytest.raises(OutputError, match="earlier export"):
        export.export_model(tiny_model, out, variants=("fp32",), labels=BASIC7, overwrite=False)
    report = export.export_model(tiny_model, out, variants=("fp32",), labels=BASIC7, overwrite=True)
    assert not (out / "model_dynamic.tflite").exists() and not (out / "model_dynamic.json").exists()
    assert report["default"]["path"] == str(out / "model.tflite")
    assert json.loads((out / "export_report.json").read_text())["output_dir"] == str(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    real = files.atomic_write_bytes

    def full_disk(path, data):
        if str(path).endswith("model.tflite"):
            raise OutputError(f"{path}: cannot be written (No space left on device)")
        return real(path, data)

    monkeypatch.setattr(export, "atomic_write_bytes", full_disk)
    with pytest.raises(OutputError, match="model.tflite: cannot be written"):
        export.export_model(tiny_model, out, variants=("fp32",), labels=BASIC7, overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left


def test_export_command_refuses_without_overwrite(tmp_path, capsys):
    from fer_tf.cli import main

    out = tmp_path / "export"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"earlier")
    rc = main(["export", str(tmp_path / "ckpt.keras"), "-o", str(out)])
    assert rc == 2 and "pass --overwrite" in capsys.readouterr().err
    assert (out / "model.tflite").read_bytes() == b"earlier"

"""prepare_faces and the resumable on-disk face cache (`fer-tf preprocess`)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fer_tf.cli import main
from fer_tf.data.readers import read_dataset
from fer_tf.data.table import FaceTable
from fer_tf.errors import DatasetError
from fer_tf.data import cache_format
from fer_tf.preprocess import cache

N_GOOD = 7


def _face_png(path, seed, size=48):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(img).save(path)
    return img


@pytest.fixture
def ck_folder(tmp_path):
    """A CK+48-style folder: 7 synthetic 48x48 faces and three broken files."""
    root = tmp_path / "ck"
    for cls in ("happy", "anger"):
        (root / cls).mkdir(parents=True)
    for i in range(N_GOOD):
        cls = "happy" if i % 2 else "anger"
        _face_png(root / cls / f"S{100 + i:03d}_001_{i + 1:08d}.png", seed=i)
    (root / "happy" / "S900_001_00000001.png").write_bytes(b"")  # zero bytes
    (root / "happy" / "S901_001_00000001.png").write_text("this is not an image\n")
    buf = tmp_path / "full.jpg"
    Image.fromarray(np.full((48, 48), 90, np.uint8)).save(buf, quality=95)
    data = buf.read_bytes()
    (root / "anger" / "S902_001_00000001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    return root


def _reasons(skipped):
    return {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in skipped}


def test_prepare_faces_keeps_good_and_skips_broken(ck_folder):
    table = read_dataset(ck_folder, "ckplus48")
    faces, kept, skipped = cache.prepare_faces(table, progress=False)
    assert faces.shape == (N_GOOD, 60, 60) and faces.dtype == np.uint8
    assert len(kept) == N_GOOD and kept.pixels is faces
    assert len(kept) + len(skipped) == len(table)
    reasons = _reasons(skipped)
    assert reasons["S900_001_00000001.png"].startswith("empty file")
    assert reasons["S901_001_00000001.png"] == "not an image"
    assert "truncated" in reasons["S902_001_00000001.jpg"]
    # resized, not detected: the face is the input, bilinear-resized
    first = np.asarray(Image.open(kept.path[0]))
    small = np.asarray(Image.fromarray(faces[0]).resize((48, 48), Image.BILINEAR))
    assert np.abs(small.astype(int) - first.astype(int)).mean() < 40
    assert np.corrcoef(small.ravel(), first.ravel())[0, 1] > 0.5


def test_prepare_faces_pixel_rows_and_errors():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    table = FaceTable.from_rows([{"expression": "happiness"}] * 3, name="fer2013-csv", pixels=pixels)
    faces, kept, skipped = cache.prepare_faces(table, progress=False)
    assert faces.shape == (3, 60, 60) and not skipped
    no_source = FaceTable.from_rows([{"expression": "happiness"}], name="manifest")
    faces, kept, skipped = cache.prepare_faces(no_source, progress=False)
    assert len(faces) == 0 and skipped[0]["path"] == "manifest row 0"
    with pytest.raises(ValueError):
        cache.prepare_faces(table, align="sometimes")


def test_progress_lines(ck_folder, capsys):
    table = read_dataset(ck_folder, "ckplus48")
    bar = cache.Progress(len(table), interval=0.0)
    faces_of = cache._Faces("auto", 60)
    cache._process_rows(table, range(len(table)), faces_of, bar)
    bar.close()
    err = capsys.readouterr().err
    assert f"{len(table)}/{len(table)} images (kept {N_GOOD}, skipped 3)" in err


def _load(out):
    manifest = json.loads((out / "manifest.json").read_text())
    with np.load(out / "faces.npz") as z:
        return manifest, z["faces"]


def test_cache_build_read_and_idempotent(ck_folder, tmp_path):
    out = tmp_path / "cache"
    result = cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=4)
    assert result["kept"] == N_GOOD and len(result["skipped"]) == 3
    assert not (out / cache.CHUNK_DIR).exists()
    manifest, faces = _load(out)
    assert faces.shape == (N_GOOD, 60, 60)
    assert manifest["name"] == "ckplus48" and manifest["settings"]["format"] == "ckplus48"
    assert manifest["expressions"] == {"anger": 4, "happiness": 3}
    # read back through the readers' dispatch, as `fer-tf data summary` and training do
    table = read_dataset(out, "cache")
    assert table.name == "ckplus48" and len(table) == N_GOOD
    np.testing.assert_array_equal(table.pixels, faces)
    np.testing.assert_array_equal(cache_format.load_faces(out), faces)
    original = read_dataset(ck_folder, "ckplus48")
    assert set(table.path) <= set(original.path)
    assert set(table.subject) == {f"S{100 + i:03d}" for i in range(N_GOOD)}
    assert len(cache_format.read_cache_skipped(out)) == 3
    # the cached table is already faces: preparing it again changes nothing
    again, _, _ = cache.prepare_faces(table, progress=False)
    np.testing.assert_array_equal(again, faces)
    # idempotent: no work, same answer, files untouched
    mtime = (out / "faces.npz").stat().st_mtime_ns
    second = cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=4)
    assert second["complete_before"] and second["kept"] == N_GOOD
    assert second["skipped"] == result["skipped"]
    assert (out / "faces.npz").stat().st_mtime_ns == mtime
    # other settings into the same folder: refused with a clear message
    with pytest.raises(DatasetError, match="other settings"):
        cache.build_cache(ck_folder, "ckplus48", out, progress=False, size=64)


def test_interrupted_run_resumes_to_the_same_result(ck_folder, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    cache.build_cache(ck_folder, "ckplus48", reference, progress=False, chunk_size=3)
    out = tmp_path / "resumed"
    real = cache._process_chunk
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "_process_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3)
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / cache.CHUNK_DIR).glob("chunk-*.npz")) == ["chunk-00000.npz"]
    assert not list(out.glob("**/*.tmp")) and not list(out.glob("**/.tmp-*"))
    with pytest.raises(DatasetError, match="run the same"):
        cache_format.read_cache(out)
    monkeypatch.setattr(cache, "_process_chunk", real)
    result = cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3)
    assert result["resumed_chunks"] == 1
    m_ref, f_ref = _load(reference)
    m_out, f_out = _load(out)
    np.testing.assert_array_equal(f_out, f_ref)
    assert m_out["rows"] == m_ref["rows"] and m_out["skipped"] == m_ref["skipped"]


def test_stale_chunks_of_other_settings_are_discarded(ck_folder, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    real = cache._process_chunk

    def stop(*args, **kwargs):
        stop.n += 1
        if stop.n == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    stop.n = 0
    monkeypatch.setattr(cache, "_process_chunk", stop)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3, size=64)
    monkeypatch.setattr(cache, "_process_chunk", real)
    result = cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3)
    assert result["resumed_chunks"] == 0
    assert cache_format.load_faces(out).shape == (N_GOOD, 60, 60)


def test_cli_json_and_text(ck_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["preprocess", str(ck_folder), "--format", "ckplus48", "--output", str(out), "--json",
                 "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept"] == N_GOOD
    assert {s["reason"] for s in printed["skipped"]} >= {"not an image"}
    assert all(set(s) == {"path", "reason"} for s in printed["skipped"])
    # the text summary names every skipped file, and a re-run prints the same summary
    assert main(["preprocess", str(ck_folder), "--format", "ckplus48", "--output", str(out)]) == 0
    first = capsys.readouterr()
    assert "S901_001_00000001.png: not an image" in first.out
    assert "nothing to do" in first.err
    assert main(["preprocess", str(ck_folder), "--format", "ckplus48", "--output", str(out)]) == 0
    assert capsys.readouterr().out == first.out
    # errors are one line, exit code 2
    assert main(["preprocess", str(tmp_path / "missing"), "--format", "ckplus48", "--output",
                 str(tmp_path / "x")]) == 2
    assert "missing" in capsys.readouterr().err


def test_cache_not_a_cache(tmp_path):
    with pytest.raises(DatasetError, match="not a face cache"):
        cache_format.read_cache(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(DatasetError):
        cache_format.read_cache(tmp_path)


@pytest.mark.integration
def test_aligned_dataset_cache(datasets_dir, tmp_path):
    """KDEF-style folder: three real photos are aligned, a blank 'photo' is reported as no face."""
    pytest.importorskip("mediapipe")
    root = tmp_path / "kdef"
    root.mkdir()
    for name in ("Angry/AF01ANS.JPG", "Happy/BM16HAS.JPG", "Sad/AM06SAS.JPG"):
        Image.open(datasets_dir / "kdef-subset" / name).save(root / name.split("/")[1])
    Image.fromarray(np.full((240, 240), 120, np.uint8)).save(root / "AF02ANS.JPG")
    table = read_dataset(root, "kdef")
    faces, kept, skipped = cache.prepare_faces(table, progress=False)
    assert len(faces) == 3 and faces.shape[1:] == (60, 60)
    assert skipped == [{"path": str(root / "AF02ANS.JPG"), "reason": "no face found"}]
    # forcing --no-align resizes instead (no detection, so the blank image is kept)
    faces2, _, skipped2 = cache.prepare_faces(table, align=False, progress=False)
    assert len(faces2) == 4 and not skipped2


def test_preprocess_refuses_a_folder_of_other_files(ck_folder, tmp_path, capsys):
    """The dataset itself, or any folder of other files, is never written into."""
    before = sorted(p.relative_to(ck_folder) for p in ck_folder.rglob("*"))
    code = main(["preprocess", str(ck_folder), "--format", "ckplus48", "-o", str(ck_folder), "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a face cache" in err and "new or empty folder" in err
    assert sorted(p.relative_to(ck_folder) for p in ck_folder.rglob("*")) == before
    # an empty folder (or one with only desktop litter) is fine, and -o is --output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\0")
    assert main(["preprocess", str(ck_folder), "--format", "ckplus48", "-o", str(empty), "-q"]) == 0
    assert (empty / cache.MANIFEST).is_file()


def test_preprocess_resumes_into_its_own_unfinished_cache(ck_folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []
    original = cache._process_chunk

    def fail_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(cache, "_process_chunk", fail_second)
    with pytest.raises(KeyboardInterrupt):
        cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3)
    monkeypatch.setattr(cache, "_process_chunk", original)
    assert not (out / cache.MANIFEST).exists() and any(out.iterdir())
    result = cache.build_cache(ck_folder, "ckplus48", out, progress=False, chunk_size=3)
    assert result["kept"] == N_GOOD and result["resumed_chunks"] == 1


def test_preprocess_output_that_looks_like_an_option(ck_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["preprocess", str(ck_folder), "--format", "ckplus48", "-o", "poses=S"]) == 2
    assert "--option KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "poses=S").exists()


@pytest.mark.integration
def test_a_cache_folder_can_be_passed_as_the_dataset(ckplus48_dir, tmp_path):
    """prepared_dataset reads a face cache given as the dataset root (a cache copied to a machine
    without the original images) without rebuilding or checking its source path."""
    from fer_tf.preprocess.prepared import is_face_cache, prepared_dataset

    table, faces = prepared_dataset(ckplus48_dir, "ckplus48", cache_root=tmp_path / "cache")
    moved = tmp_path / "elsewhere" / "ckplus48"
    shutil.copytree(tmp_path / "cache" / "ckplus48-ckplus48", moved)
    assert is_face_cache(moved) and not is_face_cache(ckplus48_dir)
    again, faces_again = prepared_dataset(moved, "ckplus48", cache_root=tmp_path / "unused")
    assert list(again.subject) == list(table.subject) and (faces_again == faces).all()
    assert not (tmp_path / "unused").exists()

"""The GPU pack (pipelines/device/pack.py, unpack.py, start.sh): the FER2013 archive gives the
image folders back byte for byte and refuses paths that leave its target, wheels unpack as pip
would put them, and everything travels within 64 MiB."""

import pathlib
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines" / "device"))

import pack  # noqa: E402
import unpack  # noqa: E402

FER2013 = REPO.parent / "shared" / "datasets" / "fer2013"
HEADER = bytes(range(256)) + b"\xff\xda" + bytes(70)  # a header every image shares, as in FER2013


def image_folders(root, count=1200):
    rng = np.random.default_rng(0)
    written = {}
    for i in range(count):
        rel = f"{'train' if i % 5 else 'test'}/{('angry', 'happy', 'sad')[i % 3]}/im{i}.jpg"
        body = rng.integers(0, 256, int(rng.integers(1, 900)), dtype=np.uint8).tobytes()
        written[rel] = HEADER + body if i % 7 else body  # some without the header
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(written[rel])
    return written


def test_archive_round_trips_byte_for_byte(tmp_path):
    written = image_folders(tmp_path / "images")
    archive = tmp_path / "fer2013-jpeg.npz"
    assert pack.pack_images(tmp_path / "images", archive) == len(written)
    assert unpack.unpack(archive, tmp_path / "back") == len(written)
    back = {p.relative_to(tmp_path / "back").as_posix(): p.read_bytes()
            for p in (tmp_path / "back").rglob("*") if p.is_file()}
    assert back == written
    # the shared header is stored about once: the archive is smaller than the bodies alone
    bodies = sum(len(b) - (len(HEADER) if b.startswith(HEADER) else 0) for b in written.values())
    assert archive.stat().st_size < bodies + 30_000


def test_pack_refuses_a_folder_that_is_not_fer2013(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.jpg").write_bytes(b"x")
    with pytest.raises(SystemExit, match="does not look like the FER2013 image folders"):
        pack.pack_images(tmp_path, tmp_path / "out.npz")


@pytest.mark.parametrize("bad", ["../outside.jpg", "train/../../outside.jpg", "ABSOLUTE"])
def test_unpack_refuses_paths_that_leave_the_target(tmp_path, bad):
    import lzma

    bad = str(tmp_path / "outside.jpg") if bad == "ABSOLUTE" else bad
    archive = tmp_path / "evil.npz"
    np.savez_compressed(archive, data_xz=np.frombuffer(lzma.compress(b"abc"), np.uint8),
                        offsets=np.array([0, 3]), paths=np.array([bad]))
    with pytest.raises(SystemExit, match="refusing the path"):
        unpack.unpack(archive, tmp_path / "target")
    assert not (tmp_path / "outside.jpg").exists()


def test_unpack_says_what_to_do_with_an_archive_of_the_old_format(tmp_path):
    archive = tmp_path / "old.npz"
    np.savez_compressed(archive, data=np.zeros(3, np.uint8), offsets=np.array([0, 3]), paths=np.array(["a"]))
    with pytest.raises(SystemExit, match="run python pipelines/device/pack.py again"):
        unpack.unpack(archive, tmp_path / "target")


def test_a_wheel_unpacks_where_pip_would_put_it(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/__init__.py", "VALUE = 1\n")
        archive.writestr("demo-1.0.dist-info/METADATA", "Name: demo\n")
        archive.writestr("demo-1.0.data/platlib/demo_ext.py", "EXT = 2\n")
        archive.writestr("demo-1.0.data/scripts/demo-cli", "#!/bin/sh\n")
        archive.writestr("../escape.py", "")
    pack.unpack_wheel(wheel, tmp_path / "site")
    files = sorted(p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*") if p.is_file())
    assert files == ["demo-1.0.dist-info/METADATA", "demo/__init__.py", "demo_ext.py"]
    assert not (tmp_path / "escape.py").exists()
    done = subprocess.run([sys.executable, "-c", "import demo, demo_ext; print(demo.VALUE + demo_ext.EXT)"],
                          env={"PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True)
    assert done.stdout.strip() == "3", done.stderr


def test_start_refuses_a_folder_without_a_packed_task(tmp_path):
    (tmp_path / "start.sh").write_bytes((REPO / "pipelines" / "device" / "start.sh").read_bytes())
    done = subprocess.run(["bash", str(tmp_path / "start.sh")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1 and "run python pipelines/device/pack.py first" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not FER2013.is_dir(), reason="needs ../shared/datasets/fer2013")
def test_the_fer2013_pack_travels_within_the_device_limit(tmp_path):
    """The whole pack of the real images, beside this checkout's tracked files, fits in 64 MiB
    (pack.py fails otherwise): with deflate it had grown to 66.4 MiB."""
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "device" / "pack.py"), "--data", str(FER2013),
                           "--out", str(tmp_path / "device")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "35887 images" in done.stdout and "of the device's 64 MiB" in done.stdout
    with tarfile.open(tmp_path / "device" / "code.tar.xz") as tar:
        names = set(tar.getnames())
    assert {"src/pipelines/device/run.sh", "src/fer_tf/__init__.py", "site/keras/__init__.py",
            "site/optree/__init__.py", "site/namex/__init__.py"} <= names
    assert (tmp_path / "device" / "start.sh").read_bytes() == (REPO / "pipelines/device/start.sh").read_bytes()
    assert (tmp_path / "device" / "TASK").read_text() == "pretrain\n"

"""Pack what a GPU run needs into `.device/` (git-ignored), and check that it travels.

    python pipelines/device/pack.py [--task pretrain|finetune] [--data ../shared/datasets/fer2013] [--out .device]

`--task finetune` (for `pipelines/device/finetune.sh`, the CK+48 campaign) packs the CK+48 and KDEF
face caches (`datasets/`, about 5 MiB) instead of the FER2013 images; the rest is the same.

Writes:
- `fer2013-jpeg.npz`: the original JPEG bytes of all 35,887 FER2013 images (`train/` and
  `test/`), concatenated and xz-compressed (`data_xz`), with their offsets and their paths in the
  image folders (40.3 MiB: every image starts with the same 328-byte header, and xz finds more
  repeats than deflate, which left 43 MiB, too much beside the tracked files; a zip or tar
  archive would add about 5 MiB of headers);
  `python pipelines/device/unpack.py ARCHIVE DIR` writes the image folders back, byte for byte;
- `code.tar.xz`: `src/`, the code of the current commit (`git archive HEAD`: fer_tf, pipelines,
  configs), which the run uses instead of the working tree, so that edits made after packing
  cannot reach it; and `site/`, keras and the two of its dependencies the GPU machine lacks
  (namex, optree), unpacked from their wheels for CPython 3.12 on manylinux x86-64, at the
  versions installed here (1.8 MiB with xz, against 3.7 MiB as a folder and wheels);
- `start.sh` (a copy of pipelines/device/start.sh): unpacks `code.tar.xz` and runs the task's
  script, run.sh or finetune.sh;
- `SOURCE_COMMIT`: that commit, named in the run's reports; `TASK`: the task packed.

Run it with the device tool as `bash .device/start.sh`, carrying `.device`.

The device's working tree is limited to 64 MiB, tracked files included: this script says how much
would travel and fails when it is too much.
"""

import argparse
import importlib.metadata
import io
import lzma
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[2]
LIMIT = 64 * 2**20
WHEELS = ("keras", "namex", "optree")


def tracked_bytes():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return sum((REPO / n).stat().st_size for n in names.decode().split("\0") if n and (REPO / n).is_file())


def untracked_bytes():
    names = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout
    return sum((REPO / n).stat().st_size for n in names.decode().split("\0") if n and (REPO / n).is_file())


def pack_images(data, archive):
    import numpy as np

    data = pathlib.Path(data)
    files = sorted(p for p in (data / "train").rglob("*") if p.is_file())
    files += sorted(p for p in (data / "test").rglob("*") if p.is_file())
    if len(files) < 1000:
        sys.exit(f"error: {data} does not look like the FER2013 image folders (found {len(files)} files)")
    blobs = [p.read_bytes() for p in files]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    paths = np.array([p.relative_to(data).as_posix() for p in files])
    tmp = archive.with_name(archive.name + ".tmp.npz")
    print(f"compressing {len(files)} images ({offsets[-1] / 2**20:.1f} MiB; about a minute)", flush=True)
    packed = lzma.compress(b"".join(blobs), preset=9)
    np.savez_compressed(tmp, data_xz=np.frombuffer(packed, np.uint8), offsets=offsets, paths=paths)
    tmp.replace(archive)
    return len(files)


def download_wheels(folder):
    folder.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                             "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                    *pins], check=True)
    return pins


def unpack_wheel(wheel, site):
    """What ``pip install --target site`` puts there for a wheel of modules only: its files, with
    ``*.data/purelib`` and ``*.data/platlib`` at the top (scripts and headers are not needed)."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = pathlib.PurePosixPath(info.filename).parts
            if ".." in parts or info.filename.startswith("/") or info.is_dir():
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            if info.external_attr >> 16 & 0o111:
                target.chmod(0o755)


def pack_code(out, head):
    """``out/code.tar.xz``: ``src/`` (the code of commit ``head``) and ``site/`` (the wheels of
    WHEELS, unpacked); ``out/start.sh``, that commit's launcher. Returns the pins of the wheels."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        archive = subprocess.run(["git", "archive", "--format=tar", head, "fer_tf", "pipelines", "configs"],
                                 cwd=REPO, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp / "src", filter="data")
        pins = download_wheels(tmp / "wheels")
        for wheel in sorted((tmp / "wheels").glob("*.whl")):
            unpack_wheel(wheel, tmp / "site")
        partial = out / "code.tar.xz.tmp"
        with tarfile.open(partial, "w:xz", preset=9) as tar:
            tar.add(tmp / "src", "src")
            tar.add(tmp / "site", "site")
        partial.replace(out / "code.tar.xz")
        shutil.copyfile(tmp / "src" / "pipelines" / "device" / "start.sh", out / "start.sh")
    return pins


#: The face caches a fine-tuning campaign reads (the data set and the identity-probe set), as
#: ``(folder under .device/datasets, dataset folder under ../shared/datasets, format)``.
FINETUNE_DATA = (("ckplus48", "ckplus48", "ckplus48"), ("kdef-subset", "kdef-subset", "kdef"))


def pack_caches(out, datasets):
    """Copy the face caches of the fine-tuning data into ``out/datasets/<name>`` (built first when
    missing); prepared_dataset reads a cache folder given as the dataset."""
    from fer_tf.preprocess.prepared import DEFAULT_CACHE, cache_name, prepared_dataset

    target = out / "datasets"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, folder, fmt in FINETUNE_DATA:
        root = pathlib.Path(datasets) / folder
        prepared_dataset(root, fmt)  # builds the cache when it is missing
        shutil.copytree(REPO / DEFAULT_CACHE / cache_name(root, fmt), target / name)
    return len(FINETUNE_DATA)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("pretrain", "finetune"), default="pretrain",
                        help="pretrain: FER2013 images (run.sh); finetune: the CK+48 and KDEF face "
                             "caches (finetune.sh)")
    parser.add_argument("--data", default=REPO.parent / "shared" / "datasets" / "fer2013")
    parser.add_argument("--datasets", default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out", default=REPO / ".device")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.zip"):
        stale.unlink()
    if args.task == "pretrain":
        shutil.rmtree(out / "datasets", ignore_errors=True)
        count = f"{pack_images(args.data, out / 'fer2013-jpeg.npz')} images"
    else:  # the FER2013 archive would only use up the device's 64 MiB
        (out / "fer2013-jpeg.npz").unlink(missing_ok=True)
        count = f"{pack_caches(out, args.datasets)} face caches"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    for stale in ("src", "wheels"):  # the layout of earlier versions of this script
        shutil.rmtree(out / stale, ignore_errors=True)
    pins = pack_code(out, head)
    (out / "SOURCE_COMMIT").write_text(head + "\n")
    (out / "TASK").write_text(args.task + "\n")
    packed = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    total = tracked_bytes() + untracked_bytes() + packed
    print(f"{count}, wheels {', '.join(pins)}; .device {packed / 2**20:.1f} MiB; "
          f"with the working tree {total / 2**20:.1f} MiB of the device's {LIMIT / 2**20:.0f} MiB")
    if total > LIMIT:
        sys.exit("error: too large to travel; remove untracked files or large tracked artifacts")
    print('then, with the device tool: run command="bash .device/start.sh" carry=[".device"]')


if __name__ == "__main__":
    main()

"""Pack what a GPU run needs into `.device/` (git-ignored), and check that it travels.

    python pipelines/device/pack.py [--task pretrain|finetune] [--data ../shared/datasets/fer2013] [--out .device]

`--task finetune` (for `pipelines/device/finetune.sh`, the CK+48 campaign) packs the CK+48 and KDEF
face caches (`datasets/`, about 5 MiB) instead of the FER2013 images; the rest is the same.

Writes:
- `fer2013-jpeg.npz`: the original JPEG bytes of all 35,887 FER2013 images (`train/` and
  `test/`), concatenated, with their offsets and their paths in the image folders, compressed
  (about 43 MiB; a zip or tar archive would add about 5 MiB of headers);
  `python pipelines/device/unpack.py ARCHIVE DIR` writes the image folders back, byte for byte;
- `wheels/`: keras and the two of its dependencies the GPU machine lacks (namex, optree), built
  for CPython 3.12 on manylinux x86-64, at the versions installed here;
- `src/`: the code of the current commit (`git archive HEAD`: fer_tf, pipelines, configs), which
  the run uses instead of the working tree, so that edits made after packing cannot reach it;
- `SOURCE_COMMIT`: that commit, named in the run's reports.

Run it with the device tool as `bash .device/src/pipelines/device/run.sh`, carrying `.device`.

The device's working tree is limited to 64 MiB, tracked files included: this script says how much
would travel and fails when it is too much.
"""

import argparse
import importlib.metadata
import io
import pathlib
import shutil
import subprocess
import sys
import tarfile

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
    np.savez_compressed(tmp, data=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, paths=paths)
    tmp.replace(archive)
    return len(files)


def download_wheels(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                             "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder),
                    *pins], check=True)
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
    pins = download_wheels(out / "wheels")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", head, "fer_tf", "pipelines", "configs"],
                             cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    (out / "SOURCE_COMMIT").write_text(head + "\n")
    packed = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    total = tracked_bytes() + untracked_bytes() + packed
    (out / "TASK").write_text(args.task + "\n")
    print(f"{count}, wheels {', '.join(pins)}; .device {packed / 2**20:.1f} MiB; "
          f"with the working tree {total / 2**20:.1f} MiB of the device's {LIMIT / 2**20:.0f} MiB")
    if total > LIMIT:
        sys.exit("error: too large to travel; remove untracked files or large tracked artifacts")


if __name__ == "__main__":
    main()

"""Write the image folders of a `fer2013-jpeg.npz` made by pack.py back to disk, byte for byte.

    python pipelines/device/unpack.py .device/fer2013-jpeg.npz /tmp/fer2013
"""

import lzma
import pathlib
import sys

import numpy as np


def unpack(archive, target):
    target = pathlib.Path(target)
    with np.load(archive, allow_pickle=False) as packed:
        if "data_xz" not in packed.files:
            sys.exit(f"error: {archive} is not an archive of this pack.py (no data_xz); "
                     "run python pipelines/device/pack.py again")
        offsets, paths = packed["offsets"], packed["paths"]
        data = lzma.decompress(packed["data_xz"].tobytes())
    for i, rel in enumerate(paths):
        name = pathlib.PurePosixPath(str(rel))
        if name.is_absolute() or ".." in name.parts:
            sys.exit(f"error: {archive}: refusing the path {rel!r}, which leaves the target folder")
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[offsets[i]:offsets[i + 1]])
    return len(paths)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"{unpack(sys.argv[1], sys.argv[2])} images written to {sys.argv[2]}")

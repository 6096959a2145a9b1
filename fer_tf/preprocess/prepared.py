"""A dataset's faces the way the experiments read them: through the resumable on-disk face cache."""

from __future__ import annotations

import os
import pathlib
import sys

from fer_tf.preprocess.align import CROP_OFFSET, CROP_SCALE
from fer_tf.preprocess.cache import PRECROPPED, build_cache, read_cache

#: Where prepared faces are cached; FER_TF_CACHE overrides it.
DEFAULT_CACHE = pathlib.Path(os.environ.get("FER_TF_CACHE") or pathlib.Path("runs") / "cache")


def prepared_dataset(root, fmt, cache_root=DEFAULT_CACHE, align=None):
    """``(table, faces uint8 [n, 60, 60])`` of dataset ``root``, through the on-disk face cache.

    The first call aligns (or resizes pre-cropped faces) and caches; later calls read the cache.
    Caches of aligned faces are named after the aligner's framing too, so a change of framing
    builds a new cache instead of reading faces cropped the old way.
    """
    name = f"{fmt}-{pathlib.Path(root).resolve().name}"
    if fmt not in PRECROPPED and align is not False:
        name += f"-crop{CROP_SCALE:g}-{CROP_OFFSET:g}"
    output = pathlib.Path(cache_root) / name
    result = build_cache(root, fmt, output, align=align, progress=sys.stderr.isatty())
    if result.get("skipped"):
        print(f"{fmt}: {len(result['skipped'])} file(s) skipped (see {output}/manifest.json)",
              file=sys.stderr)
    table = read_cache(output)
    return table, table.pixels

"""A dataset's faces the way the experiments read them: through the resumable on-disk face cache."""

from __future__ import annotations

import json
import os
import pathlib
import sys

from fer_tf.preprocess.crop import CROP_OFFSET, CROP_SCALE
from fer_tf.data.cache_format import CACHE_KIND, MANIFEST
from fer_tf.data.cache_format import read_cache
from fer_tf.preprocess.cache import PRECROPPED, build_cache

#: Where prepared faces are cached; FER_TF_CACHE overrides it.
DEFAULT_CACHE = pathlib.Path(os.environ.get("FER_TF_CACHE") or pathlib.Path("runs") / "cache")


def is_face_cache(folder):
    """Whether ``folder`` is a complete fer_tf face cache (its manifest says so)."""
    manifest = pathlib.Path(folder) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind") == CACHE_KIND
    except (OSError, ValueError, AttributeError):
        return False


def cache_name(root, fmt, align=None):
    """The folder name of dataset ``root``'s cache under the cache root."""
    name = f"{fmt}-{pathlib.Path(root).resolve().name}"
    if fmt not in PRECROPPED and align is not False:
        name += f"-crop{CROP_SCALE:g}-{CROP_OFFSET:g}"
    return name


def prepared_dataset(root, fmt, cache_root=DEFAULT_CACHE, align=None):
    """``(table, faces uint8 [n, 60, 60])`` of dataset ``root``, through the on-disk face cache.

    The first call aligns (or resizes pre-cropped faces) and caches; later calls read the cache.
    Caches of aligned faces are named after the aligner's framing too, so a change of framing
    builds a new cache instead of reading faces cropped the old way. ``root`` may also be such a
    cache folder itself (``runs/cache/<name>``, wherever it was copied): it is read as it is.
    """
    if is_face_cache(root):  # a prepared cache passed as the dataset (e.g. copied to another machine)
        table = read_cache(root)
        return table, table.pixels
    output = pathlib.Path(cache_root) / cache_name(root, fmt, align)
    result = build_cache(root, fmt, output, align=align, progress=sys.stderr.isatty())
    if result.get("skipped"):
        print(f"{fmt}: {len(result['skipped'])} file(s) skipped (see {output}/manifest.json)",
              file=sys.stderr)
    table = read_cache(output)
    return table, table.pixels

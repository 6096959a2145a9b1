"""The face cache on disk, the reading side: its file names and how a cache is read back.

:mod:`fer_tf.preprocess.cache` writes caches (alignment, chunks, resume); this module only reads
them, so that :func:`fer_tf.data.readers.read_dataset` can open ``format="cache"`` without
depending on the writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fer_tf.data.table import FaceTable
from fer_tf.errors import DatasetError

CACHE_VERSION = 1
CACHE_KIND = "fer_tf-face-cache"
MANIFEST = "manifest.json"
FACES = "faces.npz"
CHUNK_DIR = ".chunks"


def _read_manifest(root):
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        hint = (" (an unfinished run left chunks there: run the same `fer-tf preprocess` command "
                "again to finish it)") if (root / CHUNK_DIR).is_dir() else ""
        raise DatasetError(f"{root} is not a face cache: {MANIFEST} not found{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the cache manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != CACHE_KIND:
        raise DatasetError(f"{path} is not a fer_tf face cache manifest")
    if manifest.get("version", 0) > CACHE_VERSION:
        raise DatasetError(f"{path}: cache version {manifest.get('version')} is newer than this "
                           f"fer_tf understands ({CACHE_VERSION})")
    return manifest


def load_faces(root):
    """The cached faces, uint8 ``[n, S, S]``."""
    root = Path(root)
    manifest = _read_manifest(root)
    path = root / manifest.get("faces", FACES)
    try:
        with np.load(path, allow_pickle=False) as z:
            faces = z["faces"]
    except FileNotFoundError:
        raise DatasetError(f"{path} not found: the cache is incomplete; run `fer-tf preprocess` "
                           "again") from None
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read the cached faces ({exc})") from None
    if faces.ndim != 3 or faces.dtype != np.uint8 or len(faces) != int(manifest.get("kept", -1)):
        raise DatasetError(f"{path}: cached faces have shape {faces.shape} {faces.dtype}, "
                           f"expected {manifest.get('kept')} uint8 faces; run `fer-tf preprocess` "
                           "again into a new folder")
    return faces


def read_cache(root):
    """A face cache as a FaceTable: rows from the manifest, ``pixels`` = the cached faces."""
    manifest = _read_manifest(root)
    faces = load_faces(root)
    rows = manifest.get("rows", [])
    if len(rows) != len(faces):
        raise DatasetError(f"{Path(root) / MANIFEST}: {len(rows)} rows for {len(faces)} faces")
    return FaceTable.from_rows(rows, name=manifest.get("name", ""), pixels=faces)


def read_cache_skipped(root):
    """The files the cache run skipped, ``[{"path", "reason"}]``."""
    return list(_read_manifest(root).get("skipped", []))

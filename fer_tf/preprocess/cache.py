"""Faces for training: align (or resize) every image of a table once, and cache the result on disk.

:func:`prepare_faces` turns a :class:`~fer_tf.data.table.FaceTable` into 60x60 uint8 grey faces:

- datasets that ship pre-cropped faces (``ckplus48``, ``fer2013``, ``fer2013-csv``) and images no
  larger than :data:`SMALL_SIDE` pixels are resized (bilinear) without detection;
- every other image is aligned with :class:`~fer_tf.preprocess.align.FaceAligner` (largest face).

Every row ends up either kept or skipped with a reason ("no face found", "not an image",
"empty file (0 bytes)", ...); one bad file never stops a run.

:func:`build_cache` (``fer-tf preprocess``) writes such faces to a folder::

    OUT/faces.npz       faces: uint8 [n, 60, 60]
    OUT/manifest.json   rows of the kept faces (row i <-> faces[i]), dataset name, source, settings,
                        expression counts, and the skipped files with reasons

It works in chunks of ``chunk_size`` rows; each finished chunk is written atomically to
``OUT/.chunks/`` so that an interrupted run resumes where it stopped (run the same command again).
The manifest is written last, atomically, and marks the cache complete; re-running on a complete
cache does nothing and prints the same summary. ``OUT`` must be new, empty, or a cache (complete or
interrupted): a folder of other files, such as the dataset itself, is refused. :func:`read_cache` reads it back as a FaceTable
whose ``pixels`` are the faces (``read_dataset(OUT, "cache")`` dispatches here).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from fer_tf.data.cache_format import CACHE_KIND, CACHE_VERSION, CHUNK_DIR, FACES, MANIFEST
from fer_tf.data.images import load_image, load_image_rgb
from fer_tf.data.readers import read_dataset
from fer_tf.errors import DatasetError, ImageError
from fer_tf.files import atomic_write, atomic_write_text, remove_stale_temporaries
from fer_tf.preprocess.align import FaceAligner
from fer_tf.preprocess.crop import CROP_OFFSET, CROP_SCALE

#: Datasets whose images are already tight face crops: resized, never detected.
PRECROPPED = frozenset({"ckplus48", "fer2013", "fer2013-csv"})
#: In auto mode, images whose larger side is at most this are treated as face crops too.
SMALL_SIDE = 64
#: Files a desktop leaves in any folder; an output folder holding only these counts as empty.
_IGNORED = (".ds_store", "thumbs.db", "desktop.ini")


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """A counter line on stderr, at most every ``interval`` seconds (silent when disabled)."""

    def __init__(self, total, desc="preprocess", enabled=True, interval=2.0, stream=None):
        self.total = int(total)
        self.desc = desc
        self.enabled = bool(enabled)
        self.interval = interval
        self.stream = stream or sys.stderr
        self.done = self.kept = self.skipped = 0
        self.start = self.last = time.monotonic()
        self._printed = False

    def update(self, kept=0, skipped=0):
        self.kept += kept
        self.skipped += skipped
        self.done += kept + skipped
        now = time.monotonic()
        if self.enabled and now - self.last >= self.interval:
            self.last = now
            self._print()

    def _print(self, final=False):
        elapsed = max(time.monotonic() - self.start, 1e-9)
        line = (f"{self.desc}: {self.done}/{self.total} images (kept {self.kept}, skipped "
                f"{self.skipped}), {self.done / elapsed:.0f}/s")
        print(line, file=self.stream, flush=True)
        self._printed = True

    def close(self):
        if self.enabled and self._printed:
            self._print(final=True)


# -- faces from a table -----------------------------------------------------------------------


def _mode(align):
    if align is None or align == "auto":
        return "auto"
    if align is True or align == "align":
        return "align"
    if align is False or align == "resize":
        return "resize"
    raise ValueError(f"align must be None/'auto', True/'align' or False/'resize', got {align!r}")


def _row_label(table, i):
    path = table.path[i]
    return str(path) if path else f"{table.name or 'table'} row {i}"


def _grey(img):
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        rgb = img[:, :, :3].astype(np.float32)
        return np.rint(rgb @ np.array([0.299, 0.587, 0.114], np.float32)).clip(0, 255).astype(np.uint8)
    return img


class _Faces:
    """Per-row face extraction with a lazily created, shared aligner."""

    def __init__(self, mode, size, aligner=None):
        from fer_tf.preprocess.normalize import resize_face  # deferred: Keras (normalize imports it)

        self.mode = mode
        self.size = int(size)
        self.resize = resize_face
        self.aligner = aligner
        self.own_aligner = False

    def get_aligner(self):
        if self.aligner is None:
            self.aligner = FaceAligner(engine="mediapipe")  # the faces every model here learned from
            self.own_aligner = True
        return self.aligner

    def close(self):
        if self.own_aligner and self.aligner is not None:
            self.aligner.close()
            self.aligner = None

    def face(self, table, i):
        """uint8 [size, size] face of row ``i``; raises ImageError (with the reason) otherwise."""
        label = _row_label(table, i)
        pre_named = table.name in PRECROPPED
        if table.pixels is not None:
            img = np.asarray(table.pixels[i])
            if img.size == 0 or img.ndim not in (2, 3):
                raise ImageError(label, f"empty or malformed pixels (shape {img.shape})")
            if img.dtype != np.uint8:
                img = np.clip(np.rint(img.astype(np.float64)), 0, 255).astype(np.uint8)
        elif not table.path[i]:
            raise ImageError(label, "row has neither a path nor pixels")
        elif self.mode == "resize" or (self.mode == "auto" and pre_named):
            img = load_image(table.path[i])
        else:
            img = load_image_rgb(table.path[i])
        small = max(img.shape[:2]) <= SMALL_SIDE
        if self.mode == "resize" or (self.mode == "auto" and (pre_named or small)):
            return self.resize(_grey(img), self.size)
        return self.get_aligner().align(img, size=self.size, label=label).image


def _process_rows(table, indices, faces_of, progress):
    """Faces of ``table`` rows ``indices``: (faces [m,S,S], kept global indices [m], skipped)."""
    out, kept, skipped = [], [], []
    for i in indices:
        i = int(i)
        try:
            face = faces_of.face(table, i)
        except ImageError as exc:
            skipped.append({"path": _row_label(table, i), "reason": exc.reason})
            progress.update(skipped=1)
            continue
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # an image that breaks a library: report it, keep the run going
            skipped.append({"path": _row_label(table, i),
                            "reason": f"could not process ({type(exc).__name__}: {exc})"})
            progress.update(skipped=1)
            continue
        out.append(face)
        kept.append(i)
        progress.update(kept=1)
    size = faces_of.size
    faces = np.stack(out).astype(np.uint8) if out else np.zeros((0, size, size), np.uint8)
    return faces, np.asarray(kept, dtype=np.int64), skipped


def prepare_faces(table, align=None, size=60, progress=True, aligner=None):
    """Faces of every row of ``table``.

    Args:
        table: a FaceTable; rows with ``table.pixels`` use those pixels instead of reading files.
        align: ``None`` (auto: resize pre-cropped datasets and images up to 64 px, align the rest),
            ``True`` (always detect and align) or ``False`` (always resize, never detect).
        size: side of the square faces.
        progress: print a counter line on stderr every ~2 s.
        aligner: a :class:`FaceAligner` to reuse (one is created and closed otherwise).

    Returns:
        ``(faces, kept, skipped)``: uint8 ``[n, size, size]``; the FaceTable of the kept rows (its
        ``pixels`` are ``faces``); a list of ``{"path", "reason"}`` for the rows that were skipped.
    """
    mode = _mode(align)
    faces_of = _Faces(mode, size, aligner)
    bar = Progress(len(table), enabled=progress)
    try:
        faces, kept_idx, skipped = _process_rows(table, range(len(table)), faces_of, bar)
    finally:
        faces_of.close()
        bar.close()
    kept = table.take(kept_idx)
    kept.pixels = faces
    return faces, kept, skipped


# -- the on-disk cache ------------------------------------------------------------------------


def _atomic_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False))


def _settings(root, fmt, options, mode, size, chunk_size):
    settings = {
        "source": str(Path(root).resolve()),
        "format": fmt,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted((options or {}).items())},
        "align": mode,
        "size": int(size),
        "chunk_size": int(chunk_size),
    }
    if mode != "resize" and fmt not in PRECROPPED:
        # faces are aligned: a cache made with another crop is stale (reports/framing)
        settings["framing"] = {"crop_scale": CROP_SCALE, "crop_offset": CROP_OFFSET}
    return settings


def _fingerprint(settings, table):
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(b"\0".join(str(p).encode() for p in table.path))
    h.update(b"\1".join(str(e).encode() for e in table.expression))
    if table.pixels is not None:
        h.update(np.ascontiguousarray(table.pixels).tobytes())
    return h.hexdigest()


def _chunk_path(chunk_dir, k):
    return Path(chunk_dir) / f"chunk-{k:05d}.npz"


def _load_chunk(path, size):
    """(faces, indices, skipped) of a finished chunk, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            faces, index = z["faces"], z["index"]
            skipped = json.loads(str(z["skipped"]))
    except Exception:
        return None
    if faces.ndim != 3 or faces.shape[1:] != (size, size) or len(faces) != len(index):
        return None
    return faces, index, skipped


def _save_chunk(path, faces, index, skipped):
    atomic_write(path, lambda f: np.savez(f, faces=faces, index=index,
                                                 skipped=np.array(json.dumps(skipped))))


def _process_chunk(table, indices, faces_of, progress):
    """One chunk's faces; a separate function so tests can interrupt a run between chunks."""
    return _process_rows(table, indices, faces_of, progress)


def _summary(manifest, output):
    return {"kept": int(manifest["kept"]), "skipped": list(manifest["skipped"]),
            "output": str(output), "name": manifest.get("name", "")}


def build_cache(root, fmt, output, align=None, size=60, chunk_size=512, options=None,
                progress=True):
    """Write the face cache of dataset ``root`` (layout ``fmt``) to ``output``; resumable.

    Returns ``{"kept": n, "skipped": [...], "output": ..., "name": ..., "resumed_chunks": k,
    "complete_before": bool}``.
    """
    output = Path(output)
    mode = _mode(align)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    settings = _settings(root, fmt, options, mode, size, chunk_size)
    manifest_path = output / MANIFEST
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or old.get("kind") != CACHE_KIND:
            raise DatasetError(f"{output} holds a {MANIFEST} that is not a fer_tf face cache; "
                               "choose another --output folder")
        same = {k: old.get("settings", {}).get(k) for k in settings if k != "chunk_size"} == \
            {k: v for k, v in settings.items() if k != "chunk_size"}
        if not same:
            raise DatasetError(
                f"{output} already holds a face cache made with other settings "
                f"({json.dumps(old.get('settings'))}); choose another --output folder or delete it")
        if (output / FACES).is_file():
            result = _summary(old, output)
            result.update(resumed_chunks=0, complete_before=True)
            return result
    if output.exists() and not output.is_dir():
        raise DatasetError(f"--output {output} exists and is not a folder")
    if output.is_dir() and not manifest_path.is_file() and not (output / CHUNK_DIR).is_dir():
        others = sorted(p.name for p in output.iterdir() if p.name.lower() not in _IGNORED)
        if others:  # never write into a folder of other files (e.g. the dataset itself)
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise DatasetError(
                f"--output {output} is a folder of other files ({shown}), not a face cache; "
                "choose a new or empty folder")
    output.mkdir(parents=True, exist_ok=True)

    table, reader_skipped = read_dataset(root, fmt, return_skipped=True, **(options or {}))
    chunk_dir = output / CHUNK_DIR
    chunk_dir.mkdir(exist_ok=True)
    for folder in (output, chunk_dir):  # what a killed run was writing
        remove_stale_temporaries(folder)
    fingerprint = _fingerprint(settings, table)
    state_path = chunk_dir / "state.json"
    state = None
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = None
    if not state or state.get("fingerprint") != fingerprint:
        for old_chunk in chunk_dir.glob("chunk-*.npz"):  # chunks of another run: start over
            old_chunk.unlink()
        _atomic_json(state_path, {"fingerprint": fingerprint, "settings": settings})

    n = len(table)
    n_chunks = (n + chunk_size - 1) // chunk_size
    faces_of = _Faces(mode, size)
    bar = Progress(n, enabled=progress)
    parts, resumed = [], 0
    try:
        for k in range(n_chunks):
            path = _chunk_path(chunk_dir, k)
            indices = np.arange(k * chunk_size, min(n, (k + 1) * chunk_size))
            done = _load_chunk(path, size) if path.is_file() else None
            if done is not None:
                resumed += 1
                bar.update(kept=len(done[1]), skipped=len(done[2]))
            else:
                done = _process_chunk(table, indices, faces_of, bar)
                _save_chunk(path, *done)
            parts.append(done)
    finally:
        faces_of.close()
        bar.close()

    faces = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, size, size), np.uint8)
    index = np.concatenate([p[1] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
    skipped = list(reader_skipped) + [s for p in parts for s in p[2]]
    kept = table.take(index)
    rows = [{k: (int(v) if k == "frame" else str(v)) for k, v in r.items()} for r in kept.rows()]
    atomic_write(output / FACES, lambda f: np.savez(f, faces=faces))
    manifest = {
        "kind": CACHE_KIND,
        "version": CACHE_VERSION,
        "name": table.name,
        "settings": settings,
        "face_size": int(size),
        "kept": int(len(faces)),
        "expressions": kept.counts(),
        "subjects": len({s for s in kept.subject if s != ""}),
        "faces": FACES,
        "rows": rows,
        "skipped": skipped,
    }
    _atomic_json(manifest_path, manifest)  # last: marks the cache complete
    shutil.rmtree(chunk_dir, ignore_errors=True)
    result = _summary(manifest, output)
    result.update(resumed_chunks=resumed, complete_before=False)
    return result

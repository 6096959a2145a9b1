"""Dataset readers: one small function per on-disk layout, all returning a :class:`FaceTable`.

``read_dataset(root, format, **options)`` is the entry point. Readers only list and parse file
names (and label files); they never decode images, so even FER2013's 35,887 files read in well
under a second. Each reader maps the dataset's own expression names or codes onto the canonical
names of :mod:`fer_tf.data.labels`.

Readers never drop a file silently: every file they pass over is recorded as
``{"path": ..., "reason": ...}`` and returned with ``read_dataset(..., return_skipped=True)``.
Hidden files (names starting with ".", e.g. ``.DS_Store``) and ``Thumbs.db`` are ignored.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
import re
from pathlib import Path

import numpy as np

from fer_tf.data.cache_format import read_cache
from fer_tf.data.formats import FORMATS
from fer_tf.data.manifest import MANIFEST_LAYOUT, decode_text, read_manifest
from fer_tf.data.labels import canonical_expression
from fer_tf.data.table import FaceTable
from fer_tf.errors import DatasetError


#: Expected layout of each format, quoted in error messages.
LAYOUTS = {
    "ckplus48": "<class>/S###_SSS_FFFFFFFF.png (e.g. anger/S010_004_00000017.png)",
    "ckplus": "cohn-kanade-images/S###/SSS/S###_SSS_FFFFFFFF.png with "
    "Emotion/S###/SSS/S###_SSS_FFFFFFFF_emotion.txt",
    "fer2013": "train/<class>/Training_*.jpg and test/<class>/PublicTest_*.jpg, PrivateTest_*.jpg",
    "fer2013-csv": "fer2013.csv (or the CSV file itself) with columns emotion,pixels[,Usage]",
    "jaffe": "XX.YYn.NNN.tiff files (e.g. KA.AN1.39.tiff), in any subfolder",
    "kdef": "{A,B}{F,M}NN{AF,AN,DI,HA,NE,SA,SU}{S,HL,HR,FL,FR}.JPG files (e.g. AF01ANS.JPG), "
    "in any subfolder",
    "yale": "subjectNN.<condition> files without extension (e.g. subject01.happy)",
    "manifest": MANIFEST_LAYOUT,
    "cache": "a preprocessed cache folder holding manifest.json (written by `fer-tf preprocess`)",
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".pgm", ".ppm")
_IGNORED = ("thumbs.db", "desktop.ini")

# CK+ emotion codes (Emotion/*_emotion.txt).
CKPLUS_CODES = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness",
                6: "sadness", 7: "surprise"}
# FER2013 CSV emotion codes.
FER2013_CODES = {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise",
                 6: "neutral"}
# Yale conditions that are facial expressions.
YALE_EXPRESSIONS = {"happy": "happiness", "normal": "neutral", "sad": "sadness",
                    "surprised": "surprise", "sleepy": None, "wink": None}
YALE_OTHER = ("glasses", "noglasses", "centerlight", "leftlight", "rightlight")
YALE_DEFAULT_CONDITIONS = ("happy", "normal", "sad", "surprised")


def read_dataset(root, format, return_skipped=False, **options):
    """Read the dataset at ``root`` laid out as ``format`` (one of :data:`FORMATS`).

    Returns a :class:`FaceTable` (rows sorted by path), or ``(table, skipped)`` when
    ``return_skipped`` is true, where ``skipped`` lists ``{"path", "reason"}`` dicts for every file
    the reader passed over. Raises :class:`DatasetError` for an unknown format, a missing root, or
    a root with no usable files.
    """
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; use one of: {', '.join(FORMATS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetError(
            f"dataset path not found: {root} (format {format} expects {LAYOUTS[format]})"
        )
    if format == "cache":
        table = read_cache(root)
        return (table, []) if return_skipped else table
    skipped = []
    reader = _READERS[format]
    accepted = list(inspect.signature(reader).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"unknown option(s) {', '.join(unknown)} for format {format}; "
            f"it accepts: {', '.join(accepted) or 'no options'}"
        )
    rows, pixels = reader(root, skipped, **options)
    if not rows:
        detail = f" ({len(skipped)} files skipped, e.g. {skipped[0]['path']}: {skipped[0]['reason']})" \
            if skipped else ""
        raise DatasetError(
            f"no {format} images found under {root}{detail}; expected layout: {LAYOUTS[format]}"
        )
    if pixels is None:
        rows.sort(key=lambda r: r["path"])
    table = FaceTable.from_rows(rows, name=format, pixels=pixels)
    return (table, skipped) if return_skipped else table


# --- helpers -----------------------------------------------------------------------------------


def _require_dir(root, fmt):
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder (format {fmt} expects {LAYOUTS[fmt]})")


def _ignored(name):
    return name.startswith(".") or name.lower() in _IGNORED


def _unreadable(exc):
    """os.walk's error handler: a folder that cannot be listed is an error, not an empty folder."""
    where = exc.filename or "a folder"
    raise DatasetError(f"cannot read the folder {where} ({exc.strerror or exc}); give yourself read "
                       "access to it, or move it out of the dataset") from None


def _walk_files(root):
    """All non-hidden files under ``root``, recursively, in sorted order. A folder that cannot be
    read raises :class:`DatasetError` (it would otherwise look empty)."""
    for dirpath, dirnames, filenames in os.walk(root, onerror=_unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not _ignored(name):
                yield Path(dirpath) / name


def _skip(skipped, path, reason):
    skipped.append({"path": str(path), "reason": reason})


def _files_in(folder):
    """Non-hidden plain files directly in ``folder`` (fast: one scandir)."""
    try:
        with os.scandir(folder) as it:
            return sorted((e.path, e.name) for e in it if e.is_file() and not _ignored(e.name))
    except OSError as exc:
        _unreadable(exc)


def _subdirs(folder):
    try:
        with os.scandir(folder) as it:
            return sorted((e.path, e.name) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        _unreadable(exc)


# --- CK+48: <class>/S###_SSS_FFFFFFFF.png ------------------------------------------------------

_CK_NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.(png|jpe?g|tiff?|bmp)$", re.IGNORECASE)


def _read_ckplus48(root, skipped):
    _require_dir(root, "ckplus48")
    rows = []
    for folder, cls in _subdirs(root):
        expression = canonical_expression(cls)
        for path, name in _files_in(folder):
            if expression is None:
                _skip(skipped, path, "unknown label")
                continue
            m = _CK_NAME.match(name)
            if not m:
                _skip(skipped, path, "malformed file name")
                continue
            subject, seq, frame = m.group(1).upper(), m.group(2), int(m.group(3))
            rows.append({"path": path, "expression": expression, "subject": subject,
                         "sequence": f"{subject}_{seq}", "frame": frame})
    for path, _ in _files_in(root):
        _skip(skipped, path, "not in a class folder")
    return rows, None


# --- official CK+: cohn-kanade-images/ + Emotion/ ---------------------------------------------


def _read_ckplus(root, skipped, frames_per_sequence=3, include_neutral=False):
    _require_dir(root, "ckplus")
    images, emotion = root / "cohn-kanade-images", root / "Emotion"
    for folder in (images, emotion):
        if not folder.is_dir():
            raise DatasetError(f"{folder} not found (format ckplus expects {LAYOUTS['ckplus']})")
    if int(frames_per_sequence) < 1:
        raise DatasetError(f"frames_per_sequence must be >= 1, got {frames_per_sequence}")
    labels = {}  # (subject, seq) -> (expression or None, label file)
    for path in _walk_files(emotion):
        rel = path.relative_to(emotion).parts
        m = re.match(r"^(S\d+)_(\d+)_(\d+)_emotion\.txt$", path.name, re.IGNORECASE)
        if not m or len(rel) != 3:
            _skip(skipped, path, "malformed file name")
            continue
        labels[(m.group(1).upper(), m.group(2))] = (_ckplus_label(path), path)
    rows = []
    for subject_dir, subject in _subdirs(images):
        for seq_dir, seq in _subdirs(subject_dir):
            subject_u = subject.upper()
            frames = []
            for path, name in _files_in(seq_dir):
                m = _CK_NAME.match(name)
                if not m or m.group(1).upper() != subject_u or m.group(2) != seq:
                    _skip(skipped, path, "malformed file name")
                    continue
                frames.append((int(m.group(3)), path))
            key = (subject_u, seq)
            if key not in labels:
                _skip(skipped, seq_dir, "no emotion label (unlabelled sequence)")
                continue
            expression, label_path = labels.pop(key)
            if expression is None:
                _skip(skipped, label_path, "unknown label")
                continue
            if not frames:
                _skip(skipped, label_path, "no images for labelled sequence")
                continue
            frames.sort()
            chosen = frames[-int(frames_per_sequence):]
            sequence = f"{subject_u}_{seq}"
            for frame, path in chosen:
                rows.append({"path": path, "expression": expression, "subject": subject_u,
                             "sequence": sequence, "frame": frame})
            if include_neutral and frames[0] not in chosen:
                rows.append({"path": frames[0][1], "expression": "neutral", "subject": subject_u,
                             "sequence": sequence, "frame": frames[0][0]})
    for _, label_path in labels.values():
        _skip(skipped, label_path, "no images for labelled sequence")
    for path, _ in _files_in(images):
        _skip(skipped, path, "not in a sequence folder")
    return rows, None


def _ckplus_label(path):
    """The canonical expression in a CK+ ``*_emotion.txt`` file, or None if it is not valid."""
    try:
        code = float(Path(path).read_text(encoding="ascii", errors="replace").split()[0])
    except (IndexError, ValueError, OSError):
        return None
    if code != int(code):
        return None
    return CKPLUS_CODES.get(int(code))


# --- FER2013 image folders --------------------------------------------------------------------

_FER_SPLITS = ("Training", "PublicTest", "PrivateTest")


def _read_fer2013(root, skipped):
    """``<split folder>/<class>/<Prefix>_N.jpg``; split from the prefix, else the folder name."""
    _require_dir(root, "fer2013")
    rows = []
    for split_dir, split_name in _subdirs(root):
        for folder, cls in _subdirs(split_dir):
            expression = canonical_expression(cls)
            for path, name in _files_in(folder):
                if expression is None:
                    _skip(skipped, path, "unknown label")
                    continue
                if not name.lower().endswith(IMAGE_SUFFIXES):
                    _skip(skipped, path, "not an image file")
                    continue
                prefix = name.split("_", 1)[0]
                split = prefix if prefix in _FER_SPLITS else split_name
                rows.append({"path": path, "expression": expression, "split": split})
        for path, _ in _files_in(split_dir):
            _skip(skipped, path, "not in a class folder")
    for path, _ in _files_in(root):
        _skip(skipped, path, "not in a split folder")
    return rows, None


# --- FER2013 CSV ------------------------------------------------------------------------------


def _read_fer2013_csv(root, skipped):
    path = root / "fer2013.csv" if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"{path} not found (format fer2013-csv expects {LAYOUTS['fer2013-csv']})")
    rows, images, side = [], [], None
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "emotion" not in fields or "pixels" not in fields:
            raise DatasetError(f"{path}: header {reader.fieldnames} lacks emotion,pixels columns; "
                               f"expected {LAYOUTS['fer2013-csv']}")
        reader.fieldnames = fields
        for line, rec in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                expression = FER2013_CODES.get(int(str(rec.get("emotion", "")).strip()))
            except ValueError:
                expression = None
            if expression is None:
                _skip(skipped, where, "unknown label")
                continue
            values = str(rec.get("pixels") or "").split()
            n = int(round(len(values) ** 0.5))
            if not values or n * n != len(values) or (side is not None and n != side):
                _skip(skipped, where, "malformed pixels")
                continue
            try:
                arr = np.array(values, dtype=np.int64)
            except ValueError:
                _skip(skipped, where, "malformed pixels")
                continue
            if arr.min() < 0 or arr.max() > 255:
                _skip(skipped, where, "malformed pixels")
                continue
            side = n
            images.append(arr.astype(np.uint8).reshape(n, n))
            rows.append({"expression": expression, "split": str(rec.get("usage") or "").strip()})
    pixels = np.stack(images) if images else None
    return rows, pixels


# --- JAFFE: XX.YYn.NNN.tiff -------------------------------------------------------------------

_JAFFE_NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?$")


def _read_jaffe(root, skipped):
    _require_dir(root, "jaffe")
    rows = []
    for path in _walk_files(root):
        m = _JAFFE_NAME.match(path.name)
        if not m:
            reason = "malformed file name" if path.suffix.lower() in IMAGE_SUFFIXES else "not an image file"
            _skip(skipped, path, reason)
            continue
        expression = canonical_expression(m.group(2))
        if expression is None:
            _skip(skipped, path, "unknown label")
            continue
        rows.append({"path": str(path), "expression": expression, "subject": m.group(1).upper()})
    return rows, None


# --- KDEF: {A,B}{F,M}NN{expr}{pose}.JPG ------------------------------------------------------

_KDEF_NAME = re.compile(r"^([AB])([FM])(\d{2})([A-Z]{2})(S|HL|HR|FL|FR)\.jpe?g$", re.IGNORECASE)
KDEF_POSES = ("S", "HL", "HR", "FL", "FR")


def _read_kdef(root, skipped, poses=("S",)):
    _require_dir(root, "kdef")
    poses = tuple(p.upper() for p in ([poses] if isinstance(poses, str) else poses))
    bad = [p for p in poses if p not in KDEF_POSES]
    if bad:
        raise DatasetError(f"unknown KDEF pose(s) {bad}; use some of {', '.join(KDEF_POSES)}")
    rows = []
    for path in _walk_files(root):
        m = _KDEF_NAME.match(path.name)
        if not m:
            reason = "malformed file name" if path.suffix.lower() in IMAGE_SUFFIXES else "not an image file"
            _skip(skipped, path, reason)
            continue
        session, sex, number, code, pose = (g.upper() for g in m.groups())
        expression = canonical_expression(code)
        if expression is None:
            _skip(skipped, path, "unknown label")
            continue
        if pose not in poses:
            _skip(skipped, path, f"pose {pose} not selected")
            continue
        rows.append({"path": str(path), "expression": expression, "subject": sex + number})
    return rows, None


# --- Yale faces: subjectNN.<condition> --------------------------------------------------------

_YALE_NAME = re.compile(r"^subject(\d+)\.([a-z]+)$", re.IGNORECASE)


def _read_yale(root, skipped, conditions=YALE_DEFAULT_CONDITIONS):
    """Keep the expression conditions in ``conditions`` (default happy, normal, sad, surprised).

    ``sleepy`` and ``wink`` are expression conditions but not expressions in the label set; they
    and the lighting/glasses conditions are always reported as skipped.
    """
    _require_dir(root, "yale")
    conditions = tuple(c.lower() for c in ([conditions] if isinstance(conditions, str) else conditions))
    bad = [c for c in conditions if YALE_EXPRESSIONS.get(c) is None]
    if bad:
        usable = [c for c, e in YALE_EXPRESSIONS.items() if e]
        raise DatasetError(f"Yale condition(s) {bad} are not expressions in the label set; "
                           f"use some of {', '.join(usable)}")
    rows = []
    for path in _walk_files(root):
        m = _YALE_NAME.match(path.name)
        if not m:
            _skip(skipped, path, "malformed file name")
            continue
        condition = m.group(2).lower()
        if condition in YALE_OTHER:
            _skip(skipped, path, "not an expression condition")
        elif condition not in YALE_EXPRESSIONS:
            _skip(skipped, path, "unknown label")
        elif YALE_EXPRESSIONS[condition] is None:
            _skip(skipped, path, "not an expression in the label set")
        elif condition not in conditions:
            _skip(skipped, path, "condition not selected")
        else:
            rows.append({"path": str(path), "expression": YALE_EXPRESSIONS[condition],
                         "subject": f"subject{int(m.group(1)):02d}"})
    return rows, None


_READERS = {
    "ckplus48": _read_ckplus48,
    "ckplus": _read_ckplus,
    "fer2013": _read_fer2013,
    "fer2013-csv": _read_fer2013_csv,
    "jaffe": _read_jaffe,
    "kdef": _read_kdef,
    "yale": _read_yale,
    "manifest": read_manifest,
}


# --- format detection (for the CLI) -----------------------------------------------------------


def detect_format(root):
    """Guess the format of ``root`` from cheap clues, or return None when unsure."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return _csv_format(root)
        return None
    if not root.is_dir():
        return None
    if (root / "manifest.json").is_file():
        return "cache"
    if (root / "cohn-kanade-images").is_dir() and (root / "Emotion").is_dir():
        return "ckplus"
    for name in ("fer2013.csv", "manifest.csv"):
        if (root / name).is_file():
            return _csv_format(root / name)
    subdirs = [n for _, n in _subdirs(root)]
    if {"train", "test"} & set(subdirs):
        return "fer2013"
    if subdirs and all(canonical_expression(n) for n in subdirs):
        for folder, _ in _subdirs(root):
            names = [n for _, n in _files_in(folder)][:5]
            if names and all(_CK_NAME.match(n) for n in names):
                return "ckplus48"
            if names:
                break
    names = []
    for path in _walk_files(root):
        names.append(path.name)
        if len(names) >= 20:
            break
    for fmt, pattern in (("yale", _YALE_NAME), ("jaffe", _JAFFE_NAME), ("kdef", _KDEF_NAME)):
        if names and sum(bool(pattern.match(n)) for n in names) > len(names) // 2:
            return fmt
    return None


def _csv_format(path):
    try:
        with open(path, "rb") as f:
            head = decode_text(f.read(65536), path, head=True)
    except OSError:
        return None
    header = [c.strip().lower() for c in next(csv.reader(io.StringIO(head, newline="")), [])]
    if "pixels" in header and "emotion" in header:
        return "fer2013-csv"
    if "path" in header and "expression" in header:
        return "manifest"
    return None

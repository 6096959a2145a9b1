"""The manifest CSV reader: ``path,expression,subject[,sequence,frame,split]``, one row per image.

:func:`read_manifest` reads the user's own datasets (what `fer-tf train` and the ``manifest``
format of :func:`fer_tf.data.readers.read_dataset` take); :func:`decode_text` decodes the CSV
files spreadsheets write (UTF-8 with or without BOM, UTF-16, else Latin-1 with a warning).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from pathlib import Path

from fer_tf.data.labels import canonical_expression
from fer_tf.errors import DatasetError, DatasetWarning

#: The manifest's layout, quoted in error messages.
MANIFEST_LAYOUT = ("a CSV file (or a folder holding manifest.csv) with header "
                   "path,expression,subject[,sequence,frame,split]; paths relative to the CSV's "
                   "folder and inside it; UTF-8 or UTF-16")


def _skipped(path, reason):
    return {"path": str(path), "reason": reason}



def decode_text(data, path, head=False):
    """Text of a CSV file's bytes: UTF-8 (with or without BOM) or UTF-16 (BOM, or NUL bytes
    between ASCII characters), else Latin-1 with a :class:`DatasetWarning`.

    Spreadsheets save CSV as UTF-16 ("Unicode text") or in the system's 8-bit code page; Latin-1
    decodes any byte, so a file in another 8-bit code page reads with wrong accented letters,
    which the warning says. ``head=True`` decodes the start of a file (a character cut at the end
    is dropped, and no warning is given).
    """
    errors = "ignore" if head else "strict"
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8):].decode("utf-8", errors)
        except UnicodeDecodeError:
            pass
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16", errors)
        except UnicodeDecodeError:
            pass
    else:
        sample = data[:4096]
        even, odd = sample[0::2], sample[1::2]
        if len(sample) >= 4 and odd.count(0) > 0.3 * len(odd) and even.count(0) == 0:
            encoding = "utf-16-le"
        elif len(sample) >= 4 and even.count(0) > 0.3 * len(even) and odd.count(0) == 0:
            encoding = "utf-16-be"
        else:
            encoding = "utf-8"
        try:
            return data.decode(encoding, errors)
        except UnicodeDecodeError:
            pass
    if not head:
        warnings.warn(f"{path} is neither UTF-8 nor UTF-16; read as Latin-1 (accented letters "
                      f"may be wrong: save it as UTF-8)", DatasetWarning, stacklevel=3)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return data.decode("latin-1")


def inside(folder, rel):
    """True when ``rel`` (relative or absolute) names a path inside ``folder`` (lexically)."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, rel))
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def read_manifest(root, skipped, require_subject=True, check_files=True, allow_outside=False):
    """User CSV ``path,expression,subject[,sequence,frame,split]``.

    Rows with an unknown label, an empty subject (when ``require_subject``), a path outside the
    manifest's folder (unless ``allow_outside``: ``../`` or an absolute path elsewhere; checked on
    the path's text, so links inside the folder are followed), or (when ``check_files``) a missing
    file are skipped and reported. Sequence ids are prefixed with the subject
    (``<subject>_<sequence>``) unless they already start with it, so that they are unique across
    subjects. The file may be UTF-8 (with or without BOM) or UTF-16; other files are read as
    Latin-1 with a :class:`~fer_tf.errors.DatasetWarning`.
    """
    path = root / "manifest.csv" if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(f"{path} not found (format manifest expects {MANIFEST_LAYOUT})")
    base = path.parent
    rows = []
    try:
        text = decode_text(path.read_bytes(), path)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = [(c or "").strip().lower() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a CSV file ({exc})") from None
    missing = [c for c in ("path", "expression", "subject") if c not in fields]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; "
                           f"expected {MANIFEST_LAYOUT}")
    reader.fieldnames = fields
    records = []
    try:
        for rec in reader:  # blank lines are skipped by the reader but counted in line_num
            records.append((reader.line_num, rec))
    except csv.Error as exc:
        raise DatasetError(f"{path}: malformed CSV at line {reader.line_num} ({exc})") from None
    first = {}  # file -> (line, expression, subject) of its first row
    duplicates = []
    for line, rec in records:
        rel = (rec.get("path") or "").strip()
        where = str(base / rel) if rel else f"{path}:{line}"
        if not rel:
            skipped.append(_skipped(where, "missing path"))
            continue
        expression = canonical_expression(rec.get("expression"))
        subject = (rec.get("subject") or "").strip()
        if expression is None:
            skipped.append(_skipped(where, "unknown label"))
            continue
        if not subject and require_subject:
            skipped.append(_skipped(where, "missing subject"))
            continue
        file = Path(rel) if os.path.isabs(rel) else base / rel
        if not allow_outside and not inside(base, rel):
            skipped.append(_skipped(str(file), "outside the manifest's folder "
                                               "(allow with --allow-outside)"))
            continue
        if check_files and not file.is_file():
            skipped.append(_skipped(where, "file not found"))
            continue
        key = os.path.normcase(os.path.normpath(os.path.abspath(file)))
        if key in first:
            line0, expression0, subject0 = first[key]
            if (expression0, subject0) != (expression, subject):
                what = (f"labels {expression0} and {expression}" if expression0 != expression
                        else f"subjects {subject0!r} and {subject!r}")
                raise DatasetError(
                    f"{path}: lines {line0} and {line} give {rel} two {what}; keep the right one")
            duplicates.append((line, line0))
            continue
        first[key] = (line, expression, subject)
        sequence = (rec.get("sequence") or "").strip()
        if sequence and subject and not sequence.startswith(subject):
            sequence = f"{subject}_{sequence}"
        try:
            frame = int((rec.get("frame") or "-1").strip())
        except ValueError:
            frame = -1
        rows.append({"path": str(file), "expression": expression, "subject": subject,
                     "sequence": sequence, "frame": frame,
                     "split": (rec.get("split") or "").strip()})
    if duplicates:
        line, line0 = duplicates[0]
        warnings.warn(DatasetWarning(
            f"{path}: {len(duplicates)} duplicate row(s) dropped (the same file, label and subject "
            f"as an earlier row; e.g. line {line} repeats line {line0})"), stacklevel=2)
    return rows, None

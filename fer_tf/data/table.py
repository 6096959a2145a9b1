"""FaceTable: one row per face image, whatever dataset it came from.

Readers return a FaceTable; nothing downstream knows which dataset it came from. Columns are NumPy
arrays of equal length:

- ``path``: image file path (str; "" for rows that carry pixels instead, e.g. FER2013 CSV);
- ``expression``: canonical expression name (see :mod:`fer_tf.data.labels`);
- ``subject``: subject id (str; "" when the dataset has no identities, e.g. FER2013);
- ``sequence``: sequence id, unique across subjects (str; "" when the dataset has none);
- ``frame``: frame number inside the sequence (int; -1 when not applicable);
- ``split``: the dataset's own split ("Training", "PublicTest", ...; "" when none).

``pixels`` optionally holds the images themselves, ``[n, H, W]`` uint8, for tables read from a CSV
or from a preprocessed cache.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

COLUMNS = ("path", "expression", "subject", "sequence", "frame", "split")


@dataclasses.dataclass
class FaceTable:
    path: np.ndarray
    expression: np.ndarray
    subject: np.ndarray
    sequence: np.ndarray
    frame: np.ndarray
    split: np.ndarray
    pixels: np.ndarray | None = None
    name: str = ""

    def __post_init__(self):
        n = len(self.path)
        for col in COLUMNS:
            value = getattr(self, col)
            dtype = np.int64 if col == "frame" else object
            value = np.asarray(value, dtype=dtype)
            if value.shape != (n,):
                raise ValueError(f"FaceTable column {col!r} has shape {value.shape}, expected ({n},)")
            setattr(self, col, value)
        if self.pixels is not None and len(self.pixels) != n:
            raise ValueError(f"FaceTable pixels hold {len(self.pixels)} images for {n} rows")

    @classmethod
    def from_rows(cls, rows, name="", pixels=None):
        """Build a table from dicts with the keys of :data:`COLUMNS` (missing keys get defaults)."""
        defaults = {"path": "", "subject": "", "sequence": "", "frame": -1, "split": ""}
        cols = {c: [r.get(c, defaults.get(c)) for r in rows] for c in COLUMNS}
        if not rows:
            cols = {c: np.zeros(0, dtype=np.int64 if c == "frame" else object) for c in COLUMNS}
        return cls(**cols, pixels=pixels, name=name)

    @classmethod
    def concat(cls, tables, name="combined", namespace=True):
        """Stack tables row-wise. With ``namespace``, subject and sequence ids are prefixed with each
        table's name ("kdef:F01") so that ids from different datasets never collide."""
        tables = list(tables)
        cols = {}
        for c in COLUMNS:
            parts = []
            for t in tables:
                values = getattr(t, c)
                if namespace and c in ("subject", "sequence"):
                    values = np.array([f"{t.name}:{v}" if v != "" else "" for v in values], dtype=object)
                parts.append(values)
            cols[c] = np.concatenate(parts) if parts else np.zeros(0, dtype=object)
        have = [t.pixels is not None for t in tables]
        pixels = np.concatenate([t.pixels for t in tables]) if tables and all(have) else None
        return cls(**cols, pixels=pixels, name=name)

    def __len__(self):
        return len(self.path)

    def take(self, indices) -> "FaceTable":
        """Rows at ``indices`` (ints or a boolean mask), as a new table."""
        indices = np.asarray(indices)
        if indices.dtype == bool:
            indices = np.flatnonzero(indices)
        cols = {c: getattr(self, c)[indices] for c in COLUMNS}
        pixels = None if self.pixels is None else self.pixels[indices]
        return FaceTable(**cols, pixels=pixels, name=self.name)

    def rows(self):
        """Iterate over rows as dicts."""
        for i in range(len(self)):
            yield {c: getattr(self, c)[i] for c in COLUMNS}

    @property
    def has_subjects(self) -> bool:
        return bool(len(self)) and all(s != "" for s in self.subject)

    def expression_ids(self, labels) -> np.ndarray:
        """Integer class ids of each row for the label order ``labels`` (-1 where not in it)."""
        index = {name: i for i, name in enumerate(labels)}
        return np.array([index.get(e, -1) for e in self.expression], dtype=np.int32)

    def subject_ids(self) -> np.ndarray:
        """Dense integer ids of subjects, in sorted order of subject names."""
        _, ids = np.unique(self.subject.astype(str), return_inverse=True)
        return ids.astype(np.int32)

    def counts(self) -> dict:
        """Images per expression."""
        return dict(sorted(Counter(self.expression.tolist()).items()))

    def single_expression_subjects(self) -> list:
        """Subjects who show only one expression: they cannot give identity-aware negatives."""
        seen = {}
        for s, e in zip(self.subject, self.expression):
            if s != "":
                seen.setdefault(s, set()).add(e)
        return sorted(s for s, es in seen.items() if len(es) == 1)

    def summary(self) -> dict:
        """Counts a user checks first: images, subjects, sequences, per expression."""
        subjects = sorted({s for s in self.subject if s != ""})
        sequences = {s for s in self.sequence if s != ""}
        splits = dict(sorted(Counter(s for s in self.split if s != "").items()))
        return {
            "name": self.name,
            "images": len(self),
            "subjects": len(subjects),
            "sequences": len(sequences),
            "expressions": self.counts(),
            "splits": splits,
            "single_expression_subjects": self.single_expression_subjects(),
        }

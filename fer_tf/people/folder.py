"""Identities of a folder of face images: the largest face of each file, its identity embedding,
and pseudo subject ids from grouping (``fer-tf data identities``, reports/people).

:func:`detect_largest` finds each file's largest face with the aligner that everything else uses
(:class:`fer_tf.preprocess.align.FaceAligner`); :func:`embed_all` embeds them
(:class:`~fer_tf.people.embedding.IdentityEmbedder`); :func:`pseudo_subjects` groups the vectors
(:func:`fer_tf.people.grouping.group`) into ``person-1``, ``person-2``, ...;
:func:`manifest_text` gives the manifest that ``--format manifest`` reads.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from fer_tf.data.images import load_image_rgb
from fer_tf.errors import ImageError
from fer_tf.people.embedding import DIMENSIONS
from fer_tf.people.grouping import group

#: Columns of the manifest that :func:`manifest_text` gives (those ``--format manifest`` reads).
MANIFEST_COLUMNS = ("path", "expression", "subject")


def detect_largest(paths, aligner, progress=None):
    """``[(rgb or None, Face or None, reason or None)]``: each file's image and largest face.

    ``reason`` is ``"unreadable: ..."`` or ``"no face found"`` when there is none; ``progress``
    (a :class:`fer_tf.progress.Bar`) advances once per file.
    """
    out = []
    for path in paths:
        try:
            rgb = load_image_rgb(path)
        except ImageError as exc:
            out.append((None, None, f"unreadable: {exc.reason}"))
        else:
            faces = aligner.detect(rgb, label=str(path), _largest_only=True)
            out.append((rgb, faces[0] if faces else None, None if faces else "no face found"))
        if progress is not None:
            progress.advance()
    return out


def embed_all(found, embedder, progress=None):
    """``(vectors [n, 128] float32 with NaN rows where there is no vector, reasons [n])`` of the
    ``(rgb, face, reason)`` triples of :func:`detect_largest`; a reason is ``None`` for a face
    with a vector, else why there is none (no face, too small, too blurred); ``progress`` (a
    :class:`fer_tf.progress.Bar`) advances once per row."""
    vectors = np.full((len(found), DIMENSIONS), np.nan, np.float32)
    reasons = []
    for i, (rgb, face, reason) in enumerate(found):
        if face is not None:
            result = embedder.embed(rgb, face)
            reason = result.message
            if result.ok:
                vectors[i] = result.vector
        reasons.append(reason)
        if progress is not None:
            progress.advance()
    return vectors, reasons


def pseudo_subjects(vectors, **options):
    """``(subjects [n] of str or None, Grouping)``: ``person-1``, ``person-2``, ... in the order
    of first appearance, ``None`` for rows without a vector (NaN); ``options`` go to
    :func:`fer_tf.people.grouping.group`."""
    vectors = np.asarray(vectors, dtype=np.float32)
    usable = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    grouping = group(vectors[usable], **options)
    subjects = [None] * len(vectors)
    for row, name in zip(usable, grouping.names()):
        subjects[row] = name
    return subjects, grouping


def manifest_text(rows):
    """CSV text with :data:`MANIFEST_COLUMNS` of ``rows`` (dicts with those keys)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in MANIFEST_COLUMNS])
    return buffer.getvalue()

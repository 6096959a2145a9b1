"""Which files are images and videos: extensions, an image's first bytes, a folder's images.

Light on purpose (standard library only): ``fer-tf predict`` sorts its inputs with it before
anything heavy is imported, and :mod:`fer_tf.deploy.people` lists a folder's photos with it.
"""

from __future__ import annotations

import os
import pathlib

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                    ".ppm", ".pbm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# first bytes of the image formats Pillow reads, for files without a known extension
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def looks_like_image(path) -> bool:
    """Whether the file's first bytes are those of an image format Pillow reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(m) for m in _IMAGE_MAGIC)


def is_image_file(path) -> bool:
    """An image by its extension, or (no or an unknown extension, not a video) by its first bytes."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    return suffix not in VIDEO_EXTENSIONS and looks_like_image(path)


def walk_files(folder, skip_dirs=()):
    """Every file under ``folder``, recursively, sorted, hidden entries and ``skip_dirs`` left out."""
    skip = {os.path.abspath(d) for d in skip_dirs}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.abspath(os.path.join(dirpath, d)) not in skip)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield pathlib.Path(dirpath) / name


def image_files(folder):
    """The images under ``folder`` (:func:`walk_files` order), by :func:`is_image_file`."""
    return [f for f in walk_files(folder) if is_image_file(f)]

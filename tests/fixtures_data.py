"""Small on-disk dataset fixtures, built with Pillow, for layouts not in the shared data."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def face(seed=0, size=(32, 32)):
    """A deterministic grey test image."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=size[::-1], dtype=np.uint8)


def save(path, seed=0, size=(32, 32), mode="L", **kwargs):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(face(seed, size)).convert(mode).save(path, **kwargs)
    return path


def build_ckplus_official(root):
    """cohn-kanade-images/ + Emotion/ with 3 labelled sequences, 1 unlabelled, 1 bad label.

    S005/001: 5 frames, disgust (3); S010/002: 4 frames, happy (5); S011/001: 4 frames, contempt
    (2); S011/002: unlabelled; S012/001: label 9 (unknown).
    """
    root = Path(root)
    seqs = {("S005", "001", 5): 3.0, ("S010", "002", 4): 5.0, ("S011", "001", 4): 2.0,
            ("S011", "002", 3): None, ("S012", "001", 3): 9.0}
    for (subject, seq, n), code in seqs.items():
        for frame in range(1, n + 1):
            save(root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{frame:08d}.png", frame)
        if code is not None:
            label = root / "Emotion" / subject / seq / f"{subject}_{seq}_{n:08d}_emotion.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(f"   {code:.7e}\n")
    return root


def build_fer_csv(path, rows=None):
    """A FER2013-style CSV. Default rows: 3 good, 1 unknown code, 1 short pixel string."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if rows is None:
        good = " ".join(str(v) for v in face(1, (48, 48)).ravel())
        rows = [("0", good, "Training"), ("3", good, "PublicTest"), ("6", good, "PrivateTest"),
                ("7", good, "Training"), ("2", "1 2 3", "Training")]
    lines = ["emotion,pixels,Usage"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_jaffe(root):
    """JAFFE names: 3 good (one a palette TIFF), 1 unknown code, 1 malformed, 1 README."""
    root = Path(root)
    save(root / "KA.AN1.39.tiff", 1)
    save(root / "KA.HA2.30.tiff", 2, mode="P")
    save(root / "sub" / "YM.SU3.60.tiff", 3)
    save(root / "KM.XX1.11.tiff", 4)
    save(root / "bad_name.tiff", 5)
    (root / "README").write_text("jaffe\n")
    return root


def build_kdef(root):
    """Full KDEF naming: all poses for F01/M02 anger + happy, session A and B, a .jpg, a bad name."""
    root = Path(root)
    i = 0
    for session in "AB":
        for subject in ("F01", "M02"):
            for expr in ("AN", "HA"):
                for pose in ("S", "HL", "HR", "FL", "FR"):
                    i += 1
                    ext = ".jpg" if (session, subject, expr, pose) == ("B", "M02", "HA", "S") else ".JPG"
                    save(root / f"{session}{subject}" / f"{session}{subject}{expr}{pose}{ext}", i)
    save(root / "AF01XXS.JPG", 99)
    save(root / "notkdef.JPG", 98)
    return root


def build_manifest(root):
    """manifest.csv with good rows (one path with spaces and non-ASCII), an unknown label,
    a missing subject and a missing file."""
    root = Path(root)
    save(root / "imgs" / "a.png", 1)
    save(root / "imgs" / "b.png", 2)
    save(root / "imgs" / "c.png", 3)
    save(root / "my faces" / "Zoë éclair 表情.png", 4)
    text = (
        "path,expression,subject,sequence\n"
        "imgs/a.png,happy,p1,s1\n"
        "imgs/b.png,Angry,p1,\n"
        "my faces/Zoë éclair 表情.png,SURPRISED,p2,s1\n"
        "imgs/c.png,bored,p2,\n"
        "imgs/c.png,sad,,\n"
        "imgs/missing.png,sad,p3,\n"
    )
    (root / "manifest.csv").write_text(text, encoding="utf-8")
    return root / "manifest.csv"


def png_header_only(path, width, height):
    """A PNG whose IHDR claims ``width`` x ``height`` but whose data is a few bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
    data += chunk(b"IEND", b"")
    Path(path).write_bytes(data)
    return Path(path)

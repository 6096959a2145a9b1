"""Draw recognised faces: each face's box and its expression with its probability (and its
person, with ``--people``)."""

from __future__ import annotations

import os

import numpy as np


def annotate(image, result):
    """An RGB uint8 copy of ``image`` with every face's box and expression drawn on it.

    ``image`` is an array (grey or RGB) or a path; ``result`` is what :meth:`Recognizer.predict`
    (or one frame of :meth:`Recognizer.predict_video`) returned. Faces with a ``person`` key
    (``--people``) are labelled with it (``?`` for a face without identity).
    """
    from PIL import Image, ImageDraw, ImageFont  # deferred: PIL, only to draw annotations

    from fer_tf.data.images import as_uint8_rgb, load_image_rgb  # deferred: PIL

    if isinstance(image, (str, os.PathLike)):
        rgb = load_image_rgb(image, max_pixels=2**62)
    else:
        rgb = as_uint8_rgb(image, "image")
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    h, w = rgb.shape[:2]
    thickness = max(2, min(h, w) // 150)
    size = max(12, min(h, w) // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    colour = (255, 215, 0)
    for face in result.get("faces", []):
        x, y, bw, bh = face["box"]
        draw.rectangle([x, y, x + bw - 1, y + bh - 1], outline=colour, width=thickness)
        name = face["expression"]
        text = f"{name} {face['probabilities'][name]:.0%}"
        if "person" in face:  # --people: who it is (? when the face is too small or blurred)
            text = f"{face['person'] or '?'}: {text}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 2 * thickness if y - th - 2 * thickness >= 0 else y + bh
        ty = min(max(0, ty), max(0, h - th - 2 * thickness))
        tx = min(max(0, x), max(0, w - tw - 2 * thickness))
        draw.rectangle([tx, ty, tx + tw + 2 * thickness, ty + th + 2 * thickness], fill=colour)
        draw.text((tx + thickness - left, ty + thickness - top), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)

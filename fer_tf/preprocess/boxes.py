"""Face boxes ``(x, y, w, h)`` in pixels: overlap, suppression, tiles and square crops.

The one box overlap (:func:`iou`) of fer_tf: face detection suppresses duplicates with it
(:mod:`fer_tf.preprocess.align`), video recognition keeps a face's track with it
(:mod:`fer_tf.deploy.video`), and the browser parity check matches faces with it.
"""

from __future__ import annotations

import math

import numpy as np


def _intersection(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy


def iou(a, b):
    """Intersection over union of two ``(x, y, w, h)`` boxes (0.0 when both are empty)."""
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def overlap_small(a, b):
    """Intersection over the smaller box's area."""
    small = min(a[2] * a[3], b[2] * b[3])
    return _intersection(a, b) / small if small > 0 else 0.0


def tile_starts(length, side, stride):
    """Start offsets of tiles of ``side`` along ``length``, at most ``stride`` apart, the last one
    flush with the end (a single tile at 0 when the length fits in one)."""
    if length <= side:
        return [0]
    n = int(math.ceil((length - side) / max(stride, 1.0))) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - side, n)})


def square_crop(rgb, cx, cy, side, out):
    """``(crop, scale)``: the square of ``side`` pixels centred on (cx, cy), resampled to ``out``
    x ``out`` (``scale = out / side``), the image's border replicated outside it. Only the
    square's region is resampled: a 48 MP photo is never resized whole."""
    import cv2  # deferred: OpenCV, only where a crop is resampled

    s = out / side
    h, w = rgb.shape[:2]
    x0 = int(min(max(0, math.floor(cx - side / 2.0) - 1), w - 1))
    y0 = int(min(max(0, math.floor(cy - side / 2.0) - 1), h - 1))
    x1 = int(max(min(w, math.ceil(cx + side / 2.0) + 2), x0 + 1))
    y1 = int(max(min(h, math.ceil(cy + side / 2.0) + 2), y0 + 1))
    region = rgb[y0:y1, x0:x1]
    # affine map from region to crop (scale + translate)
    m = np.array([[s, 0, out / 2.0 - s * (cx - x0)], [0, s, out / 2.0 - s * (cy - y0)]],
                 dtype=np.float64)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    if s < 0.5:  # pre-shrink to avoid aliasing: warpAffine has no area interpolation
        rh, rw = region.shape[:2]
        region = cv2.resize(region, (max(1, round(rw * 2 * s)), max(1, round(rh * 2 * s))),
                            interpolation=cv2.INTER_AREA)
        m[0, 0] *= rw / region.shape[1]
        m[1, 1] *= rh / region.shape[0]
        interp = cv2.INTER_LINEAR
    crop = cv2.warpAffine(region, m, (out, out), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop), s


def suppress(found, width, height):
    """Boxes that overlap the image, after non-maximum suppression by score."""
    found = [f for f in found if f[2] > 1 and f[3] > 1]
    found = [f for f in found if f[0] < width and f[1] < height and f[0] + f[2] > 0 and f[1] + f[3] > 0]
    found.sort(key=lambda f: -f[4])
    kept = []
    for f in found:
        if all(iou(f[:4], k[:4]) < 0.3 and overlap_small(f[:4], k[:4]) < 0.6 for k in kept):
            kept.append(f)
    return kept


def moved(found, scale=1.0, dx=0.0, dy=0.0):
    """A detection tuple ``(x, y, w, h, score[, keypoints])`` mapped by ``p / scale + (dx, dy)``
    (``scale`` may be ``(sx, sy)``)."""
    sx, sy = scale if isinstance(scale, tuple) else (scale, scale)
    x, y, w, h, score, *keypoints = found
    out = (x / sx + dx, y / sy + dy, w / sx, h / sy, score)
    return out + tuple(kp / [sx, sy] + [dx, dy] for kp in keypoints)


def landmark_box(points):
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (float(x0), float(y0), float(x1 - x0), float(y1 - y0))


def int_box(box, width, height):
    """``box`` rounded to whole pixels and clipped to a ``width`` x ``height`` image: ``[x, y, w, h]``."""
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    return [x0, y0, max(0, x1 - x0), max(0, y1 - y0)]

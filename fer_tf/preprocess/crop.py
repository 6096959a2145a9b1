"""The aligned crop (Section 5.1): a face's eye line levelled and its square cut at 60x60 grey.

:class:`Face` is one detection with its landmarks (what :class:`fer_tf.preprocess.align.FaceAligner`
finds); :func:`align_crop` rotates the image about the landmarks' centre so that the eye line is
level, cuts a square of :data:`CROP_SCALE` times the larger side of the rotated landmarks' box, its
centre :data:`CROP_OFFSET` of its side above the box's centre, and resizes it; :class:`AlignedFace`
is the result. ``web/src/aligner.js`` is the same crop in JavaScript (checked against this one by
``tests/test_web.py`` and ``reports/web``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

#: Side of the aligned square, as a multiple of the larger side of the rotated landmarks' box.
#: Measured so that aligned photo faces have FER2013's median face size (reports/framing; 1.25
#: before, which made photo faces about 13% smaller than the FER2013 faces the backbone learns from).
CROP_SCALE = 1.10
#: How far the centre of the rotated landmarks' box lies below the aligned square's centre, as a
#: fraction of the square's side (the square is moved up by this much): FER2013's faces sit lower
#: in their crops than the landmarks' box centre would put them (reports/framing; 0 before).
CROP_OFFSET = 0.05

@dataclasses.dataclass
class Face:
    """One detected face, in pixel coordinates of the original image."""

    box: tuple  # (x, y, w, h) floats
    score: float
    landmarks: np.ndarray  # [478, 2] float32 (x, y); [468, 2] with the litert engine
    left_eye: np.ndarray  # [2] centre of the eye on the image's left
    right_eye: np.ndarray  # [2]

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    @property
    def angle(self) -> float:
        """Roll of the eye line in degrees (0 = level)."""
        dx, dy = self.right_eye - self.left_eye
        return float(math.degrees(math.atan2(dy, dx)))


@dataclasses.dataclass
class AlignedFace:
    """An aligned face crop and where it came from."""

    image: np.ndarray  # [size, size] uint8 grey
    face: Face  # the detection, in original-image coordinates
    angle: float  # the eye line's angle before alignment, degrees
    crop_center: tuple  # (x, y) in the original image
    crop_side: float  # side of the square crop in original-image pixels
    landmarks: np.ndarray  # [478, 2] ([468, 2]: litert engine) landmarks in the crop's coordinates

    @property
    def box(self):
        return self.face.box

    @property
    def score(self):
        return self.face.score


def align_crop(grey, face, size, crop_scale=CROP_SCALE, crop_offset=CROP_OFFSET):
    """The aligned ``size`` x ``size`` crop of ``face`` (a :class:`Face`) in the grey uint8 image.

    The image is rotated about the landmarks' centre until the eye line is level; the square's side
    is ``crop_scale`` times the larger side of the rotated landmarks' box, and its centre lies
    ``crop_offset`` x side above that box's centre (see :data:`CROP_SCALE`, :data:`CROP_OFFSET`).
    """
    import cv2  # deferred: OpenCV (cache.py and prepared.py import this module for its constants)

    angle = face.angle
    pts = face.landmarks.astype(np.float64)
    centre = pts.mean(axis=0)
    # rotation that makes the eye line level (cv2 angles are counter-clockwise in image view)
    rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    rpts = pts @ rot[:, :2].T + rot[:, 2]
    x0, y0 = rpts.min(axis=0)
    x1, y1 = rpts.max(axis=0)
    side = max(x1 - x0, y1 - y0) * crop_scale
    side = max(side, 2.0)
    # the crop's centre: the box's centre, moved up so that the box's centre lies
    # crop_offset * side below the crop's centre (the eye line is level: up is -y here)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - crop_offset * side
    # compose: rotate, then move (cx, cy) to the crop centre and scale side -> size
    s = size / side
    pre = 1.0
    src = grey
    if s < 0.5:  # shrink first with area averaging, then warp at about twice the output size
        pre = min(1.0, 2.0 * s)
        src = cv2.resize(grey, None, fx=pre, fy=pre, interpolation=cv2.INTER_AREA)
    a = np.vstack([rot, [0, 0, 1]])
    t = np.array([[s, 0, size / 2.0 - s * cx], [0, s, size / 2.0 - s * cy], [0, 0, 1]])
    p = np.diag([1.0 / pre, 1.0 / pre, 1.0])  # shrunk-image coords -> original coords
    m = (t @ a @ p)[:2]
    crop = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    # landmarks in crop coordinates
    full = t @ a
    lm = pts @ full[:2, :2].T + full[:2, 2]
    # crop centre in the original image (a rotation about a point: its inverse is closed-form;
    # np.linalg.inv costs more than the whole warp here)
    c0 = cv2.invertAffineTransform(rot) @ np.array([cx, cy, 1.0])
    return AlignedFace(image=np.ascontiguousarray(crop, dtype=np.uint8), face=face, angle=angle,
                       crop_center=(float(c0[0]), float(c0[1])), crop_side=float(side),
                       landmarks=lm.astype(np.float32))

"""Face detection and alignment (Section 5.1 of the paper, with MediaPipe in place of IntraFace).

The paper detects faces and 49 landmarks with IntraFace, rotates the face so that the eyes are level
and crops it to 60x60 grey pixels. IntraFace is not available; this module does the same with
MediaPipe's legacy ``solutions`` graphs, whose models ship inside the ``mediapipe`` wheel (nothing is
downloaded):

1. **Detect.** ``face_detection`` runs on the whole image twice: the short-range model
   (``model_selection=0``), which finds faces that fill a good part of the frame (loose face crops
   such as KDEF), and the full-range model (``model_selection=1``) on the image padded by half its
   size on every side, which also finds faces cut by the border. Images whose shorter side is below
   :data:`UPSCALE_BELOW` pixels are upscaled first (a 48x48 crop is too small for the detector).
   Both models only find faces wider than about a sixth of the image they are given (their anchors
   stop there), so smaller faces are searched in **tiles**: square windows, each shrunk to at most
   :data:`TILE_INPUT` pixels and given to the short-range model, which finds faces of at least
   :data:`TILE_MIN_RATIO` (a fifth) of the tile's side in it. Levels of tiles go from faces of
   ``min_face`` pixels (40 by default) up to a fifth of the image's longer side, where the
   whole-image passes take over, each level covering a range of :data:`TILE_LEVEL_RANGE` (1.6x);
   a level's tiles overlap by 1.2 times the largest face it looks for, so that every such face is
   whole in one tile, and a box that touches an inner tile edge is dropped. A detection (tile or
   whole image) is kept when the short-range model, shown it again in a crop of twice its size
   (where a face is easiest for it), scores it at least :data:`SECOND_LOOK_SCORE`: textures that
   fooled one tile of thousands, or the full-range model once, do not pass. The cost grows with the image's area over ``min_face`` squared: a
   512x512 photo needs about 20 detector runs of 128x128 pixels, 1920x1080 about 210, 12 MP about
   1,300 and 48 MP about 5,100 (some 1.5 ms each on one core); pass a larger ``min_face`` when the
   faces are known to be larger, or ``None`` for the whole-image passes alone. Overlapping boxes
   are merged (non-maximum suppression).
2. **Landmarks.** For each detection the 478-point ``face_mesh`` (``refine_landmarks=True``) runs on a
   square crop of twice the box size centred on the box, so that every face gets its own landmarks
   even when several faces are close together; of the meshes found in the crop the one that overlaps
   the box best is kept, and a detection on which the mesh finds no face is dropped. The crop is
   cut from the full-resolution image, so small faces in large photos keep their detail. When the
   detector finds nothing, the mesh runs once on the whole image (its
   own detector sometimes succeeds where the detector's threshold was not reached).
3. **Align.** The eye centres (mean of the 16 eye-contour landmarks of each eye) give the roll
   angle; the image is rotated about the landmarks' centre so that the eye line is level, and a square
   of side ``crop_scale`` (:data:`CROP_SCALE`, 1.10) times the larger side of the rotated landmarks'
   bounding box is cut, its centre ``crop_offset`` (:data:`CROP_OFFSET`, 0.05) of its side above the
   box's centre, and resized to ``size`` x ``size`` grey pixels. These two numbers frame a face like
   the FER2013 faces the backbone learns from (their 48x48 images resized to 60x60, as the cache
   does): measured with MediaPipe's mesh on the 60x60 faces, FER2013's median face is about 1.13
   times the size of a face cut with the earlier square of 1.25 times the box around its centre,
   and its eyes and mouth sit about 3 pixels (of 60) lower; with 1.10 and 0.05 the median
   inter-ocular distance, eye-to-mouth distance, face-oval size and eye and mouth heights of
   aligned KDEF and Yale faces are within about a pixel of FER2013's (``reports/framing``, made
   by ``reports/framing/measure.py``). CK+48's crops are framed like FER2013's already. The face
   fills most of the 60x60 square and the network's centre 48x48 crop cuts the forehead's top and
   the chin a little, as FER2013's crops do. Pass other values to :class:`FaceAligner` to frame
   differently (``crop_scale=1.25, crop_offset=0`` is the earlier framing).

**Engines.** ``engine="mediapipe"`` (the default here, and what the training caches use) runs the
steps above in MediaPipe's graphs. ``engine="litert"`` (the default of
:class:`fer_tf.deploy.recognizer.Recognizer`) runs the same networks directly in LiteRT
(:mod:`fer_tf.preprocess.face_networks`), without the graphs' per-run overhead, and differs in three
ways:

- the small-face search runs the short-range network at the image's own scale, since the network is
  fully convolutional, instead of on many 128x128 tiles (:meth:`FaceAligner._scan_boxes`);
- the whole-image passes (the short-range model on the image fitted to its input, the full-range
  one on the padded image) run only when the scan finds no face: tight crops, faces cut by the
  border;
- the landmarks come from the plain 468-point mesh, placed by the second look's detection. The
  refined mesh needs a MediaPipe custom operation.

``reports/engines`` measures what this changes in the crops and in the shipped model's answers.

Conventions: ``left_eye`` is the eye on the *image's* left when the face is upright (the person's
right eye), ``right_eye`` the other one; ``angle`` is the eye line's angle in degrees, positive when
the right eye (image right) lies lower in the image than the left eye.

A :class:`FaceAligner` creates the MediaPipe graphs once and reuses them; close it with
:meth:`FaceAligner.close` or use it as a context manager. It is **not thread-safe**: MediaPipe graphs
process one image at a time, so give each thread (or process) its own aligner.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fer_tf.data.images import as_uint8_image
from fer_tf.errors import NoFaceError
from fer_tf.files import quiet_native_stderr
from fer_tf.preprocess import face_networks
from fer_tf.preprocess.crop import CROP_OFFSET, CROP_SCALE, Face, align_crop
from fer_tf.preprocess.boxes import iou, landmark_box, moved, overlap_small, square_crop, suppress, tile_starts

#: Square crop around a detection box (multiple of the box's larger side) that the mesh runs on.
MESH_CROP_SCALE = 2.0
#: Images whose shorter side is below this many pixels are upscaled before detection.
UPSCALE_BELOW = 160
#: Images whose longer side is above this are downscaled for detection (landmarks use full size crops).
DETECT_MAX_SIDE = 1280
#: Tiled detection: a tile of side T finds faces of at least TILE_MIN_RATIO * T pixels; the whole
#: image finds faces of at least WHOLE_MIN_RATIO times its longer side.
TILE_MIN_RATIO = 0.2
WHOLE_MIN_RATIO = 0.2
#: Each level of tiles finds faces from its smallest up to this many times that (then the next).
TILE_LEVEL_RANGE = 1.6
#: Tiles are shrunk to at most this many pixels before detection (the model's input is 128x128).
TILE_INPUT = 192
#: A detection is kept when the detector, shown it again in a crop of twice its size, scores it at
#: least this (real faces score 0.8-0.95 there, textures that fooled it once below 0.65).
SECOND_LOOK_SCORE = 0.7
#: The ``litert`` engine's scan (FaceAligner._scan_boxes): the short-range network run at the
#: image's own scale finds faces from about SCAN_FACE to SCAN_RANGE times that many pixels
#: (measured on faces pasted into a 640x480 photo: 94% at 32 px, all from 40 to 160 px, 86% at
#: 28, none at 200; reports/detection measures the whole search); level images larger than
#: SCAN_TILE pixels are scanned in overlapping tiles of that side.
SCAN_FACE = 32.0
SCAN_RANGE = 4.0
SCAN_TILE = 1024
#: A scan box narrower than this fraction of SCAN_FACE is dropped: below the level's range, where
#: the network also fires on blobs that are not faces.
SCAN_SMALLEST = 0.75
#: The ``litert`` engine skips the second look for detections the detector itself scores at least
#: this: their own keypoints place the landmarks (the mesh's face-presence score still checks them).
CONFIDENT_SCORE = 0.75
#: The ``litert`` engine's second-look crop (twice the box) is resampled to this many pixels: the
#: face then fills 128 of them, about the landmark network's 192-pixel input over 1.5 faces.
LOOK_CROP = 256
#: Detection engines: MediaPipe's ``solutions`` graphs, or their networks run directly in LiteRT
#: (fer_tf.preprocess.face_networks).
ENGINES = ("mediapipe", "litert")
#: Default smallest face (pixels of the original image) that tiled detection looks for.
MIN_FACE = 40
#: Faces the whole-image mesh (the fallback when the detector finds none) looks for.
FULL_MESH_FACES = 8
#: Smallest usable image side, and the largest aspect ratio; outside these no face is reported.
MIN_SIDE = 16
MAX_ASPECT = 8.0
#: Landmark indices (MediaPipe face mesh) of the eye contours; "left" = the image's left.
_EYE_ON_IMAGE_LEFT = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
_EYE_ON_IMAGE_RIGHT = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)


class FaceAligner:
    """Detect, landmark and align faces with MediaPipe (offline, CPU).

    Not thread-safe: use one aligner per thread or process. Create it once and reuse it; the
    MediaPipe graphs are built in the constructor and released by :meth:`close`.

    Args:
        min_detection_confidence: detector score threshold (0.5 by default).
        max_faces: at most this many faces (the largest) are returned by :meth:`detect`; ``None``
            (the default) returns every face. :attr:`last_found` holds how many faces the last
            :meth:`detect` call found before this cap, so that a caller can say that some were
            left out.
        min_face: smallest face width, in pixels of the image, that tiled detection looks for
            (default :data:`MIN_FACE`, 40); larger values make large photos faster, ``None`` or 0
            turns tiling off (only faces wider than about a fifth of the image are then found).
        quiet: hide MediaPipe's C++ log lines, which it writes straight to file descriptor 2 (from
            its own threads) while graphs are created and run; while a graph runs, stderr output of
            other threads of the process is hidden too. Pass ``quiet=False`` to see everything.
        crop_scale: side of the aligned square, as a multiple of the larger side of the eye-levelled
            landmarks' bounding box (default :data:`CROP_SCALE`, 1.10: FER2013's face size).
        crop_offset: how far the landmarks' box centre lies below the square's centre, as a
            fraction of the square's side (default :data:`CROP_OFFSET`, 0.05: FER2013's face
            position); between -0.5 and 0.5. ``crop_scale=1.25, crop_offset=0`` gives the framing
            of fer_tf before it was measured against FER2013 (reports/framing).
        engine: ``"mediapipe"`` (default: MediaPipe's graphs, as the training caches are built) or
            ``"litert"`` (the same networks directly in LiteRT, with a fully convolutional
            small-face scan: faster; see the module's docstring).
        num_threads: ``litert`` engine: threads of every network's interpreter (default: 1, and 2
            for the scan's larger inputs on a machine with 2 cores or more; see
            :class:`~fer_tf.preprocess.face_networks.FaceNetworks`).
    """

    def __init__(self, min_detection_confidence=0.5, max_faces=None, quiet=True, min_face=MIN_FACE,
                 crop_scale=CROP_SCALE, crop_offset=CROP_OFFSET, engine="mediapipe", num_threads=None):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import cv2  # noqa: F401  (fail early with a clear ImportError)

        if max_faces is not None and int(max_faces) < 1:
            raise ValueError(f"max_faces must be at least 1 (or None), got {max_faces!r}")
        if min_face is not None and float(min_face) < 0:
            raise ValueError(f"min_face must be positive (or None), got {min_face!r}")
        if not (math.isfinite(float(crop_scale)) and float(crop_scale) > 0):
            raise ValueError(f"crop_scale must be a positive number, got {crop_scale!r}")
        if not (math.isfinite(float(crop_offset)) and abs(float(crop_offset)) < 0.5):
            raise ValueError(f"crop_offset must be a number between -0.5 and 0.5, got {crop_offset!r}")
        self.crop_scale = float(crop_scale)
        self.crop_offset = float(crop_offset)
        self.quiet = bool(quiet)
        self.min_face = float(min_face or 0)
        self.last_found = 0
        self._detectors, self._mesh, self._full_mesh, self._closed = {}, None, None, False
        self._nets = None
        self.min_detection_confidence = float(min_detection_confidence)
        self.max_faces = None if max_faces is None else int(max_faces)
        if engine == "litert":
            self._nets = face_networks.FaceNetworks(
                self.min_detection_confidence,
                **({} if num_threads is None else {"num_threads": num_threads, "scan_threads": num_threads}))
            return
        with quiet_native_stderr(self.quiet):
            import mediapipe as mp  # deferred: MediaPipe loads only when an aligner is made

            self._build(mp)
            # graphs load their models on their own threads and log while doing so: run each once
            # now, while stderr is hidden, so that the log lines do not surface later
            blank = np.zeros((64, 64, 3), np.uint8)
            for graph in (*self._detectors.values(), self._mesh):
                graph.process(blank)

    def _build(self, mp):
        solutions = mp.solutions
        self._detectors = {
            0: solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=self.min_detection_confidence),
            1: solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.min_detection_confidence),
        }
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=3, refine_landmarks=True,
            min_detection_confidence=0.3)
        self._full_mesh = None  # created on first need (fallback on whole images)
        self._closed = False

    def _run(self, name, graph, image):
        """graph.process(image), with file descriptor 2 hidden while it runs (when quiet); with
        the ``litert`` engine, ``name``'s network on ``image`` (``det0``, ``det1``, ``scan``: a
        list of detections; ``mesh``: ``image`` is ``(rgb, detection)``, the landmarks)."""
        if self._nets is not None and name != "full_mesh":
            if name == "mesh":
                return self._nets.landmarks(*image)
            return self._nets.detect(image, {"det0": "short", "det1": "full", "scan": "scan"}[name])
        if not self.quiet:
            return graph.process(image)
        with quiet_native_stderr():
            return graph.process(image)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self):
        if self._closed:
            return
        self._closed = True
        for graph in [*self._detectors.values(), self._mesh, self._full_mesh]:
            if graph is not None:
                try:
                    graph.close()
                except Exception:  # pragma: no cover - closing must not raise
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    # -- detection ------------------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise RuntimeError("FaceAligner is closed")

    def _detections(self, graph_name, image, scale=1.0, dx=0.0, dy=0.0):
        """(x, y, w, h, score) of one detector run, mapped by ``p / scale + (dx, dy)``; with the
        ``litert`` engine a sixth element, the detector's keypoints [6, 2], mapped alike."""
        if self._nets is not None:
            return [moved((*d.box, d.score, d.keypoints), scale, dx, dy)
                    for d in self._run(graph_name, None, image)]
        h, w = image.shape[:2]
        res = self._run(graph_name, self._detectors[0 if graph_name == "det0" else 1], image)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w / scale + dx, b.ymin * h / scale + dy, b.width * w / scale,
                        b.height * h / scale, float(d.score[0])))
        return out

    def _detect_boxes(self, rgb):
        """Whole-image detection boxes (x, y, w, h, score) in rgb's pixel coordinates."""
        if self._nets is not None:  # the scan covers the whole image's faces too
            return []
        # short range on the image, full range on the image padded by half its size
        return self._detections("det0", rgb) + self._padded_full_range(rgb)

    def _padded_full_range(self, rgb):
        """The full-range model on the image padded by half its size (faces cut by the border)."""
        import cv2  # deferred: OpenCV (cache.py imports this module for its constants)

        h, w = rgb.shape[:2]
        py, px = h // 2, w // 2
        padded = cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_REPLICATE)
        return self._detections("det1", padded, dx=-px, dy=-py)

    def _tile_levels(self, width, height):
        """``[(side, largest face)]`` of the tile levels, finest first.

        The finest level's tiles (side ``min_face / TILE_MIN_RATIO``) find faces from
        ``min_face`` up to ``TILE_LEVEL_RANGE`` times that; each coarser level starts where the
        one below stops, until the whole-image passes take over (faces of at least
        ``WHOLE_MIN_RATIO`` times the image's longer side).
        """
        top = WHOLE_MIN_RATIO * max(width, height)
        if not self.min_face or self.min_face >= top:
            return []
        n = math.ceil(math.log(top / self.min_face) / math.log(TILE_LEVEL_RANGE) - 1e-9)
        q = (top / self.min_face) ** (1.0 / n)  # the same range for every level
        return [(self.min_face * q ** i / TILE_MIN_RATIO, self.min_face * q ** (i + 1))
                for i in range(n)]

    def _tile_boxes(self, rgb):
        """Detection boxes of the faces the whole-image passes are too coarse for, from tiles.

        A level's tiles overlap by 1.2 times the largest face it is responsible for, so that
        every such face lies whole in one tile; a box that touches an inner tile edge is dropped
        (its face is whole in a neighbouring tile, or too large for this level).
        """
        import cv2  # deferred: OpenCV (cache.py imports this module for its constants)

        h, w = rgb.shape[:2]
        found = []
        for side, largest in self._tile_levels(w, h):
            overlap = 1.2 * largest
            k = min(1.0, TILE_INPUT / side)
            level = rgb if k == 1.0 else cv2.resize(
                rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
            found += self._level_boxes("det0", level, max(1, round(side * k)), (side - overlap) * k,
                                       largest * k, k)
        return found

    def _level_boxes(self, network, level, side, stride, largest, k, smallest=0.0):
        """Boxes (in pixels of the image that ``level`` is scaled from by ``k``) of ``network``
        run on the tiles of ``level`` (squares of ``side``, at most ``stride`` apart). A box wider
        than twice ``largest`` (a coarser level's face) or narrower than ``smallest`` is dropped,
        and so is a box that touches an inner tile edge: its face is whole in a neighbouring
        tile."""
        lh, lw = level.shape[:2]
        margin = 0.02 * side
        found = []
        for y0 in tile_starts(lh, side, stride):
            for x0 in tile_starts(lw, side, stride):
                tile = np.ascontiguousarray(level[y0:y0 + side, x0:x0 + side])
                th, tw = tile.shape[:2]
                for box in self._detections(network, tile):
                    bx, by, bw, bh = box[:4]
                    if bw > 2 * largest or bw < smallest:
                        continue
                    if (x0 > 0 and bx < margin) or (y0 > 0 and by < margin) or \
                            (x0 + tw < lw and bx + bw > tw - margin) or \
                            (y0 + th < lh and by + bh > th - margin):
                        continue
                    found.append(moved(box, 1.0, x0, y0))
        return [moved(box, k) for box in found]

    def _scan_boxes(self, rgb):
        """The ``litert`` engine's detection: the short-range network run at the image's own
        scale (it is fully convolutional), at a few scales, in place of the whole-image pass and
        the tiles' many 128x128 runs.

        Level ``i`` resizes the image so that its smallest face, ``min_face * SCAN_RANGE ** i``,
        is :data:`SCAN_FACE` pixels wide, where the network finds faces up to ``SCAN_RANGE`` times
        that; levels go up until they cover faces as large as the image (with ``min_face=None``
        they start at a fifth of its longer side, as the whole-image pass would). A level image
        larger than :data:`SCAN_TILE` is scanned in tiles that overlap by 1.2 times the level's
        largest face, and a box that touches an inner tile edge is dropped (it is whole in a
        neighbour).
        """
        import cv2  # deferred: OpenCV (cache.py imports this module for its constants)

        h, w = rgb.shape[:2]
        found = []
        for _, hi, k in self._scan_levels(w, h):
            # bilinear down to half size, as MediaPipe resizes for its networks (and 3x faster
            # than area averaging at such scales); area averaging below, against aliasing
            level = rgb if k == 1.0 else cv2.resize(
                rgb, (max(1, round(w * k)), max(1, round(h * k))),
                interpolation=cv2.INTER_AREA if k < 0.5 else cv2.INTER_LINEAR)
            found += self._level_boxes("scan", level, SCAN_TILE, SCAN_TILE - 1.2 * hi * k, hi * k, k,
                                       smallest=SCAN_SMALLEST * SCAN_FACE)
        return found

    def _scan_levels(self, width, height):
        """``[(smallest face, largest face, scale)]`` of the scan, finest first: faces from
        ``min_face`` (else a fifth of the longer side) up to the longer side, ``SCAN_RANGE`` times
        more per level, each level's image scaled so that its smallest face is ``SCAN_FACE`` px."""
        levels, lo = [], self.min_face or WHOLE_MIN_RATIO * max(width, height)
        while lo < max(width, height):
            levels.append((lo, lo * SCAN_RANGE, SCAN_FACE / lo))
            lo *= SCAN_RANGE
        return levels

    def _look_and_landmarks(self, rgb, box):
        """The ``litert`` engine's second look and landmarks: ``(score, [468, 2] landmarks or
        None)``. The short-range network sees the box again in a square crop of twice its size
        (as :meth:`_second_look`), and its detection there places the landmark network's region
        of interest (as MediaPipe's face mesh places it from its own detector), on the same crop."""
        crop, s, (cx, cy), centre = self._look_crop(rgb, box)
        seen = [d for d in self._run("det0", None, crop) if iou(d.box, centre) > 0.3]
        if not seen:
            return 0.0, None
        best = max(seen, key=lambda d: d.score)
        if best.score < SECOND_LOOK_SCORE:
            return best.score, None
        pts = self._run("mesh", None, (crop, best))
        return best.score, None if pts is None else (pts - LOOK_CROP / 2.0) / s + [cx, cy]

    def _landmarks_around(self, rgb, box, keypoints, score):
        """The ``litert`` engine's landmarks of a detection that needs no second look (score at
        least :data:`CONFIDENT_SCORE`): its own keypoints place the landmark network's region of
        interest, on the image itself, or on the same crop of twice the box as
        :meth:`_look_and_landmarks` uses when the face is so large that the network's input would
        shrink it more than twofold (the crop shrinks it with area averaging)."""
        if max(box[2:]) * face_networks.ROI_SCALE <= 2 * face_networks.LANDMARK_SIZE:  # little shrinking
            return self._run("mesh", None, (rgb, face_networks.Detection(box, score, keypoints)))
        crop, s, (cx, cy), centre = self._look_crop(rgb, box)
        seen = face_networks.Detection(box=centre, score=score,
                                       keypoints=(keypoints - [cx, cy]) * s + LOOK_CROP / 2.0)
        pts = self._run("mesh", None, (crop, seen))
        return None if pts is None else (pts - LOOK_CROP / 2.0) / s + [cx, cy]

    def _look_crop(self, rgb, box):
        """``(crop, scale, centre, box in the crop)``: the square of twice ``box`` around its
        centre, resampled to :data:`LOOK_CROP` pixels."""
        x, y, bw, bh = box
        out = LOOK_CROP
        cx, cy = x + bw / 2.0, y + bh / 2.0
        crop, s = square_crop(rgb, cx, cy, max(bw, bh) * 2.0, out)
        return crop, s, (cx, cy), (out / 2.0 - bw * s / 2.0, out / 2.0 - bh * s / 2.0, bw * s, bh * s)

    def _second_look(self, rgb, box):
        """The short-range detector's score for ``box`` seen again in a square crop of twice its
        size, where a face fills half the crop (the model's best range); 0 when it sees no face
        there. This rejects textures that fooled the detector once (in one tile of thousands, or
        the full-range model on the whole photo); the mesh does not (it finds a "face" in almost
        any crop it is given). Real faces score 0.8-0.95 (all of KDEF and Yale: at least 0.81)."""
        x, y, bw, bh = box
        out = TILE_INPUT
        crop, s = square_crop(rgb, x + bw / 2.0, y + bh / 2.0, max(bw, bh) * 2.0, out)
        centre = (out / 2.0 - bw * s / 2.0, out / 2.0 - bh * s / 2.0, bw * s, bh * s)
        return max([score for *b, score in self._detections("det0", crop) if iou(b, centre) > 0.3],
                   default=0.0)

    def _mesh_in_crop(self, rgb, box, scale):
        """Landmarks [478, 2] of the face in ``box`` from a mesh run on a square crop around it."""
        x, y, bw, bh = box
        cx, cy = x + bw / 2.0, y + bh / 2.0
        out = 256
        crop, s = square_crop(rgb, cx, cy, max(bw, bh) * scale, out)
        res = self._run("mesh", self._mesh, np.ascontiguousarray(crop))
        if not res.multi_face_landmarks:
            return None
        best, best_iou = None, 0.0
        for lms in res.multi_face_landmarks:
            pts = np.array([(p.x * out, p.y * out) for p in lms.landmark], dtype=np.float64)
            pts = (pts - [out / 2.0, out / 2.0]) / s + [cx, cy]
            overlap = iou(landmark_box(pts), box)
            if overlap > best_iou:
                best, best_iou = pts, overlap
        if best is None or best_iou < 0.2:
            return None
        return best

    def _mesh_full(self, rgb, max_faces):
        if self._full_mesh is None:
            import mediapipe as mp  # deferred: MediaPipe loads only when an aligner is made

            with quiet_native_stderr(self.quiet):
                self._full_mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=FULL_MESH_FACES, refine_landmarks=True,
                    min_detection_confidence=self.min_detection_confidence)
        h, w = rgb.shape[:2]
        res = self._run("full_mesh", self._full_mesh, rgb)
        out = []
        for lms in (res.multi_face_landmarks or [])[:max_faces or None]:
            out.append(np.array([(p.x * w, p.y * h) for p in lms.landmark], dtype=np.float64))
        return out

    def _verify(self, boxes, src, m, first_only=False):
        """``(landmarks, box, score)`` of the boxes that pass the second look and on which the
        mesh finds a face, largest first.

        ``src`` is the image the mesh runs on and ``m = (mx, my)`` maps image to ``src`` pixels.
        """
        mx, my = m
        faces = []
        for bx, by, bw, bh, score, *extra in sorted(boxes, key=lambda b: -b[2] * b[3]):
            box = (bx * mx, by * my, bw * mx, bh * my)
            if self._nets is not None:
                if score >= CONFIDENT_SCORE and extra:  # the detector's keypoints place the mesh
                    pts = self._landmarks_around(src, box, extra[0] * [mx, my], score)
                else:
                    _, pts = self._look_and_landmarks(src, box)
                if pts is None:
                    continue
            else:
                if self._second_look(src, box) < SECOND_LOOK_SCORE:
                    continue
                pts = self._mesh_in_crop(src, box, MESH_CROP_SCALE)
                if pts is None:
                    pts = self._mesh_in_crop(src, box, MESH_CROP_SCALE * 1.5)
                if pts is None:
                    continue
            faces.append((pts / [mx, my], (bx, by, bw, bh), score))
            if first_only:
                break
        return faces

    def detect(self, image, label="image", _largest_only=False):
        """All faces in ``image`` (grey, RGB, RGBA; uint8, uint16 or float), largest first.

        Returns an empty list when there is none (never raises for a face-less image); raises
        :class:`ImageError` for arrays that are not images. At most ``max_faces`` faces are
        returned; :attr:`last_found` says how many were found.
        """
        import cv2  # deferred: OpenCV (cache.py imports this module for its constants)

        self._check_open()
        self.last_found = 0
        rgb, _ = as_uint8_image(image, label)
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE or max(h, w) / min(h, w) > MAX_ASPECT:
            return []
        rgb = np.ascontiguousarray(rgb)
        # working scale of the whole-image passes: upscale small images, downscale huge ones
        f = 1.0
        if min(h, w) < UPSCALE_BELOW:
            f = UPSCALE_BELOW / min(h, w)
        elif max(h, w) > DETECT_MAX_SIDE:
            f = DETECT_MAX_SIDE / max(h, w)
        work = rgb
        if f != 1.0:
            interp = cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA
            work = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)
        fx, fy = work.shape[1] / w, work.shape[0] / h
        work = np.ascontiguousarray(work)
        whole = suppress([(bx / fx, by / fy, bw / fx, bh / fy, score)
                           for bx, by, bw, bh, score in self._detect_boxes(work)], w, h)
        # landmarks on the upscaled image for small images (the mesh wants pixels), else on rgb
        mesh_src, m = (work, (fx, fy)) if f > 1 else (rgb, (1.0, 1.0))
        faces = self._verify(whole, mesh_src, m, _largest_only)
        tiled = []
        if not (_largest_only and faces):  # tiles only find faces smaller than those above
            kept = [box for _, box, _ in faces]  # a rejected whole-image box hides nothing
            search = self._tile_boxes if self._nets is None else self._scan_boxes
            tiled = [t for t in search(rgb)
                     if all(iou(t[:4], b) < 0.3 and overlap_small(t[:4], b) < 0.6 for b in kept)]
            faces += self._verify(suppress(tiled, w, h), mesh_src, m, _largest_only)
        if self._nets is not None and not faces:  # litert, when the scan finds no face: the
            # whole-image passes (tight crops: faces that fill the photo, or are cut by its border)
            cut = suppress([moved(d, (fx, fy)) for d in
                             self._detections("det0", work) + self._padded_full_range(work)], w, h)
            faces += self._verify(cut, mesh_src, m, _largest_only)
            whole = whole + cut
        boxes = whole + tiled
        if not boxes:
            for pts in self._mesh_full(work, self.max_faces):
                faces.append((pts / [fx, fy], landmark_box(pts / [fx, fy]), float("nan")))
        result = []
        for pts, box, score in faces:
            # the eye on the image's left when upright: decide by mesh topology, not by x order
            left = pts[list(_EYE_ON_IMAGE_LEFT)].mean(axis=0)
            right = pts[list(_EYE_ON_IMAGE_RIGHT)].mean(axis=0)
            result.append(Face(box=tuple(float(v) for v in box), score=float(score),
                               landmarks=pts.astype(np.float32), left_eye=left, right_eye=right))
        result.sort(key=lambda fc: -fc.area)
        self.last_found = len(result)
        if self.max_faces is not None:
            result = result[: self.max_faces]
        return result

    # -- alignment ------------------------------------------------------------------------------
    def align(self, image, size=60, label="image"):
        """Align the largest face in ``image`` to a ``size`` x ``size`` uint8 grey crop.

        Raises :class:`NoFaceError` (with ``label``, e.g. the file path) when there is no face.
        """
        faces = self.align_all(image, size=size, label=label, _largest_only=True)
        return faces[0]

    def align_all(self, image, size=60, label="image", _largest_only=False):
        """Aligned crops of every face in ``image``, largest first; NoFaceError when none."""
        self._check_open()
        if not isinstance(size, (int, np.integer)) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        rgb, grey = as_uint8_image(image, label)
        faces = self.detect(rgb, label=label, _largest_only=_largest_only)  # RGB uint8: no new copy
        if not faces:
            raise NoFaceError(label)
        if _largest_only:
            faces = faces[:1]
        return [align_crop(grey, f, int(size), self.crop_scale, self.crop_offset) for f in faces]

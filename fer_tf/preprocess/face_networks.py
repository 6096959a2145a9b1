"""MediaPipe's face networks run directly in LiteRT: the BlazeFace detectors and the face mesh.

The ``mediapipe`` wheel bundles the networks that its ``solutions`` graphs run. Each graph run costs
a few milliseconds beyond its network (image packets, the graph's scheduler, calculators written
for video), which on a small photo is most of the detection time. This module runs the same
``.tflite`` files with ``ai_edge_litert`` (one thread, XNNPACK) and does in NumPy what the graphs'
calculators do around them, as MediaPipe's graph configurations describe it:

- **Detection** (``face_detection_short_range.tflite``, 128x128, and
  ``face_detection_full_range_sparse.tflite``, 192x192): the image is letterboxed to the input
  square (aspect ratio kept, black padding), scaled to [-1, 1]; the network scores one box per SSD
  anchor. Anchors are the centres of the feature-map cells, of fixed unit size: strides 8, 16, 16,
  16 with two anchors per layer and cell (896 anchors) for the short-range network, stride 4 with
  one anchor per cell (2,304) for the full-range one. A box is ``(x, y, w, h)`` offsets from its
  anchor in input pixels, followed by six keypoints (the eyes, nose tip, mouth centre and the ear
  tragions); its score is the sigmoid of the clipped logit. Boxes over the score threshold are
  merged by weighted non-maximum suppression (IoU 0.3: overlapping boxes are averaged, weighted
  by score) and the letterbox is removed.
- **Landmarks** (``face_landmark.tflite``, 468 points, 192x192 in [0, 1]): the face's region of
  interest is the detection box's centre, a square of 1.5 times the box's longer side, rotated so
  that the eye line (keypoints 0 and 1) is level; the network's points are projected back through
  the same rotation. It is the mesh of ``FaceMesh(refine_landmarks=False)``; the refined 478-point
  network needs a custom operation that LiteRT does not have, so the 10 iris points are not given.

:class:`FaceNetworks` loads the networks once; it is not thread-safe (one per thread).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import pathlib

import numpy as np

from fer_tf.files import quiet_native_stderr

#: The networks, relative to the ``mediapipe/modules`` folder of the installed wheel.
SHORT_RANGE = "face_detection/face_detection_short_range.tflite"
FULL_RANGE = "face_detection/face_detection_full_range_sparse.tflite"
LANDMARKS = "face_landmark/face_landmark.tflite"
#: Scan inputs of at least this many pixels square run on ``scan_threads`` threads.
SCAN_THREADS_FROM = 160
#: Weighted non-maximum suppression: boxes overlapping a better one by more than this IoU merge into it.
NMS_IOU = 0.3
#: The landmark network's input side in pixels.
LANDMARK_SIZE = 192
#: Region of interest for the landmarks: this many times the detection box's longer side.
ROI_SCALE = 1.5
#: The landmark network's face-presence probability below which no face is reported.
FACE_PRESENCE = 0.5
#: The detectors' input outside the image (letterbox, scan padding): black on their [-1, 1] scale,
#: as MediaPipe pads (measured: the full-range boxes then match MediaPipe's twice as closely).
PAD = -1.0


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    model: str
    size: int  # input side in pixels
    strides: tuple  # one per SSD layer
    anchors_per_layer: int  # anchors per cell that each layer contributes


DETECTORS = {
    "short": DetectorSpec(SHORT_RANGE, 128, (8, 16, 16, 16), 2),
    "full": DetectorSpec(FULL_RANGE, 192, (4,), 1),
}


@dataclasses.dataclass
class Detection:
    """One face found by a detector, in pixels of the image it was given."""

    box: tuple  # (x, y, w, h)
    score: float
    keypoints: np.ndarray  # [6, 2]: right eye (the image's left), left eye, nose, mouth, ears


def ssd_anchors(shape, strides, anchors_per_layer):
    """``[K, 2]`` anchor centres (x, y) in input pixels, for an input of ``shape`` (height, width),
    in the order of the network's outputs: layers of equal stride share a feature map, whose cells
    (row-major) each hold the anchors of all of those layers."""
    h, w = shape
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        stride = strides[i]
        ys, xs = np.meshgrid((np.arange(-(-h // stride)) + 0.5) * stride,
                             (np.arange(-(-w // stride)) + 0.5) * stride, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, (j - i) * anchors_per_layer, axis=0))
        i = j
    return np.concatenate(centres).astype(np.float32)


def _iou_matrix(box, boxes):
    """IoU of one ``(x0, y0, x1, y1)`` box with each row of ``boxes``."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(corners, keypoints, scores, iou=NMS_IOU):
    """Weighted non-maximum suppression: ``[(corners, keypoints, score)]``, best first.

    Each kept box is the score-weighted mean of itself and the boxes that overlap it by more than
    ``iou`` (which are then dropped); it keeps the best box's score."""
    order = np.argsort(-scores, kind="stable")
    corners, keypoints, scores = corners[order], keypoints[order], scores[order]
    out = []
    alive = np.ones(len(scores), bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (_iou_matrix(corners[i], corners) > iou)
        group[i] = True
        w = scores[group][:, None]
        out.append(((corners[group] * w).sum(0) / w.sum(), (keypoints[group] * w[:, :, None]).sum(0) / w.sum(),
                    float(scores[i])))
        alive &= ~group
    return out


def _modules_folder():
    import mediapipe  # deferred: only its bundled model files are used

    return pathlib.Path(mediapipe.__file__).parent / "modules"


def _interpreter(model, num_threads, shape=None):
    """A LiteRT interpreter of ``model`` (bytes), its image input resized to ``shape`` (H, W)."""
    from ai_edge_litert.interpreter import Interpreter  # deferred: the LiteRT runtime

    # LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate" to fd 2 (no setting turns
    # it off); its errors come as Python exceptions, which the silencer lets through.
    with quiet_native_stderr():
        interpreter = Interpreter(model_content=model, num_threads=num_threads)
        if shape is not None:
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, *shape, 3])
        interpreter.allocate_tensors()
    return interpreter


class _Detector:
    """One SSD face detector: at its own input size (:meth:`__call__`, the image letterboxed into
    it) or at the image's own scale (:meth:`scan`)."""

    #: Input shapes of the scan kept ready at once, each in an interpreter of its own: resizing an
    #: interpreter's input re-plans XNNPACK (milliseconds), and a photo's scan levels and tiles
    #: come back with the same few shapes photo after photo.
    SCAN_SHAPES = 8

    def __init__(self, spec: DetectorSpec, folder, num_threads, min_score, scan_threads=None):
        self.spec, self.min_score = spec, float(min_score)
        self.num_threads = num_threads
        self.scan_threads = scan_threads or num_threads
        self.model = (folder / spec.model).read_bytes()
        self.anchors = ssd_anchors((spec.size, spec.size), spec.strides, spec.anchors_per_layer)
        self.net = self._net(None)
        self._scan_nets = collections.OrderedDict()

    def _net(self, shape):
        """``(interpreter, input, boxes output, scores output)``, its input resized to ``shape``."""
        threads = self.num_threads
        if shape is not None and shape[0] * shape[1] >= SCAN_THREADS_FROM ** 2:
            threads = self.scan_threads
        interpreter = _interpreter(self.model, threads, shape)
        outputs = sorted(interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        return interpreter, interpreter.get_input_details()[0]["index"], outputs[0]["index"], outputs[1]["index"]

    def scan(self, rgb):
        """Detections of the network run at ``rgb``'s own scale: its input resized to the image
        (rounded up to a multiple of 16, padded), so that it finds faces of the pixel sizes it
        finds at its own input size, anywhere in a larger image."""
        h, w = rgb.shape[:2]
        shape = (-(-h // 16) * 16, -(-w // 16) * 16)
        if shape in self._scan_nets:
            self._scan_nets.move_to_end(shape)
        else:
            self._scan_nets[shape] = (self._net(shape), ssd_anchors(shape, self.spec.strides,
                                                                    self.spec.anchors_per_layer))
            while len(self._scan_nets) > self.SCAN_SHAPES:
                self._scan_nets.popitem(last=False)
        net, anchors = self._scan_nets[shape]
        tensor = np.full((1, *shape, 3), PAD, np.float32)
        tensor[0, :h, :w] = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
        return self._decode(net, tensor, anchors, 0, 0, 1.0)

    def __call__(self, rgb):
        """Detections of the network on ``rgb`` letterboxed into its square input."""
        import cv2  # deferred: OpenCV

        s = self.spec.size
        h, w = rgb.shape[:2]
        k = s / max(h, w)
        rw, rh = max(1, round(w * k)), max(1, round(h * k))
        x0, y0 = (s - rw) // 2, (s - rh) // 2
        tensor = np.full((1, s, s, 3), PAD, np.float32)
        resized = rgb if (rw, rh) == (w, h) else cv2.resize(
            rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        tensor[0, y0:y0 + rh, x0:x0 + rw] = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
        return self._decode(self.net, tensor, self.anchors, x0, y0, k)

    def _decode(self, net, tensor, anchor_centres, x0, y0, k):
        """Run ``net`` on ``tensor``; boxes in image pixels, where input = image * k + (x0, y0)."""
        interpreter, inp, boxes_out, scores_out = net
        interpreter.set_tensor(inp, tensor)
        interpreter.invoke()
        logits = interpreter.get_tensor(scores_out)[0, :, 0]
        keep = np.flatnonzero(logits > math.log(self.min_score / (1.0 - self.min_score)))
        if not len(keep):
            return []
        raw = interpreter.get_tensor(boxes_out)[0, keep]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100.0, 100.0)))
        anchors = anchor_centres[keep]  # input pixels
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2.0
        corners = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        out = []
        for c, kp, score in weighted_nms(corners, keypoints, scores):
            # input pixels -> image pixels (undo the letterbox)
            c = (c - [x0, y0, x0, y0]) / k
            kp = (kp - [x0, y0]) / k
            out.append(Detection(box=(float(c[0]), float(c[1]), float(c[2] - c[0]), float(c[3] - c[1])),
                                 score=score, keypoints=kp.astype(np.float64)))
        return out


class FaceNetworks:
    """The short- and full-range detectors and the landmark network, each in its own LiteRT
    interpreter (XNNPACK).

    Args:
        min_detection_confidence: detector score threshold (MediaPipe's default 0.5).
        num_threads: threads of the interpreters at the networks' own input sizes (128 and 192
            pixels: too little work per run to share; 1 by default).
        scan_threads: threads of the scan's interpreters for inputs of at least
            :data:`SCAN_THREADS_FROM` pixels (default: 2 when the machine has 2 cores or more).
            Measured on an idle 2-core machine, 2 threads make a 208x208 scan 1.8x and a 416x416
            one 1.6x faster; on a machine whose cores are busy with other work, 10-25% slower.
    """

    def __init__(self, min_detection_confidence=0.5, num_threads=1, scan_threads=None):
        folder = _modules_folder()
        if scan_threads is None:
            scan_threads = min(2, os.cpu_count() or 1)
        self.detectors = {name: _Detector(spec, folder, num_threads, min_detection_confidence,
                                          scan_threads=scan_threads)
                          for name, spec in DETECTORS.items()}
        self.landmarker = _interpreter((folder / LANDMARKS).read_bytes(), num_threads)
        self._lm_input = self.landmarker.get_input_details()[0]["index"]
        outputs = sorted(self.landmarker.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
        self._lm_points, self._lm_presence = outputs[0]["index"], outputs[1]["index"]
        self._lm_size = int(self.landmarker.get_input_details()[0]["shape"][1])

    def detect(self, rgb, network="short"):
        """``[Detection]`` of one detector run on ``rgb`` (uint8 [H, W, 3]), best first:
        ``"short"`` and ``"full"`` on the image fitted to the network's input, ``"scan"`` the
        short-range network at the image's own scale (:meth:`_Detector.scan`)."""
        if network == "scan":
            return self.detectors["short"].scan(rgb)
        return self.detectors[network](rgb)

    def landmarks(self, rgb, detection: Detection):
        """``[468, 2]`` landmarks (pixels of ``rgb``) of the face found by ``detection``, or None when
        the network says there is no face in its region of interest."""
        import cv2  # deferred: OpenCV

        x, y, w, h = detection.box
        cx, cy = x + w / 2.0, y + h / 2.0
        side = max(w, h) * ROI_SCALE
        (ex0, ey0), (ex1, ey1) = detection.keypoints[0], detection.keypoints[1]
        r = math.atan2(ey1 - ey0, ex1 - ex0)
        n = self._lm_size
        k = side / n
        cos, sin = math.cos(r) * k, math.sin(r) * k
        # crop pixel (u, v) -> image point (cx, cy) + R(r) k ((u, v) - n/2)
        m = np.array([[cos, -sin, cx - (cos - sin) * n / 2.0], [sin, cos, cy - (sin + cos) * n / 2.0]])
        crop = cv2.warpAffine(rgb, m, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        self.landmarker.set_tensor(self._lm_input, (crop.astype(np.float32) / 255.0)[None])
        self.landmarker.invoke()
        presence = float(self.landmarker.get_tensor(self._lm_presence).ravel()[0])
        if 1.0 / (1.0 + math.exp(-presence)) < FACE_PRESENCE:
            return None
        pts = self.landmarker.get_tensor(self._lm_points).reshape(-1, 3)[:, :2].astype(np.float64)
        return pts @ m[:, :2].T + m[:, 2]

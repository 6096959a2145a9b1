"""MediaPipe's face networks run directly in LiteRT (fer_tf.preprocess.face_networks) against the
graphs that MediaPipe runs them in."""

import numpy as np
import pytest

mp = pytest.importorskip("mediapipe")
from PIL import Image  # noqa: E402

from fer_tf.preprocess import face_networks as fn  # noqa: E402

PHOTOS = ("kdef-subset/Angry/AF01ANS.JPG", "kdef-subset/Happy/BM16HAS.JPG", "yalefaces/subject01.happy",
          "yalefaces/subject09.surprised")


def test_anchor_layout_matches_the_networks_outputs():
    short, full = fn.DETECTORS["short"], fn.DETECTORS["full"]
    a = fn.ssd_anchors((128, 128), short.strides, short.anchors_per_layer)
    assert a.shape == (896, 2)
    # stride 8: 16x16 cells of 2 anchors, row-major; then stride 16: 8x8 cells of 6 anchors
    np.testing.assert_allclose(a[:4], [[4, 4], [4, 4], [12, 4], [12, 4]])
    np.testing.assert_allclose(a[32], [4, 12])
    np.testing.assert_allclose(a[512:519], [[8, 8]] * 6 + [[24, 8]])
    assert fn.ssd_anchors((192, 192), full.strides, full.anchors_per_layer).shape == (2304, 2)
    wide = fn.ssd_anchors((64, 160), short.strides, short.anchors_per_layer)
    assert wide.shape == (8 * 20 * 2 + 4 * 10 * 6, 2) and wide[:, 0].max() == 156


def test_weighted_nms_merges_overlaps_by_score_and_keeps_the_rest():
    corners = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float64)
    keypoints = np.zeros((3, 6, 2))
    keypoints[1] += 3.0
    out = fn.weighted_nms(corners, keypoints, np.array([0.9, 0.3, 0.6]))
    assert len(out) == 2
    (c, kp, score), (c2, _, score2) = out
    np.testing.assert_allclose(c, [0.25, 0, 10.25, 10])  # (0.9 * 0 + 0.3 * 1) / 1.2
    np.testing.assert_allclose(kp, 0.75)
    assert score == 0.9 and score2 == 0.6 and list(c2) == [50, 50, 60, 60]
    assert fn.weighted_nms(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0)) == []


@pytest.fixture(scope="module")
def nets():
    return fn.FaceNetworks()


def _photos(datasets_dir):
    return [np.ascontiguousarray(np.asarray(Image.open(datasets_dir / p).convert("RGB"))) for p in PHOTOS]


def _graph_boxes(graph, rgb):
    h, w = rgb.shape[:2]
    out = []
    for d in graph.process(rgb).detections or []:
        b = d.location_data.relative_bounding_box
        out.append((np.array([b.xmin * w, b.ymin * h, b.width * w, b.height * h]), d.score[0],
                    np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints])))
    return out


@pytest.mark.integration
@pytest.mark.parametrize("network, selection", [("short", 0), ("full", 1)])
def test_detections_match_mediapipes_graph(nets, datasets_dir, network, selection):
    with mp.solutions.face_detection.FaceDetection(model_selection=selection,
                                                   min_detection_confidence=0.5) as graph:
        compared = 0
        for rgb in _photos(datasets_dir):
            ours, theirs = nets.detect(rgb, network), _graph_boxes(graph, rgb)
            assert len(ours) == len(theirs) <= 1  # the full-range one finds no tight KDEF crop
            if not theirs:
                continue
            compared += 1
            box, score, keypoints = theirs[0]
            width = box[2]
            assert np.abs(np.array(ours[0].box) - box).max() < 0.07 * width  # a few pixels
            assert ours[0].score == pytest.approx(score, abs=0.05)
            assert np.abs(ours[0].keypoints - keypoints).max() < 0.08 * width
        assert compared >= 2


@pytest.mark.integration
def test_scan_finds_the_face_at_the_images_own_scale(nets, datasets_dir):
    rgb = _photos(datasets_dir)[2]  # a 320x243 Yale photo: the head is about 110 px wide
    letterboxed = nets.detect(rgb)[0]
    scanned = nets.detect(rgb, "scan")
    assert len(scanned) == 1
    np.testing.assert_allclose(scanned[0].box, letterboxed.box, atol=0.08 * letterboxed.box[2])


@pytest.mark.integration
def test_landmarks_match_mediapipes_face_mesh(nets, datasets_dir):
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=False) as mesh:
        for rgb in _photos(datasets_dir):
            h, w = rgb.shape[:2]
            ours = nets.landmarks(rgb, nets.detect(rgb)[0])
            theirs = np.array([(p.x * w, p.y * h) for p in mesh.process(rgb).multi_face_landmarks[0].landmark])
            assert ours.shape == theirs.shape == (468, 2)
            eyes = np.linalg.norm(theirs[33] - theirs[263])
            assert np.abs(ours - theirs).mean() < 0.02 * eyes  # a fiftieth of the eye distance


@pytest.mark.integration
def test_no_landmarks_where_there_is_no_face(nets):
    blank = np.full((200, 200, 3), 120, np.uint8)
    assert nets.detect(blank) == [] and nets.detect(blank, "scan") == []
    fake = fn.Detection(box=(50.0, 50.0, 100.0, 100.0), score=0.9,
                        keypoints=np.array([[80, 90], [120, 90], [100, 110], [100, 130], [60, 95], [140, 95]], float))
    assert nets.landmarks(blank, fake) is None

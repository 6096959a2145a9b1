"""Recognizer: detect -> align -> classify with LiteRT and Keras backends, videos, annotation."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_tf.deploy import recognizer, video  # noqa: E402
from fer_tf.model import saving
from fer_tf.data.labels import BASIC7  # noqa: E402
from fer_tf.errors import ConfigError, ImageError, ModelFileError, NoFaceError  # noqa: E402
from fer_tf.deploy.annotate import annotate  # noqa: E402
from fer_tf.deploy.recognizer import Recognizer  # noqa: E402
from fer_tf.deploy.runners import TFLiteRunner  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_ec_model(classes=7, seed=0):
    """Stand-in EC network: [B,48,48,1] normalised -> [B,C] softmax."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(x))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from fer_tf.deploy.export import export_model

    out = tmp_path_factory.mktemp("model")
    ec = tiny_ec_model()
    export_model(ec, out, variants=("fp32",), labels=BASIC7)
    return out, ec


@pytest.fixture(scope="module")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory, astronaut):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def litert(exported):
    out, _ = exported
    rec = Recognizer(out / "model_fp32.tflite", num_threads=1)
    yield rec
    rec.close()


def test_litert_on_a_photo(litert, astronaut_png, astronaut):
    assert litert.backend == "litert" and litert.labels == BASIC7
    result = litert.predict_path(astronaut_png)
    assert result["path"] == str(astronaut_png)
    (face,) = result["faces"]
    x, y, w, h = face["box"]
    assert all(isinstance(v, int) for v in face["box"])
    # the astronaut's face is in the upper middle of the 512x512 photo
    assert 120 < x + w / 2 < 320 and 50 < y + h / 2 < 220 and 50 < w < 200
    assert list(face["probabilities"]) == list(BASIC7)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    assert face["expression"] == max(face["probabilities"], key=face["probabilities"].get)
    # an array gives the same answer as the file
    assert litert.predict(astronaut)["faces"] == result["faces"]


def test_keras_backend_matches_litert(exported, litert, astronaut_png):
    out, ec = exported
    by_file = Recognizer(out / "inference.keras", aligner=litert.aligner)
    by_object = Recognizer(ec, labels=BASIC7, aligner=litert.aligner)
    assert by_file.backend == by_object.backend == "keras"
    expected = litert.predict_path(astronaut_png)["faces"][0]
    for rec in (by_file, by_object):
        face = rec.predict_path(astronaut_png)["faces"][0]
        assert face["box"] == expected["box"] and face["expression"] == expected["expression"]
        for name in BASIC7:
            assert abs(face["probabilities"][name] - expected["probabilities"][name]) < 1e-4


def test_a_keras_model_is_loaded_and_checked_once(exported, litert, monkeypatch):
    """Recognizer opens a Keras model in one pass: check_classifier runs once per model, whether
    the model comes as a .keras file, an EC network or a JointModel."""
    from fer_tf.model import inference_model
    from fer_tf.model.network import build_model

    out, ec = exported
    checked = []
    real = inference_model.check_classifier

    def counting(model, *args, **kwargs):
        checked.append(getattr(model, "name", model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(inference_model, "check_classifier", counting)
    joint = build_model(labels=BASIC7)
    for model in (out / "inference.keras", ec, joint):
        checked.clear()
        rec = Recognizer(model, labels=None if model is joint else BASIC7, aligner=litert.aligner)
        assert rec.backend == "keras" and rec.labels == BASIC7
        assert len(checked) == 1, (model, checked)
        assert rec.probabilities(np.zeros((2, 60, 60), np.uint8)).shape == (2, 7)


def test_predict_faces_is_batched_and_consistent(litert):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 60, 60), dtype=np.uint8)
    batched = litert.probabilities(crops)
    single = np.concatenate([litert.probabilities(c[None]) for c in crops])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    entries = litert.predict_faces(crops)
    assert len(entries) == 5 and set(entries[0]) == {"expression", "probabilities"}
    with pytest.raises(ValueError, match="60, 60"):
        litert.predict_faces(np.zeros((2, 48, 48), np.uint8))


def test_no_face(litert, tmp_path):
    from PIL import Image

    blank = np.full((240, 320, 3), 200, np.uint8)
    assert litert.predict(blank) == {"faces": []}
    Image.fromarray(blank).save(tmp_path / "blank.png")
    with pytest.raises(NoFaceError, match="blank.png"):
        litert.predict_path(tmp_path / "blank.png")
    with pytest.raises(ImageError, match="missing.png"):
        litert.predict_path(tmp_path / "missing.png")


def test_model_choice_errors(tmp_path, exported, monkeypatch):
    out, ec = exported
    monkeypatch.setattr(recognizer, "shipped_model_path", lambda: tmp_path / "none.tflite")
    with pytest.raises(ModelFileError, match="shipped model"):
        Recognizer()
    with pytest.raises(ConfigError, match="LiteRT backend needs a .tflite"):
        Recognizer(out / "inference.keras", backend="litert")
    with pytest.raises(ConfigError, match="window"):
        Recognizer(out / "model_fp32.tflite", window=0)
    (tmp_path / "model").write_text("not a model")
    with pytest.raises(ModelFileError, match="not a model file"):
        Recognizer(tmp_path / "model")
    # a .tflite without its metadata file: labels unknown unless given
    bare = tmp_path / "bare.tflite"
    bare.write_bytes((out / "model_fp32.tflite").read_bytes())
    with pytest.raises(ModelFileError, match="labels are unknown"):
        Recognizer(bare)
    assert Recognizer(bare, labels=BASIC7).labels == BASIC7
    with pytest.raises(ModelFileError, match="7 outputs but 3 labels"):
        Recognizer(bare, labels=["happy", "sad", "angry"])


def test_annotate(litert, astronaut):
    result = litert.predict(astronaut)
    drawn = annotate(astronaut, result)
    assert drawn.dtype == np.uint8 and drawn.shape == astronaut.shape
    x, y, w, h = result["faces"][0]["box"]
    changed = np.any(drawn != astronaut, axis=2)
    assert changed[y + h // 2, x] or changed[y + h // 2, x + 1]  # the box's left edge
    assert changed.mean() < 0.2
    grey = annotate(astronaut.mean(axis=2).astype(np.uint8), result)
    assert grey.shape == astronaut.shape


def write_video(path, frames, fps=10, fourcc="mp4v"):
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_sliding_window(litert, astronaut, tmp_path):
    import cv2

    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frames = [np.clip(small.astype(int) + rng.integers(-25, 26, small.shape), 0, 255).astype(np.uint8)
              for _ in range(6)]
    frames.insert(3, np.full_like(small, 128))  # a frame without a face breaks the track
    video = write_video(tmp_path / "clip.mp4", frames)
    result = litert.predict_video(video, window=3, annotate_to=tmp_path / "annotated.mp4")
    assert result["path"] == str(video) and len(result["frames"]) == 7
    assert result["summary"]["frames"] == 7 and result["summary"]["frames_with_face"] == 6
    assert result["frames"][3]["faces"] == []
    history = []
    for i, frame in enumerate(result["frames"]):
        assert frame["frame"] == i and frame["time_s"] == pytest.approx(i / 10, abs=1e-3)
        if not frame["faces"]:
            history = []
            continue
        tracked = frame["faces"][0]
        assert tracked["track"] == 0
        history.append([tracked["frame_probabilities"][n] for n in BASIC7])
        expected = np.mean(history[-3:], axis=0)
        got = [tracked["probabilities"][n] for n in BASIC7]
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert tracked["expression"] == BASIC7[int(np.argmax(expected))]
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    capture.release()


def test_video_errors(litert, tmp_path):
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(ImageError, match="fake.mp4"):
        litert.predict_video(tmp_path / "fake.mp4")
    with pytest.raises(ImageError, match="file not found"):
        litert.predict_video(tmp_path / "none.mp4")


def test_litert_path_does_not_import_tensorflow(exported, astronaut_png):
    out, _ = exported
    code = (
        "import sys\n"
        "from fer_tf.deploy.recognizer import Recognizer\n"
        f"r = Recognizer({str(out / 'model_fp32.tflite')!r})\n"
        f"assert r.predict_path({str(astronaut_png)!r})['faces']\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_shipped_model_says_happiness(astronaut):
    """The shipped model (saved_models/fer_tf_basic7.tflite) sees a smile on the astronaut."""
    # the package finds the model the repository ships (a wrong path would skip, not fail, here)
    assert recognizer.shipped_model_path() == REPO / recognizer.SHIPPED_MODEL
    if not recognizer.shipped_model_path().is_file():
        pytest.skip(f"shipped model {recognizer.SHIPPED_MODEL} not there yet")
    with Recognizer() as rec:
        assert rec.labels == BASIC7
        (face,) = rec.predict(astronaut)["faces"]
    assert face["expression"] == "happiness", face["probabilities"]


def test_metadata_shape_mismatch_is_refused(tmp_path, exported):
    out, _ = exported
    model = tmp_path / "m.tflite"
    model.write_bytes((out / "model_fp32.tflite").read_bytes())
    meta = saving.make_metadata(BASIC7)
    meta["input"]["shape"] = [48, 48, 1]
    import json

    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="input is \\[48, 48, 1\\]"):
        Recognizer(model)


def test_recognizer_takes_a_joint_model_and_its_labels(astronaut):
    """`Recognizer(model)` runs a JointModel straight from training; a bare ec_model() needs
    the labels, and the error says so."""
    from fer_tf.model.network import build_model

    labels = ("anger", "happiness", "sadness")
    model = build_model("softmax", labels=labels)
    with Recognizer(model, aligner=_FixedAligner()) as rec:
        assert rec.labels == labels
        (face,) = rec.predict(astronaut)["faces"]
        assert list(face["probabilities"]) == list(labels)
    with pytest.raises(ModelFileError, match="JointModel itself"):
        Recognizer(model.ec_model())
    with Recognizer(model.ec_model(), labels=model.labels, aligner=_FixedAligner()) as rec:
        assert rec.labels == labels and len(rec.predict(astronaut)["faces"]) == 1


class _FixedAligner:
    """One centred 'face' per image, without MediaPipe (for tests of the classifier path)."""

    def __init__(self, n=1):
        self.n = n
        self.last_found = 0

    def align_all(self, image, size=60, label="image"):
        from types import SimpleNamespace

        h, w = np.asarray(image).shape[:2]
        self.last_found = self.n
        crop = np.full((size, size), 128, np.uint8)
        return [SimpleNamespace(image=crop, box=(w / 4 + i, h / 4, w / 2, h / 2))
                for i in range(self.n)]


def test_max_faces_reports_what_was_found(exported, astronaut):
    out, _ = exported
    with Recognizer(out / "model_fp32.tflite", aligner=_FixedAligner(5), max_faces=2) as rec:
        result = rec.predict(astronaut)
    assert len(result["faces"]) == 2 and result["faces_found"] == 5
    with Recognizer(out / "model_fp32.tflite", aligner=_FixedAligner(5)) as rec:
        assert "faces_found" not in rec.predict(astronaut) and len(rec.predict(astronaut)["faces"]) == 5
    with pytest.raises(ConfigError, match="max_faces"):
        Recognizer(out / "model_fp32.tflite", max_faces=0)


def test_open_video_streams_one_frame_at_a_time(exported, astronaut, tmp_path):
    import cv2

    out, _ = exported
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    video = write_video(tmp_path / "clip.avi", [small] * 9, fourcc="MJPG")
    with Recognizer(out / "model_fp32.tflite", aligner=_FixedAligner()) as rec:
        stream = rec.open_video(video, every=2)
        assert stream.frame_count == 9 and stream.expected == 5 and stream.fps == 10
        frames = iter(stream)
        first = next(frames)
        assert first["frame"] == 0 and first["faces"][0]["track"] == 0
        assert [f["frame"] for f in frames] == [2, 4, 6, 8]
        assert stream.summary == {"frames": 5, "frames_with_face": 5,
                                  "expressions": stream.summary["expressions"]}
        # stopping early releases the file
        stream = rec.open_video(video)
        for _ in stream:
            break
        assert not stream._capture.isOpened()


def test_video_codecs():
    assert video.video_codec("a.webm") == ("VP80", None)
    fourcc, note = video.video_codec("a.avi")
    assert fourcc == "MJPG" and "browsers do not play" in note
    fourcc, note = video.video_codec("a.mp4")
    assert (fourcc, note is None) in (("avc1", True), ("mp4v", False))
    assert video.can_encode("VP80")  # the pinned opencv-contrib-python writes VP8
    assert video.browser_video_suffix() == (".mp4" if fourcc == "avc1" else ".webm")
    with pytest.raises(ConfigError, match="unknown video suffix"):
        video.video_codec("a.gif")


def test_litert_runner_keeps_single_faces_on_an_unresized_interpreter(exported):
    """Single faces and small groups never re-plan XNNPACK (a resize costs milliseconds); large
    sets run in batches on a second interpreter, with the same probabilities."""
    out, _ = exported
    runner = TFLiteRunner(out / "model_fp32.tflite", num_threads=1)
    faces = np.random.default_rng(0).integers(0, 256, (20, 60, 60), dtype=np.uint8)
    one_by_one = np.concatenate([runner(face[None]) for face in faces])
    small = runner(faces[:TFLiteRunner.BATCH_FROM - 1])
    assert runner._batch == 1 and runner._batch_runner is None
    batched = runner(faces, max_batch=16)
    assert runner._batch == 1 and runner._batch_runner._batch == 4  # 16 + 4
    np.testing.assert_allclose(small, one_by_one[:len(small)], atol=1e-6)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert runner(faces[:0]).shape == (0, 7)


def test_rgb_conversion_without_grey_matches_as_uint8_image():
    from fer_tf.data.images import as_uint8_image, as_uint8_rgb

    rng = np.random.default_rng(1)
    for image in (rng.integers(0, 256, (9, 7, 3), dtype=np.uint8),
                  rng.integers(0, 256, (9, 7), dtype=np.uint8),
                  rng.random((9, 7, 4)), rng.integers(0, 65535, (9, 7, 1), dtype=np.uint16)):
        rgb = as_uint8_rgb(image)
        np.testing.assert_array_equal(rgb, as_uint8_image(image)[0])
        assert rgb.dtype == np.uint8 and rgb.shape == (9, 7, 3) and rgb.flags.c_contiguous
    with pytest.raises(ImageError, match="shape"):
        as_uint8_rgb(np.zeros((2, 3, 5)))


@pytest.mark.integration
def test_detection_engines_find_the_same_face(exported, astronaut):
    out, _ = exported
    results = {}
    for engine in ("litert", "mediapipe"):
        with Recognizer(out / "model_fp32.tflite", num_threads=1, engine=engine) as rec:
            results[engine] = rec.predict(astronaut)["faces"]
            assert rec.aligner.engine == engine
    (a,), (b,) = results["litert"], results["mediapipe"]
    from fer_tf.preprocess.boxes import iou

    assert iou(a["box"], b["box"]) > 0.7  # the detector's box, seen at another scale
    with pytest.raises(ConfigError, match="detection engine"):
        Recognizer(out / "model_fp32.tflite", engine="opencv")

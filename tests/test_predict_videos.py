"""`fer-tf predict` on videos and repeated inputs: nothing lost, nothing misleading.

Videos are generated here (cv2.VideoWriter) from a real Yale face; the shipped model is used.
"""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from fer_tf.cli import main  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = REPO / "saved_models" / "fer_tf_basic7.tflite"


@pytest.fixture(scope="module")
def face(datasets_dir):
    from PIL import Image

    path = datasets_dir / "yalefaces" / "subject01.happy"
    if not path.exists():
        pytest.skip("Yale faces not available")
    return path, np.asarray(Image.open(path).convert("RGB"))


def _clip(path, rgb, frames, fps=10, fourcc="MJPG", blank=False):
    h, w = rgb.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    for i in range(frames):
        image = np.full_like(rgb, 128) if blank else np.roll(rgb, 2 * i, axis=1)
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _read(path):
    """``(fps, frames)`` of a video, counting the frames by decoding them."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = 0
    while capture.read()[0]:
        frames += 1
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps, frames


def run(capsys, *argv):
    code = main(["predict", "-m", str(MODEL), *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_the_same_input_twice_writes_one_annotation(capsys, face, tmp_path):
    path, _ = face
    out = tmp_path / "out"
    code, text, err = run(capsys, path, path, pathlib.Path(os.path.relpath(path)), "--annotate", out)
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == ["subject01.happy_annotated.png"]
    assert text.count(": 1 face") == 1
    assert err.count("given more than once; processed once") == 2
    # a file given and also found in its folder: once, named as given first
    (tmp_path / "in").mkdir()
    video = _clip(tmp_path / "in" / "clip.avi", face[1], 3)
    code, text, err = run(capsys, video, tmp_path / "in", "--annotate", tmp_path / "out2", "--jsonl")
    assert code == 0, err
    assert [json.loads(line).get("summary", {}).get("frames") for line in text.splitlines()][-1] == 3
    assert len(os.listdir(tmp_path / "out2")) == 1 and "given more than once" in err


@pytest.mark.parametrize("every", [1, 5])
def test_an_annotated_video_keeps_the_original_duration(capsys, face, tmp_path, every):
    video = _clip(tmp_path / "clip.avi", face[1], 20, fps=10)
    target = tmp_path / "annotated.avi"
    code, _, err = run(capsys, video, "--every", str(every), "--annotate", target)
    assert code == 0, err
    fps, frames = _read(target)
    assert frames == 20 // every
    assert fps == pytest.approx(10 / every, rel=1e-3)
    assert frames / fps == pytest.approx(2.0, rel=1e-3)  # the original's 20 frames at 10 fps


def test_a_video_without_a_face_writes_no_annotated_copy(capsys, face, tmp_path):
    blank = _clip(tmp_path / "blank.avi", face[1], 3, blank=True)
    out = tmp_path / "out"
    code, _, err = run(capsys, blank, "--annotate", out)
    assert code == 1
    assert "no face found in any of 3 frames; no annotated copy was written" in err
    assert not out.exists() or os.listdir(out) == []  # not even a temporary
    # with --overwrite, an earlier copy stays as it was
    out.mkdir(exist_ok=True)
    earlier = out / "blank_annotated.webm"
    earlier.write_bytes(b"an earlier copy")
    code, _, err = run(capsys, blank, "--annotate", earlier, "--overwrite")
    assert code == 1 and earlier.read_bytes() == b"an earlier copy"
    assert os.listdir(out) == ["blank_annotated.webm"]


def test_a_truncated_video_says_where_it_stopped(capsys, face, tmp_path):
    whole = _clip(tmp_path / "whole.avi", face[1], 20, fps=10).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    code, text, err = run(capsys, cut, "--jsonl")
    assert code == 0, err
    summary = json.loads(text.splitlines()[-1])["summary"]
    stopped = summary["truncated"]
    assert summary["frames"] == stopped["last_frame"] + 1 < 20 and stopped["frame_count"] == 20
    assert stopped["time_s"] == pytest.approx(stopped["last_frame"] / 10)
    assert (f"decoding stopped after frame {stopped['last_frame']} ({stopped['time_s']:.2f} s) "
            f"of the 20 frames, 2.00 s its header announces") in err
    assert "truncated or damaged" in err and "[mjpeg" not in err  # not FFmpeg's own words
    # a whole video says nothing of the kind
    code, text, err = run(capsys, tmp_path / "whole.avi", "--jsonl")
    assert code == 0 and err == "" and "truncated" not in json.loads(text.splitlines()[-1])["summary"]
    # an MP4 cut before its index cannot be read, and the error says why
    mp4 = _clip(tmp_path / "whole.mp4", face[1], 10, fourcc="mp4v").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(mp4[: len(mp4) // 2])
    code, _, err = run(capsys, tmp_path / "cut.mp4")
    assert code == 1 and "without its index (no 'moov' box): the file is truncated" in err
    assert "moov atom not found" not in err


def _keys(value, into, data=("probabilities", "frame_probabilities", "raw_probabilities",
                              "raw_frame_probabilities", "expressions", "expression_shares",
                              "expression_seconds", "people", "neutral_photos")):
    """Every key in a JSON value, not descending into maps keyed by labels, people or paths."""
    if isinstance(value, dict):
        for key, inner in value.items():
            into.add(key)
            if key in data and isinstance(inner, dict):
                for item in inner.values():  # a person's summary has keys of its own
                    if isinstance(item, dict):
                        _keys(item, into)
            else:
                _keys(inner, into)
    elif isinstance(value, list):
        for item in value:
            _keys(item, into)
    return into


def test_jsonl_and_csv_share_field_names_and_the_readme_lists_every_key(capsys, face, tmp_path):
    path, rgb = face
    whole = _clip(tmp_path / "clip.avi", rgb, 10).read_bytes()
    (tmp_path / "cut.avi").write_bytes(whole[: len(whole) // 2])
    from PIL import Image

    Image.fromarray(np.concatenate([rgb, rgb], axis=1)).save(tmp_path / "two.png")  # two faces
    inputs = [path, tmp_path / "two.png", tmp_path / "cut.avi", tmp_path / "missing.png"]
    code, text, _ = run(capsys, *inputs, "--jsonl", "--csv", tmp_path / "rows.csv",
                        "--max-faces", "1", "--every", "2")
    assert code == 3
    lines = [json.loads(line) for line in text.splitlines()]
    frames = [line for line in lines if "frame" in line]
    with open(tmp_path / "rows.csv", newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row["path"] == str(tmp_path / "cut.avi")]
    assert [(f["frame"], f["time_s"]) for f in frames] == [
        (int(r["frame"]), float(r["time_s"])) for r in rows]
    shared = set(rows[0]) & _keys(lines, set())
    assert {"path", "frame", "time_s", "expression"} <= shared and "time" not in _keys(lines, set())
    # with people and a baseline: the other keys
    code, people, _ = run(capsys, path, tmp_path / "cut.avi", "--jsonl", "--baseline", "self")
    assert code == 0
    keys = _keys(lines + [json.loads(line) for line in people.splitlines()], set())
    section = (REPO / "README.md").read_text(encoding="utf-8").split("*JSON lines*", 1)[1]
    section = section.split("\n- *", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    assert keys - documented == set()
    assert {"truncated", "faces_found", "error", "person", "raw_frame_probabilities"} <= keys


def test_annotation_names_match_the_readme(capsys, face, tmp_path):
    from fer_tf.deploy.video import browser_video_suffix

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("subject01.happy_annotated.png", "photos__alice__smile_annotated.png",
                 "face_png_annotated.png", "face_jpg_annotated.png", "face-2_annotated.png",
                 "clip_annotated.webm", "astronaut_annotated.png"):
        assert f"`{name}`" in readme or name in readme, name
    path, rgb = face
    from PIL import Image

    (tmp_path / "photos" / "alice").mkdir(parents=True)
    Image.fromarray(rgb).save(tmp_path / "photos" / "alice" / "smile.jpg")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(rgb).save(tmp_path / folder / "face.png")
    Image.fromarray(rgb).save(tmp_path / "a" / "face.jpg")
    clip = _clip(tmp_path / "clip.mp4", rgb, 2, fourcc="mp4v")
    out = tmp_path / "out"
    code, _, err = run(capsys, path, tmp_path / "photos", clip, tmp_path / "a" / "face.png",
                       tmp_path / "a" / "face.jpg", "--annotate", out)
    assert code == 0, err
    assert sorted(os.listdir(out)) == sorted([
        "subject01.happy_annotated.png", "photos__alice__smile_annotated.png",
        f"clip_annotated{browser_video_suffix()}", "face_png_annotated.png",
        "face_jpg_annotated.png"])
    code, _, err = run(capsys, tmp_path / "a" / "face.png", tmp_path / "b" / "face.png",
                       "--annotate", tmp_path / "out2")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out2")) == ["face-2_annotated.png", "face_annotated.png"]


def test_a_normal_run_writes_no_native_log_lines(face, tmp_path):
    """stderr is empty on a photo, with the shipped .tflite and its .keras (TensorFlow loaded)."""
    path, _ = face
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for key in ("TF_CPP_MIN_LOG_LEVEL", "GLOG_minloglevel"):
        env.pop(key, None)
    for model in (MODEL, MODEL.with_suffix(".keras")):
        done = subprocess.run([sys.executable, "-m", "fer_tf.cli", "predict", "-m", str(model),
                               str(path)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert ": 1 face" in done.stdout
        assert done.stderr == "", (model.name, done.stderr[-2000:])

"""`fer-tf predict`: output formats, annotation, videos, and every kind of bad input."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_tf.cli import main  # noqa: E402
from fer_tf.data.labels import BASIC7  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_ec_model(seed=0):
    """Stand-in EC network: [B,48,48,1] normalised -> [B,7] softmax."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(7, activation="softmax")(x))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from fer_tf.deploy.export import export_model

    out = tmp_path_factory.mktemp("model")
    export_model(tiny_ec_model(), out, variants=("fp32",), labels=BASIC7)
    return out / "model_fp32.tflite"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A photo with a face, and the bad inputs: text file, truncated PNG, blank image."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    astronaut = skimage_data.astronaut()
    Image.fromarray(astronaut).save(d / "astronaut.png")
    (d / "notes.png").write_text("this is a text file, not an image\n")
    good = (d / "astronaut.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.full((200, 300), 230, np.uint8)).save(d / "blank.png")
    return d


def run(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_json_on_a_photo(capsys, model, files):
    code, out, err = run(capsys, files / "astronaut.png", "--model", model, "--json")
    assert code == 0, err
    (entry,) = json.loads(out)
    assert entry["path"] == str(files / "astronaut.png")
    (face,) = entry["faces"]
    assert set(face) == {"box", "expression", "probabilities"}
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert face["expression"] in BASIC7 and list(face["probabilities"]) == list(BASIC7)
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4


def test_text_output(capsys, model, files):
    code, out, err = run(capsys, files / "astronaut.png", "--model", model, "--top", "2",
                         "--threads", "1")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"{files / 'astronaut.png'}: 1 face"
    assert lines[1].startswith("  face 1 at x=") and lines[1].count(", ") == 1


@pytest.mark.parametrize("name, reason", [
    ("missing.png", "file not found"),
    ("notes.png", "not an image"),
    ("truncated.png", "truncated"),
    ("blank.png", "no face found"),
])
def test_each_bad_input_alone_fails(capsys, model, files, name, reason):
    code, out, err = run(capsys, files / name, "--model", model, "--json")
    assert code == 1
    assert f"{files / name}: " in err and reason in err and "nothing was processed" in err
    (entry,) = json.loads(out)
    assert entry["path"] == str(files / name) and reason in entry["error"]


def test_mixed_inputs_process_the_good_ones(capsys, model, files):
    names = ["missing.png", "notes.png", "astronaut.png", "truncated.png", "blank.png"]
    code, out, err = run(capsys, *[files / n for n in names], "--model", model, "--json")
    assert code == 3  # some inputs processed, some not
    entries = json.loads(out)
    assert [e["path"] for e in entries] == [str(files / n) for n in names]  # input order
    assert [("faces" in e) for e in entries] == [False, False, True, False, False]
    assert "4 of 5 inputs could not be processed" in err
    for n in ("missing.png", "notes.png", "truncated.png", "blank.png"):
        assert str(files / n) in err


def test_folder_recursive_with_mixed_files(capsys, model, files, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for n in ("astronaut.png", "notes.png", "truncated.png"):
        shutil.copy(files / n, folder / n)
    shutil.copy(files / "astronaut.png", folder / "sub" / "subject01")  # no extension: tried
    shutil.copy(files / "astronaut.png", folder / "sub" / "subject02.happy")  # unknown: sniffed
    (folder / "README.txt").write_text("ignored: not an image extension\n")
    (folder / ".hidden.png").write_text("ignored: hidden\n")
    code, out, err = run(capsys, folder, "--model", model, "--json",
                         "--annotate", tmp_path / "annotated")
    assert code == 3
    by_name = {pathlib.Path(e["path"]).name: e for e in json.loads(out)}
    assert set(by_name) == {"astronaut.png", "notes.png", "truncated.png", "subject01",
                            "subject02.happy"}
    assert {n for n, e in by_name.items() if "faces" in e} == {"astronaut.png", "subject01",
                                                               "subject02.happy"}
    written = sorted(p.name for p in (tmp_path / "annotated").iterdir())
    assert written == ["photos__astronaut_annotated.png", "photos__sub__subject01_annotated.png",
                       "photos__sub__subject02.happy_annotated.png"]
    assert "2 of 5 inputs" in err


def test_annotate_single_file(capsys, model, files, tmp_path):
    from PIL import Image

    target = tmp_path / "out.png"
    code, _, err = run(capsys, files / "astronaut.png", "--model", model, "--annotate", target)
    assert code == 0, err
    image = Image.open(target)
    assert image.size == (512, 512) and image.mode == "RGB"


def test_video(capsys, model, files, tmp_path):
    import cv2
    from PIL import Image

    frame = np.asarray(Image.open(files / "astronaut.png").resize((256, 256)))
    for name, fourcc in (("clip.avi", "MJPG"), ("clip.mp4", "mp4v")):
        writer = cv2.VideoWriter(str(tmp_path / name), cv2.VideoWriter_fourcc(*fourcc), 5,
                                 (256, 256))
        for _ in range(4):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    code, out, err = run(capsys, tmp_path / "clip.avi", tmp_path / "clip.mp4", "--model", model,
                         "--json", "--window", "3")
    assert code == 0, err
    for entry in json.loads(out):
        assert entry["summary"]["frames"] == 4 and entry["summary"]["frames_with_face"] == 4
        assert len(entry["frames"]) == 4
        assert all(f["faces"][0]["track"] == 0 for f in entry["frames"])
    code, out, err = run(capsys, tmp_path / "clip.mp4", "--model", model)
    assert code == 0 and "video, 4 frames, a face in 4" in out


def test_bad_model_files(capsys, files, tmp_path, model):
    (tmp_path / "garbage.tflite").write_bytes(os.urandom(2048))
    (tmp_path / "text.keras").write_text("hello")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(model.read_bytes()[:5000])
    for bad in ("garbage.tflite", "text.keras", "truncated.tflite", "missing.tflite"):
        code, out, err = run(capsys, files / "astronaut.png", "--model", tmp_path / bad)
        assert code == 2, (bad, err)
        assert err.startswith("fer-tf predict: error: ") and bad in err
        assert len(err.strip().splitlines()) == 1


def test_subprocess_exit_codes_and_no_tensorflow(model, files):
    """The installed entry point: real exit codes, no traceback, LiteRT path without TensorFlow."""
    code = (
        "import sys\n"
        "from fer_tf.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-c", code, "predict", "--model", str(model)]
    ok = subprocess.run(argv + [str(files / "astronaut.png"), str(files / "notes.png")],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 3, ok.stderr[-2000:]
    assert "Traceback" not in ok.stderr and "notes.png: not an image" in ok.stderr
    assert "HEAVY []" in ok.stderr
    bad = subprocess.run(argv + [str(files / "blank.png")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert bad.returncode == 1 and "no face found" in bad.stderr and "Traceback" not in bad.stderr


def test_command_modules_import_nothing_heavy():
    code = (
        "import sys\n"
        "import fer_tf.commands.predict, fer_tf.commands.export\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'numpy', 'cv2', 'mediapipe') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- nothing lost --------------------------------------------------------------------------------


def test_existing_outputs_are_never_replaced_without_overwrite(capsys, model, files, tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"keep me")
    code, _, err = run(capsys, files / "astronaut.png", "--model", model, "--annotate", target)
    assert code == 2 and target.read_bytes() == b"keep me"
    assert len(err.strip().splitlines()) == 1 and "exists" in err and "--overwrite" in err
    code, _, err = run(capsys, files / "astronaut.png", "--model", model, "--annotate", target,
                       "--overwrite")
    assert code == 0, err
    assert target.read_bytes()[:4] == b"\x89PNG"
    # the same for --csv, checked before anything is processed
    (tmp_path / "r.csv").write_text("old")
    code, out, err = run(capsys, files / "astronaut.png", "--model", model, "--csv", tmp_path / "r.csv")
    assert code == 2 and out == "" and (tmp_path / "r.csv").read_text() == "old"


def test_an_input_is_never_an_output(capsys, model, files, tmp_path):
    photo = tmp_path / "photo.png"
    shutil.copy(files / "astronaut.png", photo)
    before = photo.read_bytes()
    for flag in ("--annotate", "--csv"):
        code, _, err = run(capsys, photo, "--model", model, flag, photo, "--overwrite")
        assert code == 2 and "one of the inputs" in err
    assert photo.read_bytes() == before


def test_same_stem_inputs_get_distinct_outputs(capsys, model, files, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(files / "astronaut.png").save(folder / "face.png")
    Image.open(files / "astronaut.png").convert("RGB").save(folder / "face.jpg")
    shutil.copy(files / "astronaut.png", folder / "subject02.happy")
    shutil.copy(files / "astronaut.png", folder / "subject02.sad")
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "face.png", other / "face.png")
    out = tmp_path / "out"
    code, _, err = run(capsys, folder / "face.png", folder / "face.jpg", folder / "subject02.happy",
                       folder / "subject02.sad", "--model", model, "--annotate", out, "-q")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "face_jpg_annotated.png", "face_png_annotated.png", "subject02.happy_annotated.png",
        "subject02.sad_annotated.png"]
    # the suffix does not tell them apart: a counter does
    code, _, err = run(capsys, folder / "face.png", other / "face.png", folder / "face.jpg",
                       "--model", model, "--annotate", tmp_path / "out2", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == [
        "face-2_annotated.png", "face-3_annotated.png", "face_annotated.png"]
    # a rerun refuses to replace; an output folder inside the input folder is not read as input
    code, _, err = run(capsys, folder / "face.png", folder / "face.jpg", "--model", model,
                       "--annotate", out, "-q")
    assert code == 2 and "exists" in err
    inside = folder / "annotated"
    for extra in ((), ("--overwrite",)):
        code, _, err = run(capsys, folder, "--model", model, "--annotate", inside, "-q", *extra)
        assert code == 0, err
        assert len(list(inside.iterdir())) == 4


def test_unwritable_annotate_target_is_one_line(capsys, model, files):
    code, out, err = run(capsys, files / "astronaut.png", files / "blank.png", "--model", model,
                         "--annotate", files / "astronaut.png" / "sub")
    assert code == 2 and out == ""
    assert err.startswith("fer-tf predict: error: ") and len(err.strip().splitlines()) == 1


def test_annotate_file_name_needs_one_input_of_its_kind(capsys, model, files, tmp_path):
    video = _clip(files, tmp_path / "clip.avi")
    code, _, err = run(capsys, video, "--model", model, "--annotate", tmp_path / "out.png")
    assert code == 2 and "video" in err and ".webm" in err
    assert not (tmp_path / "out.png").exists()  # neither a file nor a folder
    code, _, err = run(capsys, files / "astronaut.png", files / "blank.png", "--model", model,
                       "--annotate", tmp_path / "out.png")
    assert code == 2 and "give a folder" in err and not (tmp_path / "out.png").exists()


def test_exit_codes_are_documented(capsys, model, files):
    from fer_tf.commands import predict

    for phrase in ("0 when every input", "3\nwhen some", "1 when none", "2 for a model"):
        assert phrase in predict.__doc__
    assert run(capsys, files / "astronaut.png", "--model", model)[0] == 0
    assert run(capsys, files / "astronaut.png", files / "notes.png", "--model", model)[0] == 3
    assert run(capsys, files / "notes.png", "--model", model)[0] == 1
    assert run(capsys, files / "astronaut.png", "--model", files / "notes.png")[0] == 2


def test_closed_pipe_ends_quietly(model, files, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        shutil.copy(files / "astronaut.png", folder / f"p{i}.png")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "fer_tf.cli", "predict", str(folder), "--model",
                             str(model), "--jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141
    assert b"Traceback" not in err and b"BrokenPipe" not in err and b"Exception ignored" not in err


# --- faces in ordinary photos --------------------------------------------------------------------


@pytest.fixture(scope="module")
def group(files, tmp_path_factory):
    """Four astronauts in one 1024x1024 photo."""
    from PIL import Image

    one = np.asarray(Image.open(files / "astronaut.png"))
    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.fromarray(np.vstack([np.hstack([one, one])] * 2)).save(path)
    return path


def test_max_faces_is_never_silent(capsys, model, group):
    code, out, err = run(capsys, group, "--model", model, "--json")
    assert code == 0 and len(json.loads(out)[0]["faces"]) == 4
    code, out, err = run(capsys, group, "--model", model, "--json", "--max-faces", "2")
    (entry,) = json.loads(out)
    assert code == 0 and len(entry["faces"]) == 2 and entry["faces_found"] == 4
    assert "4 faces found, the 2 largest kept (--max-faces)" in err
    code, _, err = run(capsys, group, "--model", model, "--max-faces", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--max-faces" in err


def test_both_detection_engines_find_the_group(capsys, model, group):
    for engine in ("litert", "mediapipe"):
        code, out, _ = run(capsys, group, "--model", model, "--json", "--engine", engine)
        assert code == 0 and len(json.loads(out)[0]["faces"]) == 4
    code, _, err = run(capsys, group, "--model", model, "--engine", "haar")
    assert code == 2 and "--engine" in err


def test_pixel_limit_is_configurable_and_says_so(capsys, model, group):
    code, _, err = run(capsys, group, "--model", model, "--max-pixels", "1M")
    assert code == 1 and "image too large (1024 x 1024 pixels; limit 1000000 pixels)" in err
    assert "--max-pixels" in err.splitlines()[0]
    assert run(capsys, group, "--model", model, "--max-pixels", "2M")[0] == 0
    assert run(capsys, group, "--model", model, "--max-pixels", "lots")[0] == 2


# --- outputs: CSV, JSON lines, timeline, annotated video ----------------------------------------


def _clip(files, path, frames=4, fourcc="MJPG"):
    import cv2
    from PIL import Image

    frame = np.asarray(Image.open(files / "astronaut.png").resize((256, 256)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 5, (256, 256))
    for i in range(frames):
        writer.write(cv2.cvtColor(np.roll(frame, 2 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_csv_rows_per_image_frame_and_face(capsys, model, files, group, tmp_path):
    import csv

    video = _clip(files, tmp_path / "clip.avi")
    target = tmp_path / "rows.csv"
    code, _, err = run(capsys, files / "astronaut.png", group, video, files / "notes.png",
                       "--model", model, "--csv", target, "-q")
    assert code == 3, err
    with open(target, newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        header = next(csv.reader(f))
    assert header == ["path", "frame", "time_s", "face", "x", "y", "w", "h", "expression", *BASIC7]
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
        probs = [float(row[n]) for n in BASIC7]
        assert abs(sum(probs) - 1) < 1e-4 and row["expression"] == BASIC7[int(np.argmax(probs))]
    assert [(r["frame"], r["time_s"], r["face"]) for r in by_path[str(files / "astronaut.png")]] == [
        ("0", "", "1")]
    assert [r["face"] for r in by_path[str(group)]] == ["1", "2", "3", "4"]
    frames = by_path[str(video)]
    assert [int(r["frame"]) for r in frames] == [0, 1, 2, 3]
    assert [float(r["time_s"]) for r in frames] == pytest.approx([0, 0.2, 0.4, 0.6])
    assert str(files / "notes.png") not in by_path
    # CSV on stdout
    code, out, _ = run(capsys, files / "astronaut.png", "--model", model, "--csv", "-")
    assert code == 0 and out.splitlines()[0].startswith("path,frame,time_s,face,x,y,w,h,expression")


def test_jsonl_streams_images_frames_and_errors(capsys, model, files, tmp_path):
    video = _clip(files, tmp_path / "clip.avi", frames=3)
    code, out, _ = run(capsys, files / "astronaut.png", video, files / "notes.png", "--model", model,
                       "--jsonl")
    assert code == 3
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert set(lines[0]) == {"path", "faces"}
    assert [line.get("frame") for line in lines[1:4]] == [0, 1, 2]
    assert set(lines[4]) == {"path", "fps", "summary"} and lines[4]["summary"]["frames"] == 3
    assert lines[5] == {"path": str(files / "notes.png"), "error": "not an image"}


def test_timeline_and_annotated_video(capsys, model, files, tmp_path):
    import cv2

    from fer_tf.deploy.video import browser_video_suffix

    video = _clip(files, tmp_path / "clip.avi", frames=5)
    out = tmp_path / "out"
    code, _, err = run(capsys, video, "--model", model, "--timeline", tmp_path / "t.png",
                       "--annotate", out / "a.webm")
    assert code == 0, err
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    capture = cv2.VideoCapture(str(out / "a.webm"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) in (0, 5)
    capture.release()
    # into a folder: the browser-playable default, and the timeline beside it
    code, _, err = run(capsys, video, "--model", model, "--timeline", out, "--annotate", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.webm", f"clip_annotated{browser_video_suffix()}", "clip_timeline.png"])
    # --timeline without a video is an option error
    code, _, err = run(capsys, files / "astronaut.png", "--model", model, "--timeline", out / "x.png")
    assert code == 2 and "none of the inputs is a video" in err


def test_mp4_without_h264_says_so(capsys, model, files, tmp_path, monkeypatch):
    from fer_tf.deploy import video

    monkeypatch.setattr(video, "can_encode", lambda fourcc: False)
    video = _clip(files, tmp_path / "clip.avi", frames=2)
    code, _, err = run(capsys, video, "--model", model, "--annotate", tmp_path / "a.mp4")
    assert code == 0
    assert "no H.264 encoder" in err and "browsers do not play it" in err and ".webm" in err
    assert (tmp_path / "a.mp4").stat().st_size > 0


def test_progress_bar_only_on_a_terminal():
    import io

    from fer_tf.progress import Bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Bar(3, stream=stream, rate=1e9)
        bar.advance()
        bar.detail("clip.mp4 frame 10/100", 0.1)
        bar.message("fer-tf predict: x: not an image")
        bar.close()
    assert "\r" in tty.getvalue() and "1/3 inputs" in tty.getvalue()
    assert "clip.mp4 frame 10/100" in tty.getvalue()
    assert pipe.getvalue() == "fer-tf predict: x: not an image\n"

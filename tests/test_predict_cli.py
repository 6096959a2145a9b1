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
    from fer_tf.export import export_model

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
    assert code == 0
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
    assert code == 0
    by_name = {pathlib.Path(e["path"]).name: e for e in json.loads(out)}
    assert set(by_name) == {"astronaut.png", "notes.png", "truncated.png", "subject01",
                            "subject02.happy"}
    assert {n for n, e in by_name.items() if "faces" in e} == {"astronaut.png", "subject01",
                                                               "subject02.happy"}
    written = sorted(p.name for p in (tmp_path / "annotated").iterdir())
    assert written == ["photos__astronaut_annotated.png", "photos__sub__subject01_annotated.png",
                       "photos__sub__subject02_annotated.png"]
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
    assert ok.returncode == 0, ok.stderr[-2000:]
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

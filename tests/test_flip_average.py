"""Test-time flip averaging (``fer-tf export --flip-average``; not in the paper): the inference
model averages each face's probabilities with its mirror image's, computed here independently; the
export keeps it in every artefact, says so in the sidecars, and refuses a model it cannot split."""

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from test_export import ckplus_faces, tiny_ec_model  # noqa: E402

from fer_tf.data.labels import BASIC7  # noqa: E402
from fer_tf.errors import ModelFileError  # noqa: E402
from fer_tf.model import saving  # noqa: E402
from fer_tf.model.inference_model import build_inference_model, is_flip_averaged  # noqa: E402
from fer_tf.preprocess.normalize import normalize_faces_numpy  # noqa: E402


@pytest.fixture(scope="module")
def faces(ckplus48_dir):
    return ckplus_faces(ckplus48_dir, per_class=3)


def _independent(ec, faces):
    """mean(network(normalised crop), network(its mirror image)), with NumPy's flip."""
    x = normalize_faces_numpy(faces.astype("float32")[..., None])[:, 6:54, 6:54, :]
    plain = ec.predict(x, verbose=0)
    mirrored = ec.predict(np.ascontiguousarray(x[:, :, ::-1, :]), verbose=0)
    return (plain + mirrored) / 2


def test_flip_averaged_model_matches_an_independent_average(faces):
    ec = tiny_ec_model()
    model = build_inference_model(ec, BASIC7, flip_average=True)
    assert is_flip_averaged(model) and not is_flip_averaged(build_inference_model(ec, BASIC7))
    got = model.predict(faces.astype("float32")[..., None], verbose=0)
    np.testing.assert_allclose(got, _independent(ec, faces), atol=2e-5)
    # and it differs from the plain model (the stand-in network is not symmetric)
    plain = build_inference_model(ec, BASIC7).predict(faces.astype("float32")[..., None], verbose=0)
    assert np.abs(got - plain).max() > 1e-3


def test_a_face_and_its_mirror_image_get_the_same_probabilities(faces):
    model = build_inference_model(tiny_ec_model(), BASIC7, flip_average=True)
    x = faces.astype("float32")[..., None]
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               model.predict(np.ascontiguousarray(x[:, :, ::-1]), verbose=0), atol=2e-5)


def test_export_keeps_the_average_in_every_artefact(tmp_path, faces):
    from fer_tf.deploy.export import export_model

    ec = tiny_ec_model()
    out = tmp_path / "flip"
    report = export_model(ec, out, labels=BASIC7, variants=("fp32", "dynamic"), parity_faces=faces,
                          flip_average=True)
    assert report["flip_average"] is True
    assert report["variants"]["fp32"]["parity"]["max_abs_prob_diff"] < 1e-4
    expected = _independent(ec, faces)
    interpreter = saving.load_tflite(out / "model_fp32.tflite")
    got = np.concatenate([_run(interpreter, face) for face in faces])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    for name in ("model.tflite", "model_fp32.tflite", "inference.keras", "saved_model"):
        assert saving.read_metadata(out / name)["flip_average"] is True, name
    reloaded = saving.load_model(out / "inference.keras")
    assert is_flip_averaged(reloaded)
    assert json.loads((out / "export_report.json").read_text())["flip_average"] is True
    # a plain export says nothing of it in its sidecars
    plain = export_model(ec, tmp_path / "plain", labels=BASIC7, variants=("fp32",))
    assert plain["flip_average"] is False
    assert "flip_average" not in saving.read_metadata(tmp_path / "plain" / "model.tflite")


def _run(interpreter, face):
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, 60, 60, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], face.astype("float32")[None, ..., None])
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def test_an_exported_inference_model_can_be_flip_averaged_again(faces):
    ec = tiny_ec_model()
    exported = build_inference_model(ec, BASIC7)
    again = build_inference_model(exported, BASIC7, flip_average=True)
    got = again.predict(faces.astype("float32")[..., None], verbose=0)
    np.testing.assert_allclose(got, _independent(ec, faces), atol=2e-5)
    # one already averaged is kept as it is (not averaged twice)
    assert build_inference_model(again, BASIC7, flip_average=True) is again


def test_a_foreign_face_model_is_refused_with_advice():
    face = keras.Input((60, 60, 1))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(face))
    model = keras.Model(face, keras.layers.Dense(7, activation="softmax")(x))
    with pytest.raises(ModelFileError, match="export the training checkpoint"):
        build_inference_model(model, BASIC7, flip_average=True)


def test_export_command_flip_average_with_an_int8_variant(tmp_path, ckplus48_dir, capsys):
    """`fer-tf export --flip-average`, int8 included (its float islands are found in a model that
    runs the network twice); every variant keeps the average and says so."""
    from fer_tf.cli import main
    from fer_tf.model.network import build_model

    ckpt = tmp_path / "softmax.keras"
    build_model("softmax", labels=BASIC7).save(ckpt)  # a checkpoint knows its labels
    rc = main(["export", str(ckpt), "--output", str(tmp_path / "out"), "--flip-average",
               "--calibration", str(ckplus48_dir), "--parity-data", str(ckplus48_dir),
               "--format", "ckplus48", "--calibration-size", "16", "--parity-size", "16",
               "--variants", "fp32,int8", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    report = json.loads(out)
    assert report["flip_average"] is True
    for variant in ("fp32", "int8"):
        assert report["variants"][variant]["status"] == "ok", report["variants"][variant]
        meta = saving.read_metadata(tmp_path / "out" / f"model_{variant}.tflite")
        assert meta["flip_average"] is True
    assert report["variants"]["fp32"]["parity"]["top1_agreement"] == 1.0

"""Export round trip: SavedModel + four TFLite variants from a tiny stand-in EC network, parity on
real CK+48 faces, safe loading and every kind of bad model file."""

import json
import pathlib
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_tf.model import saving  # noqa: E402
from fer_tf.data.labels import BASIC7  # noqa: E402
from fer_tf.errors import ConfigError, ModelFileError  # noqa: E402
from fer_tf.deploy.choose import choose_default, parity  # noqa: E402
from fer_tf.deploy.convert import VARIANTS  # noqa: E402
from fer_tf.deploy.export import DEFAULT_TFLITE, export_model  # noqa: E402
from fer_tf.model.inference_model import build_inference_model, check_classifier  # noqa: E402


def tiny_ec_model(classes=7, seed=0, input_shape=(48, 48, 1)):
    """A small EC network with the package's contract: [B,48,48,1] normalised -> [B,C] softmax.

    Its middle block is the real network's conv -> batch norm -> per-channel PReLU (with batch-norm
    statistics that are not the identity, so that folding them into the convolution is visible).
    The last layer's weights are large so that the top-1 class of most faces is well separated.
    """
    from fer_tf.model.blocks import conv_prelu

    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, name="normalised_face")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = conv_prelu(x, 16, 3, strides=2, name="block")
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(classes, activation="softmax", name="expression")
    out = dense(x)
    model = keras.Model(inp, out, name="tiny_ec")
    rng = np.random.default_rng(seed)
    kernel, bias = dense.get_weights()
    dense.set_weights([rng.normal(0.0, 3.0, kernel.shape).astype("float32"), bias])
    if input_shape == (48, 48, 1):
        bn, prelu = model.get_layer("block_bn"), model.get_layer("block_prelu")
        bn.set_weights([rng.uniform(0.5, 2.0, 16), rng.normal(0, 0.2, 16), rng.normal(0, 0.2, 16),
                        rng.uniform(0.5, 2.0, 16)])  # gamma, beta, moving mean, moving variance
        prelu.set_weights([rng.uniform(0.05, 0.3, prelu.get_weights()[0].shape)])
    return model


def ckplus_faces(root, per_class=8):
    """Real CK+48 faces resized to 60x60 (uint8 [n, 60, 60]), a few of each class."""
    from PIL import Image

    faces = []
    for folder in sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.png"))[::7][:per_class]:
            img = Image.open(path).convert("L").resize((60, 60), Image.BILINEAR)
            faces.append(np.asarray(img, dtype=np.uint8))
    return np.stack(faces)


@pytest.fixture(scope="module")
def faces(ckplus48_dir):
    return ckplus_faces(ckplus48_dir)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, faces):
    out = tmp_path_factory.mktemp("export")
    ec = tiny_ec_model()
    report = export_model(ec, out, calibration_faces=faces[::2], labels=BASIC7,
                          parity_faces=faces, source="tiny-test-model")
    return out, report, ec


def test_all_artefacts_written_with_metadata(exported, faces):
    out, report, _ = exported
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "inference.keras").is_file()
    for variant in VARIANTS:
        entry = report["variants"][variant]
        assert entry["status"] == "ok", entry
        path = out / f"model_{variant}.tflite"
        assert path.is_file() and entry["size"] == path.stat().st_size > 0
        meta = saving.read_metadata(path)
        assert meta["labels"] == list(BASIC7)
        assert meta["input"] == {"shape": [60, 60, 1], "dtype": "float32", "range": [0, 255],
                                 "kind": "aligned grey face crop, eye-levelled, 60x60"}
        assert meta["format_version"] == 1 and meta["source"] == "tiny-test-model"
        assert meta["preprocessing"] and meta["input_dtype"] == meta["output_dtype"] == "float32"
    for name in ("saved_model", "inference"):
        assert saving.read_metadata(out / name)["labels"] == list(BASIC7)
    assert report["artefacts"]["saved_model"]["size"] > 0
    on_disk = json.loads((out / "export_report.json").read_text())
    assert set(on_disk["variants"]) == set(VARIANTS)
    # quantised variants are smaller than fp32
    sizes = {v: report["variants"][v]["size"] for v in VARIANTS}
    assert sizes["float16"] < sizes["fp32"] and sizes["dynamic"] < sizes["fp32"]
    assert saving.read_metadata(out / "model_int8.tflite")["calibration_faces"] == len(faces[::2])


def test_default_model_is_the_fastest_variant_that_keeps_parity(exported):
    out, report, _ = exported
    default = report["default"]
    variant = default["variant"]
    assert variant in VARIANTS and default["path"] == str(out / DEFAULT_TFLITE)
    assert (out / DEFAULT_TFLITE).read_bytes() == (out / f"model_{variant}.tflite").read_bytes()
    entries = report["variants"]
    for entry in entries.values():
        assert entry["latency_ms"]["median"] > 0 and entry["latency_ms"]["rounds"] >= 3
    assert entries[variant]["parity"]["top1_agreement"] >= 0.99
    assert choose_default(entries) == (variant, default["reason"])
    # the input contract of the sidecar is the variant's, plus which variant it is and why
    meta = saving.read_metadata(out / DEFAULT_TFLITE)
    assert meta == {**saving.read_metadata(out / f"model_{variant}.tflite"),
                    "default_of": variant, "default_reason": default["reason"]}
    assert meta["input"]["shape"] == [60, 60, 1] and meta["input"]["range"] == [0, 255]
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["default"] == default


def _entry(ms, agree, status="ok", mean_diff=0.01):
    return {"status": status, "latency_ms": {"median": ms},
            "parity": None if agree is None else {"top1_agreement": agree,
                                                  "mean_abs_prob_diff": mean_diff}}


def test_choose_default_rules():
    # the fastest that keeps parity; one below the bar is never chosen, however fast
    entries = {"fp32": _entry(1.3, 1.0), "dynamic": _entry(0.40, 0.992), "int8": _entry(0.30, 0.975)}
    variant, reason = choose_default(entries)
    assert variant == "dynamic" and "int8 97.5%" in reason
    # within 5% counts as a tie, won by the higher agreement
    entries["float16"] = _entry(0.39, 0.991)
    assert choose_default(entries)[0] == "dynamic"
    entries["float16"] = _entry(0.30, 0.991)
    assert choose_default(entries)[0] == "float16"
    # equal agreement within the tie: the smaller probability differences win, not the noise
    tied = {"dynamic": _entry(0.37, 1.0, mean_diff=0.004), "int8": _entry(0.36, 1.0, mean_diff=0.03)}
    variant, reason = choose_default(tied)
    assert variant == "dynamic" and "closer to Keras" in reason
    tied["int8"] = _entry(0.30, 1.0, mean_diff=0.03)  # clearly faster: the fastest keeps parity
    assert choose_default(tied)[0] == "int8"
    # failed variants do not count; without parity faces only fp32 can be vouched for
    assert choose_default({"dynamic": _entry(0.1, 1.0, "failed"), "fp32": _entry(1.0, 1.0)})[0] == "fp32"
    assert choose_default({"fp32": _entry(1.0, None), "dynamic": _entry(0.4, None)})[0] == "fp32"
    assert choose_default({"dynamic": _entry(0.4, None)})[0] is None
    variant, reason = choose_default({"int8": _entry(0.3, 0.9)})
    assert variant is None and "int8 90.0%" in reason


def _sized(ms, size, agree, mean_diff=0.01):
    return {**_entry(ms, agree, mean_diff=mean_diff), "size": size}


def test_choose_default_by_size_ignores_this_machines_timing():
    # on an AVX2-only CPU dynamic timed slower than fp32; on AVX512-VNNI 3x faster: by size, the
    # same file is chosen on both machines
    avx2 = {"fp32": _sized(1.11, 5_900_000, 1.0, mean_diff=0.0), "float16": _sized(1.10, 2_980_000, 1.0),
            "dynamic": _sized(1.33, 1_600_000, 0.992), "int8": _sized(1.49, 1_650_000, 0.976)}
    vnni = {**avx2, "fp32": _sized(1.04, 5_900_000, 1.0, mean_diff=0.0), "dynamic": _sized(0.37, 1_600_000, 0.992),
            "int8": _sized(0.36, 1_650_000, 0.976)}
    assert choose_default(avx2)[0] == "fp32" and choose_default(vnni)[0] == "dynamic"
    for entries in (avx2, vnni):
        variant, reason = choose_default(entries, prefer="size")
        assert variant == "dynamic" and reason.startswith("smallest of the variants")
        assert "dynamic 1.60 MB (99.2%)" in reason and "below the agreement bar: int8 97.6%" in reason
    # below the bar, the smallest is never chosen; within 5% of the smallest, fidelity decides
    assert choose_default({**avx2, "dynamic": _sized(1.3, 1_600_000, 0.989)}, prefer="size")[0] == "float16"
    tied = {"dynamic": _sized(0.4, 1_600_000, 0.995), "int8": _sized(0.3, 1_560_000, 0.995, mean_diff=0.03)}
    variant, reason = choose_default(tied, prefer="size")
    assert variant == "dynamic" and "within 5% of int8 and closer to Keras" in reason
    with pytest.raises(ValueError, match="prefer"):
        choose_default(tied, prefer="accuracy")


def test_graph_cleanup_and_xnnpack_coverage(exported):
    """Batch norm is folded into the convolution, the histogram is a builtin segment sum (no one-hot,
    no Flex op), and XNNPACK runs every operation of the network: what falls back to LiteRT's own
    kernels is the preprocessing's (segment sum, cumulative sum, gather, index arithmetic)."""
    from fer_tf.deploy.convert import float_ops, xnnpack_coverage

    out, report, _ = exported
    preprocessing = {"ADD", "CAST", "CUMSUM", "FILL", "GATHER", "GREATER", "MUL", "PACK", "RANGE",
                     "RESHAPE", "SHAPE", "STRIDED_SLICE", "UNSORTED_SEGMENT_SUM", "DIV", "SUB",
                     "MAXIMUM", "MINIMUM", "MEAN", "SUM", "SQRT", "SQUARED_DIFFERENCE", "ROUND", "RELU",
                     "DEQUANTIZE"}  # float16: the preprocessing's constants, widened once
    for variant in VARIANTS:
        path = out / f"model_{variant}.tflite"
        interpreter = saving.load_tflite(path)
        tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
        names = [op["op_name"] for op in interpreter._get_ops_details()]
        assert "UNSORTED_SEGMENT_SUM" in names and "ONE_HOT" not in names, variant
        assert not any(n.startswith("Flex") or n == "CUSTOM" for n in names), variant
        network_ops = [op["op_name"] for op in interpreter._get_ops_details()
                       if not any("face_preprocessing" in tensors.get(t, "") for t in op["outputs"])]
        assert "MUL" not in network_ops and "ADD" not in network_ops, (variant, network_ops)
        assert network_ops.count("CONV_2D") == 2 and "PRELU" in network_ops, (variant, network_ops)
        coverage = report["variants"][variant]["xnnpack"]
        assert coverage == xnnpack_coverage(path) and coverage["partitions"] >= 1
        assert set(coverage["fallback_ops"]) <= preprocessing, (variant, coverage)
        assert "UNSORTED_SEGMENT_SUM" in coverage["fallback_ops"]
    # int8: the convolutions are int8; PReLU and softmax stay float32 so that XNNPACK takes them
    meta = saving.read_metadata(out / "model_int8.tflite")
    assert meta["float_op_types"] == ["PRELU", "SOFTMAX"]
    assert {"PRELU", "SOFTMAX"} <= set(float_ops(out / "model_int8.tflite"))


def test_every_variant_runs_in_litert(exported, faces):
    from fer_tf.deploy.runners import TFLiteRunner

    out, _, _ = exported
    for variant in VARIANTS:
        interpreter = saving.load_tflite(out / f"model_{variant}.tflite")
        (inp,) = interpreter.get_input_details()
        assert list(inp["shape_signature"]) == [-1, 60, 60, 1]
        assert inp["dtype"] == np.float32  # float interface for every variant, int8 included
        probs = TFLiteRunner(out / f"model_{variant}.tflite")(faces[:5])
        assert probs.shape == (5, 7)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-2)


def test_parity_with_keras(exported, faces):
    out, report, ec = exported
    inference = build_inference_model(ec, BASIC7)
    expected = inference.predict(faces.astype("float32")[..., None], verbose=0)
    top2 = np.sort(expected, axis=1)[:, -2:]
    separated = (top2[:, 1] - top2[:, 0]) > 0.05
    assert separated.sum() >= len(faces) // 2  # the stand-in model is decisive on most faces

    fp32 = report["variants"]["fp32"]["parity"]
    assert fp32["n"] == len(faces)
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_prob_diff"] < 1e-4
    for variant in ("float16", "dynamic"):
        p = report["variants"][variant]["parity"]
        assert p["max_abs_prob_diff"] < 0.05, (variant, p)
        sub = parity(inference, out / f"model_{variant}.tflite", faces[separated])
        assert sub["top1_agreement"] >= 0.99, (variant, sub)
    int8 = report["variants"]["int8"]["parity"]
    assert int8["n"] == len(faces) and int8["max_abs_prob_diff"] < 0.2  # loose: report only
    # the preprocessing stays float32 in the int8 variant, the network is int8
    meta = saving.read_metadata(out / "model_int8.tflite")
    assert meta["float_layers"] == ["face_preprocessing"], meta
    assert "CONV_2D" not in (meta["float_ops"] or []) and "CUMSUM" in meta["float_ops"]
    assert "FULLY_CONNECTED" not in meta["float_ops"]


def test_saved_model_serving_signature(exported, faces):
    import tensorflow as tf

    out, _, ec = exported
    loaded = tf.saved_model.load(str(out / "saved_model"))
    fn = loaded.signatures["serving_default"]
    (result,) = fn(face=tf.constant(faces[:4].astype("float32")[..., None])).values()
    expected = build_inference_model(ec).predict(faces[:4].astype("float32")[..., None], verbose=0)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)


def test_inference_keras_loads_in_safe_mode(exported, faces):
    out, _, ec = exported
    model = saving.load_model(out / "inference.keras")
    assert check_classifier(model) == "face"
    x = faces[:3].astype("float32")[..., None]
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               build_inference_model(ec).predict(x, verbose=0), atol=1e-6)


def test_int8_without_calibration_is_skipped(tmp_path, faces):
    report = export_model(tiny_ec_model(seed=1), tmp_path, variants=("fp32", "int8"),
                          labels=BASIC7)
    assert report["variants"]["fp32"]["status"] == "ok"
    assert report["variants"]["int8"]["status"] == "skipped"
    assert not (tmp_path / "model_int8.tflite").exists()
    # no parity faces: fp32 is the default, the one variant that needs no check
    assert report["default"]["variant"] == "fp32"
    assert saving.read_metadata(tmp_path / DEFAULT_TFLITE)["default_of"] == "fp32"


def test_labels_are_required_and_checked(tmp_path):
    with pytest.raises(ConfigError, match="labels"):
        export_model(tiny_ec_model(), tmp_path, variants=("fp32",))
    with pytest.raises(ConfigError, match="6 labels"):
        build_inference_model(tiny_ec_model(), BASIC7[:6])


def test_joint_model_checkpoint_exports(tmp_path, faces):
    models = pytest.importorskip("fer_tf.model.network")
    joint = models.build_model("softmax", labels=BASIC7)
    ckpt = tmp_path / "ckpt.keras"
    joint.save(ckpt)
    report = export_model(ckpt, tmp_path / "out", variants=("fp32",), parity_faces=faces[:10])
    assert report["labels"] == list(BASIC7) and report["source"] == str(ckpt)
    assert report["variants"]["fp32"]["parity"]["top1_agreement"] == 1.0
    inference = saving.load_model(tmp_path / "out" / "inference.keras")
    # only the EC branch is exported: one output of probabilities
    assert len(inference.outputs) == 1 and inference.outputs[0].shape[-1] == 7


# --- bad model files ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, exported):
    out, _, _ = exported
    d = tmp_path_factory.mktemp("bad")
    good_keras = (out / "inference.keras").read_bytes()
    good_tflite = (out / "model_fp32.tflite").read_bytes()
    (d / "truncated.keras").write_bytes(good_keras[: len(good_keras) // 2])
    (d / "text.keras").write_text("this is not a model\n")
    (d / "empty.keras").write_bytes(b"")
    (d / "garbage.tflite").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "text.tflite").write_text("hello\n" * 100)
    (d / "truncated.tflite").write_bytes(good_tflite[: len(good_tflite) // 3])
    with zipfile.ZipFile(d / "notmodel.keras", "w") as z:
        z.writestr("readme.txt", "a zip, but no Keras model inside")
    # a real Keras model of the wrong shape (RGB 32x32 input)
    wrong = tiny_ec_model(input_shape=(32, 32, 3))
    wrong.save(d / "wrong_shape.keras")
    # a model with the right input but the wrong output (a feature map, not probabilities)
    inp = keras.Input((60, 60, 1))
    keras.Model(inp, keras.layers.Conv2D(2, 3)(inp)).save(d / "wrong_output.keras")
    return d


@pytest.mark.parametrize("name, message", [
    ("missing.keras", "not found"),
    ("truncated.keras", "truncated"),
    ("text.keras", "not a Keras model file"),
    ("empty.keras", "empty"),
    ("notmodel.keras", "no config.json"),
    ("wrong_shape.keras", "input shape is"),
    ("wrong_output.keras", "output"),
])
def test_bad_keras_files(bad_files, name, message):
    with pytest.raises(ModelFileError, match=message) as info:
        saving.load_model(bad_files / name)
    assert name in str(info.value)
    assert "fer-tf" in str(info.value)  # says what to do


@pytest.mark.parametrize("name, message", [
    ("missing.tflite", "not found"),
    ("garbage.tflite", "not a TFLite model"),
    ("text.tflite", "not a TFLite model"),
    ("truncated.tflite", "cannot open"),
])
def test_bad_tflite_files(bad_files, name, message):
    with pytest.raises(ModelFileError, match=message) as info:
        saving.load_tflite(bad_files / name)
    assert name in str(info.value)


def test_tflite_of_the_wrong_shape(tmp_path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_ec_model(input_shape=(32, 32, 3)))
    (tmp_path / "wrong.tflite").write_bytes(converter.convert())
    with pytest.raises(ModelFileError, match="expected one \\[batch, 60, 60, 1\\]"):
        saving.load_tflite(tmp_path / "wrong.tflite")


def test_folder_and_tflite_as_keras(tmp_path, exported):
    out, _, _ = exported
    with pytest.raises(ModelFileError, match="folder"):
        saving.load_model(tmp_path)
    with pytest.raises(ModelFileError, match="TFLite"):
        saving.load_model(out / "model_fp32.tflite")


def test_metadata_sidecar(tmp_path):
    artefact = tmp_path / "m.tflite"
    assert saving.read_metadata(artefact) is None
    with pytest.raises(ModelFileError, match="no metadata"):
        saving.read_metadata(artefact, required=True)
    saving.write_metadata(artefact, ["happy", "sad"], source="x")
    meta = saving.read_metadata(artefact)
    assert meta["labels"] == ["happiness", "sadness"] and meta["output"]["shape"] == [2]
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        saving.read_metadata(artefact)
    (tmp_path / "m.json").write_text(json.dumps({"format_version": 99, "labels": ["anger"]}))
    with pytest.raises(ModelFileError, match="format_version"):
        saving.read_metadata(artefact)
    (tmp_path / "m.json").write_text(json.dumps({"format_version": 1, "labels": ["grumpy"]}))
    with pytest.raises(ModelFileError, match="unknown expression"):
        saving.read_metadata(artefact)


@pytest.mark.integration
def test_export_command(tmp_path, ckplus48_dir, capsys):
    models = pytest.importorskip("fer_tf.model.network")
    from fer_tf.cli import main

    ckpt = tmp_path / "ckpt.keras"
    models.build_model("softmax", labels=BASIC7).save(ckpt)
    rc = main(["export", str(ckpt), "--output", str(tmp_path / "out"),
               "--calibration", str(ckplus48_dir), "--parity-data", str(ckplus48_dir),
               "--format", "ckplus48", "--calibration-size", "16", "--parity-size", "24",
               "--variants", "fp32,int8"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "model_fp32.tflite" in text and "model_int8.tflite" in text and "24 faces" in text
    assert (tmp_path / "out" / "model_int8.tflite").is_file()
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["default"]["prefer"] == "speed"
    # --prefer size: the smallest variant that keeps parity, whatever this machine's timing
    rc = main(["export", str(ckpt), "--output", str(tmp_path / "small"), "--parity-data", str(ckplus48_dir),
               "--format", "ckplus48", "--parity-size", "24", "--variants", "fp32,float16", "--prefer", "size"])
    assert rc == 0, capsys.readouterr().out
    report = json.loads((tmp_path / "small" / "export_report.json").read_text())
    assert report["default"]["prefer"] == "size"
    assert (report["default"]["variant"], report["default"]["reason"]) == choose_default(report["variants"], prefer="size")
    kept = [v for v, e in report["variants"].items() if e["parity"]["top1_agreement"] >= 0.99]
    assert report["variants"][report["default"]["variant"]]["size"] == min(report["variants"][v]["size"] for v in kept)
    with pytest.raises(ConfigError, match="speed or size"):
        export_model(ckpt, tmp_path / "never", variants=("fp32",), prefer="accuracy")
    assert not (tmp_path / "never").exists()
    rc = main(["export", str(tmp_path / "nope.keras"), "--output", str(tmp_path / "o2")])
    assert rc == 2 and "nope.keras" in capsys.readouterr().err

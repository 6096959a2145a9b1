"""normalize_faces / crops / FacePreprocessing: NumPy reference, edge cases, tf.data, TFLite parity."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from fer_tf.preprocess import normalize as nz  # noqa: E402
from fer_tf.data.crops import center_crop  # noqa: E402


def reference(img):
    """Independent NumPy version of the paper's preprocessing for one [H, W] image (float64)."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape
    levels = np.clip(np.rint(img), 0, 255).astype(int)
    hist, _ = np.histogram(levels, bins=256, range=(0, 256))
    cdf = np.cumsum(hist) / levels.size  # skimage.exposure.equalize_hist-style normalised CDF
    eq = cdf[levels]
    ys, xs = np.mgrid[0:h, 0:w]
    a = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], axis=1)
    coef, *_ = np.linalg.lstsq(a, eq.ravel(), rcond=None)
    resid = eq - (a @ coef).reshape(h, w)
    resid -= resid.mean()
    std = resid.std()
    return resid / std if std > nz.MIN_STD else np.zeros_like(resid)


def face_like(rng, n=1, size=60):
    """Smooth blobs + an illumination ramp + noise: images with a real histogram and a gradient."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = 90 + 60 * np.exp(-((xs - rng.uniform(0.3, 0.7)) ** 2 + (ys - 0.5) ** 2) / 0.05)
        img += rng.uniform(-50, 50) * xs + rng.uniform(-50, 50) * ys + rng.normal(0, 8, xs.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_matches_numpy_reference_for_uint8_and_float():
    rng = np.random.default_rng(0)
    x = np.concatenate([face_like(rng, 3), rng.integers(0, 256, (2, 60, 60), dtype=np.uint8)])
    want = np.stack([reference(i) for i in x])
    got = nz.normalize_faces(x).numpy()
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(nz.normalize_faces(x.astype(np.float32)).numpy(), want, atol=2e-5)
    np.testing.assert_allclose(nz.normalize_faces_numpy(x), want, atol=1e-9)
    # each image: zero mean, unit variance, no remaining plane
    assert np.allclose(got.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(got.std(axis=(1, 2)), 1, atol=1e-4)


@pytest.mark.parametrize("shape", [(60, 60), (60, 60, 1), (2, 60, 60, 1), (2, 3, 60, 60)])
def test_shapes(shape):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    got = nz.normalize_faces(x).numpy()
    assert got.shape == shape
    flat = x.reshape(-1, 60, 60)
    want = np.stack([reference(i) for i in flat]).reshape(shape)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_plane_is_removed():
    # a pure left-right ramp equalises to a ramp, which the plane fit removes almost entirely
    ramp = np.tile(np.linspace(0, 255, 60), (60, 1)).astype(np.uint8)
    img = ramp.copy()
    img[20:40, 20:40] = 255 - img[20:40, 20:40]  # structure that must survive
    out = nz.normalize_faces(img).numpy()
    assert np.isfinite(out).all()
    # the column means of the output no longer follow the ramp
    cols = out.mean(axis=0)
    assert abs(np.corrcoef(cols, np.arange(60))[0, 1]) < 0.2


@pytest.mark.parametrize("value", [0, 7, 255])
def test_constant_image_is_finite(value):
    x = np.full((3, 60, 60, 1), value, np.uint8)
    out = nz.normalize_faces(x).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, 0.0)


def test_two_level_image_is_finite():
    x = np.zeros((60, 60), np.uint8)
    x[0, 0] = 255
    out = nz.normalize_faces(x).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference(x), atol=1e-3)


def test_unknown_spatial_size_is_rejected():
    fn = tf.function(nz.normalize_faces, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    with pytest.raises(ValueError, match="statically"):
        fn.get_concrete_function()


def test_center_crop():
    x = np.arange(2 * 60 * 60).reshape(2, 60, 60, 1)
    out = center_crop(x)
    assert isinstance(out, np.ndarray) and out.shape == (2, 48, 48, 1)  # NumPy in, NumPy out
    np.testing.assert_array_equal(out, x[:, 6:54, 6:54])
    tensor = center_crop(keras.ops.convert_to_tensor(x))  # a tensor stays a tensor
    assert keras.ops.is_tensor(tensor)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tensor), x[:, 6:54, 6:54])
    np.testing.assert_array_equal(center_crop(x[:, 1:, 2:, 0], 48), x[:, 6:54, 7:55, 0])  # 59x58
    assert center_crop(x[0, :, :, 0]).shape == (48, 48)
    with pytest.raises(ValueError):
        center_crop(np.zeros((40, 40)))


def test_resize_face():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    out = nz.resize_face(img)
    assert out.shape == (60, 60) and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(img.mean())) < 3
    assert nz.resize_face(rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)).shape == (3, 60, 60)
    same = rng.integers(0, 256, (60, 60), dtype=np.uint8)
    np.testing.assert_array_equal(nz.resize_face(same), same)
    t = nz.resize_face(tf.constant(img[None, :, :, None]))
    assert tuple(t.shape) == (1, 60, 60, 1) and t.dtype == tf.float32


def test_layer_output_and_serialization(tmp_path):
    rng = np.random.default_rng(3)
    x = face_like(rng, 2)[..., None].astype(np.float32)
    layer = nz.FacePreprocessing()
    out = layer(x).numpy()
    assert out.shape == (2, 48, 48, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.stack([reference(i[:, :, 0]) for i in x])[:, 6:54, 6:54, None],
                               atol=2e-5)
    assert layer(x[..., 0]).shape == (2, 48, 48, 1)
    clone = nz.FacePreprocessing.from_config(layer.get_config())
    assert clone.crop_size == 48
    inp = keras.Input((60, 60, 1))
    model = keras.Model(inp, nz.FacePreprocessing()(inp))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x).numpy(), out, atol=1e-6)


def test_tflite_builtins_parity(tmp_path):
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    inp = keras.Input((60, 60, 1))
    model = keras.Model(inp, nz.FacePreprocessing()(inp))
    model.export(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops allowed
    flat = converter.convert()
    rng = np.random.default_rng(4)
    x = np.concatenate([face_like(rng, 3), np.full((1, 60, 60), 9, np.uint8)])[..., None]
    x = x.astype(np.float32)
    interp = interpreter_mod.Interpreter(model_content=flat)
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)


def test_histogram_methods_count_and_normalise_identically():
    rng = np.random.default_rng(5)
    x = np.concatenate([face_like(rng, 3), rng.integers(0, 256, (2, 60, 60), dtype=np.uint8),
                        np.full((1, 60, 60), 7, np.uint8)])
    levels = tf.constant(x.reshape(len(x), -1).astype(np.int32))
    want = np.stack([np.bincount(v, minlength=256) for v in x.reshape(len(x), -1)])
    for method in ("segment", "onehot", "segment_flat"):
        np.testing.assert_array_equal(nz._histograms(levels, method).numpy(), want)
    base = nz.normalize_faces(x, histogram="segment").numpy()
    for method in ("onehot", "segment_flat"):
        np.testing.assert_array_equal(nz.normalize_faces(x, histogram=method).numpy(), base)
    with pytest.raises(ValueError, match="histogram"):
        nz.normalize_faces(x, histogram="bincount")


def test_face_preprocessing_histogram_option_and_old_configs():
    layer = nz.FacePreprocessing()
    assert layer.histogram == nz.EXPORT_HISTOGRAM == "segment_flat"
    assert nz.FacePreprocessing.from_config(layer.get_config()).histogram == "segment_flat"
    old = {k: v for k, v in layer.get_config().items() if k != "histogram"}  # saved before the option
    assert nz.FacePreprocessing.from_config(old).histogram == nz.EXPORT_HISTOGRAM
    assert nz.FacePreprocessing(histogram="onehot").get_config()["histogram"] == "onehot"
    with pytest.raises(ValueError, match="histogram"):
        nz.FacePreprocessing(histogram="nope")


def _tflite_ops(flat):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=flat,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return {op["op_name"] for op in interp._get_ops_details()}


@pytest.mark.parametrize("method", ["segment_flat", "segment", "onehot"])
def test_every_histogram_method_converts_to_builtins_only(method):
    """No Flex (SELECT_TF_OPS) kernel: the standalone LiteRT runtime runs the layer."""
    pytest.importorskip("ai_edge_litert.interpreter")
    layer = nz.FacePreprocessing(histogram=method)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, 60, 60, 1], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], layer)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    names = _tflite_ops(converter.convert())
    assert not any(n.startswith("Flex") or n == "CUSTOM" for n in names), names
    if method.startswith("segment"):
        assert "UNSORTED_SEGMENT_SUM" in names and "ONE_HOT" not in names
    else:
        assert "ONE_HOT" in names

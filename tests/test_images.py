"""Safe image loading: every mode gives uint8 grey (or RGB), every failure an ImageError."""

import io

import fixtures_data as fx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer_tf.data.images import load_image, load_image_rgb
from fer_tf.errors import ImageError

GREY = fx.face(7, (40, 30))  # [30, 40]


def _check(path, reason):
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.reason.startswith(reason)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError):
        load_image_rgb(path)
    return info.value


# --- modes ------------------------------------------------------------------------------------


def test_grey_png_roundtrip(tmp_path):
    Image.fromarray(GREY).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), GREY)
    rgb = load_image_rgb(tmp_path / "a.png")
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 1], GREY)


def test_16bit(tmp_path):
    Image.fromarray(GREY.astype(np.uint16) * 257).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    np.testing.assert_array_equal(load_image(tmp_path / "a16.png"), GREY)
    assert load_image_rgb(tmp_path / "a16.png").shape == (30, 40, 3)


def test_32bit_int_and_float(tmp_path):
    Image.fromarray(GREY.astype(np.int32) * 257).save(tmp_path / "i.tiff")
    np.testing.assert_array_equal(load_image(tmp_path / "i.tiff"), GREY)
    Image.fromarray(GREY.astype(np.float32) / 255.0).save(tmp_path / "f.tiff")
    assert np.abs(load_image(tmp_path / "f.tiff").astype(int) - GREY).max() <= 1
    nan = GREY.astype(np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan * 1000.0).save(tmp_path / "nan.tiff")
    out = load_image(tmp_path / "nan.tiff")
    assert out.dtype == np.uint8 and out.max() == 255 and out[0, 0] == 0


def test_palette_and_transparency(tmp_path):
    Image.fromarray(GREY).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), GREY)
    Image.fromarray(GREY).convert("P").save(tmp_path / "pt.png", transparency=int(GREY[0, 0]))
    out = load_image(tmp_path / "pt.png")
    assert out[0, 0] == 255  # transparent index composited on white
    keep = GREY != GREY[0, 0]
    np.testing.assert_array_equal(out[keep], GREY[keep])
    Image.fromarray(np.dstack([GREY] * 3)).convert("P").save(tmp_path / "p.tiff")
    assert load_image(tmp_path / "p.tiff").shape == (30, 40)


def test_rgba_and_la(tmp_path):
    alpha = np.full_like(GREY, 255)
    alpha[:, :10] = 0
    Image.fromarray(np.dstack([GREY, GREY, GREY, alpha])).save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert (out[:, :10] == 255).all()
    np.testing.assert_array_equal(out[:, 10:], GREY[:, 10:])
    Image.fromarray(np.dstack([GREY, alpha])).save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), out)
    assert (load_image_rgb(tmp_path / "rgba.png")[:, :10] == 255).all()


def test_cmyk_and_1bit(tmp_path):
    Image.fromarray(np.dstack([GREY] * 3)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (30, 40) and np.abs(out.astype(int) - GREY).mean() < 12
    assert load_image_rgb(tmp_path / "c.jpg").shape == (30, 40, 3)
    Image.fromarray(GREY > 127).save(tmp_path / "b.png")
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), np.where(GREY > 127, 255, 0))


def test_non_ascii_path_with_spaces(tmp_path):
    path = tmp_path / "dossier à visages" / "Zoë 表情 1.png"
    fx.save(path, 3)
    np.testing.assert_array_equal(load_image(path), fx.face(3))
    np.testing.assert_array_equal(load_image(str(path)), fx.face(3))


def test_extreme_aspect_ratio_is_returned(tmp_path):
    Image.new("L", (10000, 2), 9).save(tmp_path / "thin.png")
    out = load_image(tmp_path / "thin.png")
    assert out.shape == (2, 10000) and (out == 9).all()


# --- failures ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    _check(tmp_path / "nope.png", "file not found")


def test_folder_is_not_a_file(tmp_path):
    _check(tmp_path, "not a file")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    _check(tmp_path / "e.png", "empty file (0 bytes)")


def test_text_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    _check(tmp_path / "notes.jpg", "not an image")


def test_truncated_png_and_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(fx.face(1, (200, 200))).save(buf, format="PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _check(tmp_path / "t.png", "truncated or corrupt image")
    buf = io.BytesIO()
    Image.fromarray(fx.face(1, (200, 200))).save(buf, format="JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    _check(tmp_path / "t.jpg", "truncated or corrupt image")


def test_corrupt_data(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(fx.face(1, (64, 64))).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    for i in range(60, len(data) - 20):
        data[i] ^= 0x5A
    (tmp_path / "c.png").write_bytes(bytes(data))
    _check(tmp_path / "c.png", "truncated or corrupt image")


def test_decompression_bomb_header(tmp_path):
    path = fx.png_header_only(tmp_path / "bomb.png", 10000, 10000)
    err = _check(path, "image too large")
    assert "10000 x 10000" in err.reason and "limit 40000000" in err.reason
    huge = fx.png_header_only(tmp_path / "huge.png", 100000, 100000)
    _check(huge, "image too large")


def test_low_max_pixels(tmp_path):
    fx.save(tmp_path / "a.png", size=(100, 50))
    with pytest.raises(ImageError, match=r"image too large \(100 x 50 pixels; limit 1000 pixels\)"):
        load_image(tmp_path / "a.png", max_pixels=1000)
    assert load_image(tmp_path / "a.png", max_pixels=5000).shape == (50, 100)


def test_one_by_one(tmp_path):
    Image.new("L", (1, 1), 5).save(tmp_path / "dot.png")
    _check(tmp_path / "dot.png", "image too small (1x1)")
    assert load_image(tmp_path / "dot.png", min_side=1).shape == (1, 1)


# --- property ---------------------------------------------------------------------------------

_FORMATS = {"PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
            "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"),
            "JPEG": ("L", "RGB", "CMYK"), "GIF": ("L", "P"), "BMP": ("1", "L", "P", "RGB")}


_PAIRS = [(fmt, mode) for fmt, modes in sorted(_FORMATS.items()) for mode in modes]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=st.sampled_from(_PAIRS),
       w=st.integers(1, 70), h=st.integers(1, 70), seed=st.integers(0, 1000),
       cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_random_images(tmp_path_factory, pair, w, h, seed, cut):
    """Any mode, format, size and truncation: a uint8 [h, w] array or an ImageError."""
    fmt, mode = pair
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode in ("I", "I;16", "F"):
        values = rng.integers(0, 65536, (h, w)).astype(np.float32 if mode == "F" else np.int32)
        image = Image.fromarray(values)
        image = image.convert("I;16") if mode == "I;16" else image
    else:
        image = base.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    data = buf.getvalue()
    if cut is not None:
        data = data[: int(len(data) * cut)]
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    path.write_bytes(data)
    try:
        out = load_image(path)
    except ImageError as exc:
        assert exc.path == str(path)
        return
    assert out.dtype == np.uint8 and out.shape == (h, w)
    assert load_image_rgb(path).shape == (h, w, 3)


def test_pillow_bomb_limit_reason(tmp_path):
    huge = fx.png_header_only(tmp_path / "huge.png", 100000, 100000)
    err = _check(huge, "image too large")
    assert err.reason == "image too large (10000000000 pixels; limit 40000000 pixels)"

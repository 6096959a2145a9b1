"""fer_tf.feeding.augment: the paper's crop and flip as a special case, the affine extras, determinism."""

import numpy as np
import pytest

from fer_tf.feeding.augment import NUM_UNIFORMS, Augmentation, augment_faces, flip_horizontal

FULL = np.arange(60 * 60, dtype=np.float32).reshape(60, 60)


def _papers_crop(u):
    """The crop the paper's augmentation must give for one row of uniforms, worked out here
    without the library: the top-left corner is k in 0..12 when u lies in [k/13, (k+1)/13), the
    crop is mirrored when u[2] < 0.5. Returns (crop [48, 48], (dy, dx, flipped))."""
    dy, dx = (min(int(float(v) * 13), 12) for v in u[:2])
    flipped = bool(u[2] < 0.5)
    crop = FULL[dy:dy + 48, dx:dx + 48]
    return (crop[:, ::-1] if flipped else crop), (dy, dx, flipped)


def _uniforms(n, seed=0):
    return np.random.default_rng(seed).random((n, NUM_UNIFORMS), dtype=np.float32)


def test_default_is_the_papers_random_crop_and_flip():
    u = _uniforms(256)
    out = np.asarray(augment_faces(np.repeat(FULL[None, :, :, None], len(u), axis=0), u))
    assert out.shape == (len(u), 48, 48, 1)
    draws = []
    for image, row in zip(out, u):
        expected, draw = _papers_crop(row)
        np.testing.assert_array_equal(image[:, :, 0], expected, err_msg=f"uniforms {row[:3]}, crop {draw}")
        draws.append(draw)
    # the uniforms exercise every offset on both axes and both flips, so each of them was checked
    assert {d[0] for d in draws} == {d[1] for d in draws} == set(range(13))
    assert {d[2] for d in draws} == {False, True}


def test_crop_offsets_at_the_edges_of_their_bins():
    """u just inside each bin [k/13, (k+1)/13) gives offset k on both axes: uniform over 0..12."""
    k = np.arange(13)
    for u_offset in (k / 13 + 1e-4, (k + 1) / 13 - 1e-4):
        u = np.full((13, NUM_UNIFORMS), 0.9, np.float32)  # 0.9: no flip
        u[:, 0], u[:, 1] = u_offset, u_offset[::-1]
        out = np.asarray(augment_faces(np.repeat(FULL[None, :, :, None], 13, axis=0), u))
        for i in range(13):
            np.testing.assert_array_equal(out[i, :, :, 0], FULL[i:i + 48, 12 - i:60 - i])


def test_offsets_follow_the_uniforms_and_flip_can_be_switched_off():
    u = np.zeros((1, NUM_UNIFORMS), np.float32)
    u[0, 2] = 0.9  # no flip
    np.testing.assert_array_equal(np.asarray(augment_faces(FULL[None, :, :, None], u))[0, :, :, 0],
                                  FULL[:48, :48])
    u[0, :2] = 0.999
    np.testing.assert_array_equal(np.asarray(augment_faces(FULL[None, :, :, None], u))[0, :, :, 0],
                                  FULL[12:, 12:])
    u[0, 2] = 0.1  # would flip, but flipping is off
    out = augment_faces(FULL[None, :, :, None], u, Augmentation(flip=False))
    np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], FULL[12:, 12:])


def test_rotation_zoom_erasing_stay_finite_and_deterministic():
    rng = np.random.default_rng(1)
    faces = rng.normal(size=(16, 60, 60, 1)).astype(np.float32)
    aug = Augmentation(rotation=15, scale=0.2, translation=3, erasing=1.0)
    a = np.asarray(augment_faces(faces, _uniforms(16, 5), aug))
    b = np.asarray(augment_faces(faces, _uniforms(16, 5), aug))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 48, 48, 1) and np.isfinite(a).all()
    erased = [(o == 0).mean() for o in a]
    assert min(erased) > 0.01 and max(erased) < 0.5  # one rectangle of 2-20% per image (+ clipping)
    assert not np.array_equal(a, np.asarray(augment_faces(faces, _uniforms(16, 6), aug)))


def test_small_rotation_keeps_the_image_close():
    smooth = np.add.outer(np.arange(60.0), np.arange(60.0)).astype(np.float32)[None, :, :, None]
    u = np.full((1, NUM_UNIFORMS), 0.5, np.float32)
    u[0, 2], u[0, 3] = 0.9, 0.55  # no flip; angle = 0.1 * 10 = 1 degree
    out = np.asarray(augment_faces(smooth, u, Augmentation(rotation=10)))[0, :, :, 0]
    assert np.abs(out - smooth[0, 6:54, 6:54, 0]).max() < 1.5


def test_bad_shapes_are_refused_and_flip_helper():
    with pytest.raises(ValueError, match="cannot crop"):
        augment_faces(np.zeros((1, 40, 40, 1), np.float32), _uniforms(1))
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1)
    np.testing.assert_array_equal(np.asarray(flip_horizontal(x))[0, 0, :, 0], [5, 4, 3, 2, 1, 0])

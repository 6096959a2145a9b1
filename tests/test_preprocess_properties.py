"""Property-based tests (hypothesis) of the preprocessing on random faces."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fer_tf.feeding.augment import NUM_UNIFORMS, augment_faces
from fer_tf.data.crops import center_crop
from fer_tf.preprocess.normalize import normalize_faces

FACES = arrays(np.uint8, (2, 60, 60), elements=st.integers(0, 200))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(FACES)
def test_normalised_faces_are_finite_with_zero_mean_and_unit_or_zero_variance(faces):
    out = np.asarray(normalize_faces(faces))
    assert out.shape == faces.shape and out.dtype == np.float32 and np.isfinite(out).all()
    for face in out:
        assert abs(face.mean()) < 1e-4
        assert abs(face.std() - 1) < 1e-3 or np.all(face == 0)


@SETTINGS
@given(FACES, st.integers(1, 55))
def test_a_brightness_shift_does_not_change_the_result(faces, shift):
    # histogram equalisation depends only on the order of grey levels
    shifted = (faces.astype(np.int32) + shift).astype(np.uint8)
    np.testing.assert_allclose(normalize_faces(shifted), normalize_faces(faces), atol=1e-4)


@SETTINGS
@given(FACES)
def test_normalisation_commutes_with_a_horizontal_flip(faces):
    flipped = np.asarray(normalize_faces(faces[:, :, ::-1].copy()))
    np.testing.assert_allclose(flipped, np.asarray(normalize_faces(faces))[:, :, ::-1], atol=1e-4)


@SETTINGS
# (subnormal values excluded: the bilinear warp may flush them to zero, as CPUs do in TensorFlow)
@given(arrays(np.float32, (3, 60, 60, 1), elements=st.floats(-3, 3, width=32, allow_subnormal=False)),
       st.integers(0, 2**31 - 1))
def test_random_crop_is_a_window_of_the_face_possibly_flipped(faces, seed):
    u = np.random.default_rng(seed).random((3, NUM_UNIFORMS), dtype=np.float32)
    out = np.asarray(augment_faces(faces, u))
    assert out.shape == (3, 48, 48, 1)
    for face, crop in zip(faces, out):
        windows = [face[y:y + 48, x:x + 48] for y in range(13) for x in range(13)]
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)


@SETTINGS
@given(arrays(np.float32, (2, 60, 60, 1), elements=st.floats(-3, 3, width=32)))
def test_centre_crop_is_the_middle_window(faces):
    np.testing.assert_array_equal(np.asarray(center_crop(faces, 48)), faces[:, 6:54, 6:54])

"""Online positive mining (Algorithm 1) against an independent NumPy reference; miners as parts."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fer_tf.metric import distances
from fer_tf.metric import mining
from fer_tf.errors import ConfigError
from fer_tf.metric.mining import online_positive_mining
from metric_reference import random_case, ref_mine


def check_against_reference(pos, neg, pmask=None, nmask=None, scale=1.0):
    ref_mask, ref_centre, _ = ref_mine(pos, neg, pmask, nmask)
    mask, centre = online_positive_mining(pos, neg, pmask, nmask)
    assert mask.dtype == tf.float32 and mask.shape == pos.shape[:2]
    assert centre.shape == (pos.shape[0], pos.shape[2])
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    np.testing.assert_allclose(centre.numpy(), ref_centre, rtol=1e-5, atol=1e-5 * scale)


# ---------------------------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 3),
    M=st.integers(1, 6),
    N=st.integers(1, 5),
    d=st.integers(1, 6),
    scale=st.sampled_from([0.01, 1.0, 100.0]),
    padding=st.sampled_from([0.0, 0.3, 0.7]),
    use_masks=st.booleans(),
)
def test_matches_reference_random(seed, B, M, N, d, scale, padding, use_masks):
    pos, neg, pmask, nmask = random_case(seed, B, M, N, d, scale, padding if use_masks else 0.0)
    if not use_masks:
        pmask = nmask = None
    assume(ref_mine(pos, neg, pmask, nmask)[2] > 1e-4)
    check_against_reference(pos, neg, pmask, nmask, scale)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_fixed_seeds(seed):
    pos, neg, pmask, nmask = random_case(seed, 4, 6, 8, 16, padding=0.2)
    assert ref_mine(pos, neg, pmask, nmask)[2] > 1e-4
    check_against_reference(pos, neg, pmask, nmask)
    check_against_reference(pos, neg)


def test_graph_mode_matches_eager():
    pos, neg, pmask, nmask = random_case(5, 3, 5, 4, 8, padding=0.3)
    eager = online_positive_mining(pos, neg, pmask, nmask)
    graph = tf.function(online_positive_mining)(pos, neg, pmask, nmask)
    for a, b in zip(eager, graph):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_bool_masks_accepted():
    pos, neg, pmask, nmask = random_case(6, 2, 4, 3, 5, padding=0.3)
    a = online_positive_mining(pos, neg, pmask, nmask)
    b = online_positive_mining(pos, neg, pmask > 0, nmask > 0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


# ---------------------------------------------------------------------------------------------
# Special cases
# ---------------------------------------------------------------------------------------------


def test_all_positives_farther_than_nearest_negative_keeps_nearest():
    # Centre of the positives is (0, 0.5/3); a negative sits right on it.
    pos = np.array([[[10.0, 0.0], [-10.0, 0.0], [0.0, 0.5]]], np.float32)
    neg = np.array([[[0.0, 0.2], [50.0, 50.0]]], np.float32)
    mask, centre = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(centre.numpy(), [[0.0, 0.5]])
    check_against_reference(pos, neg)


# Ties in the fallback (our rule, beyond the paper): every positive within a relative 1e-4 of the
# nearest one's distance is kept.


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 8), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       padding=st.integers(0, 3))
def test_two_valid_positives_beyond_the_nearest_negative_are_both_kept(seed, d, scale, padding):
    """Two valid positives are equally far from their midpoint: when a negative is nearer to it,
    both are kept (float rounding does not pick one) and the centre stays their midpoint."""
    rng = np.random.default_rng(seed)
    pos = (rng.normal(size=(1, 2 + padding, d)) * scale).astype(np.float32)
    midpoint = pos[0, :2].astype(np.float64).mean(0)
    half = np.sqrt(np.sum((pos[0, 0] - midpoint) ** 2))
    assume(half > 1e-3 * scale)
    neg = np.stack([midpoint + rng.normal(size=d) * 0.1 * half / np.sqrt(d),
                    midpoint + 10 * half]).astype(np.float32)[None]
    pmask = np.zeros((1, 2 + padding), np.float32)
    pmask[0, :2] = 1.0
    mask, centre = online_positive_mining(pos, neg, pmask)
    expected = pmask
    np.testing.assert_array_equal(mask.numpy(), expected)
    np.testing.assert_allclose(centre.numpy()[0], midpoint, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_array_equal(ref_mine(pos, neg, pmask)[0], expected)


def test_tied_nearest_positives_are_kept_and_a_clear_nearest_alone():
    # centre (0, 5/3): the first two positives tie at 1 + 25/9, the third is at 100/9
    pos = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]]], np.float32)
    neg = np.array([[[0.0, 5.0 / 3.0], [50.0, 50.0]]], np.float32)
    mask, centre = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), [[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(centre.numpy(), [[0.0, 0.0]], atol=1e-7)
    check_against_reference(pos, neg)
    # the second positive 0.1 % farther than the first (beyond the tolerance): the first alone
    pos[0, 1, 0] = -np.sqrt(1.0 + 1e-3 * (1.0 + 25.0 / 9.0))
    pos[0, 2, 1] = 5.0 + pos[0, 0, 0] + pos[0, 1, 0]  # keeps the centre's x at 0
    neg[0, 0] = pos[0].mean(0)
    mask, _ = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), [[1.0, 0.0, 0.0]])
    check_against_reference(pos, neg)


def test_tie_tolerance_is_relative_and_zero_keeps_exact_ties_only():
    # distances to the centre (0, 0) of 1 and 1 + 2e-5 (relative 2e-5 apart), a negative at the centre
    pos = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.00001], [0.0, -1.00001]]], np.float32)
    neg = np.array([[[0.0, 0.0]]], np.float32)
    for miner, expected in [(mining.OnlinePositiveMiner(), [1, 1, 1, 1]),
                            (mining.OnlinePositiveMiner(tie_tolerance=0.0), [1, 1, 0, 0]),
                            (mining.OnlinePositiveMiner(tie_tolerance=1e-6), [1, 1, 0, 0])]:
        mask, _ = miner(pos, neg)
        np.testing.assert_array_equal(mask.numpy(), [expected])
        np.testing.assert_array_equal(ref_mine(pos, neg, tie=miner.tie_tolerance)[0], [expected])
    big = pos * 1e3  # scale-free: the same decisions at 1e6 x the distances
    np.testing.assert_array_equal(mining.OnlinePositiveMiner()(big, neg * 1e3)[0].numpy(), [[1, 1, 1, 1]])
    with pytest.raises(ConfigError):
        mining.OnlinePositiveMiner(tie_tolerance=-1.0)


def test_two_tied_positives_keep_their_pull_term_in_eq3():
    """With both positives kept, the pull term of Eq. 3 pulls both to their midpoint (a single kept
    positive would be its own centre: no pull at all)."""
    from fer_tf.metric import losses

    pos = np.array([[[1.0, 0.0], [-1.0, 0.0]]], np.float32)
    neg = np.array([[[0.0, 0.1], [3.0, 3.0]]], np.float32)
    pos_t = tf.constant(pos)
    with tf.GradientTape() as tape:
        tape.watch(pos_t)
        value = losses.nm_tuple_clusters_loss(pos_t, neg, 0.5, 0.5)
    # positives: max(0, 1 - 0.5 + 0.25) = 0.75 each; negatives: (max(0, 0.75 - 0.01) + 0) / 2
    np.testing.assert_allclose(float(value), 0.75 + 0.37, rtol=1e-6)
    grad = tape.gradient(value, pos_t).numpy()
    assert grad[0, 0, 0] > 0 and grad[0, 1, 0] < 0  # each pulled towards the other


def test_keeps_positive_at_exactly_the_nearest_negative_distance():
    pos = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]], np.float32)
    neg = np.array([[[1.0, 0.0], [5.0, 5.0]]], np.float32)  # D* = 1 = D of the first two
    mask, centre = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), [[1.0, 1.0, 0.0, 0.0]])
    np.testing.assert_allclose(centre.numpy(), [[0.0, 0.0]])


def test_single_positive():
    rng = np.random.default_rng(7)
    pos = rng.normal(size=(3, 1, 4)).astype(np.float32)
    neg = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask, centre = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), np.ones((3, 1)))
    np.testing.assert_allclose(centre.numpy(), pos[:, 0], rtol=1e-6)


def test_coincident_points():
    pos = np.full((2, 4, 3), 0.7, np.float32)
    neg = np.full((2, 5, 3), 0.7, np.float32)
    mask, centre = online_positive_mining(pos, neg)
    np.testing.assert_array_equal(mask.numpy(), np.ones((2, 4)))
    np.testing.assert_allclose(centre.numpy(), np.full((2, 3), 0.7), rtol=1e-6)


def test_all_positives_padded_gives_empty_row_and_zero_centre():
    pos, neg, _, _ = random_case(8, 2, 4, 3, 5)
    pmask = np.array([[0, 0, 0, 0], [1, 0, 1, 1]], np.float32)
    pos[0] = np.nan  # padding content must not matter
    mask, centre = online_positive_mining(pos, neg, pmask)
    np.testing.assert_array_equal(mask.numpy()[0], np.zeros(4))
    np.testing.assert_array_equal(centre.numpy()[0], np.zeros(5))
    assert np.all(np.isfinite(centre.numpy()))
    ref_mask, ref_centre, _ = ref_mine(np.nan_to_num(pos), neg, pmask)
    np.testing.assert_array_equal(mask.numpy(), ref_mask)
    np.testing.assert_allclose(centre.numpy(), ref_centre, rtol=1e-5, atol=1e-6)


def test_no_valid_negatives_keeps_every_valid_positive():
    pos, neg, _, _ = random_case(9, 2, 5, 3, 4)
    pmask = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], np.float32)
    nmask = np.zeros((2, 3), np.float32)
    neg[:] = np.inf
    mask, centre = online_positive_mining(pos, neg, pmask, nmask)
    np.testing.assert_array_equal(mask.numpy(), pmask)
    expected = (pos * pmask[..., None]).sum(1) / pmask.sum(1, keepdims=True)
    np.testing.assert_allclose(centre.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_padded_negative_is_ignored():
    # Without the mask the negative at the centre would drop every positive but the nearest.
    pos = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]]], np.float32)
    neg = np.array([[[0.0, 0.3], [9.0, 9.0]]], np.float32)
    mask, _ = online_positive_mining(pos, neg, negative_mask=[[0.0, 1.0]])
    np.testing.assert_array_equal(mask.numpy(), [[1.0, 1.0, 1.0]])


def test_permuting_positives_permutes_mask_and_keeps_centre():
    pos, neg, pmask, nmask = random_case(10, 3, 6, 4, 5, padding=0.2)
    perm = np.random.default_rng(0).permutation(6)
    m1, c1 = online_positive_mining(pos, neg, pmask, nmask)
    m2, c2 = online_positive_mining(pos[:, perm], neg, pmask[:, perm], nmask)
    np.testing.assert_array_equal(m1.numpy()[:, perm], m2.numpy())
    np.testing.assert_allclose(c1.numpy(), c2.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def test_mask_has_no_gradient_and_centre_is_mean_of_kept():
    pos, neg, pmask, nmask = random_case(11, 3, 5, 4, 3, padding=0.2)
    pos_t, neg_t = tf.constant(pos), tf.constant(neg)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([pos_t, neg_t])
        mask, centre = online_positive_mining(pos_t, neg_t, pmask, nmask)
        mask_sum = tf.reduce_sum(mask)
        centre_sum = tf.reduce_sum(centre)
    grads = tape.gradient(mask_sum, [pos_t, neg_t])
    assert all(g is None or not np.any(g.numpy()) for g in grads)
    g_pos, g_neg = tape.gradient(centre_sum, [pos_t, neg_t], unconnected_gradients="zero")
    m = mask.numpy()
    expected = m / np.maximum(m.sum(1, keepdims=True), 1.0)
    np.testing.assert_allclose(g_pos.numpy(), np.repeat(expected[..., None], 3, -1), rtol=1e-6)
    np.testing.assert_array_equal(g_neg.numpy(), 0.0)


class RecordingSquaredEuclidean(distances.SquaredEuclidean):
    """The paper's D, keeping every value it computes (to ask the tape about them afterwards)."""

    def __init__(self):
        self.outputs = []

    def __call__(self, a, b):
        value = super().__call__(a, b)
        self.outputs.append(value)
        return value


def test_online_miner_decides_on_stopped_embeddings():
    """Every distance Algorithm 1 computes is off the gradient tape: neither the positives nor the
    negatives reach it (the decision is discrete; a stop_gradient removed would put it on the tape)."""
    pos, neg, pmask, nmask = random_case(15, 3, 5, 4, 3, padding=0.2)
    pos_t, neg_t = tf.constant(pos), tf.constant(neg)
    distance = RecordingSquaredEuclidean()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([pos_t, neg_t])
        mining.OnlinePositiveMiner(distance)(pos_t, neg_t, pmask, nmask)
    assert len(distance.outputs) == 2  # D(f+, c+) and D(f-, c+)
    for value in distance.outputs:
        assert tape.gradient(value, [pos_t, neg_t]) == [None, None]


class SoftMiner(mining.PositiveMiner):
    """A miner whose keep mask is a smooth function of the positives (not a real miner: it lets
    the test see whether PositiveMiner.mine stops the mask's gradient)."""

    def keep(self, positives, negatives, pmask, nmask):
        return pmask * tf.sigmoid(tf.reduce_sum(positives, axis=-1))


def test_mine_stops_the_gradient_of_any_miners_mask():
    """PositiveMiner.mine treats the keep mask as a constant, whatever keep computes: the mask has
    no gradient and the centre's gradient is the mask's weights, mask / sum(mask)."""
    pos, neg, pmask, nmask = random_case(16, 3, 5, 4, 3, padding=0.2)
    pmask[:, 0] = 1.0
    pos_t = tf.constant(pos)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(pos_t)
        mask, centre = SoftMiner()(pos_t, neg, pmask, nmask)
        mask_sum = tf.reduce_sum(mask)
        centre_sum = tf.reduce_sum(centre)
    assert tape.gradient(mask_sum, pos_t) is None
    m = mask.numpy()
    assert np.all((m > 0) == (pmask > 0)) and np.any((m > 0) & (m < 1))  # a soft mask indeed
    expected = m / m.sum(1, keepdims=True)
    np.testing.assert_allclose(tape.gradient(centre_sum, pos_t).numpy(),
                               np.repeat(expected[..., None], 3, -1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "pos, neg",
    [
        (np.full((2, 3, 4), 1.5, np.float32), np.full((2, 2, 4), 1.5, np.float32)),
        (np.full((2, 3, 4), 0.0, np.float32), np.full((2, 2, 4), 0.0, np.float32)),
        random_case(12, 2, 3, 2, 4, scale=1e5)[:2],
    ],
    ids=["coincident", "zeros", "large"],
)
def test_centre_gradients_finite(pos, neg):
    pos_t, neg_t = tf.constant(pos), tf.constant(neg)
    with tf.GradientTape() as tape:
        tape.watch([pos_t, neg_t])
        _, centre = online_positive_mining(pos_t, neg_t)
        out = tf.reduce_sum(tf.square(centre))
    for g in tape.gradient(out, [pos_t, neg_t], unconnected_gradients="zero"):
        assert np.all(np.isfinite(g.numpy()))


# ---------------------------------------------------------------------------------------------
# Miners as swappable parts
# ---------------------------------------------------------------------------------------------


class DoubledSquaredEuclidean(distances.Distance):
    """2 x the squared Euclidean distance: the same order, so Algorithm 1 decides the same."""

    def __call__(self, a, b):
        return 2.0 * tf.reduce_sum(tf.square(a - b), axis=-1)


def test_online_miner_class_equals_function_and_takes_a_distance():
    pos, neg, pmask, nmask = random_case(13, 3, 5, 4, 6, padding=0.2)
    expected = online_positive_mining(pos, neg, pmask, nmask)
    for miner in (mining.OnlinePositiveMiner(), mining.OnlinePositiveMiner(DoubledSquaredEuclidean())):
        for a, b in zip(miner(pos, neg, pmask, nmask), expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_keep_all_positives_and_get():
    pos, neg, pmask, nmask = random_case(14, 3, 5, 4, 6, padding=0.3)
    mask, centre = mining.KeepAllPositives()(pos, neg, pmask, nmask)
    np.testing.assert_array_equal(mask.numpy(), pmask)
    expected = (pos * pmask[..., None]).sum(1) / np.maximum(pmask.sum(1), 1)[:, None]
    np.testing.assert_allclose(centre.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(mining.get(None), mining.KeepAllPositives)
    assert isinstance(mining.get("none"), mining.KeepAllPositives)
    assert mining.get("online") == mining.OnlinePositiveMiner()
    config = keras.saving.serialize_keras_object(mining.OnlinePositiveMiner())
    assert mining.get(config) == mining.OnlinePositiveMiner()
    with pytest.raises(ConfigError):
        mining.get("hardest")
    with pytest.raises(ConfigError):
        mining.get(3)

"""Losses (Eq. 1, 3, 10, batch-all triplet) against independent NumPy references, plus the Keras
Loss classes (tuple-index convention, serialisation, .keras round trip)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fer_tf.metric import distances
from fer_tf.metric import mining
from fer_tf.metric import reducers
from fer_tf.metric import losses as L
from fer_tf.errors import ConfigError
from fer_tf.metric.layers import AdaptiveThreshold
from fer_tf.metric.mining import online_positive_mining
from metric_reference import (mean_vec, ref_adaptive_loss, ref_gather, ref_H, ref_n_plus_one, ref_nm_loss,
                              ref_triplet, random_case, sqdist)

# ---------------------------------------------------------------------------------------------
# Helpers (the independent NumPy references are in metric_reference.py)
# ---------------------------------------------------------------------------------------------


def make_threshold(d, units, seed, identity_T=None):
    layer = AdaptiveThreshold(units)
    z = np.zeros((1, d), np.float32)
    layer(z, z)  # build
    rng = np.random.default_rng(seed)
    if identity_T is None:
        LA = (rng.normal(size=(d, units)) * 0.5).astype(np.float32)
        LB = (rng.normal(size=(d, units)) * 0.5).astype(np.float32)
        c = (rng.normal(size=(d,)) * 0.3).astype(np.float32)
        b = np.float32(rng.normal())
    else:
        LA = LB = (rng.normal(size=(d, units)) * 0.7).astype(np.float32)
        c = np.zeros((d,), np.float32)
        b = np.float32(identity_T)
    layer.set_weights([LA, LB, c, np.asarray(b)])
    return layer, (LA.astype(np.float64), LB.astype(np.float64), c.astype(np.float64), float(b))


def grads_of(fn, *tensors):
    ts = [tf.constant(t) for t in tensors]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        value = fn(*ts)
    grads = tape.gradient(value, ts, unconnected_gradients="zero")
    return value, [tf.convert_to_tensor(g) for g in grads]  # gather gives IndexedSlices


def assert_finite(value, grads):
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))


SEEDS = [0, 1, 2]
HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
shape_args = dict(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 3),
    M=st.integers(1, 5),
    N=st.integers(1, 5),
    d=st.integers(1, 5),
    padding=st.sampled_from([0.0, 0.4]),
)


# ---------------------------------------------------------------------------------------------
# Eq. 3: fixed threshold
# ---------------------------------------------------------------------------------------------


@HYP
@given(scale=st.sampled_from([0.3, 1.0, 3.0]), T=st.sampled_from([0.5, 1.0, 4.0]), **shape_args)
def test_nm_loss_matches_reference_random(seed, B, M, N, d, padding, scale, T):
    pos, neg, pmask, nmask = random_case(seed, B, M, N, d, scale, padding)
    ref, gap = ref_nm_loss(pos, neg, T, 0.5, pmask, nmask)
    assume(gap > 1e-4)
    got = L.nm_tuple_clusters_loss(pos, neg, T, 0.5, pmask, nmask)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_nm_loss_matches_reference_fixed_seeds(seed):
    pos, neg, pmask, nmask = random_case(seed, 4, 6, 7, 8, scale=0.4, padding=0.2)
    for pm, nm in [(None, None), (pmask, nmask)]:
        ref, gap = ref_nm_loss(pos, neg, 2.0, 1.0, pm, nm)
        assert gap > 1e-4 and ref > 0
        got = L.nm_tuple_clusters_loss(pos, neg, 2.0, 1.0, pm, nm)
        np.testing.assert_allclose(float(got), ref, rtol=1e-5)
        graph = tf.function(L.nm_tuple_clusters_loss)(pos, neg, 2.0, 1.0, pm, nm)
        np.testing.assert_allclose(float(graph), ref, rtol=1e-5)


def test_nm_loss_fallback_single_kept_positive():
    pos = np.array([[[10.0, 0.0], [-10.0, 0.0], [0.0, 0.5]]], np.float32)
    neg = np.array([[[0.0, 0.2], [3.0, 0.0]]], np.float32)
    # kept = (0, 0.5) = centre: positive term max(0, 0 - 1 + 0.25) = 0;
    # negatives: D = 0.09 and 9.25 -> (max(0, 1.25 - 0.09) + 0) / 2 = 0.58
    got = float(L.nm_tuple_clusters_loss(pos, neg, 1.0, 0.5))
    np.testing.assert_allclose(got, 0.58, rtol=1e-5)
    np.testing.assert_allclose(got, ref_nm_loss(pos, neg, 1.0, 0.5)[0], rtol=1e-5)


def test_nm_loss_single_positive():
    pos, neg, _, _ = random_case(3, 3, 1, 4, 5, scale=0.3)
    got = float(L.nm_tuple_clusters_loss(pos, neg, 1.0, 0.5))
    np.testing.assert_allclose(got, ref_nm_loss(pos, neg, 1.0, 0.5)[0], rtol=1e-5)


def test_nm_loss_coincident_points_value_and_gradients():
    pos = np.full((2, 3, 4), 0.25, np.float32)
    neg = np.full((2, 5, 4), 0.25, np.float32)
    value, grads = grads_of(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5), pos, neg)
    # positives: max(0, 0 - 1 + 0.25) = 0; negatives: max(0, 1 + 0.25 - 0) = 1.25
    np.testing.assert_allclose(float(value), 1.25, rtol=1e-6)
    assert_finite(value, grads)


def test_nm_loss_tuple_without_positives_is_excluded():
    pos, neg, _, _ = random_case(4, 3, 4, 3, 5, scale=0.5)
    pmask = np.ones((3, 4), np.float32)
    pmask[1] = 0
    pos[1] = np.nan  # padding content must not leak into value or gradients
    value, grads = grads_of(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask), pos, neg)
    assert_finite(value, grads)
    keep = [0, 2]
    expected = ref_nm_loss(pos[keep], neg[keep], 1.0, 0.5)[0]
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    np.testing.assert_array_equal(grads[0].numpy()[1], 0.0)
    np.testing.assert_array_equal(grads[1].numpy()[1], 0.0)


def test_nm_loss_all_positives_padded_is_zero_with_zero_gradients():
    pos, neg, _, _ = random_case(5, 2, 3, 4, 3)
    pmask = np.zeros((2, 3), np.float32)
    fn = tf.function(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask))
    value, grads = grads_of(fn, pos, neg)
    assert float(value) == 0.0
    for g in grads:
        np.testing.assert_array_equal(g.numpy(), 0.0)


def test_nm_loss_no_valid_negatives_keeps_positive_term():
    pos, neg, _, _ = random_case(6, 2, 4, 3, 3, scale=2.0)
    nmask = np.array([[0, 0, 0], [1, 1, 0]], np.float32)
    neg[0] = np.inf
    value, grads = grads_of(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5, None, nmask), pos, neg)
    assert_finite(value, grads)
    ref, _ = ref_nm_loss(pos, np.nan_to_num(neg), 1.0, 0.5, None, nmask)
    np.testing.assert_allclose(float(value), ref, rtol=1e-5)
    # tuple 0 alone: positive term over all 4 positives
    c = pos[0].astype(np.float64).mean(0)
    alone = np.mean([max(0.0, ((p - c) ** 2).sum() - 0.75) for p in pos[0]])
    np.testing.assert_allclose(
        float(L.nm_tuple_clusters_loss(pos[:1], neg[:1], 1.0, 0.5, None, nmask[:1])), alone, rtol=1e-5
    )


def test_nm_loss_permutation_invariant():
    pos, neg, pmask, nmask = random_case(7, 3, 6, 5, 4, scale=0.5, padding=0.2)
    rng = np.random.default_rng(1)
    pp, pn = rng.permutation(6), rng.permutation(5)
    a = float(L.nm_tuple_clusters_loss(pos, neg, 1.0, 0.5, pmask, nmask))
    b = float(L.nm_tuple_clusters_loss(pos[:, pp], neg[:, pn], 1.0, 0.5, pmask[:, pp], nmask[:, pn]))
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_nm_loss_gradients_finite(scale):
    pos, neg, pmask, nmask = random_case(8, 3, 4, 4, 6, scale=scale, padding=0.3)
    value, grads = grads_of(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask, nmask), pos, neg)
    assert_finite(value, grads)


def test_nm_loss_xla():
    pos, neg, pmask, nmask = random_case(9, 2, 3, 3, 4, padding=0.3)
    fn = tf.function(lambda p, n: L.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask, nmask), jit_compile=True)
    np.testing.assert_allclose(
        float(fn(pos, neg)), float(L.nm_tuple_clusters_loss(pos, neg, 1.0, 0.5, pmask, nmask)), rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------
# Eq. 10: adaptive threshold
# ---------------------------------------------------------------------------------------------


@HYP
@given(units=st.integers(1, 4), **shape_args)
def test_adaptive_loss_matches_reference_random(seed, B, M, N, d, padding, units):
    pos, neg, pmask, nmask = random_case(seed, B, M, N, d, 0.7, padding)
    layer, W = make_threshold(d, units, seed)
    ref, gap = ref_adaptive_loss(pos, neg, lambda f1, f2: ref_H(f1, f2, *W), pmask, nmask)
    assume(gap > 1e-4)
    got = L.adaptive_nm_tuple_clusters_loss(pos, neg, layer, pmask, nmask)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptive_loss_matches_reference_fixed_seeds(seed):
    pos, neg, pmask, nmask = random_case(seed, 4, 5, 6, 6, scale=0.5, padding=0.2)
    layer, W = make_threshold(6, 3, seed)
    ref, gap = ref_adaptive_loss(pos, neg, lambda f1, f2: ref_H(f1, f2, *W), pmask, nmask)
    assert gap > 1e-4
    got = tf.function(L.adaptive_nm_tuple_clusters_loss)(pos, neg, layer, pmask, nmask)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_adaptive_loss_identity_parameters_equal_fixed_threshold_hinge():
    T = 1.5
    pos, neg, _, _ = random_case(10, 3, 4, 5, 4, scale=0.6)
    layer, (Lm, _, _, _) = make_threshold(4, 4, 10, identity_T=T)
    mask, centre = online_positive_mining(pos, neg)
    m, c = mask.numpy(), centre.numpy().astype(np.float64)
    expected = []
    for i in range(3):
        terms = []
        for j in range(4):
            if m[i, j]:
                v = (pos[i, j] - c[i]) @ Lm
                terms.append(max(0.0, 1.0 - (T - 0.5 * v @ v)))
        for k in range(5):
            v = (neg[i, k] - c[i]) @ Lm
            terms.append(max(0.0, 1.0 + (T - 0.5 * v @ v)))
        expected.append(np.mean(terms))
    got = float(L.adaptive_nm_tuple_clusters_loss(pos, neg, layer))
    np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)


def test_adaptive_loss_special_cases_and_gradients():
    layer, W = make_threshold(3, 2, 11)
    H = lambda f1, f2: ref_H(f1, f2, *W)  # noqa: E731
    # coincident points
    pos = np.full((2, 3, 3), 0.4, np.float32)
    neg = np.full((2, 4, 3), 0.4, np.float32)
    ts = [tf.constant(pos), tf.constant(neg)]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        value = L.adaptive_nm_tuple_clusters_loss(ts[0], ts[1], layer)
    np.testing.assert_allclose(float(value), ref_adaptive_loss(pos, neg, H)[0], rtol=1e-5)
    grads = tape.gradient(value, ts + layer.trainable_weights, unconnected_gradients="zero")
    assert_finite(value, grads)
    # all positives padded -> 0.0, zero gradients
    with tf.GradientTape() as tape:
        tape.watch(ts)
        value = L.adaptive_nm_tuple_clusters_loss(ts[0], ts[1], layer, np.zeros((2, 3)))
    assert float(value) == 0.0
    for g in tape.gradient(value, ts + layer.trainable_weights, unconnected_gradients="zero"):
        np.testing.assert_array_equal(g.numpy(), 0.0)
    # single positive, no valid negatives in one tuple, large values
    pos, neg, _, _ = random_case(12, 2, 1, 3, 3, scale=1e3)
    nmask = np.array([[0, 0, 0], [1, 0, 1]], np.float32)
    value, grads = grads_of(lambda p, n: L.adaptive_nm_tuple_clusters_loss(p, n, layer, None, nmask), pos, neg)
    assert_finite(value, grads)
    np.testing.assert_allclose(float(value), ref_adaptive_loss(pos, neg, H, None, nmask)[0], rtol=1e-4)


def test_adaptive_loss_permutation_invariant_and_needs_threshold():
    pos, neg, pmask, nmask = random_case(13, 2, 5, 4, 3, scale=0.5, padding=0.2)
    layer, _ = make_threshold(3, 3, 13)
    perm = np.random.default_rng(2).permutation(5)
    a = float(L.adaptive_nm_tuple_clusters_loss(pos, neg, layer, pmask, nmask))
    b = float(L.adaptive_nm_tuple_clusters_loss(pos[:, perm], neg, layer, pmask[:, perm], nmask))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    with pytest.raises(ConfigError):
        L.adaptive_nm_tuple_clusters_loss(pos, neg, None)


# ---------------------------------------------------------------------------------------------
# Eq. 1: (N+1)-tuple loss
# ---------------------------------------------------------------------------------------------


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 4),
    K=st.integers(1, 5),
    d=st.integers(1, 5),
    margin=st.sampled_from([0.0, 0.5]),
    padding=st.sampled_from([0.0, 0.4]),
)
def test_n_plus_one_matches_reference_random(seed, B, K, d, margin, padding):
    rng = np.random.default_rng(seed)
    a, p = rng.normal(size=(2, B, d)).astype(np.float32)
    n = rng.normal(size=(B, K, d)).astype(np.float32)
    nmask = (rng.random((B, K)) >= padding).astype(np.float32)
    tmask = (rng.random(B) >= padding).astype(np.float32)
    got = L.n_plus_one_tuple_loss(a, p, n, margin, nmask, tmask)
    np.testing.assert_allclose(float(got), ref_n_plus_one(a, p, n, margin, nmask, tmask), rtol=1e-4, atol=1e-6)


def test_n_plus_one_fixed_seeds_and_graph():
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        a, p = rng.normal(size=(2, 5, 8)).astype(np.float32)
        n = rng.normal(size=(5, 6, 8)).astype(np.float32)
        got = tf.function(L.n_plus_one_tuple_loss)(a, p, n, 0.5)
        np.testing.assert_allclose(float(got), ref_n_plus_one(a, p, n, 0.5), rtol=1e-5)


def test_n_plus_one_stable_for_large_distances():
    a = np.zeros((2, 3), np.float32)
    p = np.array([[1e3, 0, 0], [0, 0, 0]], np.float32)  # D(a, p) = 1e6 -> exp overflows naively
    n = np.array([[[0, 1, 0], [0, 2, 0]], [[1e3, 0, 0], [0, 1e3, 0]]], np.float32)
    value, grads = grads_of(lambda *t: L.n_plus_one_tuple_loss(*t, 0.5), a, p, n)
    assert_finite(value, grads)
    # tuple 0: logsumexp(0, 1e6 - 1 + .5, 1e6 - 4 + .5) ~ 1e6 - 0.5 + log(1 + e^-3); tuple 1: ~0
    expected = (1e6 - 0.5 + math.log1p(math.exp(-3.0)) + math.log1p(2 * math.exp(-1e6 + 0.5))) / 2
    np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_n_plus_one_coincident_and_masks():
    a = np.ones((2, 3), np.float32)
    value, grads = grads_of(lambda *t: L.n_plus_one_tuple_loss(*t, 0.0), a, a, np.ones((2, 4, 3), np.float32))
    np.testing.assert_allclose(float(value), math.log(5.0), rtol=1e-6)
    assert_finite(value, grads)
    # no valid negatives -> log(1) = 0; no valid tuple -> 0 with zero gradients
    n = np.full((2, 4, 3), np.inf, np.float32)
    value, grads = grads_of(
        lambda *t: L.n_plus_one_tuple_loss(*t, 0.5, np.zeros((2, 4)), np.zeros(2)), a, a, n
    )
    assert float(value) == 0.0
    for g in grads:
        np.testing.assert_array_equal(g.numpy(), 0.0)


# ---------------------------------------------------------------------------------------------
# Batch-all triplet loss
# ---------------------------------------------------------------------------------------------


@HYP
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(2, 9),
    classes=st.integers(1, 3),
    d=st.integers(1, 4),
    margin=st.sampled_from([0.2, 1.0]),
)
def test_triplet_matches_reference_random(seed, n, classes, d, margin):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    labels = rng.integers(-1, classes, size=n).astype(np.int32)
    ref, closest = ref_triplet(emb, labels, margin)
    assume(closest > 1e-3)
    got = L.batch_all_triplet_loss(emb, labels, margin)
    np.testing.assert_allclose(float(got), ref, rtol=1e-4, atol=1e-5)


def test_triplet_fixed_seed_and_gradients():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, 0, 1], np.int32)
    ref, closest = ref_triplet(emb, labels, 0.5)
    assert closest > 1e-3 and ref > 0
    value, grads = grads_of(lambda e: tf.function(L.batch_all_triplet_loss)(e, labels, 0.5), emb)
    np.testing.assert_allclose(float(value), ref, rtol=1e-5)
    assert_finite(value, grads)
    value, grads = grads_of(lambda e: L.batch_all_triplet_loss(e, labels, 0.5), np.ones((12, 5), np.float32))
    np.testing.assert_allclose(float(value), 0.5, rtol=1e-6)  # every triplet: 0 - 0 + margin
    assert_finite(value, grads)


# ---------------------------------------------------------------------------------------------
# Keras Loss classes
# ---------------------------------------------------------------------------------------------


def index_batch(seed=0, X=10, M=3, N=4, d=5):
    """A batch in the targets['tuples'] convention: 6 query rows (some padded), 4 non-query rows."""
    rng = np.random.default_rng(seed)
    emb = (rng.normal(size=(X, d)) * 0.6).astype(np.float32)
    tuples = np.full((X, M + N), -1, np.int32)
    for i in range(6):
        others = [j for j in range(X) if j != i]
        tuples[i, 0] = i
        tuples[i, 1:] = rng.choice(others, size=M + N - 1, replace=False)
    tuples[1, 1:M] = -1  # a query with no other positive
    tuples[2, M + 1 :] = -1  # a query with one negative
    tuples[3, 1] = -1  # a query whose first positive column is padding
    tuples[4, M:] = -1  # a query without negatives
    return tuples, emb


CLASSES = [
    lambda: L.NMTupleClustersLoss(num_positives=3, reference_distance=1.2, margin=0.4),
    lambda: L.AdaptiveNMTupleClustersLoss(num_positives=3, threshold=make_threshold(5, 3, 0)[0]),
    lambda: L.NPlusOneTupleLoss(num_positives=3, margin=0.3),
]
CLASS_IDS = ["nm", "adaptive", "n_plus_one"]


def test_nm_class_equals_functional_on_gathered_tensors():
    tuples, emb = index_batch()
    pos, neg, pm, nm = ref_gather(tuples, emb, 3)
    loss = L.NMTupleClustersLoss(num_positives=3, reference_distance=1.2, margin=0.4)
    expected = float(L.nm_tuple_clusters_loss(pos, neg, 1.2, 0.4, pm, nm))
    np.testing.assert_allclose(float(loss(tuples, emb)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(tf.function(loss)(tuples, emb)), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, ref_nm_loss(pos, neg, 1.2, 0.4, pm, nm)[0], rtol=1e-5)
    # float indices (as Keras' own Loss.__call__ would pass them) give the same value
    np.testing.assert_allclose(float(loss(tuples.astype(np.float32), emb)), expected, rtol=1e-6)


def test_adaptive_class_equals_functional_and_needs_threshold():
    tuples, emb = index_batch(1)
    layer, W = make_threshold(5, 3, 1)
    pos, neg, pm, nm = ref_gather(tuples, emb, 3)
    loss = L.AdaptiveNMTupleClustersLoss(num_positives=3, threshold=layer)
    expected = float(L.adaptive_nm_tuple_clusters_loss(pos, neg, layer, pm, nm))
    np.testing.assert_allclose(float(loss(tuples, emb)), expected, rtol=1e-6)
    ref = ref_adaptive_loss(pos, neg, lambda f1, f2: ref_H(f1, f2, *W), pm, nm)[0]
    np.testing.assert_allclose(expected, ref, rtol=1e-5)
    with pytest.raises(ConfigError, match="threshold"):
        L.AdaptiveNMTupleClustersLoss(num_positives=3)(tuples, emb)


def test_n_plus_one_class_uses_first_valid_positive_and_all_negatives():
    tuples, emb = index_batch(2)
    loss = L.NPlusOneTupleLoss(num_positives=3, margin=0.3)
    total, count = 0.0, 0
    for row in tuples:
        positives = [j for j in row[1:3] if j >= 0]
        if row[0] < 0 or not positives:
            continue
        negs = [j for j in row[3:] if j >= 0]
        a, p = emb[row[0]], emb[positives[0]]
        s = sum(math.exp(sqdist(a, p) - sqdist(a, emb[j]) + 0.3) for j in negs)
        total += math.log1p(s)
        count += 1
    assert count == 5  # rows 0, 2, 3, 4, 5
    np.testing.assert_allclose(float(loss(tuples, emb)), total / count, rtol=1e-5)


@pytest.mark.parametrize("make", CLASSES, ids=CLASS_IDS)
def test_class_gradients_finite_and_non_queries_ignored(make):
    tuples, emb = index_batch(3)
    loss = make()
    value, (g,) = grads_of(lambda e: loss(tuples, e), emb)
    assert_finite(value, [g])
    # embeddings that belong to no query's tuple get a zero gradient
    used = set(tuples[tuples[:, 0] >= 0].ravel()) - {-1}
    for i in set(range(len(emb))) - used:
        np.testing.assert_array_equal(g.numpy()[i], 0.0)
    # a batch without any query -> 0.0
    empty = np.full_like(tuples, -1)
    assert float(loss(empty, emb)) == 0.0


@pytest.mark.parametrize("make", CLASSES, ids=CLASS_IDS)
def test_class_serialization_round_trip(make):
    loss = make()
    config = keras.losses.serialize(loss)
    again = keras.losses.deserialize(config)
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()
    assert again.num_positives == 3
    if isinstance(loss, L.AdaptiveNMTupleClustersLoss):
        assert again.threshold is None
        again.threshold = loss.threshold
    tuples, emb = index_batch(4)
    np.testing.assert_allclose(float(again(tuples, emb)), float(loss(tuples, emb)), rtol=1e-6)


@pytest.mark.parametrize("make", CLASSES, ids=CLASS_IDS)
def test_class_config_without_part_keys_loads_with_the_paper_defaults(make):
    """Configs written before the miner/distance/reducer keys existed still load."""
    loss = make()
    old = {k: v for k, v in loss.get_config().items() if k not in ("miner", "distance", "reducer")}
    again = type(loss).from_config(old)
    assert again.get_config() == loss.get_config()
    assert getattr(again, "miner", mining.OnlinePositiveMiner()) == mining.OnlinePositiveMiner()
    assert again.distance == distances.SquaredEuclidean() and again.reducer == reducers.MeanOverValid()


def test_nm_class_without_miner_keeps_every_valid_positive_and_round_trips():
    tuples, emb = index_batch(7)
    pos, neg, pm, nm = ref_gather(tuples, emb, 3)
    loss = L.NMTupleClustersLoss(num_positives=3, reference_distance=1.2, margin=0.4, miner=None)
    expected = float(L.nm_tuple_clusters_loss(pos, neg, 1.2, 0.4, pm, nm, miner=None))
    np.testing.assert_allclose(float(loss(tuples, emb)), expected, rtol=1e-6)
    assert abs(expected - float(L.nm_tuple_clusters_loss(pos, neg, 1.2, 0.4, pm, nm))) > 1e-4
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again.miner, mining.KeepAllPositives)
    np.testing.assert_allclose(float(again(tuples, emb)), expected, rtol=1e-6)
    # keep-all against the loop reference: the kept positives are the valid ones
    total = []
    for i in range(len(pos)):
        kept = [p for p, m in zip(pos[i], pm[i]) if m]
        if not kept:
            continue
        c = mean_vec(kept)
        value = sum(max(0.0, sqdist(p, c) - 1.2 + 0.2) for p in kept) / len(kept)
        negs = [q for q, m in zip(neg[i], nm[i]) if m]
        if negs:
            value += sum(max(0.0, 1.2 + 0.2 - sqdist(q, c)) for q in negs) / len(negs)
        total.append(value)
    np.testing.assert_allclose(expected, np.mean(total), rtol=1e-5)


def test_adaptive_threshold_computes_in_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = AdaptiveThreshold(3)
        f = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
        h = layer(f, f[::-1])
    finally:
        keras.config.set_dtype_policy(previous)
    assert layer.compute_dtype == "float32" and layer.variable_dtype == "float32"
    assert h.dtype == tf.float32


def test_class_validation():
    tuples, emb = index_batch()
    with pytest.raises(ConfigError):
        L.NMTupleClustersLoss(num_positives=0)
    with pytest.raises(ConfigError):
        L.NPlusOneTupleLoss(num_positives=1)
    with pytest.raises(ConfigError):
        L.NMTupleClustersLoss(num_positives=7)(tuples, emb)  # no negative column left
    with pytest.raises(ConfigError):
        L.NMTupleClustersLoss(num_positives=3)(tuples, emb, sample_weight=np.ones(10))


def test_keras_file_round_trip_with_compiled_loss(tmp_path):
    tuples, emb = index_batch(5, X=10, d=4)
    x = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(4, name="embedding")(inputs))
    model.compile(
        optimizer="sgd", loss=L.NMTupleClustersLoss(num_positives=3, reference_distance=0.8, margin=0.2)
    )
    history = model.fit(x, tuples, batch_size=10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, L.NMTupleClustersLoss)
    assert loaded.loss.get_config() == model.loss.get_config()
    pred = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(pred, model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(
        float(loaded.loss(tuples, pred)), float(model.loss(tuples, pred)), rtol=1e-6
    )
    np.testing.assert_allclose(model.evaluate(x, tuples, batch_size=10, verbose=0),
                               loaded.evaluate(x, tuples, batch_size=10, verbose=0), rtol=1e-5)


@keras.saving.register_keras_serializable(package="fer_tf_tests")
class ThresholdTestModel(keras.Model):
    """A model that owns an AdaptiveThreshold and re-attaches it to its loss in compute_loss."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed = keras.layers.Dense(4)
        self.threshold = AdaptiveThreshold(4)

    def build(self, input_shape):
        self.embed.build(input_shape)
        self.threshold.build((None, 4), (None, 4))

    def call(self, x):
        return self.embed(x)

    def compute_loss(self, *args, **kwargs):
        if isinstance(self.loss, L.AdaptiveNMTupleClustersLoss) and self.loss.threshold is None:
            self.loss.threshold = self.threshold
        return super().compute_loss(*args, **kwargs)


def test_keras_file_round_trip_adaptive_loss_with_model_owned_threshold(tmp_path):
    tuples, _ = index_batch(6, X=10, d=4)
    x = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    model = ThresholdTestModel()
    model.compile(optimizer="sgd", loss=L.AdaptiveNMTupleClustersLoss(num_positives=3))
    model.build((None, 6))
    before = [w.numpy().copy() for w in model.threshold.weights]
    assert len(before) == 4
    model.fit(x, tuples, batch_size=10, epochs=1, verbose=0)
    assert model.loss.threshold is model.threshold
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.threshold.weights))
    path = tmp_path / "adaptive.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.loss, L.AdaptiveNMTupleClustersLoss) and loaded.loss.threshold is None
    for a, b in zip(model.threshold.weights, loaded.threshold.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(
        loaded.evaluate(x, tuples, batch_size=10, verbose=0),
        model.evaluate(x, tuples, batch_size=10, verbose=0),
        rtol=1e-5,
    )
    assert loaded.loss.threshold is loaded.threshold

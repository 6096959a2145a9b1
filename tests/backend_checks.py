"""Checks of the metric-learning core on the Keras backend of this process.

Run as ``KERAS_BACKEND=<backend> python tests/backend_checks.py``: it prints one JSON line
``{check: {"ok": bool, "info": str}}``; ``tests/test_backends.py`` runs it once per backend (Keras
fixes the backend per process) and asserts on each check.

The references below are NumPy forms of the paper's equations in float64, written for this file
and sharing no code with ``fer_tf``.
"""

import json
import os
import sys
import traceback

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import ops  # noqa: E402

from fer_tf.metric import distances  # noqa: E402
from fer_tf.metric import layers
from fer_tf.metric import losses
from fer_tf.metric import mining
from fer_tf.training import optimizers
from fer_tf.metric import reducers
from fer_tf.errors import ConfigError  # noqa: E402

BACKEND = keras.backend.backend()
TENSORFLOW_IMPORTED = "tensorflow" in sys.modules  # before any check imports it

# ---------------------------------------------------------------------------------------------
# NumPy references (float64)
# ---------------------------------------------------------------------------------------------


def ref_mine(pos, neg, pmask, nmask):
    """Algorithm 1 -> (keep [B, M], centre [B, d], tie gap); with our tie rule in the fallback."""
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    B, M, d = pos.shape
    keep, centre, gap = np.zeros((B, M)), np.zeros((B, d)), np.inf
    for i in range(B):
        P, Q = pmask[i] > 0, nmask[i] > 0
        if not P.any():
            continue
        k = P.copy()
        if Q.any():
            c0 = pos[i][P].mean(axis=0)
            dp = ((pos[i] - c0) ** 2).sum(axis=-1)
            dstar = ((neg[i][Q] - c0) ** 2).sum(axis=-1).min()
            k = P & (dp <= dstar)
            gap = min(gap, np.abs(dp[P] - dstar).min() / (1.0 + dstar))
            if not k.any():  # the nearest positives, ties within a relative 1e-4 included
                best = dp[P].min()
                k = P & (dp - best <= 1e-4 * best)
                others = dp[P & (dp != best)]
                if len(others):
                    gap = min(gap, 10 * np.abs((others - best) / best - 1e-4).min())
        keep[i], centre[i] = k, pos[i][k].mean(axis=0)
    return keep, centre, gap


def ref_centres(pos, keep):
    """Mean of the kept positives of each tuple (0 for none)."""
    return (pos * keep[..., None]).sum(1) / np.maximum(keep.sum(1), 1)[:, None]


def ref_mean_over_tuples(pos, neg, pmask, nmask, keep, score):
    """Mean over the tuples with a kept positive of ``score(kept, negatives, centre)``, after
    mining (``keep`` [B, M]; None: Algorithm 1)."""
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    keep = ref_mine(pos, neg, pmask, nmask)[0] if keep is None else keep
    centre = ref_centres(pos, keep)
    values = [score(pos[i][keep[i] > 0], neg[i][nmask[i] > 0], centre[i])
              for i in range(pos.shape[0]) if keep[i].any()]
    return float(np.mean(values)) if values else 0.0


def ref_eq3(pos, neg, T, tau, pmask, nmask, keep=None):
    """Eq. 3: mean_kept max(0, D(f+, c+) - T + tau/2) + mean_neg max(0, T + tau/2 - D(f-, c+))."""

    def score(kept, negatives, c):
        value = np.maximum(0.0, ((kept - c) ** 2).sum(-1) - T + tau / 2).mean()
        if len(negatives):
            value += np.maximum(0.0, T + tau / 2 - ((negatives - c) ** 2).sum(-1)).mean()
        return value

    return ref_mean_over_tuples(pos, neg, pmask, nmask, keep, score)


def ref_H(f1, f2, LA, LB, c, b):
    """Eq. 5-8 (with the erratum's signs): H = -1/2|f1 LA|^2 - 1/2|f2 LA|^2 + f1 LB.f2 LB + c.(f1+f2) + b."""
    a1, a2, b1, b2 = f1 @ LA, f2 @ LA, f1 @ LB, f2 @ LB
    return -0.5 * (a1**2).sum(-1) - 0.5 * (a2**2).sum(-1) + (b1 * b2).sum(-1) + (f1 + f2) @ c + b


def ref_eq10(pos, neg, weights, pmask, nmask, keep=None):
    """Eq. 10: mean over kept positives (label -1) and valid negatives (label +1) of max(0, l H + 1)."""

    def score(kept, negatives, c):
        hp, hn = ref_H(kept, c, *weights), ref_H(negatives, c, *weights)
        return np.concatenate([np.maximum(0, 1 - hp), np.maximum(0, 1 + hn)]).mean()

    return ref_mean_over_tuples(pos, neg, pmask, nmask, keep, score)


def ref_eq1(a, p, n, margin, nmask, tmask):
    """Eq. 1: log(1 + sum_j exp(D(a, p) - D(a, n_j) + margin)), mean over valid tuples."""
    a, p, n = a.astype(np.float64), p.astype(np.float64), n.astype(np.float64)
    dap = ((a - p) ** 2).sum(-1)
    dan = ((a[:, None] - n) ** 2).sum(-1)
    per = np.log1p(np.where(nmask > 0, np.exp(dap[:, None] - dan + margin), 0.0).sum(-1))
    return float(per[tmask > 0].mean()) if (tmask > 0).any() else 0.0


def ref_triplet(emb, labels, margin):
    emb = emb.astype(np.float64)
    D = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    lab = labels[:, None]
    pos_pair = (lab == labels[None]) & ~np.eye(len(labels), dtype=bool) & (lab >= 0)
    neg_pair = (lab != labels[None]) & (lab >= 0) & (labels[None] >= 0)
    hinge = np.maximum(0, D[:, :, None] - D[:, None, :] + margin) * (pos_pair[:, :, None] & neg_pair[:, None])
    active = (hinge > 0).sum()
    return float(hinge.sum() / active) if active else 0.0


def ref_gather(tuples, emb, M):
    valid = (tuples >= 0) & (tuples[:, :1] >= 0)
    gathered = np.where(valid[..., None], emb[np.maximum(tuples, 0)], 0.0).astype(np.float32)
    mask = valid.astype(np.float32)
    return gathered[:, :M], gathered[:, M:], mask[:, :M], mask[:, M:]


# ---------------------------------------------------------------------------------------------
# Inputs and backend helpers
# ---------------------------------------------------------------------------------------------


def case(seed, B=4, M=5, N=6, d=6, scale=0.6, padding=0.25):
    rng = np.random.default_rng(seed)
    pos = (rng.normal(size=(B, M, d)) * scale).astype(np.float32)
    neg = (rng.normal(size=(B, N, d)) * scale).astype(np.float32)
    pmask = (rng.random((B, M)) >= padding).astype(np.float32)
    nmask = (rng.random((B, N)) >= padding).astype(np.float32)
    pmask[0] = 0  # a tuple without positives
    nmask[1] = 0  # a tuple without negatives
    return pos, neg, pmask, nmask


def threshold_layer(d, units, seed):
    """An AdaptiveThreshold with random weights and the same weights as float64 NumPy arrays."""
    rng = np.random.default_rng(seed)
    layer = layers.AdaptiveThreshold(units)
    layer.build((None, d))
    weights = [
        (rng.normal(size=(d, units)) * 0.5).astype(np.float32),
        (rng.normal(size=(d, units)) * 0.5).astype(np.float32),
        (rng.normal(size=(d,)) * 0.3).astype(np.float32),
        np.asarray(rng.normal(), np.float32),
    ]
    layer.set_weights(weights)
    return layer, [w.astype(np.float64) for w in weights]


def stateless_threshold(layer, weights):
    """``(f1, f2) -> H`` with the layer's weights given as (differentiable) tensors."""
    return lambda f1, f2: layer.stateless_call(list(weights), [], f1, f2)[0]


def index_batch(seed, X=10, M=3, N=4, d=5):
    rng = np.random.default_rng(seed)
    emb = (rng.normal(size=(X, d)) * 0.6).astype(np.float32)
    tuples = np.full((X, M + N), -1, np.int32)
    for i in range(6):
        tuples[i, 0] = i
        tuples[i, 1:] = rng.choice([j for j in range(X) if j != i], size=M + N - 1, replace=False)
    tuples[1, 1:M] = -1
    tuples[2, M + 1 :] = -1
    tuples[3, 1] = -1
    tuples[4, M:] = -1
    return tuples, emb


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x))


_JAX_GRADS = {}


def value_and_grads(fn, *arrays):
    """``fn(*tensors)`` and its gradients with respect to every argument, by the backend's own
    autodiff (jax.grad, tf.GradientTape)."""
    if BACKEND == "jax":
        import jax

        argnums = tuple(range(len(arrays)))
        if fn not in _JAX_GRADS:  # compiled once per function: much faster than op-by-op tracing
            _JAX_GRADS[fn] = jax.jit(jax.value_and_grad(fn, argnums=argnums))
        value, grads = _JAX_GRADS[fn](*arrays)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = fn(*tensors)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(value, tensors, unconnected_gradients="zero")]
    else:
        raise RuntimeError(f"no gradient helper for backend {BACKEND}")
    return float(to_np(value)), [to_np(g) for g in grads]


def jit(fn):
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def close(got, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=rtol, atol=atol)


def finite(value, grads):
    assert np.isfinite(value), value
    for g in grads:
        assert np.all(np.isfinite(g)), g


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


@check
def no_tensorflow_import():
    if BACKEND != "tensorflow":
        assert not TENSORFLOW_IMPORTED, "importing fer_tf's metric-learning core imported tensorflow"


@check
def mining_matches_numpy():
    for seed in range(4):
        pos, neg, pmask, nmask = case(seed)
        keep, centre, gap = ref_mine(pos, neg, pmask, nmask)
        assert gap > 1e-4
        mask, c = mining.online_positive_mining(pos, neg, pmask, nmask)
        np.testing.assert_array_equal(to_np(mask), keep)
        close(to_np(c), centre)
    # M* = 0: every positive farther than the nearest negative -> keep the nearest one
    pos = np.array([[[10.0, 0.0], [-10.0, 0.0], [0.0, 0.5]]], np.float32)
    neg = np.array([[[0.0, 0.2], [50.0, 50.0]]], np.float32)
    mask, c = mining.online_positive_mining(pos, neg)
    np.testing.assert_array_equal(to_np(mask), [[0.0, 0.0, 1.0]])
    close(to_np(c), [[0.0, 0.5]])
    # two valid positives beyond the nearest negative tie: both are kept (our rule)
    pos = np.array([[[0.3, -1.7, 2.9], [-1.1, 0.4, 0.2], [9.0, 9.0, 9.0]]], np.float32)
    neg = pos[:, :2].mean(axis=1, keepdims=True) + np.float32(0.01)
    pmask = np.array([[1.0, 1.0, 0.0]], np.float32)
    mask, c = mining.online_positive_mining(pos, neg, pmask)
    np.testing.assert_array_equal(to_np(mask), pmask)
    np.testing.assert_array_equal(ref_mine(pos, neg, pmask, np.ones((1, 1)))[0], pmask)
    close(to_np(c), pos[:, :2].mean(axis=1))


@check
def eq3_matches_numpy():
    for seed in (12, 13, 14):  # seeds without near-ties in Algorithm 1
        pos, neg, pmask, nmask = case(seed)
        assert ref_mine(pos, neg, pmask, nmask)[2] > 1e-4
        for T, tau in [(1.0, 0.5), (2.0, 1.0)]:
            close(losses.nm_tuple_clusters_loss(pos, neg, T, tau, pmask, nmask),
                  ref_eq3(pos, neg, T, tau, pmask, nmask))
        ones_p, ones_n = np.ones(pos.shape[:2]), np.ones(neg.shape[:2])
        close(losses.nm_tuple_clusters_loss(pos, neg, 1.0, 0.5), ref_eq3(pos, neg, 1.0, 0.5, ones_p, ones_n))


@check
def eq10_matches_numpy_and_erratum():
    for seed in (22, 23, 26):
        pos, neg, pmask, nmask = case(seed)
        assert ref_mine(pos, neg, pmask, nmask)[2] > 1e-4
        layer, weights = threshold_layer(6, 4, seed)
        close(losses.adaptive_nm_tuple_clusters_loss(pos, neg, layer, pmask, nmask),
              ref_eq10(pos, neg, weights, pmask, nmask))
    # Erratum: L_A = L_B = L, c = 0, b = T gives H = T - 1/2 |(f1 - f2) L|^2 ...
    rng = np.random.default_rng(3)
    T, L = 1.5, (rng.normal(size=(6, 4)) * 0.7).astype(np.float32)
    layer = layers.AdaptiveThreshold(4)
    layer.build((None, 6))
    layer.set_weights([L, L, np.zeros(6, np.float32), np.asarray(T, np.float32)])
    f1, f2 = rng.normal(size=(2, 7, 6)).astype(np.float32)
    v = (f1.astype(np.float64) - f2) @ L
    close(to_np(layer(f1, f2)), T - 0.5 * (v**2).sum(-1))
    # ... and positives are labelled -1, negatives +1: with every point on the centre H = T for
    # all, so positives score max(0, 1 - T) = 0 and negatives max(0, 1 + T).
    pos, neg = np.full((1, 3, 6), 0.3, np.float32), np.full((1, 4, 6), 0.3, np.float32)
    close(losses.adaptive_nm_tuple_clusters_loss(pos, neg, layer), 4 * (1 + T) / 7)


@check
def eq1_and_triplet_match_numpy():
    rng = np.random.default_rng(30)
    a, p = rng.normal(size=(2, 5, 4)).astype(np.float32)
    n = rng.normal(size=(5, 6, 4)).astype(np.float32)
    nmask = (rng.random((5, 6)) > 0.3).astype(np.float32)
    tmask = np.array([1, 1, 0, 1, 1], np.float32)
    close(losses.n_plus_one_tuple_loss(a, p, n, 0.5, nmask, tmask), ref_eq1(a, p, n, 0.5, nmask, tmask))
    close(losses.n_plus_one_tuple_loss(a, p, n, 0.0), ref_eq1(a, p, n, 0.0, np.ones((5, 6)), np.ones(5)))
    emb = rng.normal(size=(12, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, 0, 1], np.int32)
    close(losses.batch_all_triplet_loss(emb, labels, 0.5), ref_triplet(emb, labels, 0.5), rtol=1e-4)


@check
def classes_match_numpy():
    tuples, emb = index_batch(0)
    pos, neg, pm, nm = ref_gather(tuples, emb, 3)
    got = [to_np(x) for x in losses.gather_tuples(tuples, emb, 3)]
    np.testing.assert_array_equal(got[2], pm)
    np.testing.assert_array_equal(got[3], nm)
    close(got[0] * pm[..., None], pos)  # padded entries hold any finite value
    close(got[1] * nm[..., None], neg)
    close(losses.NMTupleClustersLoss(3, 1.2, 0.4)(tuples, emb), ref_eq3(pos, neg, 1.2, 0.4, pm, nm))
    layer, weights = threshold_layer(5, 3, 1)
    close(losses.AdaptiveNMTupleClustersLoss(3, threshold=layer)(tuples, emb),
          ref_eq10(pos, neg, weights, pm, nm))
    # (N+1): anchor = column 0, positive = first valid positive column, all negative columns
    first = np.argmax(pm[:, 1:], axis=1) + 1
    tmask = pm[:, 0] * pm[:, 1:].max(axis=1)
    expected = ref_eq1(pos[:, 0], pos[np.arange(len(pos)), first], neg, 0.3, nm, tmask)
    close(losses.NPlusOneTupleLoss(3, margin=0.3)(tuples, emb), expected)


@check
def gradients_finite():
    pos, neg, pmask, nmask = case(40)
    pos[0] = np.nan  # tuple 0 has no valid positive: its content must not leak
    neg[1] = np.inf  # tuple 1 has no valid negative
    layer, _ = threshold_layer(6, 4, 4)
    weights = layer.get_weights()  # L_A, L_B, c, b: the order of layer.trainable_variables
    functions = {
        "eq3": lambda p, n: losses.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask, nmask),
        "eq3_no_miner": lambda p, n: losses.nm_tuple_clusters_loss(p, n, 1.0, 0.5, pmask, nmask, miner=None),
        "centre": lambda p, n: ops.sum(ops.square(mining.online_positive_mining(p, n, pmask, nmask)[1])),
        "eq10": lambda p, n, *w: losses.adaptive_nm_tuple_clusters_loss(
            p, n, stateless_threshold(layer, w), pmask, nmask),
        "eq1": lambda p, n: losses.n_plus_one_tuple_loss(p[:, 1], p[:, 2], n, 0.5, nmask, pmask[:, 1]),
    }
    for name, fn in functions.items():
        extra = weights if name == "eq10" else []
        for scale, p, n in [(1.0, pos, neg), (1e4, pos * 1e4, neg * 1e4),
                            (0.0, np.full_like(pos, 0.25), np.full_like(neg, 0.25))]:
            value, grads = value_and_grads(fn, p, n, *extra)
            finite(value, grads)
            np.testing.assert_array_equal(grads[0][0], 0.0, err_msg=name)
    # no valid tuple: exactly 0 with an exactly zero gradient
    none = np.zeros_like(pmask)
    for fn in [lambda p, n, *w: losses.nm_tuple_clusters_loss(p, n, 1.0, 0.5, none),
               lambda p, n, *w: losses.adaptive_nm_tuple_clusters_loss(p, n, stateless_threshold(layer, w), none),
               lambda p, n, *w: losses.n_plus_one_tuple_loss(p[:, 0], p[:, 1], n, 0.5, None, none[:, 0])]:
        value, grads = value_and_grads(fn, pos, np.where(np.isfinite(neg), neg, 0.0), *weights)
        assert value == 0.0
        for g in grads:
            np.testing.assert_array_equal(g, 0.0)
    # classes, with respect to the embeddings; an embedding outside every tuple gets 0
    tuples, emb = index_batch(5)
    for loss in [losses.NMTupleClustersLoss(3), losses.AdaptiveNMTupleClustersLoss(3, threshold=layer_5()),
                 losses.NPlusOneTupleLoss(3)]:
        value, (g,) = value_and_grads(lambda e: loss(tuples, e), emb)
        finite(value, [g])
        used = set(tuples[tuples[:, 0] >= 0].ravel()) - {-1}
        for i in set(range(len(emb))) - used:
            np.testing.assert_array_equal(g[i], 0.0)
    value, (g,) = value_and_grads(lambda e: losses.batch_all_triplet_loss(e, np.array([0, 0, 1, 1]), 0.5),
                                  np.ones((4, 3), np.float32))
    finite(value, [g])


def layer_5():
    return threshold_layer(5, 3, 6)[0]


class KeepQueryOnly(mining.PositiveMiner):
    """A stand-in miner: keeps column 0 (the query) of every tuple with a valid query."""

    def keep(self, positives, negatives, pmask, nmask):
        return pmask * ops.one_hot(ops.zeros_like(pmask[:, 0], dtype="int32"), pmask.shape[-1])


class SumOverValid(reducers.Reducer):
    def __call__(self, per_tuple, valid):
        return ops.sum(ops.where(valid > 0, per_tuple, 0.0))


@check
def miners_and_reducers_swappable():
    pos, neg, pmask, nmask = case(50)
    online = ref_eq3(pos, neg, 1.0, 0.5, pmask, nmask)
    keep_all = pmask
    query_only = pmask * (np.arange(pos.shape[1]) == 0)
    fn = losses.nm_tuple_clusters_loss
    close(fn(pos, neg, 1.0, 0.5, pmask, nmask, miner=mining.OnlinePositiveMiner()), online)
    close(fn(pos, neg, 1.0, 0.5, pmask, nmask, miner=None), ref_eq3(pos, neg, 1.0, 0.5, pmask, nmask, keep_all))
    close(fn(pos, neg, 1.0, 0.5, pmask, nmask, miner=KeepQueryOnly()),
          ref_eq3(pos, neg, 1.0, 0.5, pmask, nmask, query_only))
    assert abs(online - ref_eq3(pos, neg, 1.0, 0.5, pmask, nmask, keep_all)) > 1e-3  # mining matters
    layer, weights = threshold_layer(6, 3, 7)
    close(losses.adaptive_nm_tuple_clusters_loss(pos, neg, layer, pmask, nmask, miner=None),
          ref_eq10(pos, neg, weights, pmask, nmask, keep_all))
    mask, _ = mining.KeepAllPositives()(pos, neg, pmask, nmask)
    np.testing.assert_array_equal(to_np(mask), pmask)
    # a reducer is a part too
    valid = keep_all.any(1)
    total = ref_eq3(pos, neg, 1.0, 0.5, pmask, nmask) * valid.sum()
    close(fn(pos, neg, 1.0, 0.5, pmask, nmask, reducer=SumOverValid()), total)
    # the classes take the same parts, and serialise them
    tuples, emb = index_batch(8)
    gp, gn, gpm, gnm = ref_gather(tuples, emb, 3)
    expected = ref_eq3(gp, gn, 1.0, 0.5, gpm, gnm, keep=gpm)
    loss = losses.NMTupleClustersLoss(3, miner=None, distance=distances.SquaredEuclidean())
    close(loss(tuples, emb), expected)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again.miner, mining.KeepAllPositives) and again.get_config() == loss.get_config()
    close(again(tuples, emb), expected)
    old_config = {k: v for k, v in losses.NMTupleClustersLoss(3).get_config().items()
                  if k not in ("miner", "distance", "reducer")}
    assert isinstance(losses.NMTupleClustersLoss.from_config(old_config).miner, mining.OnlinePositiveMiner)
    try:
        mining.get("bogus")
    except ConfigError:
        pass
    else:
        raise AssertionError("an unknown miner name must raise ConfigError")


@check
def compiled_equals_eager():
    tuples, emb = index_batch(9)
    layer = layer_5()
    for loss in [losses.NMTupleClustersLoss(3), losses.AdaptiveNMTupleClustersLoss(3, threshold=layer),
                 losses.NPlusOneTupleLoss(3)]:
        close(jit(lambda e: loss(tuples, e))(emb), float(to_np(loss(tuples, emb))))


@check
def scaled_learning_rate():
    """ScaledSGD/ScaledAdam move the named variables by lr_scale x the step of the others."""
    rng = np.random.default_rng(0)
    for cls, scale in ((optimizers.ScaledSGD, 0.25), (optimizers.ScaledAdam, 0.0)):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="slow"),
                                  keras.layers.Dense(2, name="fast")])
        before = [to_np(v).copy() for v in model.trainable_variables]
        opt = cls(learning_rate=0.1, scaled_paths=[v.path for v in model.layers[0].trainable_variables],
                  lr_scale=scale)
        grads = [ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32"))
                 for v in model.trainable_variables]
        opt.apply(grads, model.trainable_variables)
        steps = [to_np(v) - b for v, b in zip(model.trainable_variables, before)]
        plain = [-0.1 * to_np(g) for g in grads] if cls is optimizers.ScaledSGD else None
        for v, step, i in zip(model.trainable_variables, steps, range(len(steps))):
            slow = "slow" in v.path.split("/")
            if plain is not None:
                close(step, plain[i] * (scale if slow else 1.0))
            elif slow:
                assert np.all(step == 0), "lr_scale 0 must leave the scaled variables unchanged"
            else:
                assert np.all(np.abs(step) > 0)
        clone = cls.from_config(opt.get_config())
        assert clone.lr_scale == scale and list(clone.scaled_paths) == list(opt.scaled_paths)


@check
def mixing_matches_numpy():
    """mixup and CutMix pixels (fer_tf.feeding.mixing.mix_images, in keras.ops) against NumPy."""
    from fer_tf.feeding.mixing import BOX, LAMBDA, PARTNER, Mixing, mix_images, mix_plan

    images = np.random.default_rng(0).normal(size=(12, 48, 48, 1)).astype("float32")
    for kind in ("mixup", "cutmix"):
        plan = mix_plan(Mixing(kind, alpha=0.5), 12, [1, 2])
        expected = np.empty_like(images)
        for i, (j, lam, (top, left, bottom, right)) in enumerate(
                zip(plan[PARTNER], plan[LAMBDA], plan[BOX])):
            if bottom > top and right > left:
                expected[i] = images[i]
                expected[i, top:bottom, left:right] = images[j, top:bottom, left:right]
            else:
                expected[i] = lam * images[i] + (1 - lam) * images[j]
        close(to_np(mix_images(images, plan)), expected, atol=1e-6)
        close(to_np(jit(lambda x, p: mix_images(x, p))(images, plan)), expected, atol=1e-6)


def main():
    results = {}
    for name, fn in CHECKS.items():
        try:
            fn()
            results[name] = {"ok": True, "info": ""}
        except Exception:  # reported to the test, which fails with the traceback
            results[name] = {"ok": False, "info": traceback.format_exc()[-3000:]}
    print(json.dumps({"backend": BACKEND, "results": results}))


if __name__ == "__main__":
    main()

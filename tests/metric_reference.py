"""Independent NumPy references for the metric-learning tests: plain loops in float64, no code
shared with fer_tf (Algorithm 1 with the fallback's tie rule, Eq. 1, 3, 5-8, 10, batch-all
triplet, tuple gathering and the joint loss's cross-entropy).

``gap`` values say how far an input is from a decision of Algorithm 1 that float32 rounding could
flip: a keep/drop at ``D*`` (``|D(f+, c+) - D*| / (1 + D*)``), the nearest positive of the
fallback, and the tie rule's tolerance (``10 x |relative excess - TIE_TOLERANCE|``, so that an exact
tie is far from it). Tests skip inputs whose gap is below 1e-4.
"""

import math

import numpy as np

#: The fallback's tie tolerance (relative), as fer_tf.metric.mining.OnlinePositiveMiner's default.
TIE_TOLERANCE = 1e-4


def sqdist(a, b):
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def mean_vec(vectors):
    d = len(vectors[0])
    return [sum(float(v[t]) for v in vectors) / len(vectors) for t in range(d)]


def ref_keep(pos, neg, pmask, nmask, tie=TIE_TOLERANCE):
    """One tuple -> (indices of the kept positives, indices of the valid negatives, gap).

    Algorithm 1: keep the valid positives within D* (the nearest valid negative's distance to the
    centre of the valid positives); when none is, keep the nearest, and every positive tied with
    it: within ``tie`` (relative) of the smallest distance (our rule, beyond the paper)."""
    P = [j for j in range(len(pos)) if pmask[j]]
    Q = [k for k in range(len(neg)) if nmask[k]]
    if not P:
        return [], Q, np.inf
    c0 = mean_vec([pos[j] for j in P])
    dp = {j: sqdist(pos[j], c0) for j in P}
    if not Q:
        return P, Q, np.inf
    dstar = min(sqdist(neg[k], c0) for k in Q)
    kept = [j for j in P if dp[j] <= dstar]
    gap = min(abs(dp[j] - dstar) / (1 + dstar) for j in P)
    if not kept:
        best = min(dp.values())
        kept = [j for j in P if dp[j] - best <= tie * best]
        for j in P:
            if dp[j] != best:  # best > D* >= 0
                gap = min(gap, 10 * abs((dp[j] - best) / best - tie))
    return kept, Q, gap


def ref_mine(positives, negatives, pmask=None, nmask=None, tie=TIE_TOLERANCE):
    """A batch -> (mask [B, M], centre [B, d], gap) by :func:`ref_keep`."""
    B, M, d = positives.shape
    pmask, nmask = masks_or_ones(positives, negatives, pmask, nmask)
    mask = np.zeros((B, M), np.float32)
    centre = np.zeros((B, d))
    gap = np.inf
    for i in range(B):
        kept, _, g = ref_keep(positives[i], negatives[i], pmask[i], nmask[i], tie)
        gap = min(gap, g)
        for j in kept:
            mask[i][j] = 1.0
        if kept:
            centre[i] = mean_vec([positives[i][j] for j in kept])
    return mask, centre, gap


def ref_tuple(pos, neg, pmask, nmask):
    """One tuple -> (kept positives, valid negatives, centre of the kept, gap) by Algorithm 1."""
    kept, Q, gap = ref_keep(pos, neg, pmask, nmask)
    if not kept:
        return [], [neg[k] for k in Q], None, gap
    P = [pos[j] for j in kept]
    return P, [neg[k] for k in Q], mean_vec(P), gap


def masks_or_ones(pos, neg, pmask, nmask):
    pmask = np.ones(pos.shape[:2]) if pmask is None else pmask
    nmask = np.ones(neg.shape[:2]) if nmask is None else nmask
    return pmask, nmask


def ref_over_tuples(pos, neg, pmask, nmask, score):
    """Mean over the tuples with a kept positive of ``score(kept, negatives, centre)`` after
    Algorithm 1 -> (loss, gap)."""
    pmask, nmask = masks_or_ones(pos, neg, pmask, nmask)
    total, count, gap = 0.0, 0, np.inf
    for i in range(pos.shape[0]):
        kept, Q, c, g = ref_tuple(pos[i], neg[i], pmask[i], nmask[i])
        gap = min(gap, g)
        if kept:
            total += score(kept, Q, c)
            count += 1
    return (total / count if count else 0.0), gap


def ref_nm_loss(pos, neg, T, tau, pmask=None, nmask=None):
    """Eq. 3 -> (loss, gap)."""

    def score(kept, Q, c):
        value = sum(max(0.0, sqdist(p, c) - T + tau / 2) for p in kept) / len(kept)
        if Q:
            value += sum(max(0.0, T + tau / 2 - sqdist(q, c)) for q in Q) / len(Q)
        return value

    return ref_over_tuples(pos, neg, pmask, nmask, score)


def ref_H(f1, f2, LA, LB, c, b):
    """Eq. 5-8 with the erratum's signs: H = -1/2|f1 LA|^2 - 1/2|f2 LA|^2 + (f1 LB).(f2 LB) + c.(f1 + f2) + b."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    a1, a2 = f1 @ LA, f2 @ LA
    b1, b2 = f1 @ LB, f2 @ LB
    return -0.5 * a1 @ a1 - 0.5 * a2 @ a2 + b1 @ b2 + c @ (f1 + f2) + b


def ref_adaptive_loss(pos, neg, H, pmask=None, nmask=None):
    """Eq. 10 -> (loss, gap)."""

    def score(kept, Q, c):
        terms = [max(0.0, -H(p, c) + 1.0) for p in kept] + [max(0.0, H(q, c) + 1.0) for q in Q]
        return sum(terms) / len(terms)

    return ref_over_tuples(pos, neg, pmask, nmask, score)


def ref_n_plus_one(anchor, positive, negatives, margin, nmask=None, tmask=None):
    """Eq. 1: mean over the tuples of log(1 + sum_j exp(D(a, p) - D(a, n_j) + margin))."""
    total, count = 0.0, 0
    for i in range(anchor.shape[0]):
        if tmask is not None and not tmask[i]:
            continue
        dap = sqdist(anchor[i], positive[i])
        s = 0.0
        for j in range(negatives.shape[1]):
            if nmask is None or nmask[i][j]:
                s += math.exp(dap - sqdist(anchor[i], negatives[i][j]) + margin)
        total += math.log1p(s)
        count += 1
    return total / count if count else 0.0


def ref_triplet(emb, labels, margin):
    n = len(labels)
    total, active, closest = 0.0, 0, np.inf
    for a in range(n):
        for p in range(n):
            if a == p or labels[a] < 0 or labels[a] != labels[p]:
                continue
            for q in range(n):
                if labels[q] < 0 or labels[q] == labels[a]:
                    continue
                t = sqdist(emb[a], emb[p]) - sqdist(emb[a], emb[q]) + margin
                closest = min(closest, abs(t))
                if t > 0:
                    total += t
                    active += 1
    return (total / active if active else 0.0), closest


def ref_gather(tuples, emb, M):
    """Gather with NumPy loops; -1 entries (and every entry of a non-query row) are masked."""
    X, W = tuples.shape
    d = emb.shape[1]
    out = np.zeros((X, W, d), np.float32)
    mask = np.zeros((X, W), np.float32)
    for i in range(X):
        for j in range(W):
            if tuples[i, 0] >= 0 and tuples[i, j] >= 0:
                out[i, j] = emb[tuples[i, j]]
                mask[i, j] = 1
    return out[:, :M], out[:, M:], mask[:, :M], mask[:, M:]


def ref_cross_entropy(labels, probabilities):
    """Mean of -log p[label] over the rows with a label >= 0 (queries); 0.0 when none."""
    values = [-math.log(float(probabilities[i][y])) for i, y in enumerate(labels) if y >= 0]
    return sum(values) / len(values) if values else 0.0


def random_case(seed, B, M, N, d, scale=1.0, padding=0.0):
    rng = np.random.default_rng(seed)
    pos = (rng.normal(size=(B, M, d)) * scale).astype(np.float32)
    neg = (rng.normal(size=(B, N, d)) * scale).astype(np.float32)
    pmask = (rng.random((B, M)) >= padding).astype(np.float32)
    nmask = (rng.random((B, N)) >= padding).astype(np.float32)
    return pos, neg, pmask, nmask

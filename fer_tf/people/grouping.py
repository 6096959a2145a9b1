"""Grouping faces into people: clustering of identity vectors, with the number of people chosen from
the run's own distances; enrolled names; adjusted Rand index and purity (NumPy only).

**Why the cut adapts.** A recogniser's distances are not equally spread across populations: faces
of one ethnicity or age group, or photographed alike, sit closer together than the faces it was
tuned on, so a threshold fixed on one population (dlib's 0.6 on LFW) merges different people of
another, or splits one person photographed in changing light. :func:`group` therefore builds the
average-linkage tree of the run's faces (:func:`average_linkage`) and chooses its cut from this
run's distances, in two steps:

1. *Same person or not, learnt from the run* (:func:`neighbour_mixture`): each face's
   ``ceil(sqrt(n))`` nearest neighbours are mostly its own other photos plus the nearest other
   people, so a two-component Gaussian mixture fitted to those distances gives a same-person and a
   different-person mode; :func:`different_probability` turns every distance into the posterior
   probability that the two faces are different people.
2. *Best separated people* (:func:`separation`): of the cuts in :data:`CUT_RANGE`, the one where each
   face's mean probability of being a different person from the nearest other group most exceeds
   that from its own group (a silhouette in probability units, ``b - a`` without the division).
   Two photo sessions of one person are far apart in distance but both "same person" in
   probability, so joining them costs nothing, while joining two people does: the plain silhouette
   (:func:`silhouette`, on distances) splits such sessions.

When the run is too small to learn from (fewer than :data:`MIN_PAIRS` neighbour distances) or its
neighbour distances have one mode (the mixture's BIC is no better than one Gaussian's: one person,
or all different people), the tree is cut at the recogniser's own :data:`REFERENCE_THRESHOLD`
(method ``adaptive-fallback``). ``reports/people/identity.md`` compares this with fixed thresholds
and with the distance silhouette on CK+48, KDEF and Yale.

**Names.** :meth:`Grouping.names` gives ``person-1``, ``person-2``, ... in the order the people first
appear; :func:`enroll` puts enrolled names on the groups that match them and reports the names that
match nobody.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fer_tf.errors import ConfigError
from fer_tf.people.embedding import REFERENCE_THRESHOLD, distances

#: Heights of the cuts that :func:`group` considers (dlib distances): same-person pairs lie below,
#: different-person pairs above, with populations shifting where in the range they meet.
CUT_RANGE = (0.35, 0.85)
#: At most this many candidate cuts are scored (quantiles of the merge heights in range).
MAX_CANDIDATES = 64
#: ``method="silhouette"``: below this best mean silhouette the run has no cluster structure.
MIN_SILHOUETTE = 0.1
#: Fewer neighbour distances than this: too few to fit the mixture's 5 parameters (fallback).
MIN_PAIRS = 10
METHODS = ("adaptive", "silhouette", "fixed")


@dataclasses.dataclass
class Grouping:
    """Cluster ids ``labels`` ([n] int, 0, 1, ... in order of first appearance), the ``threshold``
    (merge height) the tree was cut at, ``method`` and the score of the chosen cut (``silhouette``:
    :func:`separation` for ``adaptive``, :func:`silhouette` for ``silhouette``)."""

    labels: np.ndarray
    threshold: float
    method: str
    silhouette: float = float("nan")

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def names(self, prefix="person-"):
        """``person-1``, ``person-2``, ... per face, numbered in order of first appearance."""
        return [f"{prefix}{int(k) + 1}" for k in self.labels]


def average_linkage(d):
    """Average-linkage (UPGMA) tree of the square distance matrix ``d``: ``[n-1, 4]`` rows ``(a,
    b, height, size)`` as SciPy's ``linkage`` (leaves 0..n-1, merged cluster ``n + row``), heights
    non-decreasing. Each row keeps its nearest neighbour, so a merge costs O(n) mostly."""
    d = np.array(d, dtype=np.float64)
    n = len(d)
    if d.shape != (n, n):
        raise ConfigError(f"distance matrix must be square, got shape {d.shape}")
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    node = np.arange(n)  # tree id of the cluster held in each row
    alive = np.ones(n, bool)
    near = d.argmin(axis=1) if n else np.zeros(0, int)
    near_d = d[np.arange(n), near] if n else np.zeros(0)
    merges = np.zeros((max(n - 1, 0), 4))
    for step in range(n - 1):
        i = int(np.argmin(np.where(alive, near_d, np.inf)))
        j = int(near[i])
        h = d[i, j]
        merges[step] = (min(node[i], node[j]), max(node[i], node[j]), h, size[i] + size[j])
        row = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        row[~alive] = np.inf
        row[i] = row[j] = np.inf
        d[i], d[:, i] = row, row
        d[j], d[:, j] = np.inf, np.inf
        alive[j] = False
        size[i] += size[j]
        node[i] = n + step
        near_d[j] = np.inf
        # rows whose nearest was i or j look again; others may now be nearest to i
        stale = np.flatnonzero(alive & ((near == i) | (near == j)))
        stale = stale[stale != i]
        if len(stale):
            near[stale] = d[stale].argmin(axis=1)
            near_d[stale] = d[stale, near[stale]]
        closer = alive & (row < near_d)
        near[closer], near_d[closer] = i, row[closer]
        near[i] = int(row.argmin())
        near_d[i] = row[near[i]]
    # average linkage is monotone: this only removes rounding-level inversions
    merges[:, 2] = np.maximum.accumulate(merges[:, 2]) if len(merges) else merges[:, 2]
    return merges


def cut(merges, n, threshold):
    """Cluster ids ([n], 0, 1, ... in order of first appearance) after every merge of height at
    most ``threshold``."""
    parent = np.arange(2 * n - 1) if n else np.zeros(0, int)
    for step, (a, b, h, _) in enumerate(merges):
        if h <= threshold:
            parent[int(a)] = parent[int(b)] = n + step
    root = np.arange(n)
    for _ in range(2 * n):  # follow parents to the top (depth < n)
        up = parent[root]
        if np.array_equal(up, root):
            break
        root = up
    return _first_appearance(root)


def _first_appearance(labels):
    """Relabel to 0, 1, ... in the order labels first appear."""
    labels = np.asarray(labels)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int64)


def _own_and_nearest(d, labels):
    """Per face: the mean of ``d`` to its own group (itself left out), to the nearest other group,
    and its own group's size; ``None`` for one group or all singletons."""
    labels = np.asarray(labels)
    k = int(labels.max()) + 1
    if k < 2 or k == len(labels):
        return None
    onehot = np.eye(k)[labels]
    counts = onehot.sum(0)
    sums = d @ onehot  # [n, k] summed distances to each group
    own = counts[labels]
    idx = np.arange(len(labels))
    a = sums[idx, labels] / np.maximum(own - 1, 1)
    other = sums / counts
    other[idx, labels] = np.inf
    return a, other.min(axis=1), own


def silhouette(d, labels):
    """Mean silhouette of ``labels`` under distances ``d`` (singletons count 0; ``nan`` for one
    cluster or for all singletons)."""
    found = _own_and_nearest(d, labels)
    if found is None:
        return float("nan")
    a, b, own = found
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


@dataclasses.dataclass
class Mixture:
    """Two Gaussians fitted to distances: ``weight``, ``mean``, ``std`` ([2] each, same person
    first) and whether they beat one Gaussian by BIC (``bimodal``)."""

    weight: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    bimodal: bool


def _log_densities(x, mixture):
    x = np.asarray(x, dtype=np.float64)[..., None]
    return (np.log(mixture.weight) - np.log(mixture.std)
            - 0.5 * ((x - mixture.mean) / mixture.std) ** 2 - 0.5 * np.log(2 * np.pi))


def fit_mixture(x, iterations=500, tol=1e-9):
    """Two-component 1-D Gaussian mixture by EM (started at the quartiles, so deterministic), or
    ``None`` for fewer than :data:`MIN_PAIRS` values."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < MIN_PAIRS:
        return None
    floor = max(1e-3 * float(x.std()), 1e-6)  # a component may not collapse onto one value
    mixture = Mixture(np.array([0.5, 0.5]), np.quantile(x, [0.25, 0.75]),
                      np.full(2, max(float(x.std()) / 2, floor)), False)
    previous = -np.inf
    for _ in range(iterations):
        logp = _log_densities(x, mixture)
        top = logp.max(axis=1, keepdims=True)
        total = top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))
        r = np.exp(logp - total[:, None])
        nk = np.maximum(r.sum(axis=0), 1e-12)
        mean = (r * x[:, None]).sum(axis=0) / nk
        std = np.maximum(np.sqrt((r * (x[:, None] - mean) ** 2).sum(axis=0) / nk), floor)
        mixture = Mixture(nk / len(x), mean, std, False)
        loglik = float(total.sum())
        if loglik - previous < tol * abs(loglik):
            break
        previous = loglik
    order = np.argsort(mixture.mean)
    mixture = Mixture(mixture.weight[order], mixture.mean[order], mixture.std[order], False)
    logp = _log_densities(x, mixture)
    top = logp.max(axis=1)
    two = float((top + np.log(np.exp(logp - top[:, None]).sum(axis=1))).sum())
    one = float((-np.log(max(x.std(), floor)) - 0.5 * ((x - x.mean()) / max(x.std(), floor)) ** 2
                 - 0.5 * np.log(2 * np.pi)).sum())
    # BIC: 5 parameters against 2
    mixture.bimodal = bool(-2 * two + 5 * np.log(len(x)) < -2 * one + 2 * np.log(len(x)))
    return mixture


def neighbour_mixture(d):
    """The mixture (:func:`fit_mixture`) of the distances from each face to its ``ceil(sqrt(n))``
    nearest neighbours (each pair once), or ``None`` when they are too few."""
    n = len(d)
    k = min(int(np.ceil(np.sqrt(n))), n - 1)
    if k < 1:
        return None
    masked = np.array(d, dtype=np.float64)
    np.fill_diagonal(masked, np.inf)
    near = np.argsort(masked, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(n), k)
    pairs = np.unique(np.stack([np.minimum(rows, near.ravel()), np.maximum(rows, near.ravel())], 1), axis=0)
    return fit_mixture(masked[pairs[:, 0], pairs[:, 1]])


def different_probability(d, mixture):
    """Posterior probability that two faces at distance ``d`` are different people (1 beyond the
    different-person mean, where a narrow same-person Gaussian would otherwise come back)."""
    d = np.asarray(d, dtype=np.float64)
    logp = _log_densities(d, mixture)
    p = 1.0 / (1.0 + np.exp(np.clip(logp[..., 0] - logp[..., 1], -700, 700)))
    return np.where(d >= mixture.mean[1], 1.0, p)


def separation(p, labels):
    """Mean over faces of ``b - a``: ``a`` the mean of ``p`` (different-person probabilities) to
    the face's own group, ``b`` to the nearest other group (singletons count 0; ``nan`` for one
    group or all singletons)."""
    found = _own_and_nearest(p, labels)
    if found is None:
        return float("nan")
    a, b, own = found
    return float(np.where(own > 1, b - a, 0.0).mean())


def _candidates(merges, cut_range):
    lo, hi = cut_range
    heights = merges[:, 2]
    # the cuts in [lo, hi] give the partitions at lo and at each merge height above it
    inside = np.unique(heights[(heights > lo) & (heights <= hi)])
    if len(inside) > MAX_CANDIDATES - 1:
        inside = np.unique(np.quantile(inside, np.linspace(0, 1, MAX_CANDIDATES - 1), method="nearest"))
    return np.concatenate([[lo], inside])


def _best_cut(score, merges, n, cut_range):
    best_t, best_s = float("nan"), -np.inf
    for t in _candidates(merges, cut_range):
        s = score(cut(merges, n, t))
        if np.isfinite(s) and s > best_s:
            best_t, best_s = float(t), s
    return best_t, best_s


def group(vectors, method="adaptive", threshold=None, cut_range=CUT_RANGE):
    """Group identity vectors ``[n, 128]`` into people: a :class:`Grouping`.

    ``method="adaptive"`` (default): the average-linkage cut in ``cut_range`` that best separates
    people by the run's own same-person / different-person mixture, with the fallback to
    :data:`REFERENCE_THRESHOLD` for runs too small or with one mode (module docstring).
    ``method="silhouette"``: the cut in ``cut_range`` with the best mean silhouette of distances
    (the earlier default; it splits a person's photo sessions), with a one-person / all-different
    fallback below :data:`MIN_SILHOUETTE`.
    ``method="fixed"``: the cut at ``threshold`` (default :data:`REFERENCE_THRESHOLD`).
    """
    if method not in METHODS:
        raise ConfigError(f"grouping method must be one of {', '.join(METHODS)}, got {method!r}")
    vectors = np.asarray(vectors, dtype=np.float64)
    n = len(vectors)
    if n == 0:
        return Grouping(np.zeros(0, np.int64), float("nan"), method)
    d = distances(vectors)
    merges = average_linkage(d)
    if method == "fixed":
        t = REFERENCE_THRESHOLD if threshold is None else float(threshold)
        return Grouping(cut(merges, n, t), t, method)
    if method == "adaptive":
        mixture = neighbour_mixture(d)
        if mixture is not None and mixture.bimodal:
            p = different_probability(d, mixture)
            np.fill_diagonal(p, 0.0)
            t, s = _best_cut(lambda labels: separation(p, labels), merges, n, cut_range)
            if np.isfinite(t):
                return Grouping(cut(merges, n, t), t, method, s)
        # too few distances to learn from, or one mode: the recogniser's own threshold
        return Grouping(cut(merges, n, REFERENCE_THRESHOLD), REFERENCE_THRESHOLD, "adaptive-fallback")
    best_t, best_s = _best_cut(lambda labels: silhouette(d, labels), merges, n, cut_range)
    if best_s >= MIN_SILHOUETTE:
        return Grouping(cut(merges, n, best_t), best_t, method, best_s)
    # no cluster structure: one person, or all different people
    pairs = d[np.triu_indices(n, 1)]
    one = n > 1 and float(np.median(pairs)) < REFERENCE_THRESHOLD
    t = np.inf if one else -np.inf
    return Grouping(cut(merges, n, t), t, "silhouette-fallback", best_s if np.isfinite(best_s) else float("nan"))


def enroll(grouping, vectors, enrolled, threshold=None):
    """Put enrolled names on groups: ``(names per face, names that matched nobody)``.

    ``enrolled``: ``{name: [m, 128] vectors}`` (a person's reference photos). A group takes the
    name whose nearest reference vector is closest to the group's mean vector, when that distance
    is below ``threshold`` (default: the grouping's own cut when finite, else
    :data:`REFERENCE_THRESHOLD`); each name goes to the groups it is nearest to. The other groups
    are ``person-1``, ``person-2``, ... in order of first appearance.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = grouping.labels
    if threshold is None:
        threshold = grouping.threshold if np.isfinite(grouping.threshold) else REFERENCE_THRESHOLD
    names = sorted(enrolled)
    refs = {name: np.asarray(enrolled[name], dtype=np.float64).reshape(-1, vectors.shape[-1])
            for name in names}
    for name in names:
        if len(refs[name]) == 0:
            raise ConfigError(f"enrolled name {name!r} has no usable face (too small, blurred or none)")
    k = grouping.count
    assigned = {}
    if k and names:
        means = np.stack([vectors[labels == c].mean(axis=0) for c in range(k)])
        near = np.stack([distances(means, refs[name]).min(axis=1) for name in names], axis=1)  # [k, names]
        for c in range(k):
            best = int(near[c].argmin())
            if near[c, best] < threshold:
                assigned[c] = names[best]
    unmatched = [name for name in names if name not in assigned.values()]
    others = [c for c in range(k) if c not in assigned]
    number = {c: f"person-{i + 1}" for i, c in enumerate(others)}
    return [assigned.get(int(c), number.get(int(c))) for c in labels], unmatched


def adjusted_rand_index(truth, predicted) -> float:
    """Hubert and Arabie's adjusted Rand index of two labelings (1: identical partitions, about 0:
    chance; 1.0 when both put everything in one cluster or both are all singletons)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError("labelings differ in length")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(predicted, return_inverse=True)
    table = np.zeros((t.max() + 1 if len(t) else 0, p.max() + 1 if len(p) else 0), np.int64)
    np.add.at(table, (t, p), 1)

    def pairs(x):
        x = np.asarray(x, dtype=np.float64)
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    total = len(truth) * (len(truth) - 1) / 2
    expected = rows * cols / total if total else 0.0
    top = (rows + cols) / 2
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


def purity(truth, predicted) -> float:
    """Share of faces whose cluster's most common true label is their own."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if not len(truth):
        return float("nan")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(predicted, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), np.int64)
    np.add.at(table, (p, t), 1)
    return float(table.max(axis=1).sum() / len(truth))

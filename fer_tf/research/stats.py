"""Statistics for cross-validation campaigns: mean and spread of runs, paired differences between
two methods with bootstrap confidence intervals.

A run is one (seed, fold). Two methods are compared on the runs they share: same fold (same test
subjects) and same seed, so each pair differs only by the method. Runs of one fold are not
independent (they test the same subjects), so the bootstrap resamples in two stages: folds with
replacement, then seeds with replacement within each drawn fold (a cluster bootstrap). With one seed
this is the ordinary bootstrap over folds.
"""

from __future__ import annotations

import numpy as np


def mean_std(values):
    """``(mean, sample standard deviation, n)``; std is 0.0 for a single value, None for none."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(values):
        return None, None, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def paired(a, b, key="sequence_accuracy"):
    """``{(seed, fold): a - b}`` over the runs in both lists (runs are dicts with seed and fold)."""
    first = {(r["seed"], r["fold"]): r[key] for r in a if r.get(key) is not None}
    return {k: first[k] - r[key] for r in b if (k := (r["seed"], r["fold"])) in first
            and r.get(key) is not None}


def cluster_bootstrap(differences, samples=10000, level=0.95, seed=0):
    """Bootstrap confidence interval of the mean of ``differences`` (``{(seed, fold): value}``),
    resampling folds, then seeds within each drawn fold. Returns ``(lo, hi)``, or ``(None, None)``
    with fewer than two folds."""
    by_fold = {}
    for (_, fold), value in sorted(differences.items()):
        by_fold.setdefault(fold, []).append(value)
    if len(by_fold) < 2:
        return None, None
    groups = [np.asarray(v, np.float64) for v in by_fold.values()]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(groups), size=(samples, len(groups)))
    means = np.empty(samples)
    for i, folds in enumerate(draws):
        chosen = [groups[f][rng.integers(0, len(groups[f]), size=len(groups[f]))] for f in folds]
        means[i] = np.concatenate(chosen).mean()
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def compare(a, b, key="sequence_accuracy", samples=10000, seed=0):
    """``{"mean", "ci95", "pairs", "folds", "wins", "losses"}`` for method a minus method b."""
    diffs = paired(a, b, key)
    if not diffs:
        return {"mean": None, "ci95": [None, None], "pairs": 0, "folds": 0, "wins": 0, "losses": 0}
    values = np.asarray(list(diffs.values()))
    lo, hi = cluster_bootstrap(diffs, samples=samples, seed=seed)
    return {"mean": float(values.mean()), "ci95": [lo, hi], "pairs": len(values),
            "folds": len({fold for _, fold in diffs}), "wins": int(np.sum(values > 0)),
            "losses": int(np.sum(values < 0))}


def subject_bootstrap(values, subjects, samples=10000, level=0.95, seed=0):
    """Bootstrap confidence interval of the mean of per-face ``values`` (e.g. paired differences
    of correctness between two methods on the same faces), resampling whole subjects with
    replacement: the faces of one person are not independent. The statistic is the face-level mean
    of the drawn subjects' faces. Returns ``(lo, hi)``, or ``(None, None)`` with fewer than two
    subjects."""
    values = np.asarray(values, np.float64).reshape(-1)
    subjects = np.asarray(subjects).reshape(-1)
    if len(values) != len(subjects):
        raise ValueError(f"subject_bootstrap: {len(values)} values for {len(subjects)} subject ids")
    names, index = np.unique(subjects, return_inverse=True)
    if len(names) < 2:
        return None, None
    sums = np.bincount(index, weights=values, minlength=len(names))
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=samples)
    means = (draws @ sums) / (draws @ counts)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)

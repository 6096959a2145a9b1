"""Paired differences and cluster-bootstrap confidence intervals (fer_tf.research.stats)."""

import numpy as np
import pytest

from fer_tf.research import stats


def _runs(values):
    """{(seed, fold): accuracy} -> run dicts."""
    return [{"seed": s, "fold": f, "sequence_accuracy": v} for (s, f), v in values.items()]


def test_mean_std_uses_the_sample_deviation():
    assert stats.mean_std([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1), 2))
    assert stats.mean_std([0.5]) == (0.5, 0.0, 1)
    assert stats.mean_std([]) == (None, None, 0)


def test_paired_matches_runs_by_seed_and_fold_only():
    a = _runs({(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.7})
    b = _runs({(0, 0): 0.5, (1, 0): 0.6, (2, 0): 0.1})
    assert stats.paired(a, b) == pytest.approx({(0, 0): 0.4, (1, 0): 0.1})


def test_bootstrap_interval_covers_a_known_shift_and_excludes_zero():
    rng = np.random.default_rng(1)
    diffs = {(s, f): 0.05 + rng.normal(0, 0.02) for s in range(3) for f in range(8)}
    lo, hi = stats.cluster_bootstrap(diffs, samples=4000)
    assert lo < 0.05 < hi and lo > 0


def test_bootstrap_interval_contains_zero_for_noise_and_is_wider_with_fewer_folds():
    rng = np.random.default_rng(2)
    diffs = {(s, f): rng.normal(0, 0.05) for s in range(3) for f in range(8)}
    lo, hi = stats.cluster_bootstrap(diffs, samples=4000)
    assert lo < 0 < hi
    few = {k: v for k, v in diffs.items() if k[1] < 3}
    lo3, hi3 = stats.cluster_bootstrap(few, samples=4000)
    assert hi3 - lo3 > hi - lo


def test_fold_is_the_resampling_unit():
    # Seeds of one fold agree perfectly; the folds disagree. Treating the 24 runs as independent
    # would give an interval about sqrt(3) narrower than resampling the 8 folds.
    fold_effect = np.linspace(-0.1, 0.1, 8)
    diffs = {(s, f): fold_effect[f] for s in range(3) for f in range(8)}
    lo, hi = stats.cluster_bootstrap(diffs, samples=4000)
    single = {(0, f): fold_effect[f] for f in range(8)}
    lo1, hi1 = stats.cluster_bootstrap(single, samples=4000)
    assert hi - lo == pytest.approx(hi1 - lo1, rel=0.15)


def test_one_fold_gives_no_interval():
    assert stats.cluster_bootstrap({(0, 0): 0.1, (1, 0): 0.2}) == (None, None)


def test_compare_counts_wins_and_losses():
    a = _runs({(0, f): 0.9 for f in range(4)})
    b = _runs({(0, 0): 0.8, (0, 1): 0.95, (0, 2): 0.9, (0, 3): 0.7})
    c = stats.compare(a, b, samples=500)
    assert c["pairs"] == 4 and c["folds"] == 4 and c["wins"] == 2 and c["losses"] == 1
    assert c["mean"] == pytest.approx(np.mean([0.1, -0.05, 0.0, 0.2]))
    assert c["ci95"][0] <= c["mean"] <= c["ci95"][1]
    assert stats.compare(a, [], samples=10)["mean"] is None

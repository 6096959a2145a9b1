"""Identity probes (fer_tf.research.probes)."""

import numpy as np

from fer_tf.research import probes


def _faces(identity_scale, expression_scale, seed=0, subjects=12, expressions=3, per_cell=2):
    rng = np.random.default_rng(seed)
    who = rng.normal(size=(subjects, 16))
    what = rng.normal(size=(expressions, 16))
    s, e = np.meshgrid(np.arange(subjects), np.arange(expressions), indexing="ij")
    s, e = np.repeat(s.ravel(), per_cell), np.repeat(e.ravel(), per_cell)
    x = identity_scale * who[s] + expression_scale * what[e] + 0.1 * rng.normal(size=(len(s), 16))
    return x, np.array([f"S{i}" for i in s]), np.array([f"E{i}" for i in e])


def test_cross_expression_probe_finds_identity_that_survives_expression():
    x, subjects, expressions = _faces(identity_scale=3.0, expression_scale=3.0)
    acc, n = probes.cross_expression_probe(x, subjects, expressions)
    assert n == 12 and acc > 0.95


def test_cross_expression_probe_is_near_chance_without_identity():
    x, subjects, expressions = _faces(identity_scale=0.0, expression_scale=3.0)
    acc, n = probes.cross_expression_probe(x, subjects, expressions)
    assert n == 12 and acc < 0.3  # chance is 1/12


def test_cross_expression_probe_needs_two_expressions_per_subject():
    acc, n = probes.cross_expression_probe(np.zeros((3, 2)), ["a", "b", "c"], ["x", "y", "z"])
    assert acc is None and n == 0

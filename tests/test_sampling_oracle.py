"""An oracle for the identity-aware sampler, written from the paper's rules, not from check_tuples.

For every tuple the oracle recomputes, in plain Python over the table, which images may be its
positives and negatives, and checks the sampler's choice against them (IdentitySampler's
docstring and the module docstring of fer_tf.data.sampling):

- positives: the query's expression, other subjects; as many distinct images as there are (up to
  M-1), from as many subjects as possible;
- negatives: the query's own subject, other expressions, first (spread over its sequences); only
  when those are all used, the fallback: other expressions of the subjects of the query's
  positives (spread over those subjects);
- ``tuple`` mode repeats an image only once every candidate is used and pads only when there is
  no candidate at all; ``in_batch`` mode never repeats and pads only when candidates run out.

The candidates are the labelled images of the table (``tuple`` mode) or of the batch (``in_batch``).
"""

import numpy as np
import pytest

from fer_tf.data import sampling
from fer_tf.data.labels import CKPLUS7
from fer_tf.data.sampling import IdentitySampler, check_tuples
from fer_tf.data.table import FaceTable

M, N = 4, 4


def _table(seed):
    """Subjects with one to four expressions and one to five frames each: the own-subject pool is
    often smaller than N, so the fallback is needed, and sometimes empty."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(14):
        for e in rng.choice(CKPLUS7, size=int(rng.integers(1, 5)), replace=False):
            for f in range(int(rng.integers(1, 6))):
                rows.append({"path": f"S{s}_{e}_{f}.png", "expression": str(e), "subject": f"S{s}",
                             "sequence": f"S{s}_{e}" if f < 3 else f"S{s}_{e}_b", "frame": f})
    return FaceTable.from_rows(rows, name=f"oracle{seed}")


def oracle(table, rows, tuples, expression, candidates, mode, m=M, n=N):
    """Every rule a batch breaks, as text; empty when it keeps them all.

    ``rows``, ``tuples``, ``expression``: the batch; ``candidates``: the table rows its tuples may
    draw from."""
    expr = [str(v) for v in table.expression]
    subj = [str(v) for v in table.subject]
    seq = [str(table.sequence[r]) or f"{subj[r]}/{expr[r]}" for r in range(len(table))]
    violations = []
    for i, query in enumerate(rows.tolist()):
        if expression[i] < 0:
            continue
        e, s = expr[query], subj[query]
        t = tuples[i].tolist()
        if t[0] != i:
            violations.append(f"{i}: column 0 is not the query")
        positives = [rows[j] for j in t[1:m] if j != -1]
        negatives = [rows[j] for j in t[m:] if j != -1]
        eligible = {r for r in candidates if expr[r] == e and subj[r] != s}
        own = {r for r in candidates if subj[r] == s and expr[r] != e}
        helpers = {subj[r] for r in positives}
        fallback = {r for r in candidates if subj[r] in helpers and subj[r] != s and expr[r] != e}

        # positives
        if not set(positives) <= eligible:
            violations.append(f"{i}: a positive is not {e} of another subject")
        if len(set(positives)) != min(m - 1, len(eligible)):
            violations.append(f"{i}: {len(set(positives))} distinct positives of {len(eligible)} candidates")
        wanted = (m - 1 if eligible else 0) if mode == "tuple" else len(set(positives))
        if len(positives) != wanted:
            violations.append(f"{i}: {len(positives)} positive slots filled, expected {wanted}")
        subjects = {subj[r] for r in eligible}
        if len({subj[r] for r in positives}) != min(len(set(positives)), len(subjects)):
            violations.append(f"{i}: positives not spread over the subjects")

        # negatives: own subject first, the fallback only once it is used up
        own_used = set(negatives) & own
        others = [r for r in negatives if r not in own]
        if not set(others) <= fallback:
            violations.append(f"{i}: a negative is neither the query's subject nor a positive's")
        if len(own_used) != min(n, len(own)):
            violations.append(f"{i}: {len(own_used)} own-subject negatives of {len(own)} candidates")
        if others and own_used != own:
            violations.append(f"{i}: fallback used before the own subject is exhausted")
        pool = own | (fallback if len(own) < n else set())
        if len(set(negatives)) != min(n, len(pool)):
            violations.append(f"{i}: {len(set(negatives))} distinct negatives of {len(pool)} candidates")
        wanted = (n if pool else 0) if mode == "tuple" else len(set(negatives))
        if len(negatives) != wanted:
            violations.append(f"{i}: {len(negatives)} negative slots filled, expected {wanted}")
        own_first = [r for r in dict.fromkeys(negatives) if r in own]
        if len({seq[r] for r in own_first}) != min(len(own_first), len({seq[r] for r in own})):
            violations.append(f"{i}: own-subject negatives not spread over the sequences")
        fb_used = set(others)
        if len({subj[r] for r in fb_used}) != min(len(fb_used), len({subj[r] for r in fallback})):
            violations.append(f"{i}: fallback negatives not spread over the positives' subjects")
    return violations


def _labelled(table):
    return [r for r in range(len(table)) if str(table.expression[r]) in CKPLUS7]


def _run(table, mode, seed, epochs=2):
    """(violations, how many tuples used the fallback, how many had an own-subject negative)."""
    sampler = IdentitySampler(table, CKPLUS7, mode=mode, num_positives=M, num_negatives=N, seed=seed,
                              queries_per_batch=5 if mode == "tuple" else 24)
    labelled = _labelled(table)
    violations, used_fallback, used_own = [], 0, 0
    subj = [str(v) for v in table.subject]
    for epoch in range(epochs):
        for b in sampler.epoch(epoch):
            candidates = labelled if mode == "tuple" else b.rows.tolist()
            violations += oracle(table, b.rows, b.tuples, b.expression, candidates, mode)
            for i in np.flatnonzero(b.expression >= 0):
                negs = [subj[b.rows[j]] for j in b.tuples[i, M:] if j != -1]
                used_fallback += any(s != subj[b.rows[i]] for s in negs)
                used_own += any(s == subj[b.rows[i]] for s in negs)
    return violations, used_fallback, used_own


@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampler_keeps_the_rules(mode, seed):
    table = _table(seed)
    violations, used_fallback, used_own = _run(table, mode, seed)
    assert violations == []
    assert used_fallback > 0 and used_own > 0  # both branches of the rule were exercised


def _broken(change):
    """IdentitySampler's tuple_for, with ``change(universe, q, pos, neg) -> (pos, neg)`` applied."""
    original = sampling._Universe.tuple_for

    def tuple_for(self, rng, q, num_pos, num_neg, replace):
        pos, neg = original(self, rng, q, num_pos, num_neg, replace)
        return change(self, q, pos.copy(), neg.copy())

    return tuple_for


def _fallback_first(u, q, pos, neg):
    """One own-subject negative swapped for a fallback image, although the own subject is not
    used up (the paper's rule, broken)."""
    helpers = set(u.subj[pos].tolist())
    spare = [p for p in range(len(u.y)) if u.subj[p] in helpers and u.y[p] != u.y[q] and p not in set(neg.tolist())]
    own = [k for k, p in enumerate(neg.tolist()) if u.subj[p] == u.subj[q]]
    if spare and own:
        neg[own[0]] = spare[0]
    return pos, neg


def _repeat_early(u, q, pos, neg):
    """The last positive repeats the first although unused candidates remain."""
    if len(pos) >= 2:
        pos[-1] = pos[0]
    return pos, neg


@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
@pytest.mark.parametrize("change, oracle_says, check_says", [
    (_fallback_first, "fallback used before the own subject is exhausted", "fallback negatives although"),
    (_repeat_early, "distinct positives", "a positive repeats although"),
])
def test_a_broken_sampler_is_caught(monkeypatch, mode, change, oracle_says, check_says):
    """The oracle (and check_tuples, independently) report a sampler that breaks the rules."""
    table = _table(0)
    monkeypatch.setattr(sampling._Universe, "tuple_for", _broken(change))
    violations, _, _ = _run(table, mode, seed=0, epochs=1)
    assert any(oracle_says in v for v in violations)
    sampler = IdentitySampler(table, CKPLUS7, mode=mode, num_positives=M, num_negatives=N, seed=0,
                              queries_per_batch=5 if mode == "tuple" else 24)
    problems = []
    for b in sampler.epoch(0):
        pool = sampler.kept if mode == "tuple" else b.rows
        problems += check_tuples(table, b, pool_rows=pool, replace=mode == "tuple")[1]
    assert any(check_says in p for p in problems)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["tuple", "in_batch"])
def test_sampler_keeps_the_rules_on_ckplus48(ckplus48_dir, mode):
    from fer_tf.data.readers import read_dataset

    table = read_dataset(ckplus48_dir, "ckplus48")
    violations, used_fallback, used_own = _run(table, mode, seed=4, epochs=1)
    assert violations == []
    assert used_fallback > 0 and used_own > 0

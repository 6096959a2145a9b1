"""Minimum-cost one-to-one assignment (the Hungarian method), in NumPy.

:func:`linear_assignment` pairs the rows of a cost matrix with its columns so that the total cost is
the smallest possible: the shortest-augmenting-path form of the Hungarian method (Kuhn-Munkres) with
row and column potentials, O(n^2 m) for n rows <= m columns. Rectangular matrices are allowed; the
shorter side is matched completely. :func:`match_pairs` wraps it for the usual use, where rows and
columns may also stay unmatched: only pairs cheaper than a limit are made. Used by :mod:`fer_tf.people.tracking` (tracks to
detections) and :mod:`fer_tf.people.track_metrics` (true to predicted identities).
"""

from __future__ import annotations

import numpy as np


def linear_assignment(cost):
    """``(rows, cols)``: index arrays of the minimum-cost assignment of ``cost`` ([n, m], finite).

    Every row is assigned when n <= m, every column when n > m; ``rows`` is increasing.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-d matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost must be finite (use a large number for forbidden pairs)")
    if cost.shape[0] > cost.shape[1]:
        cols, rows = linear_assignment(cost.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = cost.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u = np.zeros(n + 1)  # row potentials (1-based; 0 unused)
    v = np.zeros(m + 1)  # column potentials; column 0 is the virtual start
    owner = np.zeros(m + 1, np.int64)  # row (1-based) holding each column, 0: free
    for row in range(1, n + 1):
        owner[0] = row
        way = np.zeros(m + 1, np.int64)  # previous column on the shortest path to each column
        slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        col = 0
        while True:
            used[col] = True
            r = owner[col]
            free = ~used[1:]
            reduced = cost[r - 1] - u[r] - v[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = col
            candidates = np.where(free, slack[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[owner[used]] += delta
            v[used] -= delta
            slack[1:][free] -= delta
            col = nxt
            if owner[col] == 0:
                break
        while col:  # flip the augmenting path
            prev = way[col]
            owner[col] = owner[prev]
            col = prev
    cols = np.flatnonzero(owner[1:])
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def match_pairs(cost, limit):
    """``[(row, col)]``: the pairs of rows and columns of ``cost`` ([n, m]) with the smallest total
    cost, where a row or a column may stay unmatched at the price ``limit / 2`` each.

    So a pair is only made when its cost is below ``limit`` (leaving both sides unmatched costs
    ``limit``), and a good pair is never given up to make room for two poor ones. Entries above
    ``limit`` (``inf`` allowed) are never returned. Sorted by row.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    allowed = cost < limit
    if not allowed.any():
        return []
    half = float(limit) / 2.0
    big = 2.0 * (abs(half) + float(np.abs(cost[allowed]).max()) + 1.0) * (n + m + 1)
    full = np.full((n + m, m + n), big)
    full[:n, :m] = np.where(allowed, cost, big)
    full[np.arange(n), m + np.arange(n)] = half  # row i unmatched
    full[n + np.arange(m), np.arange(m)] = half  # column j unmatched
    full[n:, m:] = 0.0
    rows, cols = linear_assignment(full)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and allowed[r, c]]

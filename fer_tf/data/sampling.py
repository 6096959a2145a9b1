"""Identity-aware batches (Sections 3 and 5.2 of the paper) and plain classification batches.

Every pipeline is two stages:

1. an *index sampler* in NumPy decides which table rows go into each batch and builds the tuple
   indices (:class:`IdentitySampler` for the two identity-aware modes); its batches are plain
   :class:`IndexBatch` objects, so tests and tools can check them against the table;
2. a feeder (:mod:`fer_tf.feeding.feeders`) gathers the faces of those rows from an in-memory
   float32 tensor, takes the random 48x48 crop and flip (training) or the centre crop
   (evaluation), and prefetches.

This module is stage 1: :class:`IdentitySampler` and :func:`classification_batches` (which rows),
:func:`augment_seed` (which crops), and :func:`check_tuples` (the sampler's rules, checked
against the table).

Batches follow docs/architecture.md "Batches": ``(images [X,48,48,1] float32,
{"expression": int32 [X], "tuples": int32 [X, M+N]})``; column 0 of a tuple is the query itself,
columns 1..M-1 its other positives, columns M..M+N-1 its negatives, ``-1`` pads.

Definitions, for a query q with expression e and subject s:

- *positives*: images of expression e from other subjects, picked so that they come from as many
  different subjects as possible;
- *negatives*: images of the other expressions of subject s, spread over its sequences. When s has
  fewer than N such images, the paper's fallback fills the remaining slots with images of other
  expressions (than e) of the subjects of q's positives. ``tuple`` mode then samples with
  replacement from what exists (every slot is a separately augmented image); ``in_batch`` mode pads
  with ``-1`` instead (a repeated index would only repeat the same embedding). A query with no
  possible negative (its subject shows one expression and no positive's subject helps) has all its
  negative slots at ``-1``; likewise all positive slots when no other subject shows e.

Determinism: the batches of epoch k depend only on ``(seed, k)`` (NumPy generators seeded with
``[seed, k, step]``), so a run resumed with ``start_epoch=k`` sees the same index batches as an
uninterrupted run. The crop/flip of each batch uses a stateless seed derived from the same
``(seed, epoch, step)``, so the images are reproducible too.

Epochs: one epoch makes every (labelled) image a query at least once. Batches have a fixed size;
the last batch of an epoch is topped up with extra queries drawn from the same epoch, so those few
images are queries twice. ``steps_per_epoch`` = ceil(queries / queries_per_batch).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from fer_tf.errors import ConfigError, MiningError

PAD = -1
MODES = ("tuple", "in_batch")
DEFAULT_QUERIES_PER_BATCH = {"tuple": 12, "in_batch": 64}


# ----------------------------------------------------------------------------------------------
# Index sampling (NumPy)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IndexBatch:
    """One batch as table rows: what :func:`fer_tf.feeding.feeders.identity_aware_dataset` turns into images.

    ``rows[i]`` is the table row (= index into ``faces``) of image i of the batch; ``expression``
    and ``tuples`` are the targets of the contract (``tuples`` indexes positions in the batch).
    """

    rows: np.ndarray  # [X] int64
    expression: np.ndarray  # [X] int32
    tuples: np.ndarray  # [X, M+N] int32
    epoch: int
    step: int
    num_positives: int  # M: tuple columns 0..M-1 are the query and its positives


def _rng(seed, *keys):
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def augment_seed(seed, epoch, step):
    """Stateless seed [2] of the crop/flip of one batch (so augmentation is reproducible too)."""
    return _rng(seed, epoch, step, 2**31 - 1).integers(0, 2**31 - 1, size=2, dtype=np.int64)


def _spread(rng, items, groups, k):
    """Up to ``k`` distinct ``items``, chosen at random but from as many ``groups`` as possible.

    Items are taken round-robin over the groups (in random order), so two frames of one sequence
    are only picked once every other group gave one.
    """
    items = np.asarray(items)
    if k <= 0 or len(items) == 0:
        return items[:0]
    if len(items) <= k:
        return items
    return _round_robin(rng, items, groups)[:k]


def _round_robin(rng, items, groups):
    """All ``items`` in random order, interleaved so that each group comes once per round."""
    items = np.asarray(items)
    perm = rng.permutation(len(items))
    taken, rank = {}, np.empty(len(items), dtype=np.int64)
    for j, g in enumerate(np.asarray(groups)[perm].tolist()):
        rank[j] = taken.get(g, 0)
        taken[g] = rank[j] + 1
    return items[perm[np.argsort(rank, kind="stable")]]


class _Universe:
    """The images a tuple may draw from (the whole table, or one in_batch batch), grouped."""

    def __init__(self, y, subj, seq):
        self.y, self.subj, self.seq = y, subj, seq
        self.by_class = _group(y)
        self.by_subject = _group(subj)

    def tuple_for(self, rng, q, num_pos, num_neg, replace):
        """Positions of the positives (<= num_pos) and negatives (<= num_neg) of query ``q``."""
        y, subj = self.y, self.subj
        e, s = y[q], subj[q]
        pos_pool = self.by_class[e]
        pos_pool = pos_pool[subj[pos_pool] != s]
        pos = _spread(rng, pos_pool, subj[pos_pool], num_pos)
        if replace and 0 < len(pos) < num_pos:
            pos = np.r_[pos, rng.choice(pos_pool, num_pos - len(pos))]
        own_pool = self.by_subject[s]
        own_pool = own_pool[y[own_pool] != e]
        neg = _spread(rng, own_pool, self.seq[own_pool], num_neg)
        if len(neg) < num_neg:
            helpers = np.unique(subj[pos])
            fb_pool = np.concatenate([self.by_subject[t] for t in helpers]) if len(helpers) else own_pool[:0]
            fb_pool = fb_pool[y[fb_pool] != e]
            neg = np.r_[neg, _spread(rng, fb_pool, subj[fb_pool], num_neg - len(neg))]
            if replace and 0 < len(neg) < num_neg:
                neg = np.r_[neg, rng.choice(np.r_[own_pool, fb_pool], num_neg - len(neg))]
        return pos.astype(np.int64), neg.astype(np.int64)


def _group(keys):
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    bounds = np.r_[starts, len(keys)]
    return {k: order[bounds[i]:bounds[i + 1]] for i, k in enumerate(uniq.tolist())}


def _dense(values):
    _, inv = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


class IdentitySampler:
    """Index batches for identity-aware training; see the module docstring for the definitions.

    ``mode="tuple"``: ``queries_per_batch`` (default 12) queries per batch, each followed by its
    M-1 other positives and N negatives as separate images: X = queries_per_batch * (M + N).
    Slots that a query cannot fill hold a copy of the query image that no tuple references.

    ``mode="in_batch"``: X = ``queries_per_batch`` (default 64) images per batch, drawn subject by
    subject (at most ``max_per_subject`` images of one subject per batch); every image is a query
    whose positives and negatives are other images of the same batch. Subjects are added greedily
    so that every expression in the batch is shown by at least two subjects where possible
    (``balance=True``); ``balance=False`` adds subjects in plain random order.
    """

    #: in_batch balancing: the value of adding a subject to an expression that c subjects (index)
    #: already show in the batch; pairing a lonely subject (c == 1) is worth most, a new expression
    #: would need a partner later, a crowded one adds little; the last value holds for larger c.
    #: (Chosen on CK+48 as the weights that leave the fewest padded slots.)
    BALANCE_WEIGHTS = (0.0, 3.0, 1.0, 0.3)

    def __init__(self, table, labels, mode="in_batch", num_positives=6, num_negatives=6,
                 queries_per_batch=None, seed=0, max_per_subject=None, balance=True):
        if mode not in MODES:
            raise ConfigError(f"unknown sampling mode {mode!r}; use one of {', '.join(MODES)}")
        if queries_per_batch is None:
            queries_per_batch = DEFAULT_QUERIES_PER_BATCH[mode]
        for name, value, low in (("num_positives", num_positives, 1), ("num_negatives", num_negatives, 1),
                                 ("queries_per_batch", queries_per_batch, 1)):
            if int(value) != value or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_per_subject is not None and max_per_subject < 1:
            raise ConfigError(f"max_per_subject must be >= 1 or None, got {max_per_subject!r}")
        self.mode, self.seed, self.balance = mode, int(seed), bool(balance)
        self.M, self.N = int(num_positives), int(num_negatives)
        self.labels = tuple(labels)

        ids = table.expression_ids(self.labels)
        self.kept = np.flatnonzero(ids >= 0)  # local index -> table row
        if len(self.kept) == 0:
            raise MiningError(f"no image has one of the expressions {', '.join(self.labels)}")
        subjects = table.subject[self.kept]
        missing = int(np.sum(subjects == ""))
        if missing:
            raise MiningError(
                f"identity-aware sampling needs a subject id for every image, {missing} of "
                f"{len(self.kept)} have none; use the softmax variant for data without identities")
        self.y = ids[self.kept].astype(np.int64)
        self.subj = _dense(subjects)
        sequences = table.sequence[self.kept].astype(str)
        # Frames of one sequence are near duplicates; without sequences, group by subject+expression.
        self.seq = _dense(np.where(sequences != "", sequences,
                                   np.char.add(subjects.astype(str), np.char.add("/", self.y.astype(str)))))
        expressions_per_subject = np.bincount(np.unique(self.subj * len(self.labels) + self.y) // len(self.labels))
        if expressions_per_subject.max() < 2:
            raise MiningError(
                "identity-aware negatives need subjects with at least two expressions, but every "
                "subject in this table shows only one; use the 'softmax' variant for this data")
        self.num_queries = len(self.kept)
        if mode == "tuple":
            self.queries_per_batch = int(queries_per_batch)
            self.batch_size = self.queries_per_batch * (self.M + self.N)
            self._universe = _Universe(self.y, self.subj, self.seq)
        else:
            self.queries_per_batch = min(int(queries_per_batch), self.num_queries)
            self.batch_size = self.queries_per_batch
            self.max_per_subject = min(max_per_subject or self.batch_size, self.batch_size)
            self._by_subject = _group(self.subj)
        self.steps_per_epoch = math.ceil(self.num_queries / self.queries_per_batch)

    @property
    def tuple_width(self):
        return self.M + self.N

    def state(self, epoch=0):
        """What determines the batches from ``epoch`` on (for checkpoints)."""
        return {"mode": self.mode, "seed": self.seed, "epoch": int(epoch),
                "num_positives": self.M, "num_negatives": self.N,
                "queries_per_batch": self.queries_per_batch, "steps_per_epoch": self.steps_per_epoch}

    def batches(self, start_epoch=0, repeat=True):
        """Index batches from ``start_epoch`` on: one epoch, or epochs forever with ``repeat``."""
        epoch = int(start_epoch)
        while True:
            yield from self.epoch(epoch)
            if not repeat:
                return
            epoch += 1

    def epoch(self, epoch):
        """The ``steps_per_epoch`` index batches of ``epoch``."""
        if self.mode == "tuple":
            return self._tuple_epoch(epoch)
        return self._in_batch_epoch(epoch)

    # -- tuple mode ------------------------------------------------------------------------------

    def _tuple_epoch(self, epoch):
        q_per, w = self.queries_per_batch, self.tuple_width
        order = _rng(self.seed, epoch, 0).permutation(self.num_queries)
        short = len(order) % q_per
        if short:  # top up the last batch with other queries of the same epoch
            need, earlier = q_per - short, order[: len(order) - short]
            rng = _rng(self.seed, epoch, 0, 1)
            extra = (rng.choice(earlier, need, replace=False) if len(earlier) >= need
                     else rng.choice(order, need, replace=True))
            order = np.r_[order, extra]
        for step in range(self.steps_per_epoch):
            rng = _rng(self.seed, epoch, step + 1)
            local = np.empty(self.batch_size, dtype=np.int64)
            expression = np.full(self.batch_size, PAD, dtype=np.int32)
            tuples = np.full((self.batch_size, w), PAD, dtype=np.int32)
            for j, q in enumerate(order[step * q_per:(step + 1) * q_per]):
                pos, neg = self._universe.tuple_for(rng, q, self.M - 1, self.N, replace=True)
                base = j * w
                local[base:base + w] = q  # unused slots hold the query image, referenced by no tuple
                local[base] = q
                local[base + 1:base + 1 + len(pos)] = pos
                local[base + self.M:base + self.M + len(neg)] = neg
                expression[base] = self.y[q]
                tuples[base, 0] = base
                tuples[base, 1:1 + len(pos)] = base + 1 + np.arange(len(pos))
                tuples[base, self.M:self.M + len(neg)] = base + self.M + np.arange(len(neg))
            yield IndexBatch(self.kept[local], expression, tuples, epoch, step, self.M)

    # -- in_batch mode ---------------------------------------------------------------------------

    def _units(self, rng):
        """Each subject's images in random order; subjects above max_per_subject split in chunks."""
        units = []
        for s in rng.permutation(len(self._by_subject)):
            members = self._by_subject[s]
            ordered = _round_robin(rng, members, self.seq[members])
            chunks = math.ceil(len(ordered) / self.max_per_subject)
            units.extend(ordered[c::chunks] for c in range(chunks))
        return units

    def _compose(self, rng):
        """Partition the epoch's images into batches of exactly ``batch_size`` images."""
        size, n_classes = self.batch_size, len(self.labels)
        weight = np.asarray(self.BALANCE_WEIGHTS, dtype=np.float64)
        batches, current = [], []
        counts = np.zeros(n_classes, dtype=np.int64)

        def entry(unit):  # a unit with the expressions it shows
            return unit, np.unique(self.y[unit])

        def take(item, k):
            unit, classes = item
            if k < len(unit):
                part, rest = entry(unit[:k]), entry(unit[k:])
            else:
                part, rest = item, None
            current.extend(part[0].tolist())
            counts[part[1]] += 1
            return rest

        units = [entry(u) for u in self._units(rng)]
        remaining = list(units)

        def choose(pool, cap):
            """Index into pool of the next unit: the best-scoring one that fits, else the best one."""
            fits = np.array([len(u) <= cap for u, _ in pool])
            if not self.balance or not current:
                return int(np.argmax(fits)) if fits.any() else 0
            capped = np.minimum(counts, len(weight) - 1)
            scores = np.array([weight[capped[c]].sum() for _, c in pool])
            scores = scores + 1e-3 * rng.random(len(scores))
            if fits.any():
                return int(np.argmax(np.where(fits, scores, -np.inf)))
            return int(np.argmax(scores))

        while remaining:
            cap = size - len(current)
            i = choose(remaining, cap)
            rest = take(remaining[i], cap)
            if rest is not None:
                remaining[i] = rest
            else:
                remaining.pop(i)
            if len(current) == size:
                batches.append(np.array(current, dtype=np.int64))
                current, counts = [], np.zeros(n_classes, dtype=np.int64)
        if current:  # top up the last batch with images of subjects from earlier batches
            used = set(current)
            pool = [u[~np.isin(u, list(used))] for u, _ in units]
            pool = [entry(pool[i]) for i in rng.permutation(len(pool)) if len(pool[i])]
            while len(current) < size:
                i = choose(pool, size - len(current))
                take(pool.pop(i), size - len(current))
            batches.append(np.array(current, dtype=np.int64))
        return batches

    def _in_batch_epoch(self, epoch):
        batches = self._compose(_rng(self.seed, epoch, 0))
        for step, local in enumerate(batches):
            rng = _rng(self.seed, epoch, step + 1)
            universe = _Universe(self.y[local], self.subj[local], self.seq[local])
            x = len(local)
            tuples = np.full((x, self.tuple_width), PAD, dtype=np.int32)
            for q in range(x):
                pos, neg = universe.tuple_for(rng, q, self.M - 1, self.N, replace=False)
                tuples[q, 0] = q
                tuples[q, 1:1 + len(pos)] = pos
                tuples[q, self.M:self.M + len(neg)] = neg
            yield IndexBatch(self.kept[local], self.y[local].astype(np.int32), tuples, epoch, step, self.M)


def steps_per_epoch(num_queries, per_batch):
    """Batches in one epoch: ceil(num_queries / per_batch) (the last batch is topped up or short)."""
    return math.ceil(int(num_queries) / int(per_batch))


def check_tuples(table, batch, pool_rows=None, replace=None):
    """Check an :class:`IndexBatch` against the table; returns ``(stats, problems)``.

    ``stats`` counts query rows, positive slots (``positive``, ``positive_repeated``,
    ``positive_padded``) and negative slots (``own`` subject, ``fallback`` via a positive's subject,
    ``negative_repeated`` (tuple mode sampling with replacement), ``negative_padded``).
    ``problems`` lists every broken rule as text (empty when the batch is right). With
    ``pool_rows`` (the table rows the tuples could draw from: the batch's rows for in_batch mode,
    all sampled rows for tuple mode) the order of the rules is checked too: fallback negatives only
    once every image of the query's own subject (with another expression) is a negative, a
    repeated positive or negative only once every candidate is used, padding only where data is
    lacking (``replace``: tuple mode, which repeats rather than pads).
    """
    rows, tuples, expression = np.asarray(batch.rows), np.asarray(batch.tuples), np.asarray(batch.expression)
    x, width = tuples.shape
    expr, subj = table.expression[rows], table.subject[rows]
    stats = dict.fromkeys(("queries", "positive", "positive_repeated", "positive_padded", "own",
                           "fallback", "negative_repeated", "negative_padded"), 0)
    problems = []
    if len(rows) != x or len(expression) != x:
        problems.append(f"rows {len(rows)}, expression {len(expression)} and tuples {x} disagree")
        return stats, problems
    if pool_rows is not None:
        pool_rows = np.asarray(pool_rows)
        pool_expr, pool_subj = table.expression[pool_rows], table.subject[pool_rows]
    for i in range(x):
        t = tuples[i]
        if expression[i] < 0:
            if (t != PAD).any():
                problems.append(f"image {i} is not a query but has tuple entries")
            continue
        stats["queries"] += 1
        if t[0] != i:
            problems.append(f"image {i}: column 0 is {t[0]}, not the query")
        if ((t < PAD) | (t >= x)).any():
            problems.append(f"image {i}: index out of range in {t.tolist()}")
            continue
        m = int(batch.num_positives)
        e, s = expr[i], subj[i]
        pos = [j for j in t[1:m] if j != PAD]
        neg = [j for j in t[m:] if j != PAD]
        stats["positive_padded"] += (m - 1) - len(pos)
        stats["negative_padded"] += (width - m) - len(neg)
        seen = set()
        for j in pos:
            if expr[j] != e or subj[j] == s:
                problems.append(f"image {i}: positive {j} ({expr[j]}, {subj[j]}) is not {e} of another subject")
            key = rows[j]
            stats["positive_repeated" if key in seen else "positive"] += 1
            seen.add(key)
        helpers = {subj[j] for j in pos}
        seen = set()
        for j in neg:
            if expr[j] == e:
                problems.append(f"image {i}: negative {j} has the query's expression {e}")
            elif subj[j] == s:
                stats["negative_repeated" if rows[j] in seen else "own"] += 1
            elif subj[j] in helpers:
                stats["negative_repeated" if rows[j] in seen else "fallback"] += 1
            else:
                problems.append(f"image {i}: negative {j} ({expr[j]}, {subj[j]}) shares no subject with "
                                f"the query or its positives")
            seen.add(rows[j])
        if pool_rows is not None:
            problems.extend(f"image {i}: {p}" for p in _order_problems(
                rows[pos], rows[neg], pool_rows[(pool_expr == e) & (pool_subj != s)],
                pool_rows[(pool_expr != e) & (pool_subj == s)],
                pool_rows[(pool_expr != e) & (pool_subj != s) & np.isin(pool_subj, list(helpers))],
                m - 1, width - m, replace))
    return stats, problems


def classification_batches(num, batch_size=128, shuffle=True, seed=0, start_epoch=0, repeat=True):
    """``(rows, augment_seed)`` batches for classification; epoch k's order depends on ``(seed, k)``.

    One epoch is ``steps_per_epoch(num, batch_size)`` batches, the last one possibly short.
    """
    epoch = int(start_epoch)
    while True:
        order = _rng(seed, epoch).permutation(num) if shuffle else np.arange(num)
        for step, i in enumerate(range(0, len(order), batch_size)):
            yield order[i:i + batch_size], augment_seed(seed, epoch, step)
        if not repeat:
            return
        epoch += 1


def to_global_indices(tuples, num_slices):
    """Shift slice-local tuple indices ``[R*X, w]`` (slice r's rows are ``r*X .. r*X+X-1``, its
    indices 0..X-1) to indices into the whole batch; ``-1`` stays."""
    tuples = np.asarray(tuples)
    x = len(tuples) // int(num_slices)
    offsets = np.repeat(np.arange(int(num_slices)) * x, x)[:, None]
    return np.where(tuples >= 0, tuples + offsets, tuples).astype(tuples.dtype)


def _order_problems(pos_rows, neg_rows, pos_pool, own_pool, fallback_pool, pos_slots, neg_slots, replace):
    """The rules of :func:`check_tuples` that need the candidate pools (table rows)."""
    problems = []
    used_pos, used_neg = set(pos_rows.tolist()), set(neg_rows.tolist())
    unused_pos = set(pos_pool.tolist()) - used_pos
    unused_own = set(own_pool.tolist()) - used_neg
    unused_neg = unused_own | (set(fallback_pool.tolist()) - used_neg)
    if len(pos_rows) < pos_slots and (len(pos_pool) if replace else unused_pos):
        problems.append(f"positives padded although {len(pos_pool)} candidates exist")
    if len(pos_rows) > len(used_pos) and unused_pos:
        problems.append(f"a positive repeats although {len(unused_pos)} candidates are unused")
    if len(neg_rows) > np.isin(neg_rows, own_pool).sum() and unused_own:
        problems.append(f"fallback negatives although {len(unused_own)} images of the query's own subject "
                        f"are unused")
    if len(neg_rows) < neg_slots and (len(own_pool) + len(fallback_pool) if replace else unused_neg):
        problems.append(f"negatives padded although {len(own_pool) + len(fallback_pool)} candidates exist")
    if len(neg_rows) > len(used_neg) and unused_neg:
        problems.append(f"a negative repeats although {len(unused_neg)} candidates are unused")
    return problems

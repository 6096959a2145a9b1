"""Identity-aware batches (Sections 3 and 5.2 of the paper) and plain classification batches.

Every pipeline is two stages:

1. an *index sampler* in NumPy decides which table rows go into each batch and builds the tuple
   indices (:class:`IdentitySampler` for the two identity-aware modes); its batches are plain
   :class:`IndexBatch` objects, so tests and tools can check them against the table;
2. a ``tf.data`` map gathers the faces of those rows from an in-memory float32 array, takes the
   random 48x48 crop and flip (training) or the centre crop (evaluation), and prefetches.

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
import weakref

import numpy as np

from fer_tf.errors import ConfigError, DatasetError, MiningError

PAD = -1
MODES = ("tuple", "in_batch")
DEFAULT_QUERIES_PER_BATCH = {"tuple": 12, "in_batch": 64}
CROP = 48


# ----------------------------------------------------------------------------------------------
# Index sampling (NumPy)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IndexBatch:
    """One batch as table rows: what :func:`identity_aware_dataset` turns into images.

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


def _augment_seed(seed, epoch, step):
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
    all sampled rows for tuple mode), padding is also checked to occur only where data is lacking.
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
            pos_avail = np.sum((pool_expr == e) & (pool_subj != s))
            if len(pos) < m - 1 and (pos_avail > len(set(rows[pos])) if not replace else pos_avail > 0):
                problems.append(f"image {i}: positives padded although {pos_avail} candidates exist")
            neg_avail = np.sum((pool_expr != e) & ((pool_subj == s) | np.isin(pool_subj, list(helpers))))
            if len(neg) < width - m and (neg_avail > len(set(rows[neg])) if not replace else neg_avail > 0):
                problems.append(f"image {i}: negatives padded although {neg_avail} candidates exist")
    return stats, problems


# ----------------------------------------------------------------------------------------------
# tf.data pipelines
# ----------------------------------------------------------------------------------------------


def _normalised_faces(faces, preprocess=None, chunk=128):
    """Faces as one in-memory float32 array [n, 60, 60], preprocessed once.

    ``preprocess`` is applied once to all faces (in chunks): pass
    :func:`fer_tf.preprocess.normalize.normalize_faces` for raw faces. With ``preprocess=None``,
    uint8 faces are normalised with ``normalize_faces`` and float faces are taken as normalised.
    """
    import keras  # deferred: keras loads its backend; the NumPy samplers need neither

    faces = np.asarray(faces)
    if faces.ndim == 4 and faces.shape[-1] == 1:
        faces = faces[..., 0]
    if faces.ndim != 3 or faces.shape[1] < CROP or faces.shape[2] < CROP:
        raise DatasetError(f"faces must be an array [n, 60, 60], got shape {faces.shape}")
    if preprocess is None and faces.dtype == np.uint8:
        from fer_tf.preprocess.normalize import normalize_faces  # deferred with keras (imports it)

        preprocess = normalize_faces
    if preprocess is None:
        return faces.astype(np.float32, copy=False)
    parts = [keras.ops.convert_to_numpy(preprocess(faces[i:i + chunk])).astype(np.float32)
             for i in range(0, len(faces), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0,) + faces.shape[1:], np.float32)


#: ``(weak reference to a faces array, preprocess, weak reference to its tensor)`` of the
#: tensors made so far; weak both ways, so the cache keeps nothing alive by itself.
_FACE_TENSORS = []


def _face_tensor(faces, preprocess=None, chunk=128):
    """:func:`_normalised_faces` as one backend tensor ([n, 60, 60] float32), shared while alive.

    Training builds a fresh pipeline every epoch from the same faces; without this each epoch
    would hold its own copy of them (about 0.4 GB for FER2013) for as long as the framework keeps
    the old pipelines. The cache keys on the array's identity, so an array must not be changed in
    place while pipelines of it are in use.
    """
    import keras  # deferred: keras loads its backend; the NumPy samplers need neither

    if isinstance(faces, np.ndarray):
        for array_ref, prep, tensor_ref in _FACE_TENSORS:
            tensor = tensor_ref()
            if array_ref() is faces and prep is preprocess and tensor is not None:
                return tensor
    tensor = keras.ops.convert_to_tensor(_normalised_faces(faces, preprocess, chunk))
    if isinstance(faces, np.ndarray):
        _FACE_TENSORS[:] = [e for e in _FACE_TENSORS if e[0]() is not None and e[2]() is not None]
        _FACE_TENSORS.append((weakref.ref(faces), preprocess, weakref.ref(tensor)))
    return tensor


def uses_tf_data():
    """True when the pipelines are ``tf.data`` (TensorFlow backend); else ``keras.utils.PyDataset``."""
    import keras  # deferred: keras loads its backend; the NumPy samplers need neither

    return keras.backend.backend() == "tensorflow"


def _augmentation(augment):
    """``augment`` (True: the paper's crop and flip; False/None: centre crop; or an
    :class:`fer_tf.data.augment.Augmentation`) -> an Augmentation or None."""
    from fer_tf.data.augment import Augmentation  # deferred with keras (imports it)

    if isinstance(augment, Augmentation):
        return augment
    return Augmentation(crop_size=CROP) if augment else None


def _image_map(faces_t, augment):
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    from fer_tf.data.augment import NUM_UNIFORMS, augment_faces  # deferred with keras (imports it)
    from fer_tf.preprocess.normalize import center_crop  # deferred with keras (imports it)

    aug = _augmentation(augment)
    size = aug.crop_size if aug is not None else CROP

    def images_of(rows, seed=None):
        x = tf.gather(faces_t, rows)[..., None]
        if aug is None:
            x = center_crop(x, size=CROP)
        else:
            shape = [tf.shape(rows)[0], NUM_UNIFORMS]
            u = (tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int64)) if seed is not None
                 else tf.random.uniform(shape))
            x = augment_faces(x, u, aug)
        x = tf.reshape(x, [-1, size, size, 1])
        return tf.cast(x, tf.float32)

    return images_of


def _finish(ds, steps, repeat):
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if repeat else steps))
    return ds.prefetch(tf.data.AUTOTUNE)


def identity_aware_dataset(table, faces, labels, mode="in_batch", num_positives=6, num_negatives=6,
                           queries_per_batch=None, seed=0, augment=True, repeat=True, start_epoch=0,
                           preprocess=None, max_per_subject=None, balance=True, return_sampler=False,
                           min_batches=None):
    """Identity-aware training batches as a ``tf.data.Dataset`` (see the module docstring).

    ``faces[i]`` is the face of ``table`` row i ([n, 60, 60]; float32 normalised, or uint8 that is
    normalised once here). Yields ``(images [X,48,48,1] float32, {"expression": int32 [X],
    "tuples": int32 [X, M+N]})``. With ``repeat=True`` the dataset is infinite (epochs
    ``start_epoch, start_epoch+1, ...``): pass ``steps_per_epoch=sampler.steps_per_epoch`` and
    ``initial_epoch=start_epoch`` to ``model.fit``. With ``repeat=False`` it is the one epoch
    ``start_epoch``, with a known cardinality. ``return_sampler=True`` returns ``(dataset, sampler)``.

    Under a backend other than TensorFlow the result is a :class:`fer_tf.data.pydataset.FaceBatches`
    (a ``keras.utils.PyDataset``) with the same batches: one epoch per pass, the next one after
    each of Keras' ``on_epoch_end`` calls (``min_batches``: consecutive epochs until a pass has at
    least that many batches, for ``steps_per_epoch`` beyond one sampler epoch).
    """
    if len(faces) != len(table):
        raise DatasetError(f"{len(faces)} faces for a table of {len(table)} rows; they must match row by row")
    sampler = IdentitySampler(table, labels, mode=mode, num_positives=num_positives,
                              num_negatives=num_negatives, queries_per_batch=queries_per_batch, seed=seed,
                              max_per_subject=max_per_subject, balance=balance)
    ds = index_batch_dataset(sampler, faces, lambda epoch: ([b] for b in sampler.epoch(epoch)),
                             sampler.steps_per_epoch, start_epoch=start_epoch, repeat=repeat,
                             augment=augment, preprocess=preprocess, min_batches=min_batches)
    return (ds, sampler) if return_sampler else ds


def to_global_indices(tuples, num_slices):
    """Shift slice-local tuple indices ``[R*X, w]`` (slice r's rows are ``r*X .. r*X+X-1``, its
    indices 0..X-1) to indices into the whole batch; ``-1`` stays."""
    tuples = np.asarray(tuples)
    x = len(tuples) // int(num_slices)
    offsets = np.repeat(np.arange(int(num_slices)) * x, x)[:, None]
    return np.where(tuples >= 0, tuples + offsets, tuples).astype(tuples.dtype)


def _group_arrays(sampler, group, global_indices):
    """A list of k index batches -> ``rows [k*X]``, ``targets``, augmentation ``seeds [k, 2]``."""
    rows = np.concatenate([b.rows for b in group]).astype(np.int64)
    expression = np.concatenate([b.expression for b in group]).astype(np.int32)
    tuples = np.concatenate([b.tuples for b in group]).astype(np.int32)
    if global_indices:
        tuples = to_global_indices(tuples, len(group))
    seeds = np.stack([_augment_seed(sampler.seed, b.epoch, b.step) for b in group]).astype(np.int64)
    return rows, {"expression": expression, "tuples": tuples}, seeds


def index_batch_dataset(sampler, faces, epoch_groups, steps_per_epoch, group_size=1, start_epoch=0,
                        repeat=True, augment=True, preprocess=None, global_indices=False,
                        min_batches=None):
    """The one path from index batches to the model's batches, for :func:`identity_aware_dataset`
    and for the per-replica batches of :mod:`fer_tf.training.distribute`.

    ``epoch_groups(epoch)`` gives the epoch's elements, each a list of ``k = group_size``
    :class:`IndexBatch` of ``sampler``. An element becomes one batch: the ``k`` batches' images
    and targets one after the other, ``[k*X, 48, 48, 1]``. Each index batch is augmented with its own
    seed from ``(seed, epoch, step)``. Tuple indices stay local to their own index batch (0..X-1;
    what a ``tf.distribute`` replica sees of its slice) or, with ``global_indices``, index the whole
    batch. ``steps_per_epoch`` elements make an epoch; ``repeat`` continues with the next epochs.

    TensorFlow backend: a ``tf.data.Dataset``. Other backends: a
    :class:`fer_tf.data.pydataset.FaceBatches` (one epoch per pass; ``min_batches`` as there); with
    ``k > 1`` its images are augmented with the first index batch's seed.
    """
    k, x, w = int(group_size), sampler.batch_size, sampler.tuple_width

    def arrays(epoch):
        for group in epoch_groups(epoch):
            yield _group_arrays(sampler, group, global_indices)

    if not uses_tf_data():
        from fer_tf.data.pydataset import FaceBatches  # deferred with keras (imports it)

        def epoch_batches(epoch):
            return [(rows, targets, seeds[0]) for rows, targets, seeds in arrays(epoch)]

        return FaceBatches(_face_tensor(faces, preprocess), epoch_batches, _augmentation(augment),
                           start_epoch, min_batches=min_batches)
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    def generate():
        epoch = int(start_epoch)
        while True:
            for rows, targets, seeds in arrays(epoch):
                yield rows, targets["expression"], targets["tuples"], seeds
            if not repeat:
                return
            epoch += 1

    signature = (tf.TensorSpec([k * x], tf.int64), tf.TensorSpec([k * x], tf.int32),
                 tf.TensorSpec([k * x, w], tf.int32), tf.TensorSpec([k, 2], tf.int64))
    images_of = _image_map(_face_tensor(faces, preprocess), augment)

    def assemble(rows, expression, tuples, seeds):
        images = [images_of(rows[i * x:(i + 1) * x], seeds[i]) for i in range(k)]
        images = images[0] if k == 1 else tf.concat(images, axis=0)
        return images, {"expression": expression, "tuples": tuples}

    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(assemble, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, steps_per_epoch, repeat)


def classification_batches(num, batch_size=128, shuffle=True, seed=0, start_epoch=0, repeat=True,
                           full=False):
    """``(rows, augment_seed)`` batches for classification; epoch k's order depends on ``(seed, k)``.

    ``full=True`` tops the epoch's last batch up with the first rows of the same order, so every
    batch has ``batch_size`` rows (one shape: compiled backends trace the step once).
    """
    epoch = int(start_epoch)
    while True:
        order = _rng(seed, epoch).permutation(num) if shuffle else np.arange(num)
        if full and num % batch_size:
            order = np.concatenate([order, order[:batch_size - num % batch_size]])
        for step, i in enumerate(range(0, len(order), batch_size)):
            yield order[i:i + batch_size], _augment_seed(seed, epoch, step)
        if not repeat:
            return
        epoch += 1


def classification_dataset(faces, label_ids, batch_size=128, augment=True, shuffle=True, seed=0,
                           start_epoch=0, repeat=True, preprocess=None, soft_targets=None):
    """``(images [B,48,48,1], {"expression": int32 [B]})`` batches for softmax training.

    ``soft_targets``: optional float ``[n, C]`` cross-entropy targets, one row per face (e.g.
    :func:`fer_tf.training.distillation.soft_targets`), served as ``"expression_target"`` beside the labels.

    ``augment``: True (the paper's random crop and flip), False (centre crop) or an
    :class:`fer_tf.data.augment.Augmentation` (rotation, zoom, shift, random erasing too). Under a
    backend other than TensorFlow the result is a :class:`fer_tf.data.pydataset.FaceBatches`.

    Rows whose label id is negative are dropped. The faces are normalised once and kept in memory;
    epoch k's order depends only on ``(seed, k)``. One epoch has ``steps_per_epoch(n, batch_size)``
    batches (the last one may be short; under other backends it is topped up with the epoch's
    first rows, so that the compiled step keeps one shape); ``repeat=True`` makes the dataset
    infinite.
    """
    label_ids = np.asarray(label_ids).astype(np.int32).reshape(-1)
    if len(label_ids) != len(faces):
        raise DatasetError(f"{len(faces)} faces but {len(label_ids)} labels; they must match")
    keep = np.flatnonzero(label_ids >= 0)
    if len(keep) == 0:
        raise DatasetError("no face has a label in the label set")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    faces = np.asarray(faces)
    if soft_targets is not None:
        soft_targets = np.asarray(soft_targets, np.float32)
        if soft_targets.ndim != 2 or len(soft_targets) != len(label_ids):
            raise DatasetError(f"soft_targets must have one row per face ([{len(label_ids)}, classes]), "
                               f"got shape {soft_targets.shape}")
    if len(keep) < len(label_ids):
        faces, label_ids = faces[keep], label_ids[keep]
        soft_targets = None if soft_targets is None else soft_targets[keep]
    n = len(label_ids)

    def targets_of(rows):
        out = {"expression": label_ids[rows]}
        if soft_targets is not None:
            out["expression_target"] = soft_targets[rows]
        return out

    if not uses_tf_data():
        from fer_tf.data.pydataset import FaceBatches  # deferred with keras (imports it)

        def epoch_batches(epoch):
            return [(rows, targets_of(rows), aug_seed) for rows, aug_seed in
                    classification_batches(n, batch_size, shuffle, seed, epoch, repeat=False,
                                           full=n >= batch_size)]

        return FaceBatches(_face_tensor(faces, preprocess), epoch_batches, _augmentation(augment),
                           start_epoch)
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    faces_t = _face_tensor(faces, preprocess)
    targets_t = {"expression": tf.constant(label_ids)}
    if soft_targets is not None:
        targets_t["expression_target"] = tf.constant(soft_targets)
    images_of = _image_map(faces_t, augment)

    ds = tf.data.Dataset.from_generator(
        lambda: classification_batches(n, batch_size, shuffle, seed, start_epoch, repeat),
        output_signature=(tf.TensorSpec([None], tf.int64), tf.TensorSpec([2], tf.int64)))
    ds = ds.map(lambda rows, aug_seed: (images_of(rows, aug_seed),
                                        {k: tf.gather(v, rows) for k, v in targets_t.items()}),
                num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, steps_per_epoch(n, batch_size), repeat)


def eval_dataset(faces, batch_size=256, preprocess=None, targets=None):
    """Centre-cropped images ``[B,48,48,1]`` in table order, no shuffling; with ``targets``
    (``{name: array [n, ...]}``, e.g. ``{"expression": ids}``) batches are ``(images, targets)``."""
    if not uses_tf_data():
        from fer_tf.data.pydataset import ArrayBatches  # deferred with keras (imports it)

        norm = _normalised_faces(faces, preprocess)
        top = (norm.shape[1] - CROP) // 2
        left = (norm.shape[2] - CROP) // 2
        crops = np.ascontiguousarray(norm[:, top:top + CROP, left:left + CROP, None])
        return ArrayBatches(crops, targets, batch_size)
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    faces_t = _face_tensor(faces, preprocess)
    images_of = _image_map(faces_t, augment=False)
    n = int(faces_t.shape[0])
    ds = tf.data.Dataset.range(n).batch(batch_size).map(images_of, num_parallel_calls=tf.data.AUTOTUNE)
    if targets is not None:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(dict(targets)).batch(batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)


def joint_dataset(identity, classification):
    """Joint batches: each is an identity-aware batch followed by a classification batch.

    ``identity`` yields ``(images, {"expression", "tuples"})`` (:func:`identity_aware_dataset`),
    ``classification`` yields ``(images, {"expression"})`` (:func:`classification_dataset`). The
    classification rows get tuple rows of ``-1``: they are not queries of the metric loss (their
    indices never appear in a tuple either), only of the cross-entropy. This is how the shipped
    model learns from FER2013 and the identity-labelled sets in one run.
    """
    if not uses_tf_data():
        from fer_tf.data.pydataset import JointBatches  # deferred with keras (imports it)

        return JointBatches(identity, classification, fill=PAD)
    import tensorflow as tf  # deferred: tf.data, TensorFlow backend only

    def merge(a, b):
        (xa, ya), (xb, yb) = a, b
        width = tf.shape(ya["tuples"])[1]
        pad = tf.fill([tf.shape(xb)[0], width], tf.constant(PAD, ya["tuples"].dtype))
        return (tf.concat([xa, tf.cast(xb, xa.dtype)], 0),
                {"expression": tf.concat([ya["expression"], tf.cast(yb["expression"], ya["expression"].dtype)], 0),
                 "tuples": tf.concat([ya["tuples"], pad], 0)})

    ds = tf.data.Dataset.zip((identity, classification)).map(merge, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

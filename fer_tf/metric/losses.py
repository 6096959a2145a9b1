"""Metric-learning losses of Liu et al. (CVPR-W 2017) and the baselines they are compared with.

Backend-agnostic (``keras.ops`` only: TensorFlow and JAX, checked by ``tests/test_backends.py``).
In the manner of pytorch-metric-learning a loss is assembled from swappable parts: a distance
(:mod:`fer_tf.metric.distances`, default the paper's squared Euclidean ``D``), a positive miner
(:mod:`fer_tf.metric.mining`, default Algorithm 1; ``miner=None`` keeps every valid positive) and a
reducer (:mod:`fer_tf.metric.reducers`, default the mean over valid tuples).  The identity-aware
*negative* mining happens earlier, when the sampler builds the tuples (:mod:`fer_tf.data.sampling`).

Functional forms (inputs float32; static shapes, no data-dependent Python control flow, finite
gradients everywhere):

- :func:`nm_tuple_clusters_loss` - Eq. 3, (N+M)-tuple clusters loss with a fixed threshold ``T``
  and margin ``tau``, after online positive mining (Algorithm 1);
- :func:`adaptive_nm_tuple_clusters_loss` - Eq. 10, the same with the learnt adaptive threshold
  ``H`` (an :class:`fer_tf.metric.layers.AdaptiveThreshold` layer, or any callable ``(f1, f2) -> H``);
- :func:`n_plus_one_tuple_loss` - Eq. 1, the (N+1)-tuple baseline;
- :func:`batch_all_triplet_loss` - a batch-all triplet loss (cubic cost, for benchmarks).

Tuples that cannot be scored
    A tuple whose positives are all padding has no centre ``c+``: it contributes nothing and is
    excluded from the mean over tuples.  A tuple with positives but no valid negatives contributes
    its positive term only (Eq. 3) or its positive hinge terms averaged over ``M*`` (Eq. 10).  When
    no tuple of the batch is valid the loss is exactly 0.0 and its gradient is zero (and finite).

Keras ``Loss`` classes (:class:`NMTupleClustersLoss`, :class:`AdaptiveNMTupleClustersLoss`,
:class:`NPlusOneTupleLoss`) take ``y_true`` = the int32 tuple-index tensor ``targets["tuples"]``
``[X, M + N]`` (column 0 the query, columns 1..M-1 its other positives, columns M..M+N-1 its
negatives, -1 padding; rows that are all -1 are not queries) and ``y_pred`` = the embeddings
``[X, d]``.  They gather the tuples from ``y_pred`` and return the *scalar* batch loss; see
:class:`TupleLoss` for how that interacts with Keras reductions.
"""

import keras
from keras import backend, ops

from fer_tf.metric import distances
from fer_tf.metric import mining
from fer_tf.metric import reducers
from fer_tf.errors import ConfigError
from fer_tf.metric.mining import as_float, check_rank, prepare_tuples, validity, zero_padding
from fer_tf.metric.parts import serialize

__all__ = [
    "nm_tuple_clusters_loss",
    "adaptive_nm_tuple_clusters_loss",
    "n_plus_one_tuple_loss",
    "batch_all_triplet_loss",
    "TupleLoss",
    "NMTupleClustersLoss",
    "AdaptiveNMTupleClustersLoss",
    "NPlusOneTupleLoss",
    "gather_tuples",
]


# --------------------------------------------------------------------------------------------
# Functional forms
# --------------------------------------------------------------------------------------------


def nm_tuple_clusters_loss(
    positives,
    negatives,
    reference_distance,
    margin,
    positive_mask=None,
    negative_mask=None,
    *,
    miner="online",
    distance=None,
    reducer=None,
):
    """(N+M)-tuple clusters loss with a fixed threshold (Eq. 3), after Algorithm 1.

    Per tuple, with ``c+`` the centre of the ``M*`` kept positives, ``T`` = ``reference_distance``
    and ``tau`` = ``margin``::

        1/M* sum_kept max(0, D(f+, c+) - T + tau/2) + 1/N sum_valid-neg max(0, T + tau/2 - D(f-, c+))

    then the mean over the valid tuples (those with at least one valid positive).  ``N`` is the
    number of valid negatives of the tuple; a tuple without valid negatives keeps its positive
    term only.

    Args:
        positives: ``[B, M, d]``; negatives: ``[B, N, d]``.
        reference_distance: ``T``, in units of ``D`` (float or scalar tensor).
        margin: ``tau``, in units of ``D`` (float or scalar tensor).
        positive_mask, negative_mask: optional ``[B, M]`` / ``[B, N]`` validity masks.
        miner: ``"online"`` (Algorithm 1 with ``distance``), ``None`` (keep every valid
            positive) or a :class:`fer_tf.metric.mining.PositiveMiner`.
        distance: a :class:`fer_tf.metric.distances.Distance`; default squared Euclidean.
        reducer: a :class:`fer_tf.metric.reducers.Reducer`; default the mean over valid tuples.

    Returns:
        A float32 scalar.
    """
    distance = distances.get(distance)
    positives, negatives, pmask, nmask = prepare_tuples(
        positives, negatives, positive_mask, negative_mask
    )
    mask, centre = mining.get(miner, distance).mine(positives, negatives, pmask, nmask)
    t = as_float(reference_distance)
    half_margin = 0.5 * as_float(margin)

    d_pos = distance.to_centre(positives, centre)
    d_neg = distance.to_centre(negatives, centre)
    m_star = ops.sum(mask, axis=-1)
    n_valid = ops.sum(nmask, axis=-1)
    pos_term = ops.sum(mask * ops.relu(d_pos - t + half_margin), axis=-1)
    neg_term = ops.sum(nmask * ops.relu(t + half_margin - d_neg), axis=-1)
    per_tuple = pos_term / ops.maximum(m_star, 1.0) + neg_term / ops.maximum(n_valid, 1.0)
    return reducers.get(reducer)(per_tuple, ops.cast(m_star > 0, "float32"))


def _threshold_values(threshold, points, centre, like):
    """``H(points, c+)`` as float32 with the shape of ``like`` ``[B, K]``."""
    centres = ops.broadcast_to(ops.expand_dims(centre, axis=-2), ops.shape(points))
    h = threshold(points, centres)
    return ops.reshape(ops.cast(h, "float32"), ops.shape(like))


def adaptive_nm_tuple_clusters_loss(
    positives,
    negatives,
    threshold,
    positive_mask=None,
    negative_mask=None,
    *,
    miner="online",
    reducer=None,
):
    """(N+M)-tuple clusters loss with the adaptive threshold (Eq. 10), after Algorithm 1.

    Per tuple::

        1/(N + M*) * ( sum_kept max(0, 1 - H(f+, c+)) + sum_valid-neg max(0, 1 + H(f-, c+)) )

    i.e. ``max(0, l * H + 1)`` with ``l = -1`` for positives and ``+1`` for negatives; then the
    mean over the valid tuples (at least one valid positive).  ``H`` is large for similar pairs:
    with ``L_A = L_B = L``, ``c = 0``, ``b = T`` it is ``T - 1/2 |(f1 - f2) L|^2`` (the paper
    prints the opposite labels and signs of ``A``/``B``: an erratum, see
    :class:`fer_tf.metric.layers.AdaptiveThreshold`).

    Args:
        positives: ``[B, M, d]``; negatives: ``[B, N, d]``.
        threshold: a :class:`fer_tf.metric.layers.AdaptiveThreshold` layer or any callable
            ``(f1, f2) -> H`` mapping two ``[B, K, d]`` tensors to ``[B, K]``.  Its variables are
            owned by the caller (the model); this function only calls it.
        positive_mask, negative_mask: optional ``[B, M]`` / ``[B, N]`` validity masks.
        miner: ``"online"`` (Algorithm 1, squared Euclidean), ``None`` (keep every valid
            positive) or a :class:`fer_tf.metric.mining.PositiveMiner`.
        reducer: a :class:`fer_tf.metric.reducers.Reducer`; default the mean over valid tuples.

    Returns:
        A float32 scalar.
    """
    if threshold is None:
        raise ConfigError(
            "adaptive_nm_tuple_clusters_loss needs a threshold: pass the model's AdaptiveThreshold layer"
        )
    positives, negatives, pmask, nmask = prepare_tuples(
        positives, negatives, positive_mask, negative_mask
    )
    mask, centre = mining.get(miner).mine(positives, negatives, pmask, nmask)

    h_pos = _threshold_values(threshold, positives, centre, mask)
    h_neg = _threshold_values(threshold, negatives, centre, nmask)
    # where (not a product) so that a non-finite H on a padded entry cannot leak.
    pos_hinge = ops.where(mask > 0, ops.relu(1.0 - h_pos), ops.zeros_like(h_pos))
    neg_hinge = ops.where(nmask > 0, ops.relu(1.0 + h_neg), ops.zeros_like(h_neg))
    m_star = ops.sum(mask, axis=-1)
    count = m_star + ops.sum(nmask, axis=-1)
    per_tuple = (ops.sum(pos_hinge, axis=-1) + ops.sum(neg_hinge, axis=-1)) / ops.maximum(
        count, 1.0
    )
    return reducers.get(reducer)(per_tuple, ops.cast(m_star > 0, "float32"))


def n_plus_one_tuple_loss(
    anchor,
    positive,
    negatives,
    margin,
    negative_mask=None,
    tuple_mask=None,
    *,
    distance=None,
    reducer=None,
):
    """(N+1)-tuple loss (Eq. 1), numerically stable.

    Per tuple ``log(1 + sum_j exp(D(a, p) - D(a, n_j) + margin))`` over the valid negatives (the
    paper's Eq. 1 has this margin, ``tau``; ``margin=0`` is our variation, the plain N-pair form),
    computed as ``logsumexp([0, z_1, ..., z_K])`` (no overflow for large distances); then the
    mean over the tuples.  A tuple without valid negatives scores ``log(1) = 0`` and still counts.

    Args:
        anchor: ``[B, d]``; positive: ``[B, d]``; negatives: ``[B, K, d]`` (``K = N - 1``).
        margin: ``tau`` of Eq. 1, in units of ``D``, added inside the exponent (0 drops it).
        negative_mask: optional ``[B, K]`` validity mask.
        tuple_mask: optional ``[B]`` mask (an extension of the paper's signature): tuples with 0
            (no valid anchor or positive) are excluded from the mean; 0.0 when no tuple is valid.
        distance: a :class:`fer_tf.metric.distances.Distance`; default squared Euclidean.
        reducer: a :class:`fer_tf.metric.reducers.Reducer`; default the mean over valid tuples.

    Returns:
        A float32 scalar.
    """
    distance = distances.get(distance)
    anchor = as_float(anchor)
    positive = as_float(positive)
    negatives = as_float(negatives)
    check_rank("negatives", negatives, 3)
    nmask = validity(negative_mask, negatives)
    valid = validity(tuple_mask, anchor)
    anchor = ops.where(valid[:, None] > 0, anchor, ops.zeros_like(anchor))
    positive = ops.where(valid[:, None] > 0, positive, ops.zeros_like(positive))
    negatives = zero_padding(negatives, nmask)

    d_ap = distance(anchor, positive)  # [B]
    d_an = distance.to_centre(negatives, anchor)  # [B, K]
    z = d_ap[:, None] - d_an + as_float(margin)
    # A very negative finite logit for padding: exp(.) underflows to exactly 0 and the gradient of
    # the unselected branch of where is 0.
    z = ops.where(nmask > 0, z, ops.full_like(z, -1e30))
    logits = ops.concatenate([ops.zeros_like(z[:, :1]), z], axis=-1)
    per_tuple = ops.logsumexp(logits, axis=-1)
    return reducers.get(reducer)(per_tuple, valid)


def batch_all_triplet_loss(embeddings, labels, margin, *, distance=None):
    """Batch-all triplet loss: mean of ``max(0, D(a, p) - D(a, n) + margin)`` over the triplets with
    a positive loss.

    Every ``(a, p, n)`` with ``labels[a] == labels[p]``, ``a != p``, ``labels[n] != labels[a]`` is a
    valid triplet; images with a negative label (``-1``: not a query) take part in none.  The
    result is the sum of the hinge over valid triplets divided by the number of valid triplets
    whose hinge is > 0 (0.0 when there are none).  Memory and time are ``O(B^3)``.

    Args:
        embeddings: ``[B, d]`` float32; labels: ``[B]`` int; margin: margin in units of ``D``.
        distance: a :class:`fer_tf.metric.distances.Distance` (its ``matrix``); default squared Euclidean.
    """
    embeddings = as_float(embeddings)
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    dist = distances.get(distance).matrix(embeddings)

    labelled = labels >= 0
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.eye(ops.shape(labels)[0], dtype="bool"))
    both = ops.logical_and(labelled[:, None], labelled[None, :])
    positive_pair = ops.logical_and(ops.logical_and(same, not_self), both)  # [a, p]
    negative_pair = ops.logical_and(ops.logical_not(same), both)  # [a, n]
    valid = ops.logical_and(positive_pair[:, :, None], negative_pair[:, None, :])  # [a, p, n]

    hinge = ops.relu(dist[:, :, None] - dist[:, None, :] + as_float(margin))
    hinge = ops.where(valid, hinge, ops.zeros_like(hinge))
    active = ops.sum(ops.cast(hinge > 0, "float32"))
    return ops.sum(hinge) / ops.maximum(active, 1.0)


# --------------------------------------------------------------------------------------------
# Keras Loss classes on the tuple-index structure
# --------------------------------------------------------------------------------------------


def gather_tuples(tuples, embeddings, num_positives):
    """Gather a batch's tuples from its embeddings.

    Args:
        tuples: ``[X, M + N]`` int tuple indices (``targets["tuples"]``; floats holding integers
            are accepted); -1 pads.
        embeddings: ``[X, d]``.
        num_positives: ``M``.

    Returns:
        ``(positives [X, M, d], negatives [X, N, d], positive_mask [X, M], negative_mask [X, N])``
        with float32 0/1 masks.  Rows whose column 0 is -1 (not queries) get all-zero masks.
    """
    idx = ops.convert_to_tensor(tuples)
    if "float" in backend.standardize_dtype(idx.dtype):
        idx = ops.round(idx)
    idx = ops.cast(idx, "int32")
    embeddings = as_float(embeddings)
    if getattr(idx, "ndim", None) not in (None, 2):
        raise ValueError(f"tuple indices must be [X, M + N], got shape {tuple(idx.shape)}")
    width = idx.shape[-1]
    if width is not None and width <= num_positives:
        raise ConfigError(
            f"the tuple indices have {width} columns but num_positives={num_positives}: "
            "they need M positive columns followed by at least one negative column"
        )
    valid = ops.logical_and(idx >= 0, idx[:, :1] >= 0)
    gathered = ops.take(embeddings, ops.maximum(idx, 0), axis=0)  # [X, M + N, d]
    mask = ops.cast(valid, "float32")
    return (
        gathered[:, :num_positives],
        gathered[:, num_positives:],
        mask[:, :num_positives],
        mask[:, num_positives:],
    )


def _check_num_positives(num_positives, minimum=1):
    if isinstance(num_positives, bool) or not isinstance(num_positives, int) or num_positives < minimum:
        raise ConfigError(f"num_positives must be an integer >= {minimum}, got {num_positives!r}")
    return num_positives


class TupleLoss(keras.losses.Loss):
    """Base class of the tuple losses: ``y_true`` = tuple indices, ``y_pred`` = embeddings.

    Parts: ``distance`` (:mod:`fer_tf.metric.distances`) and ``reducer`` (:mod:`fer_tf.metric.reducers`), both
    optional and serialised in ``get_config``; the (N+M) losses add a ``miner``.  Configs saved
    before these keys existed load with the defaults (the paper's losses).

    Reduction: the functional losses already average over the valid tuples of the batch, so
    ``call`` returns that *scalar* (the mean over the batch's valid query rows) and ``__call__``
    returns it as is, whatever ``reduction`` says, with one exception that mirrors Keras: for the
    averaging reductions (the default "sum_over_batch_size", "mean", "mean_with_sample_weight")
    the value is divided by the number of replicas in sync of the current ``tf.distribute``
    strategy, as Keras' own losses do, so that summing gradients over replicas gives the average
    of the per-replica means (1 replica, or the JAX backend: no change).  With "sum" or
    None there is no such scaling.

    ``__call__`` is overridden (rather than only ``call``) so that ``y_true`` is not cast to the
    loss dtype (indices stay exact even under a float16 policy), the loss is always computed in
    float32, and ``sample_weight`` is refused: tuples, not images, are the unit of the loss, so a
    per-image weight has no meaning and raises :class:`~fer_tf.errors.ConfigError`.
    """

    _min_positives = 1

    def __init__(
        self,
        num_positives=6,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
        distance=None,
        reducer=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_positives = _check_num_positives(num_positives, self._min_positives)
        self.distance = distances.get(distance)
        self.reducer = reducers.get(reducer)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ConfigError(
                f"{type(self).__name__} does not support sample_weight: it averages over tuples"
            )
        with keras.name_scope(self.name):
            value = self.call(y_true, y_pred)
            if self.reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight"):
                value = reducers.scale_for_replicas(value)
            return value

    def get_config(self):
        config = super().get_config()
        config.update(
            num_positives=self.num_positives,
            distance=serialize(self.distance),
            reducer=serialize(self.reducer),
        )
        return config


class _MinedTupleLoss(TupleLoss):
    """A tuple loss with a positive ``miner`` (default ``"online"``: Algorithm 1 with the loss's
    distance; ``None``: keep every valid positive; or a :class:`fer_tf.metric.mining.PositiveMiner`)."""

    def __init__(self, num_positives=6, miner="online", **kwargs):
        super().__init__(num_positives=num_positives, **kwargs)
        self.miner = mining.get(miner, self.distance)

    def get_config(self):
        config = super().get_config()
        config["miner"] = serialize(self.miner)
        return config


@keras.saving.register_keras_serializable(package="fer_tf")
class NMTupleClustersLoss(_MinedTupleLoss):
    """(N+M)-tuple clusters loss with fixed threshold (Eq. 3) on the tuple-index structure.

    Args:
        num_positives: ``M``, the number of positive columns of ``y_true`` (the query included).
        reference_distance: ``T``, in squared-distance units (default 1.0).
        margin: ``tau`` (default 0.5): positives are pulled within ``T - tau/2`` of the centre,
            negatives pushed beyond ``T + tau/2``.
        **parts: the keyword-only swappable parts ``miner``, ``distance``, ``reducer`` (see
            :class:`TupleLoss`); the defaults are the paper's.

    Defaults: the paper's embeddings are not L2-normalised, so there is no natural scale; with
    L2-normalised embeddings squared distances lie in ``[0, 4]`` (orthogonal vectors at 2), and
    ``T = 1.0, tau = 0.5`` asks positives within 0.75 and negatives beyond 1.25 of the centre,
    which is attainable there.  For unnormalised embeddings the network can rescale its output,
    so any positive ``T`` works; only the ratio ``tau / T`` matters and 0.5 is a moderate margin.
    Both are config values; the adaptive loss removes the need to choose ``T``.
    """

    def __init__(
        self,
        num_positives=6,
        reference_distance=1.0,
        margin=0.5,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
        **parts,
    ):
        super().__init__(
            num_positives=num_positives, name=name, reduction=reduction, dtype=dtype, **parts
        )
        self.reference_distance = float(reference_distance)
        self.margin = float(margin)
        if self.margin < 0:
            raise ConfigError(f"margin must be >= 0, got {margin}")

    def call(self, y_true, y_pred):
        pos, neg, pmask, nmask = gather_tuples(y_true, y_pred, self.num_positives)
        return nm_tuple_clusters_loss(
            pos, neg, self.reference_distance, self.margin, positive_mask=pmask, negative_mask=nmask,
            miner=self.miner, distance=self.distance, reducer=self.reducer,
        )

    def get_config(self):
        config = super().get_config()
        config.update(reference_distance=self.reference_distance, margin=self.margin)
        return config


@keras.saving.register_keras_serializable(package="fer_tf")
class AdaptiveNMTupleClustersLoss(_MinedTupleLoss):
    """(N+M)-tuple clusters loss with the adaptive threshold (Eq. 10) on the tuple-index structure.

    Args:
        num_positives: ``M``.
        threshold: the model's :class:`fer_tf.metric.layers.AdaptiveThreshold` layer (or any callable
            ``(f1, f2) -> H``).  The model owns its weights; the loss only calls it.  It is not
            serialised: ``get_config`` stores ``num_positives``, the parts and name/reduction only
            and ``from_config`` leaves ``threshold`` None, so the model must re-attach it
            (``loss.threshold = layer``) after loading.  Calling the loss without a threshold
            raises :class:`~fer_tf.errors.ConfigError`.
        **parts: the keyword-only ``miner``, ``distance``, ``reducer`` (see :class:`TupleLoss`);
            ``distance`` is only the default online miner's (``H`` replaces ``D`` in the loss).
    """

    def __init__(
        self,
        num_positives=6,
        threshold=None,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
        **parts,
    ):
        super().__init__(
            num_positives=num_positives, name=name, reduction=reduction, dtype=dtype, **parts
        )
        self.threshold = threshold

    def call(self, y_true, y_pred):
        if self.threshold is None:
            raise ConfigError(
                "AdaptiveNMTupleClustersLoss has no threshold: attach the model's AdaptiveThreshold "
                "layer (loss.threshold = layer) before computing the loss"
            )
        pos, neg, pmask, nmask = gather_tuples(y_true, y_pred, self.num_positives)
        return adaptive_nm_tuple_clusters_loss(
            pos, neg, self.threshold, positive_mask=pmask, negative_mask=nmask,
            miner=self.miner, reducer=self.reducer,
        )


@keras.saving.register_keras_serializable(package="fer_tf")
class NPlusOneTupleLoss(TupleLoss):
    """(N+1)-tuple loss (Eq. 1) on the tuple-index structure (a baseline).

    For each query row: the anchor is column 0, the positive is the first valid column among
    1..M-1 (so a row whose column 1 is padding still uses its other positives), and *all* N
    negative columns M..M+N-1 are the negatives of Eq. 1 (so the tuple has N + 2 members rather
    than the paper's N + 1; it uses exactly the images the (N+M) losses see).  Rows without a
    query or without any valid positive besides the query are excluded from the mean.

    Args:
        num_positives: ``M`` (>= 2: the anchor and at least one positive column).
        margin: Eq. 1's ``tau``, added inside the exponent, in squared-distance units (default 0.5,
            as ``tau`` of :class:`NMTupleClustersLoss`; 0.0, which drops the paper's margin, is
            our variation: the plain N-pair form).
        **parts: the keyword-only swappable parts ``distance``, ``reducer`` (see
            :class:`TupleLoss`).
    """

    _min_positives = 2

    def __init__(
        self, num_positives=6, margin=0.5, name=None, reduction="sum_over_batch_size", dtype=None,
        **parts,
    ):
        super().__init__(num_positives=num_positives, name=name, reduction=reduction, dtype=dtype, **parts)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        pos, neg, pmask, nmask = gather_tuples(y_true, y_pred, self.num_positives)
        anchor = pos[:, 0]
        others = pmask[:, 1:]  # [X, M - 1]
        # the first valid column among 1..M-1, selected with a one-hot weight: a multiply and a
        # sum (take_along_axis costs a dozen index ops per call on the TensorFlow backend)
        first = ops.one_hot(ops.argmax(others, axis=-1), others.shape[-1], dtype="float32")
        positive = ops.sum(pos[:, 1:] * first[..., None], axis=1)
        valid = ops.cast(ops.logical_and(pmask[:, 0] > 0, ops.any(others > 0, axis=-1)), "float32")
        return n_plus_one_tuple_loss(
            anchor, positive, neg, self.margin, negative_mask=nmask, tuple_mask=valid,
            distance=self.distance, reducer=self.reducer,
        )

    def get_config(self):
        config = super().get_config()
        config["margin"] = self.margin
        return config

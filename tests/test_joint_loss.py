"""The joint loss (JointModel.compute_loss) against an independent NumPy form: the cross-entropy
on the query rows plus alpha x the metric loss (Eq. 10, Eq. 3 or Eq. 1, with Algorithm 1),
computed from the model's own outputs by tests/metric_reference.py, for several alpha, in both
batch modes (``in_batch``: every image a query; ``tuple``: only the queries, other rows -1)."""

import numpy as np
import pytest
from fixtures_training import TINY_LABELS, synthetic_data, tiny_model
from metric_reference import (ref_adaptive_loss, ref_cross_entropy, ref_gather, ref_H, ref_n_plus_one,
                              ref_nm_loss)

M = N = 3


@pytest.fixture(scope="module", params=["in_batch", "tuple"])
def batch(request):
    """One identity-aware batch of synthetic faces in the given mode, as NumPy arrays."""
    from fer_tf.feeding.feeders import identity_aware_dataset

    table, faces = synthetic_data(subjects=5)
    ds = identity_aware_dataset(table, faces, TINY_LABELS, mode=request.param, num_positives=M,
                                num_negatives=N, queries_per_batch=6, seed=1, repeat=False)
    images, targets = next(iter(ds))
    labels = targets["expression"].numpy()
    if request.param == "tuple":  # the positives' and negatives' images are in the batch, not queries
        assert (labels < 0).any() and (labels >= 0).any()
    else:
        assert (labels >= 0).all()
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def reference_metric_loss(model, tuples, embeddings):
    """The variant's metric loss in NumPy (float64) from the gathered tuples -> (value, tie gap)."""
    config = model.config
    pos, neg, pmask, nmask = ref_gather(tuples, embeddings, M)
    if config.variant.endswith("(N+1)"):
        anchor, positive, valid = pos[:, 0], np.zeros_like(pos[:, 0]), np.zeros(len(pos))
        for i in range(len(pos)):
            others = [j for j in range(1, M) if pmask[i, j]]
            if pmask[i, 0] and others:
                positive[i], valid[i] = pos[i, others[0]], 1.0
        return ref_n_plus_one(anchor, positive, neg, config.margin, nmask, valid), np.inf
    if config.adaptive:
        weights = [np.asarray(w, np.float64) for w in model.threshold.get_weights()]
        return ref_adaptive_loss(pos, neg, lambda f1, f2: ref_H(f1, f2, *weights), pmask, nmask)
    return ref_nm_loss(pos, neg, config.reference_distance, config.margin, pmask, nmask)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("variant, overrides", [
    ("2B(N+M)", {}),
    ("1B(N+M)", {"adaptive": False, "reference_distance": 0.8}),
    ("2B(N+1)", {}),
])
def test_joint_loss_is_query_cross_entropy_plus_alpha_metric_loss(batch, variant, overrides, alpha):
    import keras

    images, targets = batch
    keras.utils.set_random_seed(10)  # a seed whose tuples have no near-tie in Algorithm 1
    model = tiny_model(variant, alpha=alpha, **overrides)
    if model.threshold is not None:  # away from the identity start, so that every term of H counts
        rng = np.random.default_rng(0)
        model.threshold.set_weights([w + 0.1 * rng.normal(size=w.shape).astype(np.float32)
                                     for w in model.threshold.get_weights()])
    outputs = model(images, training=False)
    probabilities = np.asarray(outputs["expression"], np.float64)
    embeddings = np.asarray(outputs["embedding"], np.float64)

    ce = ref_cross_entropy(targets["expression"], probabilities)
    metric, gap = reference_metric_loss(model, targets["tuples"], embeddings)
    assert gap > 1e-4, "a near-tie in Algorithm 1: choose another seed"
    assert ce > 0 and metric > 0

    got = model.compute_loss(x=images, y=targets, y_pred=outputs, training=False)
    np.testing.assert_allclose(float(got), ce + alpha * metric, rtol=1e-5)
    assert float(model.metric_tracker.result()) == pytest.approx(metric, rel=1e-5)
    assert float(model.ce_tracker.result()) == pytest.approx(ce, rel=1e-5)


def test_softmax_joint_loss_is_the_query_cross_entropy(batch):
    images, targets = batch
    model = tiny_model("softmax", alpha=2.0)
    outputs = model(images, training=False)
    got = model.compute_loss(x=images, y=targets, y_pred=outputs, training=False)
    expected = ref_cross_entropy(targets["expression"], np.asarray(outputs["expression"], np.float64))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)

"""Mixing augmentations (mixup, CutMix; not in the paper): the plan, the pixels and the targets
against independent NumPy forms, the same batches on both feed backends, and the options' checks."""

import numpy as np
import pytest

from fer_tf.config import ModelConfig, TrainConfig
from fer_tf.feeding import feed, feeders
from fer_tf.feeding.augment import Augmentation
from fer_tf.feeding.mixing import BOX, LAMBDA, PARTNER, Mixing, mix_images, mix_plan, mixed_targets
from fer_tf.data.sampling import classification_batches
from fer_tf.errors import ConfigError


def _numpy_mix(images, plan):
    """Pixel by pixel: inside row i's box, the partner's pixel; elsewhere (no box) the lam mix."""
    out = np.empty_like(images)
    for i, (j, lam, (top, left, bottom, right)) in enumerate(zip(plan[PARTNER], plan[LAMBDA], plan[BOX])):
        if bottom > top and right > left:
            out[i] = images[i]
            out[i, top:bottom, left:right] = images[j, top:bottom, left:right]
        else:
            out[i] = lam * images[i] + (1 - lam) * images[j]
    return out


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_plan_is_a_function_of_the_seed_with_lambda_in_range(kind):
    mixing = Mixing(kind, alpha=1.0)
    a, b = mix_plan(mixing, 64, [3, 4]), mix_plan(mixing, 64, [3, 4])
    for key in (PARTNER, LAMBDA, BOX):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a[LAMBDA], mix_plan(mixing, 64, [3, 5])[LAMBDA])
    assert sorted(a[PARTNER]) == list(range(64))
    assert ((a[LAMBDA] >= 0) & (a[LAMBDA] <= 1)).all() and (a[LAMBDA] < 1).mean() > 0.8
    if kind == "cutmix":  # lam is the row's own visible share
        top, left, bottom, right = a[BOX].T
        np.testing.assert_allclose(a[LAMBDA], 1 - (bottom - top) * (right - left) / 48 ** 2, rtol=1e-6)
        assert ((0 <= top) & (top <= bottom) & (bottom <= 48) & (0 <= left) & (left <= right)
                & (right <= 48)).all()
    else:
        assert not a[BOX].any()


def test_probability_zero_mixes_nothing_and_a_row_never_mixes_with_itself():
    plan = mix_plan(Mixing("mixup", probability=0.0), 32, [0, 1])
    assert (plan[LAMBDA] == 1).all()
    plan = mix_plan(Mixing("cutmix"), 1, [0, 1])  # one row: its only partner is itself
    assert plan[LAMBDA][0] == 1 and not plan[BOX].any()
    half = mix_plan(Mixing("mixup", probability=0.5), 4000, [0, 2])
    assert 0.45 < (half[LAMBDA] < 1).mean() < 0.55


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixed_pixels_match_numpy(kind):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 48, 48, 1)).astype("float32")
    plan = mix_plan(Mixing(kind, alpha=0.7), 16, [9, 9])
    got = np.asarray(mix_images(images, plan))
    np.testing.assert_allclose(got, _numpy_mix(images, plan), atol=1e-6)
    assert np.abs(got - images).max() > 0.1


def test_mixed_targets_match_numpy_with_smoothing_and_with_soft_targets():
    plan = mix_plan(Mixing("mixup"), 6, [1, 1])
    labels = np.array([0, 1, 2, 0, 1, 2])
    got = mixed_targets(plan, labels, 3, label_smoothing=0.1)
    for i, j in enumerate(plan[PARTNER]):
        lam = plan[LAMBDA][i]
        t_i, t_j = np.full(3, 0.1 / 3), np.full(3, 0.1 / 3)
        t_i[labels[i]] += 0.9
        t_j[labels[j]] += 0.9
        np.testing.assert_allclose(got[i], lam * t_i + (1 - lam) * t_j, rtol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)
    soft = np.random.default_rng(1).dirichlet(np.ones(3), 6).astype("float32")
    got = mixed_targets(plan, labels, 3, soft_targets=soft)
    lam = plan[LAMBDA][:, None]
    np.testing.assert_allclose(got, lam * soft + (1 - lam) * soft[plan[PARTNER]], rtol=1e-6)


def _faces(n=30):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 60, 60)).astype("float32"), (np.arange(n) % 3).astype(np.int32)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_classification_batches_are_the_unmixed_batches_mixed(kind):
    faces, labels = _faces()
    aug = Augmentation(crop_size=48, flip=True, translation=2)
    mixing = Mixing(kind, alpha=1.0)
    plain = list(feeders.classification_dataset(faces, labels, batch_size=8, augment=aug, seed=2,
                                                repeat=False))
    mixed = list(feeders.classification_dataset(faces, labels, batch_size=8, augment=aug, seed=2,
                                                repeat=False, mixing=mixing, num_classes=3,
                                                label_smoothing=0.1))
    seeds = [s for _, s in classification_batches(len(faces), 8, True, 2, 0, repeat=False)]
    assert len(plain) == len(mixed) == len(seeds)
    for (x, y), (xm, ym), seed in zip(plain, mixed, seeds):
        assert sorted(ym) == ["expression", "expression_target"]  # the plan's keys are gone
        np.testing.assert_array_equal(ym["expression"], y["expression"])
        plan = mix_plan(mixing, len(x), seed, size=48)
        np.testing.assert_allclose(np.asarray(xm), _numpy_mix(np.asarray(x), plan), atol=1e-5)
        np.testing.assert_allclose(np.asarray(ym["expression_target"]),
                                   mixed_targets(plan, np.asarray(y["expression"]), 3, 0.1), rtol=1e-6)


def test_mixed_batches_are_the_same_on_both_backends(monkeypatch):
    faces, labels = _faces(24)

    def build():
        return feeders.classification_dataset(faces, labels, batch_size=10, augment=False, seed=5,
                                              repeat=False, mixing=Mixing("cutmix"), num_classes=3)

    tf_batches = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()}) for x, y in build()]
    monkeypatch.setattr(feed, "uses_tf_data", lambda: False)
    py = build()
    py_batches = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()}) for x, y in
                  (py[i] for i in range(len(py)))]
    assert len(tf_batches) == len(py_batches) == 3
    # (centre crops: the augmentations' uniforms come from different generators on the two)
    for (xa, ya), (xb, yb) in zip(tf_batches[:-1], py_batches[:-1]):
        np.testing.assert_allclose(xa, xb, atol=1e-6)
        assert sorted(ya) == sorted(yb) == ["expression", "expression_target"]
        np.testing.assert_array_equal(ya["expression_target"], yb["expression_target"])
    # the short last batch, topped up on the PyDataset backend, is mixed after topping up: its
    # images and targets still agree with the plan of its seed
    (x, y), short = py_batches[-1], len(tf_batches[-1][0])
    assert len(x) == 10 and short == 4
    _, seed = list(classification_batches(24, 10, True, 5, 0, repeat=False))[-1]
    plan = mix_plan(Mixing("cutmix"), 10, seed)
    np.testing.assert_allclose(y["expression_target"], mixed_targets(plan, y["expression"], 3), rtol=1e-6)


def test_options_are_checked_and_refused_where_batches_cannot_be_mixed():
    with pytest.raises(ConfigError, match="unknown mixing 'mixups'"):
        TrainConfig(mixing="mixups")
    with pytest.raises(ConfigError, match="mixing_alpha"):
        TrainConfig(mixing="mixup", mixing_alpha=0)
    with pytest.raises(ConfigError, match="mixing_probability"):
        TrainConfig(mixing="cutmix", mixing_probability=1.5)
    from fer_tf.research import evaluation

    with pytest.raises(ConfigError, match="identity-aware batches"):
        evaluation.train_variant("2B(N+M)", None, None, [], [], ModelConfig(), TrainConfig(mixing="mixup"))
    faces, labels = _faces(8)
    with pytest.raises(ConfigError, match="num_classes"):
        feeders.classification_dataset(faces, labels, mixing=Mixing("mixup"))


def test_mixing_enters_the_protocol_digest_only_when_on():
    from fer_tf.research import crossval

    data = {"format": "ckplus48", "folds": 8}
    base = crossval.protocol_digest(ModelConfig(), TrainConfig(), "abc", data)
    assert base == crossval.protocol_digest(ModelConfig(), TrainConfig(mixing_alpha=1.0), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(), TrainConfig(mixing="mixup"), "abc", data)

"""Distillation targets (fer_tf.training.distillation) and their path through the dataset and the loss."""

import keras
import numpy as np
import pytest

from fer_tf.training import distillation
from fer_tf.model import network
from fer_tf.feeding import feeders
from fer_tf.config import TrainConfig
from fer_tf.errors import ConfigError


def test_temper_is_softmax_of_scaled_logits():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for t in (0.5, 1.0, 3.0):
        expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
        np.testing.assert_allclose(distillation.temper(p, t), expected, rtol=1e-5)
    assert distillation.temper(p, 4.0).max() < distillation.temper(p, 1.0).max()  # softer


def test_soft_targets_mix_labels_and_teacher():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, -1])
    out = distillation.soft_targets(labels, teacher, weight=0.25, label_smoothing=0.3)
    hard = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])  # (1 - 0.3) one-hot + 0.3 / 3
    np.testing.assert_allclose(out[:2], 0.75 * hard + 0.25 * teacher[:2], rtol=1e-6)
    np.testing.assert_array_equal(out[2], 0.0)  # not a query
    np.testing.assert_allclose(out[:2].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(distillation.soft_targets(labels, teacher, weight=0.0)[:2], np.eye(3)[[0, 1]])
    np.testing.assert_allclose(distillation.soft_targets(labels, teacher, weight=1.0)[:2], teacher[:2], rtol=1e-6)


def test_soft_targets_reject_bad_input():
    with pytest.raises(ConfigError, match="must be"):
        distillation.soft_targets([0, 1], np.ones((3, 3)) / 3)
    with pytest.raises(ConfigError, match="out of range"):
        distillation.soft_targets([0, 5], np.ones((2, 3)) / 3)
    with pytest.raises(ConfigError, match="distill_weight"):
        TrainConfig(distill_weight=1.5)
    with pytest.raises(ConfigError, match="distill_temperature"):
        TrainConfig(distill_temperature=0)


def test_teacher_targets_need_a_model_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        distillation.teacher_targets(tmp_path / "missing.keras", np.zeros((2, 60, 60)), [0, 1], ["a", "b"])


def test_cross_entropy_uses_soft_targets():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], np.float32)
    labels = np.array([0, 1, -1])
    targets = np.array([[0.5, 0.5, 0.0], [0.0, 0.9, 0.1], [1.0, 0.0, 0.0]], np.float32)
    got = float(keras.ops.convert_to_numpy(network.query_cross_entropy(labels, probabilities, 0.1, targets=targets)))
    expected = -np.mean([(targets[i] * np.log(probabilities[i])).sum() for i in (0, 1)])  # row 2: no query
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    plain = float(keras.ops.convert_to_numpy(network.query_cross_entropy(labels, probabilities)))
    np.testing.assert_allclose(plain, -np.mean(np.log([0.6, 0.5])), rtol=1e-5)


def test_rows_without_soft_targets_keep_their_smoothed_labels():
    """Joint batches (make ship with distillation): the identity rows carry join's fill (-1) in
    place of soft targets and keep the smoothed one-hot of their label."""
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]], np.float32)
    labels = np.array([0, 1, 2])
    targets = np.array([[-1, -1, -1], [-1, -1, -1], [0.2, 0.2, 0.6]], np.float32)
    got = float(keras.ops.convert_to_numpy(network.query_cross_entropy(labels, probabilities, 0.1, targets=targets)))
    smoothed = np.full((2, 3), 0.1 / 3) + 0.9 * np.eye(3)[:2]
    rows = [(smoothed[0] * np.log(probabilities[0])).sum(), (smoothed[1] * np.log(probabilities[1])).sum(),
            (targets[2] * np.log(probabilities[2])).sum()]
    np.testing.assert_allclose(got, -np.mean(rows), rtol=1e-5)


def test_classification_dataset_serves_soft_targets():
    n = 130
    faces = np.zeros((n, 60, 60), np.float32)
    faces += np.arange(n, dtype=np.float32)[:, None, None]  # each face holds its row number
    labels = np.arange(n) % 7
    labels[::13] = -1  # dropped with its target row
    soft = np.random.default_rng(0).random((n, 7)).astype(np.float32)
    ds = feeders.classification_dataset(faces, labels, batch_size=32, augment=False, repeat=False,
                                         soft_targets=soft)
    seen = 0
    for images, targets in ds:
        rows = keras.ops.convert_to_numpy(images)[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets["expression"]), labels[rows])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(targets["expression_target"]), soft[rows])
        seen += len(rows)
    assert seen == int(np.sum(labels >= 0))
    with pytest.raises(Exception, match="one row per face"):
        feeders.classification_dataset(faces, labels, soft_targets=soft[:10])


def test_teacher_targets_temper_the_teacher_once(tmp_path):
    teacher = network.build_model("softmax", labels=["a", "b", "c", "d", "e", "f", "g"])
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    faces = np.random.default_rng(0).normal(size=(4, 60, 60)).astype(np.float32)
    labels = np.array([0, 3, 6, -1])
    targets, summary = distillation.teacher_targets(path, faces, labels, list("abcdefg"), weight=0.5,
                                                    temperature=2.0)
    probabilities = distillation.predict.predict_probabilities(teacher, faces, flip=True)
    np.testing.assert_allclose(targets, distillation.soft_targets(labels, probabilities, 0.5, 2.0), atol=1e-5)
    assert summary["temperature"] == 2.0


def test_an_ensemble_teacher_averages_its_networks_probabilities(tmp_path):
    """Three networks (a list, or paths separated by commas): the targets are those of the mean of
    their flip-averaged probabilities, computed here network by network."""
    import keras

    labels = list("abcdefg")
    paths, each = [], []
    faces = np.random.default_rng(1).normal(size=(5, 60, 60)).astype(np.float32)
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        teacher = network.build_model("softmax", labels=labels)
        paths.append(tmp_path / f"t{seed}.keras")
        teacher.save(paths[-1])
        each.append(distillation.predict.predict_probabilities(teacher, faces, flip=True))
    ids = np.array([0, 1, 2, 3, 4])
    expected = distillation.soft_targets(ids, np.mean(each, axis=0), 0.7, 1.5, 0.1)
    for value in (paths, ",".join(map(str, paths))):
        targets, summary = distillation.teacher_targets(value, faces, ids, labels, weight=0.7,
                                                        temperature=1.5, label_smoothing=0.1)
        np.testing.assert_allclose(targets, expected, atol=1e-5)
        assert summary["teacher"] == [str(p) for p in paths] and len(summary["ensemble"]) == 3
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the members differ
    with pytest.raises(ConfigError, match="not found"):
        distillation.teacher_targets([paths[0], tmp_path / "missing.keras"], faces, ids, labels)
    with pytest.raises(ConfigError, match="names no teacher"):
        distillation.teacher_paths(" , ")


def test_stored_teacher_probabilities_stand_in_for_the_network(tmp_path):
    """A network's predictions saved as .npz (0.3 MB for FER2013, not 6-12 MB) distil like the
    network, looked up by the faces' keys; faces not stored, or other labels, are refused."""
    import keras

    labels = list("abcdefg")
    faces = np.random.default_rng(2).normal(size=(6, 60, 60)).astype(np.float32)
    keys = [f"train/x/{i}.jpg" for i in range(6)]
    ids = np.arange(6) % 7
    paths = []
    for seed in range(2):
        keras.utils.set_random_seed(10 + seed)
        paths.append(tmp_path / f"t{seed}.keras")
        network.build_model("softmax", labels=labels).save(paths[-1])
    stored = distillation.save_teacher_probabilities(paths[0], faces, keys, labels, tmp_path / "t0.npz")
    from_network, _ = distillation.teacher_targets(paths, faces, ids, labels, keys=keys)
    from_stored, summary = distillation.teacher_targets([stored, paths[1]], faces, ids, labels, keys=keys)
    np.testing.assert_allclose(from_stored, from_network, atol=2e-3)  # float16 storage
    assert summary["teacher"][0].endswith("t0.npz")
    # by face: another order, or a subset (a smoke run's --max-train-images), takes its own rows
    alone, _ = distillation.teacher_targets(stored, faces, ids, labels, keys=keys)
    backwards, _ = distillation.teacher_targets(stored, faces[::-1], ids[::-1], labels, keys=keys[::-1])
    np.testing.assert_allclose(backwards, alone[::-1], atol=1e-6)
    part, _ = distillation.teacher_targets(stored, faces[1:4], ids[1:4], labels, keys=keys[1:4])
    np.testing.assert_allclose(part, alone[1:4], atol=1e-6)
    with pytest.raises(ConfigError, match="1 of its 6 are not among the 6 stored"):
        distillation.teacher_targets(stored, faces, ids, labels, keys=keys[:5] + ["train/x/new.jpg"])
    with pytest.raises(ConfigError, match="not named"):
        distillation.teacher_targets(stored, faces, ids, labels)
    with pytest.raises(ConfigError, match="are over"):
        distillation.teacher_targets(stored, faces, ids, list("gfedcba"), keys=keys)

"""Sequence voting, confusion matrices, the identity probe and the report writer."""

import json

import numpy as np
import pytest

from fer_tf.research import evaluation, probes


def test_sequence_scores_average_the_frames_of_each_sequence():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    seq = np.array(["a", "a", "a", ""], dtype=object)
    mean, labels, keys = evaluation.sequence_scores(p, seq, np.array([1, 1, 1, 0]))
    assert len(keys) == 2  # one sequence and one stand-alone image
    row = list(keys).index("a")
    assert mean[row] == pytest.approx([1.4 / 3, 1.6 / 3])
    assert labels[row] == 1 and labels[1 - row] == 0


def test_confusion_counts_true_rows_and_predicted_columns():
    m = evaluation.confusion([0, 0, 1, 2], [0, 1, 1, 1], 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_identity_probe_finds_identity_in_identity_features_and_not_in_noise():
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"S{i}" for i in range(6)], 6)
    sequences = np.array([f"{s}_{j // 3}" for s, j in zip(subjects, np.tile(np.arange(6), 6))])
    centres = rng.normal(size=(6, 8)) * 5
    identity = centres[np.repeat(np.arange(6), 6)] + rng.normal(size=(36, 8)) * 0.1
    acc, probed = probes.identity_probe(identity, subjects, sequences, steps=100)
    assert probed == 6 and acc == 1.0
    noise_acc, _ = probes.identity_probe(rng.normal(size=(36, 8)), subjects, sequences, steps=100)
    assert noise_acc < 0.7


def test_identity_probe_needs_two_sequences_per_subject():
    acc, probed = probes.identity_probe(np.zeros((3, 2)), ["a", "b", "c"], ["1", "2", "3"])
    assert acc is None and probed == 0


def test_inner_split_holds_out_whole_training_subjects():
    from fer_tf.data.table import FaceTable

    subjects = np.repeat([f"S{i:02d}" for i in range(16)], 4)
    expressions = np.tile(["a", "b", "c", "d"], 16)
    table = FaceTable.from_rows([{"path": f"{i}.png", "subject": s, "expression": e}
                                 for i, (s, e) in enumerate(zip(subjects, expressions))])
    train_rows = np.arange(8, 64)  # subjects S02..S15
    fit, inner = evaluation.inner_split(table, train_rows, 0.125, seed=0)
    assert set(fit) | set(inner) == set(train_rows) and not set(fit) & set(inner)
    assert not set(subjects[fit]) & set(subjects[inner])
    assert len(set(subjects[inner])) in (1, 2, 3)
    assert evaluation.inner_split(table, train_rows, 0.0)[1].size == 0


def test_selected_epoch_is_the_best_validation_epoch_ties_later():
    history = [{"epoch": 1, "val_accuracy": 0.8, "loss": 3}, {"epoch": 2, "val_accuracy": 0.9, "loss": 2},
               {"epoch": 3, "val_accuracy": 0.9, "loss": 1}, {"epoch": 4, "val_accuracy": 0.7, "loss": 1}]
    assert evaluation._selected_epoch(history, True) == 3
    assert evaluation._selected_epoch(history, True, prefer_later=False) == 2
    assert evaluation._selected_epoch(history, False) == 4
    assert evaluation._selected_epoch(history, True, rule="last") == 4
    assert evaluation._selected_epoch(history[:2], True, rule="last") == 2


def test_train_variant_starts_from_the_seed_whatever_ran_before(monkeypatch):
    """The new layers' initial weights depend on the run's seed only (a campaign trains many runs
    in one process)."""
    import keras

    from fer_tf.research import evaluation, probes
    from fer_tf.training import loop

    built = []

    class Stop(Exception):
        pass

    def fake_fit(model, *args, **kwargs):
        built.append([w.copy() for w in model.get_weights()])
        raise Stop

    monkeypatch.setattr(loop, "fit", fake_fit)
    from fixtures_training import TINY_MODEL, synthetic_data, tiny_backbone
    from fer_tf.model import network
    from fer_tf.config import ModelConfig, TrainConfig

    monkeypatch.setattr(network, "build_model", lambda variant, **kw: network.JointModel(
        backbone=tiny_backbone(), config=ModelConfig(variant=variant, labels=kw["labels"], **TINY_MODEL)))
    table, faces = synthetic_data(subjects=6)
    labels = tuple(sorted(set(table.expression)))
    faces = faces.astype("float32")
    for burn in (0, 3):
        keras.random.normal((burn + 1,), seed=None)  # other work consumes the random state
        np.random.rand(burn)
        with pytest.raises(Stop):
            evaluation.train_variant("2B(N+M)", table, faces, np.arange(len(table) - 6), np.arange(len(table) - 6, len(table)),
                                     ModelConfig(labels=labels, **TINY_MODEL), TrainConfig(seed=3))
    for a, b in zip(*built):
        np.testing.assert_array_equal(a, b)

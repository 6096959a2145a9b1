"""Sequence voting, confusion matrices, the identity probe and the report writer."""

import json

import numpy as np
import pytest

from fer_tf import evaluation


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
    acc, probed = evaluation.identity_probe(identity, subjects, sequences, steps=100)
    assert probed == 6 and acc == 1.0
    noise_acc, _ = evaluation.identity_probe(rng.normal(size=(36, 8)), subjects, sequences, steps=100)
    assert noise_acc < 0.7


def test_identity_probe_needs_two_sequences_per_subject():
    acc, probed = evaluation.identity_probe(np.zeros((3, 2)), ["a", "b", "c"], ["1", "2", "3"])
    assert acc is None and probed == 0


def _fold(seq_acc, n_seq=10):
    return {"sequence_accuracy": seq_acc, "image_accuracy": seq_acc, "images": 3 * n_seq,
            "sequences": n_seq, "sequence_confusion": [[n_seq, 0], [0, 0]],
            "identity_probe_accuracy": 0.5, "identity_probe_subjects": 4,
            "history": [{"epoch": 1, "loss": 1.0, "fold_accuracy": seq_acc}],
            "train_seconds": 1.0, "steps_per_epoch": 2, "mode": "in_batch"}


def test_aggregate_weights_folds_by_size():
    out = evaluation.aggregate({"softmax": [_fold(1.0, 10), _fold(0.5, 30)]}, ("a", "b"))
    assert out["softmax"]["sequence_accuracy"] == pytest.approx((10 + 15) / 40)
    assert out["softmax"]["fold_sequence_accuracy"] == [1.0, 0.5]
    assert out["softmax"]["identity_probe_chance"] == pytest.approx(0.25)


def test_report_has_the_table_the_paper_comparison_and_figures(tmp_path):
    results = {"softmax": [_fold(0.8), _fold(0.9)], "2B(N+M)": [_fold(0.95), _fold(0.9)],
               "tuple_mode": [_fold(0.9), None]}
    info = {"command": "test", "git_commit": "abc", "date": "today", "seed": 0,
            "machine": {"cpu": "cpu", "cores": 2}, "config": {"train": {"epochs": 1}}}
    data = evaluation.write_report(results, ("a", "b"), tmp_path / "report", tmp_path / "runs", info,
                                   "toy", 2, paper={"2B(N+M)": 0.971})
    assert data["best_variant"] == "2B(N+M)"
    assert data["tuple_mode"]["tuple_sequence_accuracy"] == 0.9
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["variants"]["2B(N+M)"]["sequence_accuracy"] == pytest.approx(0.925)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| 2B(N+M) | 92.50% |" in readme and "97.10%" in readme
    assert "ours - paper" in readme and "-4.60" in readme
    assert (tmp_path / "report" / "confusion_matrix.png").stat().st_size > 0
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0

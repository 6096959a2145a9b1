"""fer_tf.research.ensembles: members and their ensemble on FER2013's test splits, against
accuracies counted by hand; and pipelines/accuracy3.py --ensemble's choice of networks."""

import pathlib
import sys

import numpy as np
import pytest

from fer_tf.research import ensembles

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines"))

import accuracy3  # noqa: E402


def _probabilities(rows, predicted, confidence):
    p = np.full((rows, 3), (1 - confidence) / 2)
    p[np.arange(rows), predicted] = confidence
    return p


def test_the_ensemble_averages_probabilities_and_is_scored_per_split():
    ids = np.array([0, 1, 2, 0, 1, 2, -1])  # the last row has no label and is never counted
    split = {"PublicTest": np.array([0, 1, 2]), "PrivateTest": np.array([3, 4, 5, 6])}
    # a: confident, right on rows 0, 3, 4; b: less confident, right on rows 1, 2, 5
    a = {"public_test_accuracy": _probabilities(3, [0, 0, 0], 0.9),
         "private_test_accuracy": _probabilities(4, [0, 1, 1, 1], 0.9)}
    b = {"public_test_accuracy": _probabilities(3, [1, 1, 2], 0.6),
         "private_test_accuracy": _probabilities(4, [2, 2, 2, 2], 0.6)}
    result = ensembles.ensemble_results({"a": a, "b": b}, ids, split)
    assert result["members"]["a"]["public_test_accuracy"] == pytest.approx(1 / 3)
    assert result["members"]["b"]["public_test_accuracy"] == pytest.approx(2 / 3)
    assert result["members"]["a"]["private_test_accuracy"] == pytest.approx(2 / 3)
    assert result["members"]["b"]["private_test_accuracy"] == pytest.approx(1 / 3)
    # the mean: a's 0.9 outweighs b's 0.6 wherever they disagree (e.g. row 2: class 0 gets
    # (0.9 + 0.2) / 2, class 2 (0.05 + 0.6) / 2), so the ensemble predicts what a predicts
    assert result["ensemble"]["public_test_accuracy"] == pytest.approx(1 / 3)
    assert result["ensemble"]["private_test_accuracy"] == pytest.approx(2 / 3)
    assert result["ensemble"]["public_test_accuracy_flip"] is None  # no flip-averaged view given
    assert result["gain_over_best_member"]["public_test_accuracy"] == pytest.approx(1 / 3 - 2 / 3)
    with pytest.raises(ValueError, match="at least two networks"):
        ensembles.ensemble_results({"a": a}, ids, split)


def test_split_probabilities_skip_an_absent_split_and_average_the_flip():
    class Mirror:  # a "network" whose output depends on the image's orientation
        def predict(self, dataset, verbose=0):
            faces = np.concatenate([np.asarray(batch[0] if isinstance(batch, tuple) else batch)
                                    for batch in dataset])
            left = faces[:, :, :24].mean(axis=(1, 2, 3)) > faces[:, :, 24:].mean(axis=(1, 2, 3))
            return np.stack([left, ~left, np.zeros_like(left)], axis=1).astype("float32")

    faces = np.zeros((4, 48, 48, 1), "float32")
    faces[:, :, :24] = 1.0
    split = {"PublicTest": np.array([0, 1]), "PrivateTest": np.array([], int)}
    p = ensembles.split_probabilities(Mirror(), faces, split)
    assert set(p) == {"public_test_accuracy", "public_test_accuracy_flip"}
    np.testing.assert_allclose(p["public_test_accuracy"], [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_allclose(p["public_test_accuracy_flip"], [[0.5, 0.5, 0], [0.5, 0.5, 0]])
    accuracies = ensembles.split_accuracies_of(p, np.array([0, 0, 0, 0]), split)
    assert accuracies["private_test_accuracy"] is None and accuracies["public_test_accuracy"] == 1.0


def test_the_ensemble_members_are_the_distilled_run_s_teachers_found_in_work(tmp_path):
    name, members, missing = accuracy3.ensemble_members(tmp_path)
    assert name == "ensemble-distilled-75-epochs"
    assert members == {accuracy3.BACKBONE: REPO / accuracy3.BACKBONE}
    assert missing == ["extra-blocks-3-75-epochs", "mixup-0.2-75-epochs"]
    network = tmp_path / "extra-blocks-3-75-epochs-publish" / "fer2013_backbone.keras"
    network.parent.mkdir()
    network.write_bytes(b"")
    name, members, missing = accuracy3.ensemble_members(tmp_path)
    assert members["extra-blocks-3-75-epochs"] == network and missing == ["mixup-0.2-75-epochs"]
    with pytest.raises(SystemExit, match="mixup-0.2-75-epochs"):  # fewer than two: refused, saying which
        accuracy3.measure_ensemble(tmp_path / "elsewhere")

"""reports/shipped/trials/README.md is built from the trials' results.json files only."""

import copy
import json
import pathlib

import pytest

from fer_tf.research.ship_report import write_trials_readme

REPO = pathlib.Path(__file__).resolve().parents[1]


def _trial(held_out, public, private, commit, **train):
    r = copy.deepcopy(json.loads((REPO / "reports" / "shipped" / "results.json").read_text()))
    r["held_out_subjects"].update(image_accuracy=held_out, images=173)
    r["fer2013"].update(PublicTest_accuracy=public, PrivateTest_accuracy=private)
    r["run"]["git_commit"] = commit
    r["run"]["config"]["train"].update(train)
    return r


def test_trials_are_shown_beside_the_shipped_model_and_against_the_baseline(tmp_path):
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(_trial(0.9191, 0.6408, 0.6545, "a" * 40)))
    with pytest.raises(FileNotFoundError, match="no trial in"):
        write_trials_readme(tmp_path / "trials", shipped)
    for name, r in {"distilled": _trial(160 / 173, 0.6389, 0.6595, "b" * 40, distill_from="t.keras")}.items():
        (tmp_path / "trials" / name).mkdir(parents=True)
        (tmp_path / "trials" / name / "results.json").write_text(json.dumps(r))
    text = write_trials_readme(tmp_path / "trials", shipped).read_text()
    assert "| the shipped model (`../results.json`) | - | 91.91% |" in text
    assert "| `distilled` | distill_from t.keras | 92.49% |" in text and "| 63.89% | 65.95% |" in text
    assert "No `baseline` run yet" in text
    (tmp_path / "trials" / "baseline").mkdir()
    (tmp_path / "trials" / "baseline" / "results.json").write_text(json.dumps(_trial(159 / 173, 0.6400, 0.6550, "b" * 40)))
    text = write_trials_readme(tmp_path / "trials", shipped).read_text()
    assert ("`distilled` against `baseline`: held-out subjects +0.58 points (+1 of 173 images), "
            "PublicTest -0.11 points, PrivateTest +0.45 points.") in text
    assert "No `baseline`" not in text and "within run-to-run noise" in text


def test_a_trial_from_another_network_says_which(tmp_path):
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(_trial(0.9191, 0.6408, 0.6545, "a" * 40)))
    other = _trial(0.93, 0.66, 0.67, "c" * 40)
    other["pretrained"] = {"file": "/work/acc3/run-publish/fer2013_backbone.keras", "sha256_12": "0123456789ab",
                           "private_test_accuracy": 0.6721}
    committed = _trial(0.92, 0.65, 0.66, "c" * 40)
    committed["pretrained"] = {"file": "pretrained/fer2013_backbone.keras", "sha256_12": "fedcba987654"}
    for name, r in {"from-run": other, "baseline": committed}.items():
        (tmp_path / "trials" / name).mkdir(parents=True)
        (tmp_path / "trials" / name / "results.json").write_text(json.dumps(r))
    text = write_trials_readme(tmp_path / "trials", shipped).read_text()
    assert ("| `from-run` | starts from `run-publish/fer2013_backbone.keras` (0123456789ab, FER2013 "
            "PrivateTest 67.21%) | 93.00% |") in text
    assert "| `baseline` | - | 92.00% |" in text
    assert "another machine" not in text
    other["run"]["machine"] = {**other["run"]["machine"], "platform": "Linux-elsewhere"}
    (tmp_path / "trials" / "from-run" / "results.json").write_text(json.dumps(other))
    text = write_trials_readme(tmp_path / "trials", shipped).read_text()
    assert "It ran on another machine than `baseline` (Linux-elsewhere, against " in text

"""saved_models/MODEL_CARD.md is written from `make ship`'s results: it names the network the shipped
model starts from (file, digest, how it was made, its FER2013 accuracy), whichever that is."""

import json
import pathlib

from fer_tf.research.experiments import publish_backbone, starting_network, write_model_card

REPO = pathlib.Path(__file__).resolve().parents[1]


def _shipped_results():
    return json.loads((REPO / "reports" / "shipped" / "results.json").read_text())


def test_the_committed_card_is_what_its_results_write(tmp_path):
    write_model_card(_shipped_results(), tmp_path / "MODEL_CARD.md")
    assert (tmp_path / "MODEL_CARD.md").read_text() == (REPO / "saved_models" / "MODEL_CARD.md").read_text()


def test_the_card_names_the_network_the_model_starts_from(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    start = starting_network(REPO / "pretrained" / "fer2013_backbone.keras")
    sidecar = json.loads((REPO / "pretrained" / "fer2013_backbone.json").read_text())
    assert start["file"] == "pretrained/fer2013_backbone.keras" and len(start["sha256_12"]) == 12
    assert start["private_test_accuracy"] == sidecar["accuracy"]["private_test_accuracy"]
    assert start["command"] == sidecar["command"] and start["git_commit"] == sidecar["git_commit"]
    results = {**_shipped_results(), "pretrained": start}
    write_model_card(results, tmp_path / "card.md")
    text = " ".join((tmp_path / "card.md").read_text().split())
    assert (f"The shipped model starts from `pretrained/fer2013_backbone.keras` (sha256 `{start['sha256_12']}`, "
            f"made by `{sidecar['command']}` at commit `{sidecar['git_commit'][:7]}`; "
            f"{100 * sidecar['accuracy']['private_test_accuracy']:.1f}% on FER2013 PrivateTest; report in "
            f"`{sidecar['report']}`).") in text


def test_another_starting_network_is_described_by_its_own_sidecar(tmp_path, monkeypatch):
    """A backbone published by another run (pipelines/accuracy3.py's WORK/NAME-publish): the card
    must not show the committed backbone's accuracy."""
    from fer_tf.model import network

    monkeypatch.chdir(tmp_path)
    model = network.build_model("softmax", labels=list("abcdefg"), width=0.25)
    results = {"labels": list("abcdefg"), "history": [{}],
               "public_test_accuracy": 0.655, "private_test_accuracy": 0.672,
               "public_test_accuracy_flip": 0.66, "private_test_accuracy_flip": 0.68,
               "run": {"git_commit": "c" * 40, "command": "pipelines/pretrain.py --set model.width=0.25"}}
    path = publish_backbone(model, results, tmp_path / "run-publish")
    start = starting_network(path)
    assert start["file"] == "run-publish/fer2013_backbone.keras" and start["private_test_accuracy"] == 0.672
    card = {**_shipped_results(), "pretrained": start,
            "pretrained_fer2013": {k: start[k] for k in ("public_test_accuracy", "private_test_accuracy")}}
    write_model_card(card, tmp_path / "card.md")
    text = " ".join((tmp_path / "card.md").read_text().split())
    assert "starts from `run-publish/fer2013_backbone.keras`" in text and "67.2% on FER2013 PrivateTest" in text
    assert "the FER2013-pretrained network scores 67.2% on PrivateTest, the shipped model" in text
    assert "66.6%" not in text and "reports/fer2013/" not in text  # the committed backbone's report


def test_the_card_says_when_the_fer2013_rows_were_distilled(tmp_path):
    results = {**_shipped_results(), "distillation": {
        "teacher": ["pretrained/fer2013_backbone.keras", "reports/fer2013/teachers/extra.npz"],
        "weight": 0.5, "temperature": 1.0, "teacher_train_accuracy": 0.853}}
    write_model_card(results, tmp_path / "card.md")
    text = " ".join((tmp_path / "card.md").read_text().split())
    assert ("The FER2013 rows learn soft targets: 0.5 x the mean of 2 networks' probabilities "
            "(`fer2013_backbone.keras`, `extra.npz`), which score 85.3% on those training faces, plus "
            "0.5 x their smoothed labels (`train.distill_from`).") in text


def test_only_the_shipped_model_writes_the_web_page_s_reference(tmp_path):
    """A trial of make ship (its model written elsewhere) leaves the tracked web page alone: its
    first run had rewritten web/src/neutral_reference.json and made the next run's commit -dirty."""
    import sys

    sys.path.insert(0, str(REPO / "pipelines"))
    import ship
    from web_reference import OUT

    assert ship.reference_copy(REPO / "saved_models") == OUT
    assert ship.reference_copy(tmp_path / "trial" / "saved_models") == tmp_path / "trial" / "saved_models" / OUT.name

"""`fer-tf train`: labels, subject splits, the output folder's rules, and (slow) a whole run on a
tiny KDEF subset: outputs, reload after `import fer_tf` alone, predict, resume, refusal."""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from fer_tf.data.table import FaceTable
from fer_tf.errors import ConfigError, DatasetError, OutputError

own_data = pytest.importorskip("fer_tf.research.own_data")


def _table(subjects=16, labels=("anger", "happiness", "sadness")):
    rows = [{"path": f"{s}_{e}.png", "expression": e, "subject": f"S{s:02d}"}
            for s in range(subjects) for e in labels]
    return FaceTable.from_rows(rows, name="synthetic")


def test_labels_choose_map_and_add_new_classes():
    table = _table(labels=("anger", "contempt", "happiness"))
    chosen, labels = own_data.choose_labels(table)
    assert labels == ("anger", "contempt", "happiness") and len(chosen) == len(table)
    chosen, labels = own_data.choose_labels(table, "happiness,anger")
    assert labels == ("happiness", "anger") and set(chosen.expression) == {"happiness", "anger"}
    chosen, labels = own_data.choose_labels(table, "happy,contempt=anger")
    assert labels == ("happiness", "anger")
    assert int(np.sum(chosen.expression == "anger")) == 32  # anger + contempt
    with pytest.raises(DatasetError, match="no image of fear"):
        own_data.choose_labels(table, "anger,fear")
    with pytest.raises(ConfigError, match="both sides"):
        own_data.choose_labels(table, "anger=grumpy")
    with pytest.raises(DatasetError, match="only one expression"):
        own_data.choose_labels(table, "anger")


def test_subject_split_default_count_ids_and_errors():
    table = _table(subjects=40)
    train, test = own_data.subject_split(table, seed=0)
    held = set(table.subject[test])
    assert len(held) == 5 and not held & set(table.subject[train])  # 40 / 8
    assert len(train) + len(test) == len(table)
    assert len(set(_table(subjects=6).subject[own_data.subject_split(_table(subjects=6))[1]])) == 2
    for k in (1, 3, 7):
        assert len(set(table.subject[own_data.subject_split(table, k)[1]])) == k
    assert len(set(table.subject[own_data.subject_split(table, "3")[1]])) == 3
    train, test = own_data.subject_split(table, "S01,S07")
    assert set(table.subject[test]) == {"S01", "S07"}
    again = own_data.subject_split(table, seed=0)[1]
    assert np.array_equal(again, own_data.subject_split(table, seed=0)[1])
    with pytest.raises(DatasetError, match="no subject S99"):
        own_data.subject_split(table, ["S99"])
    with pytest.raises(DatasetError, match="at least 2 remain"):
        own_data.subject_split(table, 39)


def test_configs_from_yaml_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: {num_positives: 4, labels: [anger]}\ntrain: {learning_rate: 0.001, epochs: 3}\n")
    m, t = own_data.configs("softmax", ("anger", "sadness"), config, epochs=2, seed=None)
    assert (m.variant, m.labels, m.num_positives) == ("softmax", ("anger", "sadness"), 4)
    assert (t.learning_rate, t.epochs, t.seed, t.schedule) == (0.001, 2, 0, "cosine")
    config.write_text("train: {learnign_rate: 1}\n")
    with pytest.raises(ConfigError, match="learnign_rate"):
        own_data.configs("2B(N+M)", ("anger", "sadness"), config)


def test_batch_norm_stays_frozen_only_from_trained_weights():
    """The defaults chosen by inner cross-validation (reports/train/tuning.json) keep the trained
    batch-norm statistics; from scratch there are none, and batch norm learns."""
    _, t = own_data.configs("2B(N+M)", ("anger", "sadness"))
    assert t.freeze_batch_norm and (t.learning_rate, t.epochs) == (5e-4, 15)
    assert not own_data.for_start(t, None).freeze_batch_norm
    assert own_data.for_start(t, object()).freeze_batch_norm
    chosen = json.loads((REPO / "reports" / "train" / "tuning.json").read_text())["chosen"]["settings"]
    for key, value in chosen.items():
        assert own_data.TRAIN_DEFAULTS[key] == value, key


def _args(tmp_path, **extra):
    values = dict(data=str(tmp_path / "data"), output=str(tmp_path / "out"), format=None,
                  start="shipped", variant="2B(N+M)", labels=None, test_subjects=None, folds=None,
                  epochs=None, seed=None, config=None, overwrite=False, quiet=True)
    values.update(extra)
    return argparse.Namespace(**values)


def test_output_folder_rules(tmp_path):
    from fer_tf.commands import train

    out = tmp_path / "out"
    settings = train._settings(_args(tmp_path))
    train._check_output(out, settings, overwrite=False)  # new folder
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    train._check_output(out, settings, overwrite=False)  # other files stay, untouched
    (out / "model.keras").write_text("someone's model")
    with pytest.raises(OutputError, match="files of another kind"):
        train._check_output(out, settings, overwrite=False)
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / train.SETTINGS).write_text(json.dumps(settings))
    train._check_output(out, settings, overwrite=False)  # our unfinished run: resume
    changed = train._settings(_args(tmp_path, epochs=3))
    with pytest.raises(OutputError, match=r"other settings \(epochs differ\)"):
        train._check_output(out, changed, overwrite=False)
    (out / "results.json").write_text("{}")
    with pytest.raises(OutputError, match="finished run"):
        train._check_output(out, settings, overwrite=False)
    train._check_output(out, changed, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_command_line_refusals(tmp_path, capsys):
    from fer_tf.cli import main

    assert main(["train", str(tmp_path), "-o", str(tmp_path / "o"), "--folds", "3",
                 "--test-subjects", "2"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "o"), "--variant", "3B"]) == 2
    assert main(["train", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


RELOAD = '''
import sys, json
import fer_tf, keras
model = keras.saving.load_model(sys.argv[1])
print("RESULT " + json.dumps({"class": type(model).__name__, "labels": list(model.labels)}))
'''


@pytest.mark.slow
@pytest.mark.integration
def test_train_a_tiny_subset_end_to_end(tmp_path, datasets_dir):
    """A manifest of 8 KDEF subjects, 1 epoch from the backbone (about a minute, mostly export)."""
    kdef = datasets_dir / "kdef-subset"
    if not kdef.is_dir():
        pytest.skip("no KDEF subset")
    from fer_tf.data.readers import read_dataset

    table = read_dataset(kdef, "kdef")
    keep = sorted(set(table.subject))[:8]
    data = tmp_path / "data"
    data.mkdir()
    lines = ["path,expression,subject"]
    for path, expression, subject in zip(table.path, table.expression, table.subject):
        if subject in keep:
            (data / pathlib.Path(path).name).symlink_to(path)
            lines.append(f"{pathlib.Path(path).name},{expression},{subject}")
    lines.append(lines[1])  # a duplicate row: dropped with a warning
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FER_TF_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "fer_tf.cli", "train", str(data / "manifest.csv"), "-o", str(out),
           "--from", "backbone", "--epochs", "1", "--test-subjects", "2", "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 duplicate row(s) dropped" in proc.stderr
    assert "held-out accuracy" in proc.stdout
    for name in ("model.keras", "model.tflite", "model.json", "report.md", "results.json",
                 "confusion_matrix.png", "curves.png", "export/export_report.json",
                 "checkpoint/split/last.keras"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["anger", "happiness", "sadness"]
    assert results["data"]["images"] == 48 and results["split"]["test_subjects"] == 2
    assert results["evaluation"]["images"] == 12
    assert np.array(results["evaluation"]["confusion"]).sum() == 12
    assert results["seed"] == 0 and results["git_commit"] and results["command"].startswith("fer-tf train")
    assert "Held-out accuracy" in (out / "report.md").read_text()
    assert json.loads((out / "model.json").read_text())["labels"] == ["anger", "happiness", "sadness"]
    assert "neutral_reference" not in json.loads((out / "model.json").read_text())
    assert results["neutral_reference"] == {"reason": "the labels have no neutral class"}

    reload = subprocess.run([sys.executable, "-c", RELOAD, str(out / "model.keras")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert reload.returncode == 0, reload.stderr[-2000:]
    result = json.loads([x for x in reload.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    assert result == {"class": "JointModel", "labels": ["anger", "happiness", "sadness"]}

    photo = str(data / pathlib.Path(table.path[np.isin(table.subject, keep)][0]).name)
    for model in ("model.tflite", "model.keras"):
        pred = subprocess.run([sys.executable, "-m", "fer_tf.cli", "predict", "-m", str(out / model),
                               photo, "--json"], capture_output=True, text=True, env=env, timeout=600)
        assert pred.returncode == 0, pred.stderr[-2000:]
        faces = json.loads(pred.stdout)[0]["faces"]
        assert faces and set(faces[0]["probabilities"]) == {"anger", "happiness", "sadness"}

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 2 and "finished run" in again.stderr  # nothing replaced
    (out / "results.json").unlink()  # as if the run had stopped before its end: it resumes
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr


def _fake_run(name, test_subjects, confusion):
    history = [{"epoch": e, "loss": 1.0 / e, "fold_accuracy": 0.5 + 0.1 * e} for e in (1, 2)]
    matrix = np.array(confusion)
    return {"name": name, "train": {"images": 10, "subjects": ["S9"]},
            "test": {"images": int(matrix.sum()), "subjects": test_subjects},
            "evaluation": {"accuracy": float(np.trace(matrix) / matrix.sum()), "recall": {},
                           "confusion": confusion, "images": int(matrix.sum())},
            "history": history, "train_seconds": 1.0, "transferred_layers": 3,
            "new_classes": ["contempt"]}


def test_report_of_cross_validation(tmp_path):
    labels = ("anger", "contempt")
    runs = [_fake_run("fold1", ["S1"], [[2, 0], [1, 1]]), _fake_run("fold2", ["S2"], [[1, 1], [0, 2]])]
    pooled = np.sum([r["evaluation"]["confusion"] for r in runs], axis=0)
    result = {"runs": runs, "evaluation": {"accuracy": 6 / 8, "recall": {"anger": 0.75, "contempt": 0.75},
                                           "confusion": pooled.tolist(), "images": 8,
                                           "fold_mean": 0.75, "fold_std": 0.0}}
    table = _table(subjects=2, labels=labels)
    m, t = own_data.configs("softmax", labels, epochs=2)
    results = own_data.results_of(result, labels, "data/", table, images_read=5, start_name="backbone",
                                  model_cfg=m, train_cfg=t, seconds={"total": 3.0}, command="fer-tf train x")
    own_data.write_report(tmp_path, results)
    assert results["split"] == {"kind": "folds", "folds": 2, "test_subjects": 2, "train_subjects": 2}
    assert results["data"]["left_out"] == 1 and results["data"]["per_class"] == {"anger": 2, "contempt": 2}
    text = (tmp_path / "report.md").read_text()
    assert "**Held-out accuracy: 75.0%** (8 images; 2-fold" in text and "fer-tf train x" in text
    assert "| anger | 3 | 1 |" in text and "new classes (fresh rows of the classifier): contempt" in text
    assert json.loads((tmp_path / "results.json").read_text())["evaluation"]["images"] == 8
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "confusion_matrix.png").is_file()


def test_folds_then_a_final_model_on_every_subject(monkeypatch, tmp_path):
    table = _table(subjects=9)
    labels = ("anger", "happiness", "sadness")
    calls = []

    def fake_fine_tune(table, faces, train_rows, test_rows, labels, start, model_cfg, train_cfg,
                       workdir, verbose):
        calls.append((len(train_rows), len(test_rows), workdir.name))
        ids = table.expression_ids(labels)[np.asarray(test_rows, dtype=int)]
        scores = own_data._scores(np.eye(3)[ids], ids, labels) if len(test_rows) else None
        return {"model": workdir.name, "history": [], "evaluation": scores, "train_seconds": 0.0,
                "transferred_layers": 0, "new_classes": []}

    monkeypatch.setattr(own_data, "fine_tune", fake_fine_tune)
    m, t = own_data.configs("2B(N+M)", labels)
    faces = np.zeros((len(table), 60, 60), np.uint8)
    result = own_data.train(table, faces, labels, None, m, t, n_folds=3, workdir=tmp_path)
    assert [c[2] for c in calls] == ["fold1", "fold2", "fold3", "final"]
    assert sum(c[1] for c in calls[:3]) == len(table) and calls[3] == (len(table), 0, "final")
    assert result["model"] == "final" and result["evaluation"]["accuracy"] == 1.0
    assert result["evaluation"]["images"] == len(table) and len(result["test_faces"]) == len(table)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        own_data.train(table, faces, labels, None, m, t, n_folds=1)


def test_the_neutral_reference_comes_from_held_out_subjects_neutral_faces(monkeypatch, tmp_path):
    """The reference stored with a `fer-tf train` model: reference="run" of the held-out subjects
    with neutral faces, scored by the fold's network that did not train on them."""
    labels = ("happiness", "neutral", "sadness")
    table = _table(subjects=6, labels=labels)
    rng = np.random.default_rng(0)
    scored = {}

    def fake_fine_tune(table, faces, train_rows, test_rows, labels, start, model_cfg, train_cfg,
                       workdir, verbose):
        z = rng.normal(size=(len(test_rows), len(labels)))
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True) if len(test_rows) else None
        for row, probs in zip(test_rows, p if p is not None else ()):
            scored[int(row)] = probs
        ids = table.expression_ids(labels)[np.asarray(test_rows, dtype=int)]
        return {"model": workdir.name, "history": [], "probabilities": p,
                "evaluation": own_data._scores(p, ids, labels) if len(test_rows) else None,
                "train_seconds": 0.0, "transferred_layers": 0, "new_classes": []}

    monkeypatch.setattr(own_data, "fine_tune", fake_fine_tune)
    m, t = own_data.configs("2B(N+M)", labels)
    faces = np.zeros((len(table), 60, 60), np.uint8)
    result = own_data.train(table, faces, labels, None, m, t, n_folds=3, workdir=tmp_path)
    neutral = result["neutral_reference"]
    rows = np.flatnonzero(table.expression == "neutral")  # one per subject
    expected = np.mean([np.log(scored[int(i)]) for i in rows], axis=0)
    np.testing.assert_allclose(neutral["reference"], expected, atol=1e-7)
    assert neutral["labels"] == list(labels) and neutral["space"] == "logits"
    assert (neutral["subjects"], neutral["images"]) == (6, 6) and "each fold's network" in neutral["description"]
    # what the model's sidecar then gives fer-tf predict --baseline
    from fer_tf.deploy.people import stored_reference

    r, description = stored_reference({"neutral_reference": neutral}, labels)
    np.testing.assert_allclose(r, neutral["reference"])
    assert description == neutral["description"]
    # no neutral class, or no held-out neutral face: no reference, and why
    assert own_data.neutral_reference(_table(), ("anger", "happiness", "sadness"), []) == {
        "reason": "the labels have no neutral class"}
    happy = np.flatnonzero(table.expression == "happiness")
    assert "no held-out subject" in own_data.neutral_reference(table, labels, [(happy, np.eye(3)[[0] * 6])])["reason"]
    results = own_data.results_of(result, labels, "data/", table, len(table), "shipped", m, t)
    assert results["neutral_reference"] == neutral
    assert "corrects one person by their neutral photo" in own_data.report_markdown(results)


def test_the_backbones_description_gives_its_labels(tmp_path):
    """pretrained/fer2013_backbone.json has no format_version (a description written by `make
    pretrain`): it is read for its labels, so `fer-tf predict -m` takes the backbone."""
    from fer_tf.errors import ModelFileError
    from fer_tf.model import saving

    meta = saving.read_metadata(REPO / "pretrained" / "fer2013_backbone.keras")
    assert meta["format_version"] == 0 and len(meta["labels"]) == 7
    assert "accuracy" in meta["description"] and "input" not in meta  # no export's input contract
    (tmp_path / "m.json").write_text(json.dumps({"format_version": "1", "labels": ["anger"]}))
    with pytest.raises(ModelFileError, match="format_version"):
        saving.read_metadata(tmp_path / "m.keras")

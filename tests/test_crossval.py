"""Cross-validation campaigns: the plan, per-run files, protocols and the report built from them."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from fer_tf.research import crossval
from fer_tf.research import finetune_report
from fer_tf.config import ModelConfig, TrainConfig
from fer_tf.errors import ConfigError

EV = {"variants": ["softmax", "2B(N+M)"], "seeds": [0, 1],
      "options": [{"name": "no-l2", "what": "w/o L2", "variants": ["2B(N+M)"],
                   "set": {"model.l2_normalize": False}, "seeds": [0]}],
      "tuple_mode": {"variant": "2B(N+M)", "folds": [0], "seeds": [0]}}


def test_plan_orders_main_runs_then_options_then_tuple_mode():
    runs = crossval.plan(EV, folds=3)
    assert len(runs) == 2 * 3 * 2 + 3 + 1
    assert [r.group for r in runs[:2]] == ["softmax", "2b_npm"]
    assert {r.seed for r in runs[:6]} == {0} and runs[6].seed == 1
    assert runs[-4].group == "2b_npm+no-l2" and runs[-4].settings == (("model.l2_normalize", False),)
    assert runs[-1].group == "2b_npm-tuple" and runs[-1].mode == "tuple"
    assert str(runs[-1].path) == "2b_npm-tuple/seed0-fold0.json"
    narrowed = crossval.plan(EV, folds=3, variants=["softmax"], seeds=[1], fold_subset=[2], parts=["main"])
    assert [(r.variant, r.seed, r.fold) for r in narrowed] == [("softmax", 1, 2)]


def test_an_option_can_give_each_variant_its_own_seeds():
    ev = dict(EV, options=[{"name": "no-l2", "variants": ["softmax", "2B(N+M)"],
                            "set": {"model.l2_normalize": False}, "seeds": {"2B(N+M)": [0, 1, 2]}}])
    runs = crossval.plan(ev, folds=2, parts=["options"])
    assert [(r.variant, r.seed, r.fold) for r in runs] == [
        ("softmax", 0, 0), ("2B(N+M)", 0, 0), ("softmax", 0, 1), ("2B(N+M)", 0, 1),
        ("2B(N+M)", 1, 0), ("2B(N+M)", 1, 1), ("2B(N+M)", 2, 0), ("2B(N+M)", 2, 1)]
    bad = dict(EV, options=[dict(ev["options"][0], seeds={"1B(N+1)": [1]})])
    with pytest.raises(ConfigError, match="not among the option's variants"):
        crossval.plan(bad, folds=2)


def test_tuple_mode_can_also_run_with_an_option():
    ev = dict(EV, tuple_mode=dict(EV["tuple_mode"], with_options=["no-l2"]))
    runs = crossval.plan(ev, folds=2, parts=["tuple"])
    assert [r.group for r in runs] == ["2b_npm-tuple", "2b_npm+no-l2-tuple"]
    m, t = crossval.configs_for(runs[1], ModelConfig(), TrainConfig())
    assert m.l2_normalize is False and t.mode == "tuple"
    with pytest.raises(ConfigError, match="no option named 'no-margin'"):
        crossval.plan(dict(EV, tuple_mode=dict(EV["tuple_mode"], with_options=["no-margin"])), folds=2)


def test_two_options_cannot_share_a_name():
    twice = dict(EV, options=EV["options"] + [dict(EV["options"][0], set={"model.margin": 0.0})])
    with pytest.raises(ConfigError, match="'no-l2' is taken by an earlier option"):
        crossval.plan(twice, folds=2, parts=["tuple"])  # checked whichever parts are planned


def test_configs_for_applies_the_option_seed_and_mode():
    run = crossval.plan(EV, folds=1)[-2]  # the no-l2 option
    m, t = crossval.configs_for(run, ModelConfig(), TrainConfig(seed=7))
    assert m.variant == "2B(N+M)" and m.l2_normalize is False and t.seed == 0 and t.mode == "in_batch"


def test_protocol_digest_ignores_the_seed_but_not_the_settings():
    data = {"format": "ckplus48", "folds": 8}
    base = crossval.protocol_digest(ModelConfig(), TrainConfig(seed=0), "abc", data)
    assert base == crossval.protocol_digest(ModelConfig(), TrainConfig(seed=5), "abc", data)
    assert base == crossval.protocol_digest(ModelConfig(), TrainConfig(checkpoint_every=5), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(l2_normalize=False), TrainConfig(), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(), TrainConfig(epochs=3), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(), TrainConfig(), "abd", data)
    # an option added later counts only when it is off its default
    assert base == crossval.protocol_digest(ModelConfig(), TrainConfig(distill_weight=0.5), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(), TrainConfig(distill_from="t.keras"), "abc", data)
    assert base == crossval.protocol_digest(ModelConfig(), TrainConfig(select_epoch="best"), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(), TrainConfig(select_epoch="last"), "abc", data)


def test_committed_campaign_runs_match_the_current_protocol():
    """Every run file committed under reports/ckplus48/runs has the protocol that the current code
    and config give it, so a code change cannot silently make a campaign start over. A change
    that is meant to retrain the campaign (a new backbone, PROTOCOL_VERSION bumped) removes the
    stale files in the same commit."""
    from fer_tf.config import load_yaml, model_config, train_config

    repo = pathlib.Path(__file__).resolve().parents[1]
    runs_dir = repo / "reports" / "ckplus48" / "runs"
    runs = sorted(runs_dir.rglob("*.json"))
    if not runs:
        pytest.skip("no committed campaign runs")
    data = load_yaml(repo / "configs" / "finetune" / "ckplus48.yaml")
    m0, t0 = model_config(data.get("model", {})), train_config(data.get("train", {}))
    current = crossval.current_protocols(crossval.plan(data["evaluation"], data["data"]["folds"]), m0, t0,
                                         crossval.file_digest(repo / "pretrained" / "fer2013_backbone.keras"),
                                         data["data"])
    stale = [str(f.relative_to(runs_dir)) for f in runs
             if json.loads(f.read_text()).get("protocol") != current.get(str(f.relative_to(runs_dir)))]
    assert not stale, f"{len(stale)} of {len(runs)} committed runs no longer match, e.g. {stale[:3]}"


def test_an_unknown_option_key_is_a_config_error():
    from fer_tf.errors import ConfigError

    bad = {"variants": ["softmax"], "options": [{"name": "x", "set": {"l2_normalize": False}}]}
    with pytest.raises(ConfigError, match="model.KEY or train.KEY"):
        crossval.plan(bad, folds=1)


def _run_file(variant, seed, fold, acc, option="", mode="in_batch", probe=None):
    return {"variant": variant, "option": option, "mode": mode, "seed": seed, "fold": fold, "settings": {},
            "protocol": "p", "sequence_accuracy": acc, "image_accuracy": acc - 0.01, "selected_epoch": 3,
            "epochs": 4, "images": 30, "sequences": 10, "sequence_confusion": [[5, 0], [1, 4]],
            "identity_probe_accuracy": 0.1, "identity_probe_subjects": 5,
            "cross_expression_probe": {"dataset": "kdef-subset", "accuracy": probe, "subjects": 70,
                                       "chance": 1 / 70} if probe is not None else None,
            "last_epoch_image_accuracy": acc - 0.02,
            "train_seconds": 10.0, "history": [{"epoch": e, "loss": 1 / e, "val_accuracy": 0.8,
                                                "fold_accuracy": acc + (0.03 if e == 2 else 0.0)}
                                               for e in range(1, 5)],
            "run": {"git_commit": "abc", "machine": {"cpu": "cpu", "cores": 2}},
            "embedding": {"pca": [[0, 0], [1, 1]], "expression": ["a", "b"], "subject": ["s", "t"]}}


def _write(runs_dir, runs):
    for r in runs:
        group = r["variant"].lower().replace("(", "_").replace(")", "").replace("+", "p")
        group += (f"+{r['option']}" if r["option"] else "") + ("-tuple" if r["mode"] == "tuple" else "")
        path = runs_dir / group / f"seed{r['seed']}-fold{r['fold']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r))


def test_report_from_run_files(tmp_path):
    rng = np.random.default_rng(0)
    runs = []
    for s in range(2):
        for f in range(4):
            runs.append(_run_file("softmax", s, f, 0.80 + 0.01 * f, probe=0.30 + rng.normal(0, 0.01)))
            runs.append(_run_file("2B(N+M)", s, f, 0.85 + 0.01 * f, probe=0.20 + rng.normal(0, 0.01)))
    runs += [_run_file("2B(N+M)", 0, f, 0.83 + 0.01 * f, option="no-l2") for f in range(4)]
    runs += [_run_file("2B(N+M)", 0, 0, 0.9, mode="tuple")]
    _write(tmp_path / "runs", runs)
    loaded = finetune_report.load_runs(tmp_path / "runs")
    assert len(loaded) == len(runs)
    config = {"evaluation": {"variants": ["softmax", "2B(N+M)"], "paper": {"2B(N+M)": 0.971},
                             "options": EV["options"]},
              "train": {"optimizer": "adam", "learning_rate": 5e-4, "epochs": 4, "inner_validation": 0.125}}
    data = finetune_report.write_report(loaded, ("a", "b"), tmp_path / "report", "toy", 4, config=config)
    v = data["variants"]
    assert v["2B(N+M)"]["sequence_accuracy"] == pytest.approx(0.865)
    assert v["2B(N+M)"]["n_runs"] == 8 and len(v["2B(N+M)"]["runs"]) == 8
    assert {"seed", "fold", "sequence_accuracy"} <= set(v["softmax"]["runs"][0])
    diff = data["paired_differences"]["2B(N+M) - softmax"]
    assert diff["mean"] == pytest.approx(0.05) and diff["ci95"][0] == pytest.approx(0.05)
    assert "2B(N+M) - 1B(N+M)" not in data["paired_differences"]  # 1B(N+M) did not run
    assert data["options"]["2B(N+M) [no-l2]"]["against_default"]["mean"] == pytest.approx(-0.02)
    assert data["tuple_mode"]["2B(N+M), tuple mode"]["in_batch_same_runs"]["sequence_accuracy"] == pytest.approx(0.85)
    probe = data["identity"]["cross_expression_probe"]["2B(N+M) - softmax"]
    assert probe["mean"] == pytest.approx(-0.1, abs=0.02) and probe["ci95"][1] < 0
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["variants"]["softmax"]["sequence_accuracy"] == pytest.approx(0.815)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| 2B(N+M) - softmax | +5.00 | [+5.00, +5.00] | 8 (4) | 8 / 0 |" in readme
    assert "carry less identity than softmax's" in readme and "97.10%" in readme
    assert v["2B(N+M)"]["best_test_epoch_image_accuracy"] == pytest.approx(0.895)
    assert "| 2B(N+M) | 85.50% | 84.50% | 89.50% |" in readme  # chosen, last, best on the test fold
    for figure in ("curves.png", "confusion_matrix.png", "embedding_2b_npm.png"):
        assert (tmp_path / "report" / figure).stat().st_size > 0


def test_report_compares_other_starting_points_with_the_committed_backbone(tmp_path):
    _write(tmp_path / "runs", [_run_file("2B(N+M)", 0, f, 0.90 + 0.01 * f) for f in range(4)]
           + [_run_file("2B(N+M)", 1, f, 0.5) for f in range(4)])  # seed 1: not in the study
    study = tmp_path / "report" / "backbones"
    _write(study / "scratch", [_run_file("2B(N+M)", 0, f, 0.80 + 0.02 * f) for f in range(4)]
           + [_run_file("softmax", 0, f, 0.7) for f in range(2)])
    (study / "scratch" / "backbone.json").write_text(json.dumps({"what": "random initialisation"}))
    _write(study / "short", [_run_file("2B(N+M)", 0, f, 0.88) for f in range(3)])
    (study / "short" / "backbone.json").write_text(json.dumps(
        {"what": "FER2013, 15 epochs", "fer2013_private_test_accuracy": 0.6}))
    (tmp_path / "fer2013").mkdir()
    (tmp_path / "fer2013" / "results.json").write_text(json.dumps({"private_test_accuracy": 0.666}))
    config = {"evaluation": {"variants": ["2B(N+M)"], "paper": {"2B(N+M)": 0.971}}}
    data = finetune_report.write_report(finetune_report.load_runs(tmp_path / "runs"), ("a", "b"),
                                        tmp_path / "report", "toy", 4, config=config)
    starts = data["backbones"]["starts"]
    scratch, short = starts["scratch 2B(N+M)"], starts["short"]
    assert starts["scratch softmax"]["against_committed_backbone"]["pairs"] == 0  # no softmax runs in main
    assert scratch["sequence_accuracy"] == pytest.approx(0.83) and scratch["runs"] == 4
    assert scratch["against_committed_backbone"]["mean"] == pytest.approx(-0.085)
    assert short["against_committed_backbone"]["pairs"] == 3  # folds 0-2 only
    assert short["against_committed_backbone"]["mean"] == pytest.approx(0.88 - 0.91)
    committed = data["backbones"]["committed_backbone"]["2B(N+M)"]  # seed 0, folds 0-3
    assert committed["runs"] == 4 and committed["sequence_accuracy"] == pytest.approx(0.915)
    readme = (tmp_path / "report" / "README.md").read_text()
    assert "| random initialisation | – | 2B(N+M) | 83.00% | 4 | -8.50" in readme
    assert "| FER2013, 15 epochs | 60.00% | 2B(N+M) | 88.00% | 3 | -3.00" in readme
    assert "| the committed backbone (`pretrained/`) | 66.60% | 2B(N+M) | 91.50% | 4 | – |" in readme
    assert "| random initialisation | – | softmax | 70.00% | 2 | – |" in readme
    assert readme.index("| random initialisation | – | 2B(N+M)") < readme.index("| FER2013, 15 epochs |")
    versus = data["backbones"]["2B(N+M) - softmax"]
    assert set(versus) == {"scratch", "committed"}  # "short" has no softmax runs
    assert versus["committed"]["pairs"] == 0  # nor has the committed backbone, here
    assert versus["scratch"]["mean"] == pytest.approx(0.81 - 0.7) and versus["scratch"]["pairs"] == 2
    assert "random initialisation: +11.00" in readme


def test_finetune_with_runs_elsewhere_rebuilds_no_report_unless_told_where(tmp_path):
    """A pilot or study writes its runs with --runs; the dataset's own report stays as it is."""
    script = pathlib.Path(__file__).resolve().parents[1] / "pipelines" / "finetune.py"
    cmd = [sys.executable, str(script), "--dataset", "ckplus48", "--runs", str(tmp_path / "runs"),
           "--report-only"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no report built from them" in out.stdout
    out = subprocess.run(cmd + ["--report", str(tmp_path / "report")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and (tmp_path / "report" / "README.md").is_file()


def test_report_leaves_out_runs_of_another_protocol(tmp_path):
    _write(tmp_path / "runs", [_run_file("softmax", 0, f, 0.8) for f in range(3)])
    loaded = finetune_report.load_runs(tmp_path / "runs")
    current = {"softmax/seed0-fold0.json": "p", "softmax/seed0-fold1.json": "p", "softmax/seed0-fold2.json": "q"}
    data = finetune_report.write_report(loaded, ("a", "b"), tmp_path / "report", "toy", 3, current=current)
    assert data["stale_runs"] == ["softmax/seed0-fold2.json"] and data["variants"]["softmax"]["n_runs"] == 2
    assert data["progress"]["done"] == 2 and data["progress"]["missing"] == ["softmax/seed0-fold2.json"]
    assert "1 run file(s) of an older protocol" in (tmp_path / "report" / "README.md").read_text()


@pytest.mark.integration
def test_campaign_on_ckplus48_writes_one_file_per_run_and_resumes(ckplus48_dir, tmp_path, capfd):
    """A tiny run on real CK+48 (1 epoch of 2 steps) writes its JSON with the fields the report
    reads; the second call trains nothing; a changed protocol trains again, afresh even where an
    unfinished run of other settings left its checkpoint."""
    from fer_tf.data.labels import CKPLUS7

    model = ModelConfig(labels=CKPLUS7)
    train = TrainConfig(epochs=1, steps_per_epoch=2, inner_validation=0.125, schedule="cosine")
    data = {"format": "ckplus48", "folds": 8}
    runs = crossval.plan({"variants": ["2B(N+M)"], "seeds": [0]}, folds=8, fold_subset=[3])
    kwargs = dict(runs_dir=tmp_path / "runs", work_dir=tmp_path / "work", verbose=0)
    # the one missing run belongs to shard 0 of 2: shard 1 has nothing to do
    assert crossval.run_campaign(ckplus48_dir, "ckplus48", model, train, data, runs, shard=(1, 2), **kwargs) == (0, 0)
    assert crossval.run_campaign(ckplus48_dir, "ckplus48", model, train, data, runs, **kwargs) == (1, 0)
    saved = json.loads((tmp_path / "runs" / "2b_npm" / "seed0-fold3.json").read_text())
    assert saved["variant"] == "2B(N+M)" and saved["fold"] == 3 and saved["selected_epoch"] == 1
    assert 0 <= saved["sequence_accuracy"] <= 1 and saved["inner_validation_images"] > 0
    assert saved["history"][0]["val_accuracy"] >= 0 and "fold_accuracy" in saved["history"][0]
    assert saved["run"]["git_commit"] and "embedding" not in saved  # the embedding is fold 0's
    assert not (tmp_path / "work" / "2b_npm" / "seed0-fold3").exists()  # checkpoints removed
    assert crossval.run_campaign(ckplus48_dir, "ckplus48", model, train, data, runs, **kwargs) == (0, 0)
    changed = TrainConfig(epochs=1, steps_per_epoch=2, inner_validation=0.125, learning_rate=1e-3)
    # an unfinished run's checkpoint of other settings left in the work folder is not resumed
    _stale_checkpoint(tmp_path / "work" / "2b_npm" / "seed0-fold3")
    capfd.readouterr()
    assert crossval.run_campaign(ckplus48_dir, "ckplus48", model, changed, data, runs, **kwargs) == (1, 0)
    assert "starting this run afresh" in capfd.readouterr().err


def _stale_checkpoint(workdir):
    """A one-epoch checkpoint of a tiny network in ``workdir`` (another run's settings)."""
    import numpy as np
    from fixtures_training import tiny_model

    from fer_tf.feeding.feeders import classification_dataset
    from fer_tf.training import loop

    faces = np.zeros((4, 60, 60, 1), np.float32)
    loop.fit(tiny_model("softmax"), lambda epoch: classification_dataset(faces, np.zeros(4, int), 4),
             TrainConfig(epochs=1), 1, workdir=workdir, verbose=0)


def test_a_campaign_rewriting_its_report_still_records_a_clean_commit(tmp_path):
    import subprocess

    from fer_tf.research import reporting

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "README.md").write_text("old report\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    (tmp_path / "report" / "README.md").write_text("rebuilt by the campaign\n")
    assert reporting.git_commit(cwd=tmp_path).endswith("-dirty")
    clean = reporting.git_commit(cwd=tmp_path, outputs=(tmp_path / "report", "/elsewhere"))
    assert clean and not clean.endswith("-dirty")
    # the whole tree is no output: it would hide every change
    assert reporting.git_commit(cwd=tmp_path, outputs=(tmp_path,)).endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert reporting.git_commit(cwd=tmp_path, outputs=(tmp_path / "report",)).endswith("-dirty")

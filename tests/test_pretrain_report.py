"""reports/fer2013's README is built from its JSON files only (fer_tf.research.pretrain_report)."""

import copy
import json
import pathlib

from fer_tf.research.pretrain_report import write_readme

REPO = pathlib.Path(__file__).resolve().parents[1]


def _results(public, private, epochs, commit):
    base = json.loads((REPO / "reports" / "fer2013" / "results.json").read_text())
    r = copy.deepcopy(base)
    r.update(public_test_accuracy=public, private_test_accuracy=private, private_test_accuracy_flip=private + 0.01)
    r["run"]["git_commit"] = commit
    r["run"]["config"]["train"]["epochs"] = epochs
    r["history"] = [{"epoch": e + 1, "val_accuracy": 0.5 + e / 1000, "epoch_seconds": 60.0} for e in range(epochs)]
    return r


def test_other_full_runs_are_shown_beside_the_published_one(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "results.json").write_text(json.dumps(_results(0.65, 0.666, 75, "a" * 40)))
    (tmp_path / "runs" / "longer.json").write_text(json.dumps(_results(0.664, 0.662, 100, "b" * 40)))
    lighter = _results(0.66, 0.67, 75, "c" * 40)
    lighter["run"]["config"]["train"]["random_erasing"] = 0
    lighter["run"]["config"]["model"]["label_smoothing"] = 0
    lighter["run"]["config"]["train"]["seed"] = 3  # the seed is not a config change
    lighter["run"]["config"]["train"]["new_option"] = 1.0  # nor an option the older run lacks
    (tmp_path / "runs" / "lighter.json").write_text(json.dumps(lighter))
    distilled = _results(0.655, 0.668, 75, "d" * 40)
    distilled["run"]["config"]["train"].update(distill_from="teacher.keras", distill_weight=0.5)  # 0.5: default
    distilled["distillation"] = {"teacher": "teacher.keras", "weight": 0.5, "temperature": 1.0,
                                 "teacher_train_accuracy": 0.853, "teacher_mean_top_probability": 0.7}
    (tmp_path / "runs" / "distilled.json").write_text(json.dumps(distilled))
    text = write_readme(tmp_path).read_text()
    section = text[text.index("## Other full runs"):text.index("## Ablation")]
    assert ("| the published backbone (`results.json`) | (configs/pretrain.yaml) | 75 | 75 | 65.00% | "
            "66.60% |") in section
    assert "| `runs/longer.json` | epochs 100 | 100 | 100 | 66.40% | 66.20% |" in section
    assert "PublicTest +1.40 points, PrivateTest -0.40 points. The two splits disagree" in section
    assert "| `runs/lighter.json` | random_erasing 0, label_smoothing 0 | 75 | 75 | 66.00% | 67.00% |" in section
    assert "PublicTest +1.00 points, PrivateTest +0.40 points. Better on both splits." in section
    # an option newer than the published run is a change only away from its default
    assert "| `runs/distilled.json` | distill_from teacher.keras | 75 | 75 | 65.50% | 66.80% |" in section
    assert ("Distilled from `teacher.keras` (weight 0.5, temperature 1); the teacher scores 85.30% on the "
            "training faces") in section
    assert "not met." in text  # 66.60% < 67%


def test_no_other_runs_section_without_other_runs(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results(0.65, 0.671, 75, "a" * 40)))
    text = write_readme(tmp_path).read_text()
    assert "## Other full runs" not in text and "met." in text and "not met." not in text


def test_the_campaign_section_lists_planned_runs_with_results_or_not_run_yet(tmp_path):
    from fer_tf.research.pretrain_report import _campaign_section

    plan = tmp_path / "plan.yaml"
    plan.write_text("target_private_test: 0.70\ntarget_cost_vs_fer: 1.0\nruns:\n"
                    "  wide: {what: wider, set: [model.width=1.25]}\n"
                    "  mixed: {what: mixup, set: [train.mixing=mixup]}\n"
                    "  narrow: {what: narrower, set: [model.width=0.5]}\n")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"inference": {
        "headline": {"tflite_vs_fer_ratio": 2.5},
        "architectures": {"wide": {"vs_fer_ratio": 3.25}}}}))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "wide.json").write_text(json.dumps(_results(0.69, 0.705, 75, "e" * 40)))
    text = _campaign_section(tmp_path, plan, bench)
    assert "PrivateTest at least 70.00%" in text and "at most 1x `fer`'s" in text
    assert ("| `runs/wide.json` | wider | `model.width=1.25` | 69.00% | 70.50% | 71.50% | 3.25x | "
            "accuracy yes, cost no |") in text
    # no capacity option: the default network's time; a capacity bench has not timed: said so
    assert "| `mixed` | mixup | `train.mixing=mixup` | not run yet | | | 2.50x | |" in text
    assert "| `narrow` | narrower | `model.width=0.5` | not run yet | | | not measured yet (`make bench`) | |" in text
    assert "](accuracy3_curves.png)" in text and (tmp_path / "accuracy3_curves.png").stat().st_size > 0
    assert _campaign_section(tmp_path, tmp_path / "missing.yaml") == ""
    (tmp_path / "runs" / "wide.json").unlink()  # no finished run: no figure
    assert "accuracy3_curves.png" not in _campaign_section(tmp_path, plan, bench)


def test_the_campaign_section_shows_the_cost_on_each_benched_cpu(tmp_path):
    """One network can meet the cost target on a CPU with int8 dot products and miss it on an
    AVX2-only one: each bench of reports/bench/cpus/ gets its figures, named by its features."""
    from fer_tf.research.pretrain_report import _campaign_section

    plan = tmp_path / "plan.yaml"
    plan.write_text("target_private_test: 0.70\ntarget_cost_vs_fer: 1.0\nruns:\n"
                    "  plain: {what: recipe, set: [train.mixing=mixup]}\n"
                    "  narrow: {what: narrower, set: [model.width=0.5]}\n")

    def bench(default, narrow, features=None):
        machine = {"cpu": "EPYC", **({"cpu_features": features} if features is not None else {})}
        return json.dumps({"inference": {"headline": {"tflite_vs_fer_ratio": default},
                                         "architectures": {"narrow": {"vs_fer_ratio": narrow}}},
                           "run": {"machine": machine}})

    (tmp_path / "bench.json").write_text(bench(2.52, 0.83))  # written before cpu_features were
    (tmp_path / "cpus" / "vnni").mkdir(parents=True)
    (tmp_path / "cpus" / "vnni" / "results.json").write_text(bench(0.73, 0.35, ["avx2", "avx512f", "avx512_vnni"]))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "plain.json").write_text(json.dumps(_results(0.70, 0.71, 75, "e" * 40)))
    text = _campaign_section(tmp_path, plan, tmp_path / "bench.json")
    assert ("on `reports/bench`'s CPU first, then on AVX512-VNNI (`reports/bench/cpus/vnni`), since the "
            "CPU decides") in text
    assert ("| `runs/plain.json` | recipe | `train.mixing=mixup` | 70.00% | 71.00% | 72.00% | "
            "2.52x; AVX512-VNNI: 0.73x | accuracy yes, cost no (AVX512-VNNI: yes) |") in text
    assert "| `narrow` | narrower | `model.width=0.5` | not run yet | | | 0.83x; AVX512-VNNI: 0.35x | |" in text
    assert ("- Cost (at most 1x `fer`'s time per face, on `reports/bench`'s CPU): `narrow` (0.83x; "
            "PrivateTest not run yet); the other 2.52x.") in text
    assert ("- Cost on AVX512-VNNI (`reports/bench/cpus/vnni`): `plain` (0.73x; PrivateTest 71.00%), "
            "`narrow` (0.35x; PrivateTest not run yet).") in text
    assert "- Both in one network: no finished run yet; on AVX512-VNNI: `plain`." in text


def test_a_cpu_is_named_by_the_instructions_that_set_its_speed():
    from fer_tf.research.reporting import cpu_label, machine

    assert cpu_label({"cpu_features": ["avx2", "fma"]}) == "AVX2"
    assert cpu_label({"cpu_features": ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]}) == "AVX512-VNNI"
    assert cpu_label({"cpu_features": ["asimddp"]}) == "ARM dotprod"
    assert cpu_label({"cpu": "EPYC"}) is None and cpu_label(None) is None
    assert isinstance(machine()["cpu_features"], list)


def test_the_committed_plans_networks_all_have_a_measured_cost():
    from fer_tf.config import load_yaml
    from fer_tf.research.pretrain_report import _campaign_costs

    costs = _campaign_costs(load_yaml(REPO / "configs" / "accuracy3.yaml"), REPO / "reports" / "bench" / "results.json")
    assert costs and all(c is not None and c > 0 for c in costs.values()), costs


def test_the_committed_plan_is_in_the_report():
    text = (REPO / "reports" / "fer2013" / "README.md").read_text()
    from fer_tf.config import load_yaml

    for name in load_yaml(REPO / "configs" / "accuracy3.yaml")["runs"]:
        assert f"`{name}`" in text or f"`runs/{name}.json`" in text, name


def test_a_run_s_training_time_names_epochs_that_were_paused():
    from fer_tf.research.pretrain_report import _training_time

    steady = [{"epoch_seconds": 60.0} for _ in range(10)]
    assert _training_time(steady) == "10 min"
    paused = steady[:9] + [{"epoch_seconds": 1860.0}]
    assert _training_time(paused) == "40 min (of which 31 min in 1 epoch of over 3x the median 60 s: paused)"
    assert _training_time([{"epoch": 1}]) == "not recorded"


def test_the_campaign_section_says_what_the_ensemble_scores_against_the_target(tmp_path):
    from fer_tf.research.pretrain_report import _ensemble_lines

    def acc(public, private):
        return {"public_test_accuracy": public, "private_test_accuracy": private,
                "public_test_accuracy_flip": public + 0.01, "private_test_accuracy_flip": private + 0.01}

    ensemble = {"distilled_by": "ensemble-distilled", "missing": ["mixup"],
                "members": {"pretrained/fer2013_backbone.keras": acc(0.65, 0.666), "extra": acc(0.655, 0.665)},
                "ensemble": acc(0.67, 0.691), "run": {"git_commit": "c" * 40, "date": "2026-12-06"}}
    text = "\n".join(_ensemble_lines(ensemble, 0.70))
    assert "the published backbone, `extra`, 2 of its 3 (not yet: `mixup`)" in text
    assert "67.00% on PublicTest and 69.10% on PrivateTest (70.10% flip-averaged)" in text
    assert "the best of them alone, the published backbone, 66.60%" in text
    assert text.endswith("below the target of 70.00%.") and "c" * 40 in text
    ensemble.update(missing=[], ensemble=acc(0.7, 0.7))
    text = "\n".join(_ensemble_lines(ensemble, 0.70))
    assert "not yet" not in text and text.endswith("at or above the target of 70.00%.")
    assert _ensemble_lines(None, 0.70) == []


def test_the_campaign_section_names_runs_trained_in_another_precision(tmp_path):
    from fer_tf.research.pretrain_report import _precision_lines

    def results(mixed, private=0.6, public=0.58):
        return {"run": {"config": {"train": {"mixed_precision": mixed}}}, "budget_epochs": 15,
                "private_test_accuracy": private, "public_test_accuracy": public}

    (tmp_path / "results.json").write_text(json.dumps(results(True)))
    assert _precision_lines(tmp_path, {"same": results(True)}) == []
    text = "\n".join(_precision_lines(tmp_path, {"a": results(False), "b": results(True)}))
    assert text.startswith("\n`a` trained in float32 and the published backbone in mixed bfloat16")
    assert "ablation" not in text  # no ablation rows to measure the difference by
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "recipe.json").write_text(json.dumps(results(True, 0.6038, 0.5731)))
    (tmp_path / "ablation" / "float32.json").write_text(json.dumps(results(False, 0.5988, 0.5829)))
    text = "\n".join(_precision_lines(tmp_path, {"a": results(False)}))
    assert "At the ablation's 15 epochs the float32 row scored -0.50 points on PrivateTest" in text
    assert "(+0.98 on PublicTest)" in text


def test_one_rule_decides_a_run_against_the_published_backbone():
    from fer_tf.research.pretrain_report import against

    base = {"public_test_accuracy": 0.65, "private_test_accuracy": 0.666}
    assert against({"public_test_accuracy": 0.66, "private_test_accuracy": 0.67}, base) == "better"
    assert against({"public_test_accuracy": 0.64, "private_test_accuracy": 0.66}, base) == "worse"
    assert against({"public_test_accuracy": 0.66, "private_test_accuracy": 0.66}, base) == "disagree"
    assert against({"public_test_accuracy": 0.65, "private_test_accuracy": 0.70}, base) == "disagree"  # a tie
    assert against({"public_test_accuracy": 0.70, "private_test_accuracy": None}, base) == "disagree"


def test_the_campaign_section_says_where_each_target_stands(tmp_path):
    from fer_tf.research.pretrain_report import _campaign_section

    plan = tmp_path / "plan.yaml"
    plan.write_text("target_private_test: 0.70\ntarget_cost_vs_fer: 1.0\nruns:\n"
                    "  wide: {what: wider, set: [model.width=1.25]}\n"
                    "  narrow: {what: narrower, set: [model.width=0.5]}\n")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"inference": {"headline": {"tflite_vs_fer_ratio": 2.5}, "architectures": {
        "wide": {"vs_fer_ratio": 3.25}, "narrow": {"vs_fer_ratio": 0.83}}}}))
    (tmp_path / "runs").mkdir()
    published = _results(0.6509, 0.6662, 75, "b" * 40)
    (tmp_path / "results.json").write_text(json.dumps(published))
    (tmp_path / "runs" / "wide.json").write_text(json.dumps(_results(0.6553, 0.6654, 75, "e" * 40)))
    text = _campaign_section(tmp_path, plan, bench)
    assert "Where the targets stand (1 of 2 runs finished; still to run: `narrow`):" in text
    assert ("- Accuracy (PrivateTest at least 70.00%, one network): not met yet; the best finished run, "
            "`wide`, scores 66.54%, 3.46 points short (the published backbone 66.62%).") in text
    assert ("- Cost (at most 1x `fer`'s time per face): `narrow` (0.83x; PrivateTest not run yet); "
            "the other 3.25x.") in text
    assert "- Both in one network: no finished run yet." in text
    assert "- A new backbone: no finished run is better than the published backbone on both splits yet." in text
    # finished: the narrow network better on both splits, but short of the target
    (tmp_path / "runs" / "narrow.json").write_text(json.dumps(_results(0.6560, 0.6700, 75, "f" * 40)))
    text = _campaign_section(tmp_path, plan, bench)
    assert "(2 of 2 runs finished):" in text and "not met; the best finished run, `narrow`, scores 67.00%" in text
    assert "`narrow` (0.83x; PrivateTest 67.00%)" in text and "- Both in one network: no run." in text
    assert ("- A new backbone: `narrow` is better than the published backbone on both splits. The shipped "
            "model remade from it follows (a trial first") in text
    assert ("The CK+48 study from it (`python pipelines/accuracy3.py --ckplus`, "
            "`reports/ckplus48/backbones/narrow/`): not run yet.") in text
    (tmp_path / "runs" / "narrow.json").write_text(json.dumps(_results(0.6400, 0.7012, 75, "f" * 40)))
    text = _campaign_section(tmp_path, plan, bench)
    assert "met by `narrow` (70.12%)" in text and "- Both in one network: `narrow`." in text
    assert "no finished run is better than the published backbone on both splits, so it stays" in text


def test_fer_s_accuracy_comes_from_its_measurement_or_is_said_to_be_missing(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results(0.6509, 0.6662, 75, "a" * 40)))
    text = write_readme(tmp_path).read_text()
    assert ("66.62% on PrivateTest (target for the single centre crop: at least 67%, stretch 70%): not met. "
            "The `fer` package's accuracy is not measured yet (`python benchmarks/fer_accuracy.py` writes "
            "`fer_package.json`).") in text
    (tmp_path / "fer_package.json").write_text(json.dumps({
        "fer_version": "25.10.3", "public_test_accuracy": 0.65, "private_test_accuracy": 0.6601,
        "run": {"git_commit": "f" * 40}}))
    text = write_readme(tmp_path).read_text()
    assert ("The `fer` package (25.10.3) scores 66.01% on the same PrivateTest images and 65.00% on "
            "PublicTest (`fer_package.json`, `python benchmarks/fer_accuracy.py` at commit `fffffff`); its "
            "network chose its checkpoint on PublicTest and PrivateTest together") in text


def test_a_leading_run_s_follow_ups_say_where_they_stand(tmp_path):
    """The shipped model remade from a leading network (its trial against the recipe rerun) and
    the CK+48 study from it (its committed run files)."""
    from fer_tf.research.pretrain_report import _shipped_from, _study_of

    assert "a trial first" in _shipped_from(tmp_path, "lead")
    assert _study_of(tmp_path, "lead").endswith("`reports/ckplus48/backbones/lead/`): not run yet.")

    def ship(held_out, public, private):
        return {"held_out_subjects": {"image_accuracy": held_out},
                "fer2013": {"PublicTest_accuracy": public, "PrivateTest_accuracy": private}}

    trials = tmp_path / "shipped" / "trials"
    for name, r in {"baseline": ship(0.9191, 0.6408, 0.6548), "from-lead": ship(0.9249, 0.6553, 0.6450)}.items():
        (trials / name).mkdir(parents=True)
        (trials / name / "results.json").write_text(json.dumps(r))
    text = _shipped_from(tmp_path, "lead")
    assert ("scores held-out subjects 92.49%, FER2013 PublicTest 65.53%, FER2013 PrivateTest 64.50% against "
            "the committed recipe rerun's 91.91%, 64.08%, 65.48%: not better on every count, so the shipped "
            "model stays.") in text
    (trials / "from-lead" / "results.json").write_text(json.dumps(ship(0.9191, 0.6553, 0.6650)))
    assert _shipped_from(tmp_path, "lead").endswith("better on every count, so it replaces the shipped model.")
    for variant in ("2b_npm", "softmax"):
        (tmp_path / "ckplus48" / "backbones" / "lead" / variant).mkdir(parents=True)
        for fold in range(8):
            (tmp_path / "ckplus48" / "backbones" / "lead" / variant / f"seed0-fold{fold}.json").write_text("{}")
    (tmp_path / "ckplus48" / "backbones" / "lead" / "2b_npm" / "seed1-fold0.json").write_text("{}")
    assert _study_of(tmp_path, "lead").endswith(
        "17 of its 48 fine-tunings (seeds 0, 1); paired against the committed backbone's runs in "
        "`reports/ckplus48` (\"Does the starting point matter?\").")

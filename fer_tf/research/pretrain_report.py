"""reports/fer2013/README.md, built only from the JSON files beside it.

- ``results.json``: the `make pretrain` run (accuracies, history with per-epoch seconds, provenance);
- ``speed.json`` (optional): images/s of the recipe's training step in float32 and mixed bfloat16
  (``benchmarks/pretrain_speed.py``);
- ``ablation/<row>.json`` (optional): the rows of configs/pretrain-ablation.yaml at equal budget
  (``pipelines/ablate_pretrain.py``, here or on a GPU);
- ``runs/<name>.json`` (optional): other full runs (a ``results.json`` of
  ``pipelines/pretrain.py --report``, e.g. with another number of epochs or ``--set`` changes),
  shown beside the published one with what their configs change.

Rebuild with ``python pipelines/report_fer2013.py`` after adding any of them; no figure in the
README is typed by hand.
"""

from __future__ import annotations

import json
import pathlib

from fer_tf.config import CAPACITY_OPTIONS, ModelConfig, TrainConfig, defaults, load_yaml
from fer_tf.research.reporting import cpu_label, other_cpu_benches

#: The `fer` package's accuracy on the same test images (``python benchmarks/fer_accuracy.py``).
FER_PACKAGE = "fer_package.json"


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _load(path):
    path = pathlib.Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _provenance(run):
    machine = run.get("machine", {})
    where = f"{machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)"
    if machine.get("backend") and machine.get("backend") != "tensorflow":
        where += f", Keras {machine.get('backend')} backend"
    return f"commit `{run.get('git_commit', '?')}`, {run.get('date', '?')}, {where}, seed {run.get('seed', '?')}"


def _recipe(cfg_train, cfg_model):
    t = cfg_train
    schedule = (f"warm-up {t.get('warmup_epochs', 0):g} epochs then cosine decay to 0"
                if t.get("schedule") == "cosine" else
                f"halve-and-reload (loss rise > {t.get('loss_rise', 0.25):.0%} or {t.get('patience')} epochs "
                "without a better validation accuracy)")
    optimiser = t.get("optimizer", "?")
    if optimiser == "sgd":
        optimiser = f"SGD{' (Nesterov)' if t.get('nesterov') else ''}, momentum {t.get('momentum')}"
    aug = ["random 48x48 crop of the 60x60 face"] + (["horizontal flip"] if t.get("flip", True) else [])
    if t.get("rotation"):
        aug.append(f"rotation +-{t['rotation']:g} degrees")
    if t.get("scale"):
        aug.append(f"zoom +-{t['scale']:g}")
    if t.get("translation"):
        aug.append(f"shift +-{t['translation']:g} px")
    if t.get("random_erasing"):
        aug.append(f"random erasing p = {t['random_erasing']:g}")
    return (f"{optimiser}, peak learning rate {t.get('learning_rate')}, weight decay {t.get('weight_decay')} "
            f"(decoupled), batch {t.get('batch_size')}, {t.get('epochs')} epochs, {schedule}; augmentation: "
            f"{', '.join(aug)}; label smoothing {cfg_model.get('label_smoothing', 0):g}; "
            f"{'mixed bfloat16' if t.get('mixed_precision') else 'float32'} compute.")


def _timing(history):
    seconds = [r["epoch_seconds"] for r in history if "epoch_seconds" in r]
    if not seconds:
        return None
    ordered = sorted(seconds)
    return {"total_minutes": sum(seconds) / 60, "median": ordered[len(ordered) // 2], "fastest": ordered[0],
            "slowest": ordered[-1], "epochs": len(seconds),
            "paused_minutes": sum(r.get("paused_seconds", 0) for r in history) / 60}


def _speed_section(speed, train_images, epochs=None, mixed=False):
    if not speed:
        return ("Training speed with and without mixed bfloat16 is measured by "
                "`python benchmarks/pretrain_speed.py` (not run yet for this report).")
    rows = []
    for name, r in speed["policies"].items():
        rows.append(f"| {name} | {r['images_per_s']:.0f} | {train_images / r['images_per_s']:.0f} s |")
    ips = speed["policies"].get("mixed_bfloat16" if mixed else "float32", {}).get("images_per_s")
    idle = (f"\n\nAt that speed this run's {epochs} epochs of training take {epochs * train_images / ips / 60:.0f} "
            "minutes on an otherwise idle machine (validation not included)." if ips and epochs else "")
    return ("Training step of this network with the recipe's input pipeline (batch "
            f"{speed['batch_size']}, {speed['steps']} timed steps after warm-up, `{speed['command']}`, "
            f"{_provenance(speed['run'])}):\n\n| compute | images/s | one FER2013 epoch |\n|---|---|---|\n"
            + "\n".join(rows) + idle)


#: Table order of the ablation rows (configs/pretrain-ablation.yaml); unknown rows go last.
ABLATION_ORDER = ("paper", "cosine", "affine", "recipe", "smoothing", "float32")


def _ablation_section(rows, full_epochs=None):
    if not rows:
        return ("No row of the ablation (configs/pretrain-ablation.yaml) has been run yet: "
                "`python pipelines/ablate_pretrain.py` runs them one after another on this CPU "
                "(resumable, one JSON per row in `ablation/`), `pipelines/device/run.sh` side by side on "
                "a GPU. This table is filled from those files.")
    lines = ["| row | what changes | epochs | PublicTest | PrivateTest | PrivateTest, flip-averaged | train time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        machine = r.get("run", {}).get("machine", {})
        where = "GPU" if machine.get("gpus") else "CPU"
        lines.append(f"| {r['row']} | {r['what']} | {r['epochs_run']} of {r['budget_epochs']} | "
                     f"{_pct(r.get('public_test_accuracy'))} | {_pct(r.get('private_test_accuracy'))} | "
                     f"{_pct(r.get('private_test_accuracy_flip'))} | {r['train_seconds'] / 60:.0f} min ({where}) |")
    by_name = {r["row"]: r for r in rows}
    deltas = []
    for i, r in enumerate(rows[1:], 1):
        ref = by_name.get(r.get("against")) or rows[i - 1]  # the row it names, else the one above
        a, b = ref.get("private_test_accuracy"), r.get("private_test_accuracy")
        if a is not None and b is not None:
            deltas.append(f"{r['row']} against {ref['row']} {100 * (b - a):+.2f} points")
    budgets = sorted({r["budget_epochs"] for r in rows})
    text = ("Every row trains from seed 0 for the same number of epochs ("
            + ", ".join(str(b) for b in budgets) + (f"; `make pretrain` trains {full_epochs}" if full_epochs else "")
            + "), with the schedule compressed to that budget. Changes that regularise (augmentation, "
            "label smoothing) are meant for the full budget and may cost accuracy at a short one; a row's "
            "difference says what the change bought at this budget only. Rows of "
            "`configs/pretrain-ablation.yaml` without a file in `ablation/` have not been run yet "
            "(`python pipelines/ablate_pretrain.py` runs what is missing).\n\n" + "\n".join(lines))
    if deltas:
        text += ("\n\nEach row against the row it changes (PrivateTest, centre crop; one seed, so "
                 "differences of a few tenths of a point are within run-to-run noise): "
                 + "; ".join(deltas) + ".")
    return text


def _best(history):
    """The history entry of the epoch with the best validation (PublicTest) accuracy, or {}."""
    return max(history, key=lambda h: h.get("val_accuracy", 0)) if history else {}


def config_changes(base, other):
    """What ``other``'s config changes against ``base``'s (both ``run["config"]``), e.g.
    ``"epochs 100, random_erasing 0"``; ``"-"`` when nothing but the seed differs. A key that only
    ``other`` has (an option added to the config after ``base``'s run) is a change when its value
    is not the option's default; a key that only ``base`` has is not."""
    default = {"train": defaults(TrainConfig), "model": defaults(ModelConfig)}
    out = []
    for section in ("train", "model"):
        a, b = base.get(section, {}), other.get(section, {})
        for key in sorted(b):
            if key in ("seed", "time_limit_minutes"):
                continue
            before = a[key] if key in a else default[section].get(key, b[key])
            if before != b[key]:
                out.append(f"{key} {b[key]}")
    return ", ".join(out) or "-"


def _training_time(history):
    """A run's training time: the sum of its epochs' times. Runs recorded before pauses were left
    out of ``epoch_seconds`` (:mod:`fer_tf.training.timing`) may hold paused epochs; an epoch of over
    3x the median is named as such, since nothing else makes one take that long."""
    timing = _timing(history)
    if timing is None:
        return "not recorded"
    median = timing["median"]
    slow = [h["epoch_seconds"] for h in history if h.get("epoch_seconds", 0) > 3 * median]
    text = f"{timing['total_minutes']:.0f} min"
    if slow:
        text += (f" (of which {sum(slow) / 60:.0f} min in {len(slow)} epoch{'s' if len(slow) > 1 else ''} "
                 f"of over 3x the median {median:.0f} s: paused)")
    return text


SPLITS = ("public_test_accuracy", "private_test_accuracy")


def against(run, base):
    """How a run compares with ``base`` (the published backbone) on both test splits, centre crop:
    "better" (on both), "worse" (on both) or "disagree" (the splits differ, or a split is missing
    or tied). Only a run better on both may replace the backbone: choosing by PrivateTest alone
    would tune on the test split (pipelines/accuracy3.py's leaders use this rule too)."""
    if any(run.get(k) is None or base.get(k) is None for k in SPLITS):
        return "disagree"
    if all(run[k] > base[k] for k in SPLITS):
        return "better"
    if all(run[k] < base[k] for k in SPLITS):
        return "worse"
    return "disagree"


def _other_runs_section(results, others):
    """The committed run beside other full runs (``runs/*.json``: the same ``results.json`` layout,
    e.g. another number of epochs or less augmentation), so that each is reported with both splits
    and is never silently swapped in by its test score."""
    if not others:
        return ""
    base_cfg = results["run"].get("config", {})

    def row(name, r, changes):
        history = r.get("history") or []
        epochs = r["run"].get("config", {}).get("train", {}).get("epochs", "?")
        return (f"| {name} | {changes} | {epochs} | {_best(history).get('epoch', '?')} | "
                f"{_pct(r.get('public_test_accuracy'))} | {_pct(r.get('private_test_accuracy'))} | "
                f"{_pct(r.get('private_test_accuracy_flip'))} | {_training_time(history)} | "
                f"`{str(r['run'].get('git_commit', '?'))[:7]}` |")

    lines = ["| run | config changes | epochs | best epoch | PublicTest | PrivateTest | "
             "PrivateTest, flip-averaged | training time | commit |", "|---|---|---|---|---|---|---|---|---|",
             row("the published backbone (`results.json`)", results, "(configs/pretrain.yaml)")]
    lines += [row(f"`runs/{name}.json`", r, config_changes(base_cfg, r["run"].get("config", {})))
              for name, r in others]
    pub, priv = results.get("public_test_accuracy"), results.get("private_test_accuracy")
    text = ("Other full runs, each one seed, with the config changes against the published backbone's "
            "(`python pipelines/pretrain.py --set KEY=VALUE ...`):\n\n" + "\n".join(lines))
    for name, r in others:
        dp = 100 * ((r.get("public_test_accuracy") or 0) - (pub or 0))
        dt = 100 * ((r.get("private_test_accuracy") or 0) - (priv or 0))
        text += (f"\n\n`{name}` against the published backbone: PublicTest {dp:+.2f} points, "
                 f"PrivateTest {dt:+.2f} points.")
        distilled = r.get("distillation")
        if distilled:
            teacher = distilled["teacher"]
            teacher = (f"an ensemble of {len(teacher)} networks ({', '.join(f'`{t}`' for t in teacher)})"
                       if isinstance(teacher, list) else f"`{teacher}`")
            text += (f" Distilled from {teacher} (weight {distilled['weight']:g}, temperature "
                     f"{distilled['temperature']:g}); the teacher scores "
                     f"{_pct(distilled['teacher_train_accuracy'])} on the training faces (flip-averaged centre "
                     f"crops).")
        verdict = against(r, results)
        if verdict == "disagree" and dp * dt < 0:
            text += (" The two splits disagree, so the run shows no clear gain; the published backbone "
                     "stays (replacing it would retrain everything that starts from it: the CK+ "
                     "campaign and the shipped model). Choosing between runs by their PrivateTest "
                     "accuracy would tune on the test split, so that is not done either way.")
        elif verdict != "disagree":
            text += f" {verdict.capitalize()} on both splits."
    return "## Other full runs\n" + text + "\n"


#: The file name of a published FER2013 backbone, and the committed one, relative to the checkout
#: (`make pretrain` publishes it; a report names it without loading it).
BACKBONE_NAME = "fer2013_backbone.keras"
COMMITTED_BACKBONE = "pretrained/" + BACKBONE_NAME

#: The Accuracy III campaign's plan (issue 27): its runs and target.
CAMPAIGN = pathlib.Path(__file__).resolve().parents[2] / "configs" / "accuracy3.yaml"


#: The figure of the campaign's finished runs (written beside the README once a run is in).
CAMPAIGN_FIGURE = "accuracy3_curves.png"
#: The CK+48 protocol a study from a campaign's network follows (its seeds and folds).
CKPLUS_PLAN = CAMPAIGN.parent / "finetune" / "ckplus48.yaml"


#: The settings that change a network's work per face.
CAPACITY_SETTINGS = tuple(f"model.{name}" for name in CAPACITY_OPTIONS)


def _campaign_costs(plan, bench_path):
    """Each planned run's TFLite time per face as a multiple of ``fer``'s, from ``make bench``
    (``reports/bench/results.json``): the network of each run's capacity options, timed untrained
    (weights do not change the time); a run without such options is the default network."""
    return _costs_in(plan, _load(bench_path) or {})


def _costs_in(plan, bench):
    """:func:`_campaign_costs` from a bench's results already read."""
    inference = bench.get("inference") or {}
    measured = inference.get("architectures") or {}
    default = (inference.get("headline") or {}).get("tflite_vs_fer_ratio")
    costs = {}
    for name, run in (plan.get("runs") or {}).items():
        capacity = [item for item in run.get("set", []) if item.split("=")[0] in CAPACITY_SETTINGS]
        costs[name] = (measured.get(name) or {}).get("vs_fer_ratio") if capacity else default
    return costs


def _other_cpus(bench_path):
    """The same bench on other CPUs (:func:`reporting.other_cpu_benches` beside ``bench_path``):
    ``[(label, folder, results)]``, the label naming its vector instructions (int8 dot products
    decide which TFLite variant is fast, so the cost target can be met on one CPU and not on another)."""
    return [(cpu_label(((results.get("run") or {}).get("machine"))) or name,
             f"reports/bench/cpus/{name}", results)
            for name, results in other_cpu_benches(pathlib.Path(bench_path).parent)]


def _cpu_name(bench_path):
    """How the report names the CPU of ``make bench``'s committed run."""
    label = cpu_label(((_load(bench_path) or {}).get("run") or {}).get("machine"))
    return f"{label}, `reports/bench`" if label else "`reports/bench`'s CPU"


def _mixed_precision(results):
    return (((results or {}).get("run") or {}).get("config") or {}).get("train", {}).get("mixed_precision")


def _precision_lines(report_dir, finished):
    """The finished runs that trained in another precision than the published backbone (float32
    on a CPU without native bfloat16), with what the ablation measured that difference to be."""
    published = _mixed_precision(_load(pathlib.Path(report_dir) / "results.json"))
    other = [name for name, r in finished.items()
             if published is not None and _mixed_precision(r) not in (None, published)]
    if not other:
        return []
    kinds = {True: "mixed bfloat16", False: "float32"}
    text = (f"{', '.join(f'`{n}`' for n in other)} trained in {kinds[not published]} and the published "
            f"backbone in {kinds[published]} (`train.mixed_precision`; a CPU without native bfloat16 "
            "trains several times slower in it), so each differs from it in precision as well as in "
            "its named option.")
    rows = {n: _load(pathlib.Path(report_dir) / "ablation" / f"{n}.json") for n in ("recipe", "float32")}
    if all(rows.values()):
        a, b = rows["recipe"], rows["float32"]
        text += (f" At the ablation's {b.get('budget_epochs', 'equal')} epochs the float32 row scored "
                 f"{100 * (b['private_test_accuracy'] - a['private_test_accuracy']):+.2f} points on "
                 f"PrivateTest against mixed bfloat16 ({100 * (b['public_test_accuracy'] - a['public_test_accuracy']):+.2f}"
                 " on PublicTest), one seed each.")
    return ["", text]


def _ensemble_lines(ensemble, target):
    """What the networks of the ensemble run score alone and together (``ensemble.json``,
    ``python pipelines/accuracy3.py --ensemble``): the mark its distilled network aims at."""
    if not ensemble:
        return []
    members = ensemble["members"]
    names = {m: "the published backbone" if m.endswith(".keras") else f"`{m}`" for m in members}
    together = ensemble["ensemble"]
    best = max(members, key=lambda m: members[m]["private_test_accuracy"] or 0)
    missing = ensemble.get("missing") or []
    private = together["private_test_accuracy"]
    return ["", f"The networks `{ensemble['distilled_by']}` distils from, as an ensemble (the mean of "
            f"their class probabilities; `ensemble.json`, `python pipelines/accuracy3.py --ensemble` at "
            f"commit `{ensemble['run'].get('git_commit', '?')}`, {ensemble['run'].get('date', '?')}): {', '.join(names[m] for m in members)}"
            + (f", {len(members)} of its {len(members) + len(missing)} (not yet: "
               f"{', '.join(f'`{m}`' for m in missing)})" if missing else "")
            + f". Together they score {_pct(together['public_test_accuracy'])} on PublicTest and "
            f"{_pct(private)} on PrivateTest ({_pct(together['private_test_accuracy_flip'])} "
            f"flip-averaged); the best of them alone, {names[best]}, "
            f"{_pct(members[best]['private_test_accuracy'])}. A network distilled from them learns "
            "these averaged probabilities on the training faces, so the ensemble's PrivateTest is "
            "about the most it can be expected to reach: "
            + ("at or above" if target is not None and private >= target else "below")
            + f" the target of {_pct(target)}."]


def _other_costs(costs):
    if not costs:
        return "."
    low, high = min(costs), max(costs)
    return (f"; the other {low:.2f}x." if len(costs) == 1 else
            f"; the others {low:.2f}x." if low == high else f"; the others {low:.2f}x to {high:.2f}x.")


def _cost_line(title, names, costs, private, cost_target):
    cheap = [n for n in names if costs.get(n) is not None and costs[n] <= cost_target]
    return (f"- {title}: "
            + (", ".join(f"`{n}` ({costs[n]:.2f}x; PrivateTest "
                         + (f"{_pct(private[n])})" if n in private else "not run yet)")
                         for n in cheap) if cheap else "no planned network")
            + _other_costs([costs[n] for n in names if n not in cheap and costs.get(n)]))


def _shipped_from(reports_dir, name):
    """What the shipped model remade from run ``name``'s network scores, from its trial
    (``reports/shipped/trials/from-NAME``, ``pipelines/ship.py --pretrained``) against the committed
    recipe rerun (``baseline``); a shipped model is replaced only by one better on both FER2013
    splits and no worse on the held-out subjects."""
    trials = pathlib.Path(reports_dir) / "shipped" / "trials"
    trial, base = _load(trials / f"from-{name}" / "results.json"), _load(trials / "baseline" / "results.json")
    if trial is None or base is None:
        return (f"The shipped model remade from it follows (a trial first: `pipelines/ship.py --pretrained` "
                f"with `--report reports/shipped/trials/from-{name}`).")
    scores = [("held-out subjects", trial["held_out_subjects"]["image_accuracy"],
               base["held_out_subjects"]["image_accuracy"])]
    scores += [(f"FER2013 {split}", trial["fer2013"][f"{split}_accuracy"], base["fer2013"][f"{split}_accuracy"])
               for split in ("PublicTest", "PrivateTest")]
    better = all(t > b for _, t, b in scores[1:]) and scores[0][1] >= scores[0][2]
    return (f"The shipped model remade from it (`reports/shipped/trials/from-{name}`) scores "
            + ", ".join(f"{what} {_pct(t)}" for what, t, _ in scores) + " against the committed recipe "
            "rerun's " + ", ".join(_pct(b) for _, _, b in scores) + ": "
            + ("better on every count, so it replaces the shipped model." if better else
               "not better on every count, so the shipped model stays."))


def _study_of(reports_dir, name):
    """How far the CK+48 study from run ``name``'s network has come (its committed run files)."""
    folder = pathlib.Path(reports_dir) / "ckplus48" / "backbones" / name
    plan = load_yaml(CKPLUS_PLAN)
    total = 2 * len(plan["evaluation"]["seeds"]) * int(plan["data"]["folds"])
    done = sorted(folder.glob("*/seed*-fold*.json"))
    seeds = sorted({int(p.stem.split("-")[0][4:]) for p in done})
    return (f"The CK+48 study from it (`python pipelines/accuracy3.py --ckplus`, "
            f"`reports/ckplus48/backbones/{name}/`): "
            + (f"{len(done)} of its {total} fine-tunings (seeds {', '.join(map(str, seeds))}); "
               "paired against the committed backbone's runs in `reports/ckplus48` (\"Does the "
               "starting point matter?\")." if done else "not run yet."))


def _campaign_outcome(plan, finished, costs, published, other_cpus=(), cpu="`reports/bench`'s CPU",
                      reports_dir="reports"):
    """Where the campaign's targets stand: accuracy, cost (on ``make bench``'s CPU, named ``cpu``,
    and on each of ``other_cpus``, ``[(label, folder, costs)]``), both in one network (on the
    former), and whether a run is better than the published backbone on both splits (what leads to
    a new backbone)."""
    target, cost_target = plan.get("target_private_test"), plan.get("target_cost_vs_fer")
    names = list((plan.get("runs") or {}))
    left = [n for n in names if n not in finished]
    done = all(n in finished for n in names)
    lines = ["", f"Where the targets stand ({len(names) - len(left)} of {len(names)} runs finished"
             + (f"; still to run: {', '.join(f'`{n}`' for n in left)}" if left else "") + "):", ""]
    private = {n: r.get("private_test_accuracy") for n, r in finished.items()
               if r.get("private_test_accuracy") is not None}
    if target is not None:
        accurate = [n for n in private if private[n] >= target]
        if accurate:
            lines.append(f"- Accuracy (PrivateTest at least {_pct(target)}, one network): met by "
                         + ", ".join(f"`{n}` ({_pct(private[n])})" for n in accurate) + ".")
        elif private:
            best = max(private, key=private.get)
            lines.append(f"- Accuracy (PrivateTest at least {_pct(target)}, one network): "
                         + ("not met" if done else "not met yet")
                         + f"; the best finished run, `{best}`, scores {_pct(private[best])}, "
                         f"{100 * (target - private[best]):.2f} points short (the published backbone "
                         f"{_pct(published.get('private_test_accuracy'))}).")
    if cost_target is not None:
        lines.append(_cost_line(f"Cost (at most {cost_target:g}x `fer`'s time per face"
                                + (f", on {cpu}" if other_cpus else "") + ")",
                                names, costs, private, cost_target))
        lines += [_cost_line(f"Cost on {label} (`{folder}`)", names, other, private, cost_target)
                  for label, folder, other in other_cpus]
    if target is not None and cost_target is not None:
        def both(on):
            found = [n for n in names if on.get(n) is not None and on[n] <= cost_target
                     and n in private and private[n] >= target]
            return (", ".join(f"`{n}`" for n in found) if found else
                    ("no run" if done else "no finished run yet"))

        lines.append("- Both in one network: " + both(costs)
                     + "".join(f"; on {label}: {both(other)}" for label, _, other in other_cpus) + ".")
    better = sorted((n for n, r in finished.items() if against(r, published) == "better"),
                    key=lambda n: finished[n]["public_test_accuracy"], reverse=True)
    if better:
        lines.append(f"- A new backbone: `{better[0]}` is better than the published backbone on both "
                     "splits" + (f" (so are {', '.join(f'`{n}`' for n in better[1:])})" if better[1:] else "")
                     + ". " + _shipped_from(reports_dir, better[0]) + " " + _study_of(reports_dir, better[0]))
    elif finished:
        lines.append("- A new backbone: no finished run is better than the published backbone on both "
                     "splits" + (", so it stays; no CK+48 study or remade shipped model follows from "
                                 "this campaign." if done else " yet."))
    return lines


def _campaign_section(report_dir, plan_path=CAMPAIGN, bench_path=None):
    """Where the stronger-network campaign stands: each planned run with its result or "not run
    yet", its cost per face against ``fer``'s (``make bench``, measured before training), and the
    options measured another way (a weight-averaged tail, flip averaging)."""
    if not pathlib.Path(plan_path).is_file():
        return ""
    plan = load_yaml(plan_path)
    target = plan.get("target_private_test")
    cost_target = plan.get("target_cost_vs_fer")
    bench_path = pathlib.Path(report_dir).parent / "bench" / "results.json" if bench_path is None else bench_path
    costs = _campaign_costs(plan, bench_path)
    others = [(label, folder, _costs_in(plan, bench)) for label, folder, bench in _other_cpus(bench_path)]
    lines = ["## Accuracy III: a stronger network", "",
             f"The runs of `{pathlib.Path(plan_path).name}` (`python pipelines/accuracy3.py` runs the "
             f"next one, with `--all` each in turn), each a full 75-epoch run of the recipe with the options named. Target: "
             f"PrivateTest at least {_pct(target)} (single network, centre crop)"
             + ("" if cost_target is None else
                f", and a TFLite time per face of at most {cost_target:g}x `fer`'s")
             + ". The time per face is `make bench`'s (`reports/bench`, section 3), each network timed "
             "before training, since its weights do not change its time"
             + (f"; on {_cpu_name(bench_path)} first, then on "
                + ", ".join(f"{label} (`{folder}`)" for label, folder, _ in others)
                + ", since the CPU decides which TFLite variant is fast (int8 dot-product instructions "
                "make the quantised ones several times faster)" if others else "") + ".", "",
             "| run | what | options | PublicTest | PrivateTest | PrivateTest, flip-averaged | "
             "per face, x `fer`'s | targets met |",
             "|---|---|---|---|---|---|---|---|"]
    histories, finished = {}, {}
    for name, run in (plan.get("runs") or {}).items():
        r = _load(pathlib.Path(report_dir) / "runs" / f"{name}.json")
        if r is not None:
            finished[name] = r
        options = ", ".join(f"`{item}`" for item in run.get("set", []))
        cost = costs.get(name)
        cost_text = (f"{cost:.2f}x" if cost is not None else "not measured yet (`make bench`)") + "".join(
            f"; {label}: {other[name]:.2f}x" for label, _, other in others if other.get(name) is not None)
        cost_met = None if cost is None or cost_target is None else cost <= cost_target
        if r is not None and r.get("history"):
            histories[name] = r["history"]
        if r is None:
            lines.append(f"| `{name}` | {run.get('what', '')} | {options} | not run yet | | | {cost_text} | |")
            continue
        private = r.get("private_test_accuracy")
        accurate = private is not None and target is not None and private >= target
        met = (f"accuracy {'yes' if accurate else 'no'}, cost "
               + ("not measured" if cost_met is None else ("yes" if cost_met else "no"))
               + "".join(f" ({label}: {'yes' if other[name] <= cost_target else 'no'})"
                         for label, _, other in others
                         if other.get(name) is not None and cost_target is not None))
        lines.append(f"| `runs/{name}.json` | {run.get('what', '')} | {options} | "
                     f"{_pct(r.get('public_test_accuracy'))} | {_pct(private)} | "
                     f"{_pct(r.get('private_test_accuracy_flip'))} | {cost_text} | {met} |")
    lines += ["", "Measured another way: weight averaging over a constant-rate tail as a 6-epoch "
              "tail on the published backbone (`runs/swa-tail-6-epochs.json`, above), and "
              "test-time flip averaging as an export option (`fer-tf export --flip-average`): its "
              "accuracy is the flip-averaged column of every run, its cost per face is in "
              "`reports/bench` (section 3)."]
    lines += _precision_lines(report_dir, finished)
    lines += _ensemble_lines(_load(pathlib.Path(report_dir) / "ensemble.json"), target)
    lines += _campaign_outcome(plan, finished, costs, _load(pathlib.Path(report_dir) / "results.json") or {},
                               others, _cpu_name(bench_path), pathlib.Path(report_dir).parent)
    if histories:
        from fer_tf.research import plots  # deferred: matplotlib

        published = _load(pathlib.Path(report_dir) / "results.json") or {}
        curves = {"the published backbone": published.get("history") or [], **histories}
        plots.training_curves({k: v for k, v in curves.items() if v}, pathlib.Path(report_dir) / CAMPAIGN_FIGURE,
                              title="Accuracy III runs against the published backbone")
        lines += ["", f"![Accuracy III: training loss and PublicTest accuracy per epoch]({CAMPAIGN_FIGURE})"]
    return "\n".join(lines) + "\n"


def _fer_package(fer):
    """The `fer` package's accuracy on the test splits, in words, from ``fer_package.json``."""
    if not fer:
        return (f"The `fer` package's accuracy is not measured yet (`python benchmarks/fer_accuracy.py` "
                f"writes `{FER_PACKAGE}`).")
    return (f"The `fer` package ({fer.get('fer_version', '?')}) scores {_pct(fer.get('private_test_accuracy'))} "
            f"on the same PrivateTest images and {_pct(fer.get('public_test_accuracy'))} on PublicTest "
            f"(`{FER_PACKAGE}`, `python benchmarks/fer_accuracy.py` at commit "
            f"`{str(fer['run'].get('git_commit', '?'))[:7]}`); its network chose its checkpoint on "
            "PublicTest and PrivateTest together, so its PrivateTest figure is slightly favourable to it.")


def write_readme(report_dir):
    """Write ``report_dir/README.md`` from ``results.json`` (+ speed.json, ablation/*.json)."""
    report_dir = pathlib.Path(report_dir)
    results = _load(report_dir / "results.json")
    if results is None:
        raise FileNotFoundError(f"{report_dir / 'results.json'} not found: run `make pretrain` first")
    run = results["run"]
    cfg = run.get("config", {})
    train_cfg, model_cfg = cfg.get("train", {}), cfg.get("model", {})
    history = results["history"]
    best = _best(history)
    timing = _timing(history)
    speed = _load(report_dir / "speed.json")
    ablation = [_load(p) for p in sorted((report_dir / "ablation").glob("*.json"))]
    others = [(p.stem, _load(p)) for p in sorted((report_dir / "runs").glob("*.json"))]
    order = {name: i for i, name in enumerate(ABLATION_ORDER)}
    ablation = sorted((a for a in ablation if a), key=lambda a: order.get(a["row"], 99))
    private = results.get("private_test_accuracy")
    target_line = (f"{_pct(private)} on PrivateTest (target for the single centre crop: at least 67%, "
                   "stretch 70%): " + ("met. " if private is not None and private >= 0.67 else "not met. ")
                   + _fer_package(_load(report_dir / FER_PACKAGE)))
    timing_text = ("Per-epoch times were not recorded for this run." if timing is None else
                   f"Training took {timing['total_minutes']:.0f} minutes for {timing['epochs']} epochs: median "
                   f"{timing['median']:.0f} s per epoch (fastest {timing['fastest']:.0f} s, slowest "
                   f"{timing['slowest']:.0f} s), validation included"
                   + (f", not counting {timing['paused_minutes']:.0f} minutes for which the run was paused"
                      if timing["paused_minutes"] >= 0.5 else "")
                   + ". Epochs run slower while other jobs share the two cores.")
    fp32 = ((speed or {}).get("policies") or {}).get("float32", {}).get("images_per_s")
    paper_time = (f": up to {300 * results['train_images'] / fp32 / 3600:.1f} hours of training at the "
                  "float32 speed above" if fp32 else "")
    text = f"""# FER2013: softmax pretraining (Section 5.2, first stage)

Produced by `{run.get("make_command") or run.get("command")}`: {_provenance(run)}.
The float32 network is published as `pretrained/fer2013_backbone.keras` (with a JSON sidecar);
`make finetune` and `make ship` start from it.

Recipe (`configs/pretrain.yaml`): {_recipe(train_cfg, model_cfg)}

| split | images | centre crop | flip-averaged (reported beside, never instead) |
|---|---|---|---|
| PublicTest (validation; picks the best epoch) | 3,589 | {_pct(results.get("public_test_accuracy"))} | {_pct(results.get("public_test_accuracy_flip"))} |
| PrivateTest (test; single model) | 3,589 | {_pct(private)} | {_pct(results.get("private_test_accuracy_flip"))} |

{target_line} Best epoch (by PublicTest): {best.get("epoch", "?")} of {len(history)};
{results["train_images"]} training images; labels {", ".join(results["labels"])}.

![training curves](curves.png)

## Time
{timing_text}

{_speed_section(speed, results["train_images"], train_cfg.get("epochs"), train_cfg.get("mixed_precision"))}

{_other_runs_section(results, others)}
{_campaign_section(report_dir)}
## Ablation at equal budget
{_ablation_section(ablation, len(history))}

## The paper's schedule
`configs/pretrain-paper.yaml` is the paper's recipe (SGD 0.01, halve-and-reload until the learning
rate reaches 1e-5, up to 300 epochs, crop and flip only, float32){paper_time}. Under the JAX
backend the same command (`make pretrain BACKEND=jax CONFIG=configs/pretrain-paper.yaml`) needs no
TensorFlow, and `pipelines/device/run.sh` runs it with the ablation rows on a lent GPU.
"""
    (report_dir / "README.md").write_text(text)
    return report_dir / "README.md"

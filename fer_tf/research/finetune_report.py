"""The cross-validation report (`make finetune` / `make evaluate`): results.json, README.md and
figures built from the per-run JSON files of :mod:`fer_tf.research.crossval`, nothing else.

results.json:

- ``variants.<name>``: ``sequence_accuracy`` (mean over all runs), ``sequence_accuracy_std``,
  ``image_accuracy``, ``runs`` (``[{seed, fold, sequence_accuracy, image_accuracy}]``), probes;
- ``paired_differences``: ``{"A - B": {mean, ci95: [lo, hi], pairs, folds, wins, losses}}`` on the
  (seed, fold) runs both share, cluster-bootstrap CIs (:mod:`fer_tf.research.stats`);
- ``options``: each named deviation against the same variant without it;
- ``tuple_mode``: the paper's tuple mode against ``in_batch`` on the same folds;
- ``identity``: probe accuracies and the difference "2B(N+M) - softmax".
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from fer_tf.research import stats
from fer_tf.config import variant_slug
from fer_tf.research.reporting import write_json
from fer_tf.data.sampling import DEFAULT_QUERIES_PER_BATCH

#: Figures this report writes (with ``embedding_<variant>.png``); stale ones are removed.
OWN_FIGURES = ("curves.png", "confusion_matrix.png", "pilot_curves.png")

#: The comparisons issue "Accuracy II" asks for (first minus second), when both variants ran.
COMPARISONS = (("2B(N+M)", "softmax"), ("2B(N+M)", "1B(N+M)"), ("1B(N+M)", "1B(N+1)"),
               ("2B(N+M)", "2B(N+1)"))


def load_runs(runs_dir):
    """Every run JSON under ``runs_dir`` (``<group>/seed<s>-fold<k>.json``), each with its path
    relative to ``runs_dir`` as ``file``."""
    runs_dir = pathlib.Path(runs_dir)
    out = []
    for path in sorted(runs_dir.glob("*/seed*-fold*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            print(f"warning: {path} is not readable JSON; ignored", file=sys.stderr)
            continue
        data["file"] = str(path.relative_to(runs_dir))
        out.append(data)
    return out


def pilot_summary(pilot_dir):
    """``{setting: {...}}`` from ``pilot_dir/<setting>/<group>/seed*-fold*.json``: the runs of a
    pilot that compared training settings on a few folds, judged by their inner-validation
    accuracy at the selected epoch (never by the test fold)."""
    out = {}
    for folder in sorted(p for p in pathlib.Path(pilot_dir).glob("*") if p.is_dir()):
        runs = load_runs(folder)
        if not runs:
            continue
        inner = [max((row.get("val_accuracy", float("nan")) for row in r["history"]), default=None)
                 for r in runs]
        out[folder.name] = {"runs": len(runs), "variants": sorted({r["variant"] for r in runs}),
                            "folds": sorted({r["fold"] for r in runs}),
                            "inner_validation_accuracy": stats.mean_std(inner)[0],
                            "sequence_accuracy": stats.mean_std([r["sequence_accuracy"] for r in runs])[0],
                            "selected_epoch_mean": stats.mean_std([r.get("selected_epoch") for r in runs])[0],
        "last_epoch_image_accuracy": stats.mean_std([r.get("last_epoch_image_accuracy") for r in runs])[0],
        "best_test_epoch_image_accuracy": stats.mean_std([_best_test_epoch(r) for r in runs])[0],
                            "histories": [r["history"] for r in runs]}
    return out


def backbone_summary(study_dir, main_runs):
    """Runs of the config's protocol fine-tuned from other starting points, from
    ``study_dir/<name>/`` (``backbone.json`` there says which: ``what``, and
    ``fer2013_private_test_accuracy`` where it was pretrained on FER2013), each compared, per
    (seed, fold), with ``main_runs`` of the same variant, which start from the committed backbone.

    Returns ``{"starts": {name: {...}}, "committed_backbone": {variant: {...}}, "2B(N+M) - softmax":
    {start: {...}}}``: the committed backbone over the (seed, fold) runs that any start of that
    variant has, and the paired difference of the two methods from each start that has both (the
    committed backbone's over the same runs as ``"committed"``); ``{}`` without a study."""
    starts, keys_of, methods = {}, {}, {}

    def same_runs(variant, keys):
        return [r for r in main_runs if r["variant"] == variant and _is_main(r)
                and (r["seed"], r["fold"]) in keys]

    for folder in sorted(p for p in pathlib.Path(study_dir).glob("*") if p.is_dir()):
        by_variant = {}
        for r in load_runs(folder):
            by_variant.setdefault(r["variant"], []).append(r)
        info_path = folder / "backbone.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if "2B(N+M)" in by_variant and "softmax" in by_variant:
            methods[folder.name] = by_variant["2B(N+M)"], by_variant["softmax"]
        for variant, mine in sorted(by_variant.items()):
            keys = {(r["seed"], r["fold"]) for r in mine}
            keys_of.setdefault(variant, set()).update(keys)
            starts[folder.name if len(by_variant) == 1 else f"{folder.name} {variant}"] = {
                "start": folder.name, "variant": variant, "what": info.get("what", folder.name),
                "fer2013_private_test_accuracy": info.get("fer2013_private_test_accuracy"),
                "sha256_12": info.get("sha256_12"), "made_by": info.get("made_by"), "runs": len(mine),
                "seeds": sorted({r["seed"] for r in mine}), "folds": sorted({r["fold"] for r in mine}),
                "sequence_accuracy": stats.mean_std([r["sequence_accuracy"] for r in mine])[0],
                "against_committed_backbone": stats.compare(mine, same_runs(variant, keys))}
    if not starts:
        return {}
    committed = {}
    for variant, keys in keys_of.items():
        base = same_runs(variant, keys)
        committed[variant] = {"runs": len(base),
                              "sequence_accuracy": stats.mean_std([r["sequence_accuracy"] for r in base])[0]}
    versus = {name: stats.compare(a, b) for name, (a, b) in methods.items()}
    if versus:
        keys = keys_of["2B(N+M)"] & keys_of["softmax"]
        versus["committed"] = stats.compare(same_runs("2B(N+M)", keys), same_runs("softmax", keys))
    return {"starts": starts, "committed_backbone": committed, "2B(N+M) - softmax": versus}


def _is_main(run):
    """A run of the config's main plan: no option, in_batch mode."""
    return not run.get("option") and run.get("mode") != "tuple"


def _pct(x, digits=2):
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _pts(x):
    return "–" if x is None else f"{100 * x:+.2f}"


def _ci(c):
    lo, hi = c.get("ci95") or (None, None)
    return "–" if lo is None else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"


def _group(runs):
    """``{display name: [runs]}`` in first-seen order."""
    out = {}
    for r in runs:
        name = (r["variant"] + (f" [{r['option']}]" if r.get("option") else "")
                + (", tuple mode" if r.get("mode") == "tuple" else ""))
        out.setdefault(name, []).append(r)
    return out


def _best_test_epoch(run):
    """Image-level accuracy of the epoch that is best on the test fold itself (None without per-epoch
    test accuracies). It peeks at the test fold, so it bounds every rule for choosing the epoch."""
    scores = [e.get("fold_accuracy") for e in run.get("history") or []]
    return max(scores) if scores and None not in scores else None


def summarise(runs):
    """Mean/std accuracies, per-run rows, probes, time and confusion of one group of runs."""
    seq = stats.mean_std([r["sequence_accuracy"] for r in runs])
    img = stats.mean_std([r["image_accuracy"] for r in runs])
    ck_probe = [(r["identity_probe_accuracy"], r["identity_probe_subjects"]) for r in runs
                if r.get("identity_probe_accuracy") is not None]
    x_probe = [r["cross_expression_probe"] for r in runs
               if (r.get("cross_expression_probe") or {}).get("accuracy") is not None]
    return {
        "sequence_accuracy": seq[0], "sequence_accuracy_std": seq[1],
        "image_accuracy": img[0], "image_accuracy_std": img[1],
        "n_runs": seq[2], "seeds": sorted({r["seed"] for r in runs}),
        "folds": sorted({r["fold"] for r in runs}),
        "runs": [{"seed": r["seed"], "fold": r["fold"], "sequence_accuracy": r["sequence_accuracy"],
                  "image_accuracy": r["image_accuracy"], "selected_epoch": r.get("selected_epoch")}
                 for r in sorted(runs, key=lambda r: (r["seed"], r["fold"]))],
        "selected_epoch_mean": stats.mean_std([r.get("selected_epoch") for r in runs])[0],
        "last_epoch_image_accuracy": stats.mean_std([r.get("last_epoch_image_accuracy") for r in runs])[0],
        "best_test_epoch_image_accuracy": stats.mean_std([_best_test_epoch(r) for r in runs])[0],
        "epochs": max((r.get("epochs", 0) for r in runs), default=0),
        "identity_probe_accuracy": float(np.mean([a for a, _ in ck_probe])) if ck_probe else None,
        "identity_probe_chance": float(np.mean([1 / n for _, n in ck_probe])) if ck_probe else None,
        "cross_expression_probe_accuracy": (float(np.mean([p["accuracy"] for p in x_probe]))
                                            if x_probe else None),
        "cross_expression_probe_chance": (float(np.mean([p["chance"] for p in x_probe])) if x_probe else None),
        "cross_expression_probe_dataset": x_probe[0]["dataset"] if x_probe else None,
        "train_seconds": float(sum(r.get("train_seconds", 0) for r in runs)),
        "train_seconds_mean": stats.mean_std([r.get("train_seconds") for r in runs])[0],
        # wall-clock time: a run paused or sharing the machine is slower; the median ignores it
        "train_seconds_median": _median([r.get("train_seconds") for r in runs]),
        "sequence_confusion": np.sum([r["sequence_confusion"] for r in runs], axis=0).tolist(),
    }


def _probe_runs(runs, key):
    return [{"seed": r["seed"], "fold": r["fold"], "value": v} for r in runs
            if (v := (r.get(key) if key != "cross_expression_probe" else
                      (r.get(key) or {}).get("accuracy"))) is not None]


def build_results(runs, labels, dataset, folds, config=None, current=None, pretrained=None):
    """The results.json dict from the run dicts of :func:`fer_tf.research.crossval.load_runs`.

    ``current``: ``{run file: protocol}`` of the config's plan; runs of another protocol are left
    out (and counted). ``config``: the fine-tuning config dict (paper figures, options, protocol).
    """
    config = config or {}
    ev = config.get("evaluation", {})
    stale = [r["file"] for r in runs if current is not None and current.get(r["file"]) != r.get("protocol")]
    runs = [r for r in runs if r["file"] not in set(stale)]
    groups = _group(runs)
    main = {n: g for n, g in groups.items() if _is_main(g[0])}
    order = [v for v in ev.get("variants", []) if v in main] + [v for v in main if v not in ev.get("variants", [])]
    variants = {v: summarise(main[v]) for v in order}
    paired = {f"{a} - {b}": stats.compare(main[a], main[b]) for a, b in COMPARISONS
              if a in main and b in main}
    options = {}
    described = {o.get("name"): o for o in ev.get("options") or []}
    for name, g in groups.items():
        option = g[0].get("option")
        if not option or g[0].get("mode") == "tuple":
            continue
        base = main.get(g[0]["variant"], [])
        options[name] = {"variant": g[0]["variant"], "option": option,
                         "what": described.get(option, {}).get("what", ""),
                         "settings": g[0].get("settings", {}), **summarise(g),
                         "against_default": stats.compare(g, base)}
    tuple_mode = {}
    for name, g in groups.items():
        if g[0].get("mode") != "tuple":
            continue
        base = {(r["seed"], r["fold"]): r for r in main.get(g[0]["variant"], [])}
        shared = [r for r in g if (r["seed"], r["fold"]) in base]
        tuple_mode[name] = {
            "variant": g[0]["variant"], **summarise(g),
            "in_batch_same_runs": summarise([base[(r["seed"], r["fold"])] for r in shared]) if shared else None,
            "against_in_batch": stats.compare(g, [base[(r["seed"], r["fold"])] for r in shared]),
        }
    identity = {}
    for key in ("cross_expression_probe", "identity_probe_accuracy"):
        if "2B(N+M)" in main and "softmax" in main:
            a = [{"seed": r["seed"], "fold": r["fold"], "v": r["value"]} for r in _probe_runs(main["2B(N+M)"], key)]
            b = [{"seed": r["seed"], "fold": r["fold"], "v": r["value"]} for r in _probe_runs(main["softmax"], key)]
            identity[key] = {"2B(N+M) - softmax": stats.compare(a, b, key="v")}
    done = {r["file"] for r in runs}
    progress = None if current is None else {"planned": len(current), "done": len(done & set(current)),
                                             "missing": sorted(set(current) - done)}
    return {"dataset": dataset, "folds": folds, "labels": list(labels), "variants": variants,
            "progress": progress,
            "paired_differences": paired, "options": options, "tuple_mode": tuple_mode,
            "identity": identity, "stale_runs": stale, "paper": ev.get("paper"),
            "protocol": config.get("train"), "pretrained": pretrained,
            "commits": sorted({r.get("run", {}).get("git_commit", "unknown") for r in runs}),
            "machines": sorted({f"{r.get('run', {}).get('machine', {}).get('cpu', '?')} "
                                f"({r.get('run', {}).get('machine', {}).get('cores', '?')} cores)" for r in runs})}


def write_report(runs, labels, report_dir, dataset, folds, config=None, current=None, command=None,
                 pretrained=None, pilot_dir=None, backbones_dir=None):
    """Write results.json, README.md and the figures of ``report_dir``; returns the results.
    ``pilot_dir`` (default ``report_dir/pilot``): a pilot of training settings, if there is one;
    ``backbones_dir`` (default ``report_dir/backbones``): runs from other starting points, if any
    (:func:`backbone_summary`)."""
    from fer_tf.research import plots  # deferred: matplotlib

    report = pathlib.Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    data = build_results(runs, labels, dataset, folds, config, current, pretrained)
    data["command"] = command
    pilot = pilot_summary(pilot_dir or report / "pilot")
    data["pilot"] = {k: {kk: vv for kk, vv in v.items() if kk != "histories"} for k, v in pilot.items()}
    used = [r for r in runs if r["file"] not in set(data["stale_runs"])]
    data["backbones"] = backbone_summary(backbones_dir or report / "backbones", used)
    write_json(report / "results.json", data)
    figures = []
    if pilot:
        figures.append(plots.mean_curves({k: v["histories"] for k, v in pilot.items()},
                                         report / "pilot_curves.png",
                                         title="pilot: training settings (mean ± std over its runs)"))
    groups = _group(used)
    curves = {n: [r["history"] for r in g] for n, g in groups.items() if n in data["variants"]}
    if curves:
        figures.append(plots.mean_curves(curves, report / "curves.png",
                                         title=f"{dataset}: mean ± std over runs"))
    focus = "2B(N+M)" if "2B(N+M)" in data["variants"] else next(iter(data["variants"]), None)
    if focus:
        figures.append(plots.confusion_matrix(data["variants"][focus]["sequence_confusion"], labels,
                                              report / "confusion_matrix.png",
                                              title=f"{focus}: sequence-level confusion, all runs"))
    for name in data["variants"]:
        emb = next((r["embedding"] for r in groups.get(name, []) if r.get("embedding")), None)
        if emb:
            figures.append(plots.embedding_scatter(
                np.asarray(emb["pca"]), emb["expression"], emb["subject"],
                report / f"embedding_{variant_slug(name)}.png", title=f"{name} FC2 features (PCA, fold 1)"))
    for old in report.glob("*.png"):  # figures of an earlier build that this one did not make
        if old not in figures and (old.name in OWN_FIGURES or old.name.startswith("embedding_")):
            old.unlink()
    (report / "README.md").write_text(_readme(data, figures, report, config or {}))
    return data


def _protocol_text(config):
    t = config.get("train", {})
    bits = [f"{t.get('optimizer', 'adam').capitalize()}, learning rate {t.get('learning_rate')}"
            f" ({t.get('schedule', 'halve_reload').replace('_', '-')}"
            + (f", {t.get('warmup_epochs')} warm-up epoch(s)" if t.get("warmup_epochs") else "") + ")",
            f"{t.get('epochs')} epochs of {t.get('queries_per_batch', 64)} queries per batch"
            + (f" (`tuple`-mode runs: {DEFAULT_QUERIES_PER_BATCH['tuple']} queries per batch, each followed"
               " by its own positives and negatives)"
               if config.get("evaluation", {}).get("tuple_mode") else "")]
    if t.get("freeze_batch_norm"):
        bits.append("batch norm frozen at its FER2013 statistics")
    if t.get("backbone_lr_scale", 1.0) != 1.0:
        bits.append(f"backbone at {t['backbone_lr_scale']} x the learning rate")
    if t.get("inner_validation"):
        bits.append(f"{100 * t['inner_validation']:.1f}% of the training subjects held out as an inner "
                    "validation split; the epoch with the best image-level accuracy on them (ties: the "
                    "later) is evaluated on the test fold, which never influences training or selection")
    else:
        bits.append("the epoch with the lowest training loss is evaluated (no inner split)")
    return "; ".join(bits) + "."


def _readme(data, figures, report, config):
    v, paper = data["variants"], data.get("paper") or {}
    lines = [f"# {data['dataset']}: subject-independent {data['folds']}-fold cross-validation", "",
             "Rebuilt from the per-run files in `runs/` by:", "", "```", data.get("command") or "make evaluate",
             "```", "",
             (f"Runs trained at commit(s) {', '.join(f'`{c[:12]}`' for c in data['commits'])} on "
              f"{'; '.join(data['machines'])}. " if data["commits"] else "No run has finished yet. ")
             + f"Protocol: {_protocol_text(config)}", ""]
    if data.get("progress"):
        pr = data["progress"]
        lines += [f"Campaign progress: {pr['done']} of the {pr['planned']} runs of the config's plan are done"
                  + (" (all)." if pr["done"] == pr["planned"] else
                     "; `make finetune` trains the missing ones (listed in results.json, `progress`)."), ""]
    if data["stale_runs"]:
        lines += [f"{len(data['stale_runs'])} run file(s) of an older protocol are left out "
                  "(`make finetune` trains them again).", ""]
    lines += _pilot_section(data.get("pilot") or {})
    lines += ["## Accuracy (layout of the paper's Table 3)", "",
              "| method | sequence-level, mean ± std | image-level, mean ± std | paper | runs (seeds x folds) | selected epoch, mean | training time per run, median |",
              "|---|---|---|---|---|---|---|"]
    for name, r in v.items():
        lines.append(f"| {name} | {_pct(r['sequence_accuracy'])} ± {100 * (r['sequence_accuracy_std'] or 0):.2f} | "
                     f"{_pct(r['image_accuracy'])} ± {100 * (r['image_accuracy_std'] or 0):.2f} | "
                     f"{_pct(paper.get(name))} | {r['n_runs']} ({len(r['seeds'])} x {len(r['folds'])}) | "
                     f"{r['selected_epoch_mean'] or 0:.1f} of {r['epochs']} | {r['train_seconds_median'] or 0:.0f} s |")
    lines += ["", "Sequence level: the scores of a sequence's frames are averaged. Mean and standard "
              "deviation over all (seed, fold) runs; the folds are the same subjects for every seed "
              "and variant.", ""]
    if data["paired_differences"]:
        lines += ["## Does (N+M) help? Paired differences", "",
                  "Per (seed, fold) run, sequence-level accuracy of the first method minus the second; "
                  "95% confidence intervals from a cluster bootstrap (folds resampled, then seeds "
                  "within a fold; 10,000 draws). An interval that contains 0 means this campaign "
                  "cannot tell the two apart.", "",
                  "| comparison | mean difference (points) | 95% CI | pairs (folds) | first better / worse |",
                  "|---|---|---|---|---|"]
        for name, c in data["paired_differences"].items():
            lines.append(f"| {name} | {_pts(c['mean'])} | {_ci(c)} | {c['pairs']} ({c['folds']}) | "
                         f"{c['wins']} / {c['losses']} |")
        lines.append("")
    if data["options"]:
        lines += ["## Options on vs off: the paper's settings, our variations and protocol choices", "",
                  "Each row is the variant with one setting changed (the config's `evaluation.options`) "
                  "against the same variant with this report's defaults, on the runs both have; `what` "
                  "says whether the setting is the paper's or a variation of ours.", "",
                  "| variant | option | what | sequence-level | default - option (points) | 95% CI | pairs |",
                  "|---|---|---|---|---|---|---|"]
        for name, o in data["options"].items():
            c = o["against_default"]
            flipped = {**c, "mean": None if c["mean"] is None else -c["mean"],
                       "ci95": [None if c["ci95"][1] is None else -c["ci95"][1],
                                None if c["ci95"][0] is None else -c["ci95"][0]]}
            lines.append(f"| {o['variant']} | {o['option']} | {o['what']} | {_pct(o['sequence_accuracy'])} "
                         f"({o['n_runs']} runs) | {_pts(flipped['mean'])} | {_ci(flipped)} | {c['pairs']} |")
        lines.append("")
    if data["tuple_mode"]:
        lines += ["## `tuple` vs `in_batch` mode", "",
                  "| method | runs | sequence-level | image-level | training time per run |", "|---|---|---|---|---|"]
        for name, t in data["tuple_mode"].items():
            base = t.get("in_batch_same_runs") or {}
            lines.append(f"| {name} | {t['n_runs']} | {_pct(t['sequence_accuracy'])} | {_pct(t['image_accuracy'])} "
                         f"| {t['train_seconds_mean'] or 0:.0f} s |")
            if base:
                lines.append(f"| {t['variant']}, in_batch, same runs | {base['n_runs']} | "
                             f"{_pct(base['sequence_accuracy'])} | {_pct(base['image_accuracy'])} | "
                             f"{base['train_seconds_mean'] or 0:.0f} s |")
        lines.append("")
    lines += _identity_section(data)
    lines += _against_paper(data, pathlib.Path(report).parent / "fer2013" / "results.json", config)
    focus = "2B(N+M)" if "2B(N+M)" in v else next(iter(v), None)
    if focus:
        labels = data["labels"]
        m = np.asarray(v[focus]["sequence_confusion"], float)
        rates = m / np.maximum(m.sum(1, keepdims=True), 1)
        lines += [f"## Confusion matrix of {focus}, sequence level, all runs (layout of Table 1, rows = true)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, name in enumerate(labels):
            lines.append(f"| {name} | " + " | ".join(f"{100 * rates[i, j]:.1f}" for j in range(len(labels))) + " |")
        lines.append("")
    if figures:
        lines += ["## Figures", "", "`curves.png`: mean ± std over runs of the training loss, the inner "
                  "validation accuracy that selects the epoch, and the test-fold accuracy (shown, never "
                  "used).", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def _pilot_section(pilot):
    if not pilot:
        return []
    best = max(pilot, key=lambda k: pilot[k]["inner_validation_accuracy"] or 0)
    lines = ["## Choosing the training settings (pilot)", "",
             "Before the campaign, settings were compared on a few folds by the accuracy on the inner "
             "validation subjects at the selected epoch, the statistic that may be looked at; the "
             "test-fold accuracy is shown beside it but was not used (`pilot/`, `pilot_curves.png`).", "",
             "| setting | runs (variants; folds) | inner validation, best epoch | test fold, sequence level | selected epoch |",
             "|---|---|---|---|---|"]
    for name, p in pilot.items():
        lines.append(f"| {name} | {p['runs']} ({', '.join(p['variants'])}; {', '.join(str(f + 1) for f in p['folds'])}) | "
                     f"{_pct(p['inner_validation_accuracy'])} | {_pct(p['sequence_accuracy'])} | "
                     f"{p['selected_epoch_mean'] or 0:.1f} |")
    lines += ["", f"Highest inner-validation accuracy: **{best}**.", ""]
    return lines


def _identity_section(data):
    v = data["variants"]
    rows = [(n, r) for n, r in v.items() if r.get("cross_expression_probe_accuracy") is not None
            or r.get("identity_probe_accuracy") is not None]
    if not rows:
        return []
    dataset = next((r["cross_expression_probe_dataset"] for _, r in rows if r.get("cross_expression_probe_dataset")), None)
    lines = ["## How much identity do the features carry?", "",
             "A linear probe predicts the subject from the FC2 features of a face in an expression the "
             "probe never saw for that subject: lower means less identity survives a change of "
             "expression (the paper claims (N+M) training leaves less)."]
    if dataset:
        lines[-1] += (f" On {dataset} (faces no model here trained on, every subject in every expression) "
                      "the probe leaves one expression out at a time (ridge regression on features "
                      "centred per expression).")
    lines[-1] += (" On this dataset's own test folds (CK+: one sequence per subject held out, Keras "
                  "softmax regression) the probe is weak: each sequence is one expression and few "
                  "subjects have several, so values near or below chance mean the features group faces "
                  "by expression more than by person, not that identity is gone.")
    lines += ["",
              "| method | cross-expression probe (chance) | probe on test folds (chance) |", "|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {_pct(r.get('cross_expression_probe_accuracy'))} "
                     f"({_pct(r.get('cross_expression_probe_chance'))}) | {_pct(r.get('identity_probe_accuracy'))} "
                     f"({_pct(r.get('identity_probe_chance'))}) |")
    c = (data["identity"].get("cross_expression_probe") or {}).get("2B(N+M) - softmax")
    if c and c["mean"] is not None:
        verdict = ("less identity than softmax's" if c["ci95"][1] is not None and c["ci95"][1] < 0 else
                   "more identity than softmax's" if c["ci95"][0] is not None and c["ci95"][0] > 0 else
                   "an amount of identity this campaign cannot tell apart from softmax's")
        lines += ["", f"2B(N+M) - softmax on the cross-expression probe: {_pts(c['mean'])} points, 95% CI "
                  f"{_ci(c)} over {c['pairs']} paired runs: our 2B(N+M) features carry {verdict}."]
    lines.append("")
    return lines


def _against_paper(data, pretrain_results, config):
    v, paper = data["variants"], data.get("paper") or {}
    shared = [n for n in paper if n in v and paper[n] is not None and v[n]["sequence_accuracy"] is not None]
    if not shared:
        return []
    lines = ["## Against the paper", "", "| method | ours | paper | ours - paper (points) |", "|---|---|---|---|"]
    for name in shared:
        lines.append(f"| {name} | {_pct(v[name]['sequence_accuracy'])} | {_pct(paper[name])} | "
                     f"{_pts(v[name]['sequence_accuracy'] - paper[name])} |")
    ours = sorted(shared, key=lambda n: -v[n]["sequence_accuracy"])
    theirs = sorted(shared, key=lambda n: -paper[n])
    lines += ["", f"Ordering by mean sequence-level accuracy: ours {' > '.join(ours)}; the paper's "
              f"{' > '.join(theirs)}. Read it with the confidence intervals above: an ordering inside "
              "them is not a finding.", ""]
    bounded = [n for n in v if v[n].get("best_test_epoch_image_accuracy") is not None]
    if bounded:
        lines += ["Is it the choice of epoch? Image-level accuracy at the epoch the inner split chose (this "
                  "report's protocol), at the last epoch, and at the epoch that is best on the test fold "
                  "itself. The last peeks at the test fold, so it is not a result: it bounds what any rule "
                  "for choosing the epoch could reach with these runs.", "",
                  "| method | chosen epoch | last epoch | best epoch on the test fold (peeks) |", "|---|---|---|---|"]
        lines += [f"| {n} | {_pct(v[n]['image_accuracy'])} | {_pct(v[n]['last_epoch_image_accuracy'])} | "
                  f"{_pct(v[n]['best_test_epoch_image_accuracy'])} |" for n in bounded] + [""]
    notes = config.get("evaluation", {}).get("against_paper")
    evidence = []
    fer = (json.loads(pathlib.Path(pretrain_results).read_text())
           if pathlib.Path(pretrain_results).is_file() else None)
    lines += _backbone_table(data.get("backbones") or {}, fer)
    if fer:
        evidence.append(f"the FER2013-pretrained network starts from {100 * fer['private_test_accuracy']:.1f}% "
                        "on FER2013 PrivateTest (`reports/fer2013`); the paper adds a second pretraining "
                        "stage on Multi-PIE, which is not available here")
    for name, o in data["options"].items():
        if o["sequence_accuracy"] is not None:
            c = o["against_default"]
            evidence.append(f"{name} ({o['what'] or o['option']}): {_pct(o['sequence_accuracy'])} over "
                            f"{o['n_runs']} runs"
                            + (f", {_pts(c['mean'])} points against the default over {c['pairs']} paired "
                               f"runs (95% CI {_ci(c)})" if c["pairs"] else ""))
    for name, t in data["tuple_mode"].items():
        base = t.get("in_batch_same_runs") or {}
        evidence.append(f"{name}: {_pct(t['sequence_accuracy'])} over {t['n_runs']} runs"
                        + (f", against {_pct(base.get('sequence_accuracy'))} for {t['variant']} as configured "
                           "on the same folds and seeds" if base else ""))
    if evidence:
        lines += ["What we measured about the gap:", ""] + [f"- {e}" for e in evidence] + [""]
    if notes:
        lines += [notes.strip(), ""]
    return lines


def _backbone_table(backbones, fer):
    """Does the starting point matter? The runs of ``backbone_summary`` beside the same (seed, fold)
    runs from the committed backbone."""
    if not backbones:
        return []
    lines = ["Does the starting point matter? The same protocol and (seed, fold) runs, fine-tuned from "
             "other starting points (`backbones/`, which says how each was made):", "",
             "| starting point | FER2013 PrivateTest | method | sequence-level | runs | against the committed "
             "backbone (points, 95% CI) |", "|---|---|---|---|---|---|"]
    by_variant = {}
    for b in backbones["starts"].values():
        by_variant.setdefault(b["variant"], []).append(b)
    for variant, rows in by_variant.items():  # weakest start first, then the committed backbone
        rows.sort(key=lambda b: b["fer2013_private_test_accuracy"] or 0.0)
        for b in rows:
            c = b["against_committed_backbone"]
            lines.append(f"| {b['what']} | {_pct(b['fer2013_private_test_accuracy'])} | {variant} | "
                         f"{_pct(b['sequence_accuracy'])} | {b['runs']} | "
                         + (f"{_pts(c['mean'])} {_ci(c)} |" if c["pairs"] else "– |"))
        base = backbones["committed_backbone"][variant]
        lines.append(f"| the committed backbone (`pretrained/`) | {_pct(fer and fer.get('private_test_accuracy'))} "
                     f"| {variant} | {_pct(base['sequence_accuracy'])} | {base['runs']} | – |")
    versus = backbones.get("2B(N+M) - softmax") or {}
    if versus:
        what = {b["start"]: b["what"] for b in backbones["starts"].values()}
        lines += ["", "2B(N+M) - softmax from each starting point (paired runs, points, 95% CI): "
                  + "; ".join(f"{what.get(name, 'the committed backbone')}: {_pts(c['mean'])} {_ci(c)}"
                              for name, c in versus.items() if c["pairs"]) + "."]
    return lines + [""]


def _median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None

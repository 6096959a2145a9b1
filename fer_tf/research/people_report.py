"""reports/people/README.md from the results of ``pipelines/people_baseline.py``, and the rule that
picks the baseline defaults from them (:func:`choose_defaults`)."""

from __future__ import annotations

from fer_tf.files import atomic_write_text

DATASETS = ("ckplus48", "kdef", "yale")
#: No condition may lose more than this (accuracy, 0..1) against plain for an option to be a default.
MAX_LOSS = 0.01


def _ok(*comparisons):
    return all(c["difference"] >= -MAX_LOSS for c in comparisons)


def choose_defaults(models):
    """``{"self": name, "neutral": name}`` by a fixed rule:

    - self: only options that cannot erase a person seen in one expression (``evidence=expressions``)
      and need no data (not ``ref=other-datasets``); of those that lose no more than
      :data:`MAX_LOSS` on any model, dataset or skewed run, the one with the largest mean gain
      over the datasets of the model that saw none of their subjects (``backbone``), ordinary and
      skewed runs weighted equally;
    - neutral: of the options that lose no more than :data:`MAX_LOSS` on the expressive or the
      neutral faces of any model, the largest gain on all of the backbone's faces.

    Ties: the first option listed."""
    names = [n for n in models["backbone"]["ckplus48"]["self"]
             if "other-datasets" not in n and "/expressions/" in n]
    scored = []
    for name in names:
        checks = [r[part][name] for m in models.values() for r in m.values() for part in ("self", "skewed")
                  if name in r.get(part, {})]
        if not _ok(*checks):
            continue
        b = models["backbone"]
        gains = [b[d][part][name]["difference"] for d in DATASETS for part in ("self", "skewed")]
        scored.append((sum(gains) / len(gains), name))
    chosen = {"self": max(scored, key=lambda t: t[0])[1] if scored else None}
    neutral = []
    for name, parts in models["backbone"]["yale"]["enrolled_neutral"]["neutral"].items():
        checks = [c for m in models.values() if "yale" in m
                  for c in m["yale"]["enrolled_neutral"]["neutral"][name].values()]
        if _ok(*checks):
            neutral.append((parts["all"]["difference"], name))
    chosen["neutral"] = max(neutral, key=lambda t: t[0])[1] if neutral else None
    return chosen


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}"


def _diff(c):
    lo, hi = c["ci95"]
    ci = "n/a" if lo is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"
    return f"{100 * c['difference']:+.1f} {ci}"


def _row(label, c):
    return (f"| {label} | {c['subjects']} | {c['faces']} | {_pct(c['plain_accuracy'])} | {_pct(c['accuracy'])} | "
            f"{_diff(c)} | {c['faces_gained']} / {c['faces_lost']} |")


HEAD = ("| dataset | subjects | faces | plain % | corrected % | difference, points [95% CI] | faces gained / lost |\n"
        "|---|---|---|---|---|---|---|")


def targets(models, chosen):
    """The issue's targets, checked on the chosen defaults: README lines."""
    lines = ["## Targets (chosen defaults)", ""]
    for model, m in models.items():
        excluding = [d for d in DATASETS if d in m and (m[d]["self"][chosen["self"]]["ci95"][0] or 0) > 0]
        comparisons = [(f"{d} {part}", m[d][part][chosen["self"]]) for d in DATASETS if d in m
                       for part in ("self", "skewed") if m[d][part]]
        if "yale" in m:
            comparisons += [(f"yale neutral {k}", c) for k, c in
                            m["yale"]["enrolled_neutral"]["neutral"][chosen["neutral"]].items()]
        worst_name, worst = min(comparisons, key=lambda t: t[1]["difference"])
        lines.append(f"- `{model}`: self gain with a 95% CI above 0 on {len(excluding)} dataset(s)"
                     f"{' (' + ', '.join(excluding) + ')' if excluding else ''}; worst condition "
                     f"{worst_name}: {100 * worst['difference']:+.1f} points against plain.")
    return lines + [""]


def write_report(results, path):
    """Write the README of ``reports/people/`` from ``results`` (the pipeline's JSON)."""
    models = results["models"]
    chosen = results["defaults"]["chosen"]
    module = results["defaults"]["module"]
    lines = [
        "# A person's own expression baseline",
        "",
        "`fer_tf.people.baseline` corrects each face's expression scores by the person it belongs to:",
        "`self` (the person's own faces in the run) or `neutral` (their enrolled neutral photo). Rule:",
        "`L' = L - w (o - r)` on log-probabilities `L`, with the person's offset `o`, a reference `r` and",
        "an evidence weight `w = e / (e + k)` (module docstring). Raw probabilities are kept beside the",
        "corrected ones. Identities here are the datasets' true subject ids.",
        "",
        f"Produced by `{results['run']['command']}` at commit `{results['run'].get('git_commit')}`.",
        "",
        "## What was measured",
        "- **Models**, each on people it never saw in training: `shipped` (saved_models/fer_tf_basic7.keras)",
        "  on the subjects `make ship` held out (fold 0 of 8, seed 0); `backbone`",
        "  (pretrained/fer2013_backbone.keras, trained on FER2013 only) on every subject of CK+48, KDEF, Yale.",
        "- **Faces**: the experiments' face cache (CK+48 resized, KDEF and Yale detected and aligned by",
        "  `fer_tf.preprocess`); CK+48 without contempt; Yale's happy, normal, sad and surprised photos.",
        "- **Skewed runs**: for each person and each expression they show beside others, their faces of",
        f"  that expression repeated until they are {100 * results['skew_share']:.0f}% of the run (like the "
        "frames of a video), plus all their other faces; each such run is corrected on its own.",
        "- **Enrolled neutral** (Yale, the only set here with neutral photos): each subject's `normal`",
        "  photo enrolled; scored on their happy, sad and surprised photos (`expressive`) and on their",
        "  `noglasses`, `glasses` and `centerlight` photos, neutral faces under other conditions (`neutral`).",
        f"- **Statistics**: accuracy difference to plain on the same faces, 95% CI from a paired bootstrap "
        f"over subjects ({results['bootstrap_samples']} samples, `fer_tf.research.stats.subject_bootstrap`).",
        "",
        "## Defaults",
        "Rule (`fer_tf.research.people_report.choose_defaults`): self options must count evidence in",
        "distinct expressions (so a person seen in one expression is never corrected) and may lose no more than",
        f"{100 * MAX_LOSS:.0f} point on any model, dataset or skewed run; of those, the largest mean gain over the",
        "backbone's datasets, ordinary and skewed runs weighted equally. Neutral: no more than 1 point lost on",
        "expressive or neutral faces; then the largest gain on all faces. Chosen on these same data (no",
        "separate selection set: the sets are small), so the chosen option's gain is optimistic.",
        "",
        f"- self: `{chosen['self']}` (module default: `{module['self']}`)",
        f"- neutral: `{chosen['neutral']}` (module default: `{module['neutral']}`)",
        "",
    ]
    lines += targets(models, chosen)
    for model, label in (("backbone", "FER2013 backbone, every subject"),
                         ("shipped", "shipped model, its held-out subjects")):
        if model not in models:
            continue
        m = models[model]
        lines += [f"## {label}", "", f"### plain vs self (`{chosen['self']}`)", "", HEAD]
        lines += [_row(d, m[d]["self"][chosen["self"]]) for d in DATASETS if d in m]
        lines += ["", f"### skewed runs ({100 * results['skew_share']:.0f}% one expression), plain vs self", "", HEAD]
        lines += [_row(d, m[d]["skewed"][chosen["self"]]) for d in DATASETS if d in m and m[d]["skewed"]]
        if "yale" in m:
            e = m["yale"]["enrolled_neutral"]
            lines += ["", "### Yale: plain vs enrolled neutral vs self", "",
                      HEAD.replace("| dataset |", "| condition: faces |")]
            for cond, parts in ((f"neutral `{chosen['neutral']}`", e["neutral"][chosen["neutral"]]),
                                ("neutral, no reference, k=0 (`logits/k=0/ref=none`)", e["neutral"]["logits/k=0/ref=none"]),
                                ("self (module defaults)", e["self_defaults"])):
                lines += [_row(f"{cond}: {part}", parts[part]) for part in ("all", "expressive", "neutral")]
        lines += [""]
    lines += ["## Every option of the self baseline (backbone)", "",
              "Difference to plain in points [95% CI]; `skewed` on the skewed runs. `ref=other-datasets`: a",
              "reference fixed in advance from the other two datasets' faces.", "",
              "| option | " + " | ".join(f"{d} | {d} skewed" for d in DATASETS) + " |",
              "|---|" + "---|" * (2 * len(DATASETS))]
    b = models["backbone"]
    for name in b["ckplus48"]["self"]:
        cells = []
        for d in DATASETS:
            cells += [_diff(b[d]["self"][name]), _diff(b[d]["skewed"][name]) if b[d]["skewed"] else "n/a"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "## Every option of the enrolled neutral baseline (backbone, Yale)", "",
              "| option | all | expressive | neutral |", "|---|---|---|---|"]
    for name, parts in b["yale"]["enrolled_neutral"]["neutral"].items():
        lines.append(f"| `{name}` | " + " | ".join(_diff(parts[p]) for p in ("all", "expressive", "neutral")) + " |")
    lines += ["", "All numbers: `results.json` beside this file.", ""]
    atomic_write_text(path, "\n".join(lines))

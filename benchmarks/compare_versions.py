"""`make bench` of two commits side by side: did a change make TensorFlow training slower?

    .venv/bin/python benchmarks/compare_versions.py --before 0f5dc82 [--after HEAD]
        [--sections training,loss] [--rounds 2] [--output reports/bench/versions]

Each commit is checked out into a temporary clone (sharing this checkout's ``.venv`` and datasets,
with a face cache of its own) and its own ``benchmarks/run.py --sections ...`` runs there; the rounds alternate
(before, after, before, after, ...) so that a change in the machine's load hits both alike. The
best (lowest) time of the rounds is compared. Writes ``<output>/results.json`` (every round's raw
figures) and ``<output>/README.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import paired_steps  # noqa: E402 (after the path set-up above)
from benchmarks.graph_ops import LOSS_X  # noqa: E402


def _git(*args, cwd=REPO):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(ref, where):
    """A clone of this repository at ``ref`` in ``where``, with this checkout's .venv."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(where)], check=True)
    subprocess.run(["git", "checkout", "-q", ref], cwd=where, check=True)
    (where / ".venv").symlink_to(REPO / ".venv")  # its own face cache: the format may differ
    return where


def _datasets():
    return os.environ.get("FER_TF_DATASETS") or str((REPO.parent / "shared" / "datasets").resolve())


def _run_in(clone, script, *args):
    """This checkout's Python running ``script`` in ``clone``, with the clone's code first on the
    path and the shared datasets (``FER_TF_DATASETS``, else ``../shared/datasets``)."""
    env = {**os.environ, "PYTHONPATH": str(clone), "FER_TF_DATASETS": _datasets()}
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), str(script), *map(str, args)],
                   cwd=clone, env=env, check=True)


def bench(clone, sections, output):
    _run_in(clone, "benchmarks/run.py", "--sections", sections, "--output", output)
    return json.loads((output / "results.json").read_text())


def graph_ops(clone, output):
    """This checkout's ``benchmarks/graph_ops.py`` run against the clone's code (see its docstring)."""
    _run_in(clone, REPO / "benchmarks" / "graph_ops.py", "--output", output)
    return json.loads(output.read_text())


def op_rows(counts, loss_x):
    """``[(figure, before, after)]`` operation counts of the training steps and the loss steps;
    ``counts``: ``{"before"|"after": {"training"|"loss": {name: operations}}}``."""
    rows = []
    for section in ("training", "loss"):
        before, after = counts["before"].get(section) or {}, counts["after"].get(section) or {}
        for name in after:
            if name in before:
                label = f"training step, {name}" if section == "training" else f"loss {name}, X={loss_x}"
                rows.append((label, before[name], after[name]))
    return rows


def paired_verdict(pairs):
    """One sentence: which figures' intervals lie wholly above or below 1."""
    slower = [f for f, p in pairs.items() if p["ci95"][0] > 1]
    faster = [f for f, p in pairs.items() if p["ci95"][1] < 1]
    same = [f for f in pairs if f not in slower and f not in faster]
    parts = []
    if slower:
        parts.append("slower after: " + ", ".join(f"{f} ({pairs[f]['ratio']:.2f}x)" for f in slower))
    if faster:
        parts.append("faster after: " + ", ".join(f"{f} ({pairs[f]['ratio']:.2f}x)" for f in faster))
    if same:
        parts.append("no measured change: " + ", ".join(same))
    return "; ".join(parts) + "."


def spread(results):
    """``{figure: max / min}`` over the rounds of one commit: the timing noise of this machine."""
    values = {}
    for r in results:
        for name, seconds in figures(r).items():
            values.setdefault(name, []).append(seconds)
    return {n: max(v) / min(v) for n, v in values.items() if len(v) > 1 and min(v) > 0}


def figures(result):
    """``{name: (seconds, what)}``: the training step times and loss step times of one run."""
    out = {}
    for mode, r in (result.get("training") or {}).items():
        if isinstance(r, dict) and "step_s" in r:
            out[f"training step, {mode} ({r['images_per_step']} images)"] = r["step_s"]["median"]
            if "step_with_pipeline_s" in r:
                out[f"training step with input pipeline, {mode}"] = r["step_with_pipeline_s"]["median"]
    for loss, by_x in ((result.get("loss") or {}).get("ms_per_step") or {}).items():
        for x, r in by_x.items():
            if isinstance(r, dict) and "median" in r:
                out[f"loss {loss}, X={x}"] = r["median"] / 1000.0
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="commit (or ref) before the change")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--sections", default="training,loss")
    parser.add_argument("--rounds", type=int, default=2, help="alternating bench runs per commit (0: none)")
    parser.add_argument("--pairs", type=int, default=20,
                        help="paired timings of the training and loss steps (benchmarks/paired_steps.py; "
                             "0: none)")
    parser.add_argument("--output", default=str(REPO / "reports" / "bench" / "versions"))
    parser.add_argument("--readme-only", action="store_true",
                        help="rebuild README.md from the results.json in --output, measuring nothing")
    args = parser.parse_args(argv)
    from fer_tf.research import reporting

    if args.readme_only:
        write_readme(pathlib.Path(args.output), json.loads((pathlib.Path(args.output) / "results.json").read_text()))
        return

    refs = {"before": _git("rev-parse", args.before), "after": _git("rev-parse", args.after)}
    output = pathlib.Path(args.output)
    if output.exists() and any(output.iterdir()) and not (output / "results.json").is_file():
        raise SystemExit(f"error: {output} holds files that this command did not write; choose another --output")
    runs = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        clones = {k: checkout(ref, tmp / k) for k, ref in refs.items()}
        for i in range(args.rounds):
            for k in ("before", "after"):
                print(f"round {i + 1}/{args.rounds}: {k} ({refs[k][:12]})", file=sys.stderr, flush=True)
                runs[k].append(bench(clones[k], args.sections, tmp / f"{k}-{i}"))
        ops = {k: graph_ops(clones[k], tmp / f"{k}-ops.json") for k in clones}
        pairs = {}
        if args.pairs:
            print(f"paired timing: {args.pairs} pairs", file=sys.stderr, flush=True)
            pairs = paired_steps.paired(clones, REPO / ".venv" / "bin" / "python", _datasets(),
                                        {k: c / "runs" / "cache" for k, c in clones.items()}, args.pairs,
                                        log=lambda m: print(m, file=sys.stderr, flush=True))
    best = {k: {} for k in runs}
    for k, results in runs.items():
        for r in results:
            for name, seconds in figures(r).items():
                best[k][name] = min(seconds, best[k].get(name, float("inf")))
    noise = {k: spread(v) for k, v in runs.items()}
    data = {"refs": refs, "sections": args.sections, "rounds": args.rounds, "best_seconds": best,
            "round_spread": noise, "paired": pairs, "loss_x": LOSS_X,
            "graph_operations": {k: {s: {n: r["operations"] for n, r in (v.get(s) or {}).items()}
                                     for s in ("training", "loss")} for k, v in ops.items()},
            "rounds_raw": {k: [{"training": r.get("training"), "loss": r.get("loss"),
                                "load_average": [r.get("load_average_start"), r.get("load_average_end")]}
                               for r in v] for k, v in runs.items()},
            "run": reporting.run_info()}
    reporting.write_json(output / "results.json", data)
    write_readme(output, data)


def write_readme(output, data):
    """``output/README.md`` from the ``results.json`` data alone."""
    refs, rounds, pairs = data["refs"], data["rounds"], data.get("paired") or {}
    best, noise = data["best_seconds"], data["round_spread"]
    rows = [(n, best["before"][n], best["after"][n]) for n in best["after"] if n in best["before"]]
    loads = {k: ", ".join(f"{((r.get('load_average') or [None])[0] or [float('nan')])[0]:.1f}" for r in v)
             for k, v in data["rounds_raw"].items()}
    run = data["run"]
    lines = ["# TensorFlow speed before and after a change (`benchmarks/compare_versions.py`)", "",
             f"- Command: `{run['command']}`", f"- Date: {run['date']}",
             f"- Before: `{refs['before']}`; after: `{refs['after']}`",
             f"- Machine: {run['machine']['cpu']} ({run['machine']['cores']} cores)"
             + (f"; {rounds} alternating round(s) per commit, best of the rounds; 1-minute load average "
                f"at the start of each round: before {loads['before']}, after {loads['after']} (2 cores: a "
                "load above 2 means other work shared the CPU)" if rounds else ""), "",
             "## Work per step: operations in the traced TensorFlow graphs", "",
             "Counted by `benchmarks/graph_ops.py` in each commit's clone (the training step of the "
             "bench's 2B(N+M) model with its gradient and optimizer update; each loss with its gradient). "
             "Unlike a time, a count does not depend on the machine's load.", "",
             "| graph | before | after | after / before |", "|---|---|---|---|"]
    for name, b, a in op_rows(data["graph_operations"], data.get("loss_x", LOSS_X)):
        lines.append(f"| {name} | {b} | {a} | {a / b:.3f} |")
    if pairs:
        lines += ["", "## Paired timing", "",
                  "Both commits loaded at once, in a worker process each, timed in turn (random order per "
                  "pair; training steps on a cached batch, loss steps with their gradient on "
                  f"X = {LOSS_X} embeddings): the two timings of a pair are seconds apart, so a change "
                  "in the machine's load hits both alike (`benchmarks/paired_steps.py`). Ratio: geometric "
                  "mean of after / before over the pairs, with a bootstrap 95% interval; an interval "
                  "that contains 1 is no measured change.", "",
                  "| figure | pairs | calls per timing | before (median) | after (median) | after / before "
                  "| 95% interval |", "|---|---|---|---|---|---|---|"]
        for figure, p in pairs.items():
            lo, hi = p["ci95"]
            name = f"training step, {figure}" if not figure.startswith("loss ") else figure
            lines.append(f"| {name} | {p['pairs']} | {p['calls_per_timing']} | {1000 * p['before_s']:.2f} ms | "
                         f"{1000 * p['after_s']:.2f} ms | {p['ratio']:.3f} | {lo:.3f}-{hi:.3f} |")
        lines += ["", "In short, " + paired_verdict(pairs)]
    if rows:
        lines += ["", "## Time per step", "",
                  "Best of the rounds. `spread` is the largest over the smallest time of the same figure "
                  "across the rounds of one commit (before / after): how much this machine's timing moves "
                  "with no change of code.", "",
                  "| figure | before | after | after / before | spread before / after |", "|---|---|---|---|---|"]
        for name, b, a in rows:
            sb, sa = noise["before"].get(name), noise["after"].get(name)
            sp = f"{sb:.2f} / {sa:.2f}" if sb and sa else ""
            lines.append(f"| {name} | {1000 * b:.2f} ms | {1000 * a:.2f} ms | {a / b:.2f} | {sp} |")
        ratios = [a / b for _, b, a in rows if b > 0]
        if ratios:
            import statistics

            lines += ["", f"Median ratio after / before over the {len(ratios)} figures: "
                      f"{statistics.median(ratios):.2f} (below 1: faster after)."]
            spreads = [v for k in noise for v in noise[k].values()]
            if spreads:
                lines.append(f"Median round-to-round spread of one commit's figures: "
                             f"{statistics.median(spreads):.2f}; a ratio within it is not a measured change.")
    (output / "README.md").write_text("\n".join(lines) + "\n")
    print(f"written {output / 'README.md'}")


if __name__ == "__main__":
    main()

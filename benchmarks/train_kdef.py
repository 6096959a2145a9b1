"""`make bench-train`: how long `fer-tf train --from backbone` takes on the KDEF subset, and the
held-out accuracy it reaches (the issue's target: at most 3 minutes, at least 90%).

    python benchmarks/train_kdef.py [--data ../shared/datasets/kdef-subset] [--out runs/bench-train]
        [--report reports/train]

Runs the command once (as a user would, in a subprocess; the face cache is used when it is there,
and the report says whether it was), and writes REPORT/kdef.json and REPORT/README.md with the
wall time, the CPU time, the load average of the machine before and after (another job on the same
cores slows the run: the report says so), the time per step (alignment, training, export) and the
held-out accuracy from the run's results.json.
"""

import argparse
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_SECONDS, TARGET_ACCURACY = 180, 0.90


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "kdef-subset"))
    parser.add_argument("--out", default="runs/bench-train/kdef")
    parser.add_argument("--report", default="reports/train")
    args = parser.parse_args()

    from fer_tf.files import atomic_write_text
    from fer_tf.preprocess.prepared import DEFAULT_CACHE, cache_name, is_face_cache

    cached = is_face_cache(DEFAULT_CACHE / cache_name(args.data, "kdef"))
    command = ["fer-tf", "train", args.data, "-o", args.out, "--from", "backbone", "--overwrite", "-q"]
    load_before = os.getloadavg()
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "fer_tf.cli", *command[1:]], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.time() - started
    load_after = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"fer-tf train failed (exit code {proc.returncode})")
    results = json.loads((REPO / args.out / "results.json").read_text())
    accuracy = results["evaluation"]["accuracy"]
    cpu = usage.ru_utime + usage.ru_stime
    report = {
        "command": " ".join(shlex.quote(c) for c in command),
        "benchmark_command": os.environ.get("FER_TF_MAKE_COMMAND") or "python benchmarks/train_kdef.py",
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "cores": os.cpu_count(),
        "cpu_share": round(cpu / wall / (os.cpu_count() or 1), 3),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "face_cache_was_warm": cached,
        "steps_seconds": results["seconds"],
        "held_out_accuracy": accuracy,
        "held_out_images": results["evaluation"]["images"],
        "held_out_subjects": results["split"]["test_subjects"],
        "recall": results["evaluation"]["recall"],
        "epochs": results["config"]["train"]["epochs"],
        "targets": {"wall_seconds": TARGET_SECONDS, "accuracy": TARGET_ACCURACY},
        "meets": {"time": wall <= TARGET_SECONDS, "accuracy": accuracy >= TARGET_ACCURACY},
        "git_commit": results["git_commit"], "date": results["date"], "machine": results["machine"],
    }
    folder = REPO / args.report
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "kdef.json", json.dumps(report, indent=2) + "\n")
    text = readme(report) + tuning_section(folder / "tuning.json")
    atomic_write_text(folder / "README.md", text)
    print(text)


def readme(r):
    busy = r["load_average_before"][0] > (r["cores"] or 1)
    return "\n".join([
        "# `fer-tf train` on the KDEF subset", "",
        "Produced by `" + r["benchmark_command"] + "`, which ran once:", "",
        "```", r["command"], "```", "",
        f"Commit `{r['git_commit']}`, {r['date']}, {r['machine'].get('cpu')} ({r['cores']} cores).", "",
        "| | measured | target |", "|---|---|---|",
        f"| wall time | {r['wall_seconds']:.0f} s | <= {r['targets']['wall_seconds']} s |",
        f"| held-out accuracy | {r['held_out_accuracy']:.1%} ({r['held_out_images']} images of "
        f"{r['held_out_subjects']} subjects) | >= {r['targets']['accuracy']:.0%} |", "",
        f"Steps: alignment {r['steps_seconds'].get('align', 0):.0f} s (face cache "
        f"{'warm' if r['face_cache_was_warm'] else 'cold'}), training {r['steps_seconds'].get('train', 0):.0f} s "
        f"({r['epochs']} epochs), export {r['steps_seconds'].get('export', 0):.0f} s. CPU time "
        f"{r['cpu_seconds']:.0f} s, i.e. {r['cpu_share']:.0%} of the {r['cores']} cores over the wall time; "
        f"load average {r['load_average_before'][0]:.1f} before and {r['load_average_after'][0]:.1f} after"
        + (" (other jobs shared the cores: the wall time overstates what the command needs on an idle "
           "machine)." if busy else "."), "",
        "Held-out recall: " + ", ".join(f"{k} {v:.1%}" for k, v in r["recall"].items()) + ".", ""])


def tuning_section(path):
    """How the training defaults were chosen (benchmarks/train_kdef_tuning.py's report), or ""."""
    if not pathlib.Path(path).is_file():
        return ""
    t = json.loads(pathlib.Path(path).read_text())
    lines = ["## How the defaults were chosen", "",
             f"`python benchmarks/train_kdef_tuning.py`: {t['inner_folds']}-fold subject-disjoint "
             f"cross-validation on the {t['inner_subjects']} training subjects ({t['inner_images']} "
             f"images) of the split above; its {len(t['outer_held_out_subjects'])} held-out subjects "
             "never enter it. Each setting overrides `fer-tf train`'s defaults "
             "(`fer_tf.research.own_data.TRAIN_DEFAULTS`):", "",
             f"| setting | inner accuracy | correct | training time ({t['inner_folds']} folds, shared cores) "
             "| commit |", "|---|---|---|---|---|"]
    chosen = (t.get("chosen") or {}).get("settings")
    for row in t["settings"]:
        settings = row.get("settings") or {"learning_rate": row["learning_rate"], "epochs": row["epochs"]}
        name = ", ".join(f"{k} {v}" for k, v in settings.items())
        mark = " (**chosen**)" if settings == chosen else ""
        lines.append(f"| {name}{mark} | {row['inner_accuracy']:.1%} | {row['inner_correct']} of "
                     f"{row['inner_images']} | {row['train_seconds']:.0f} s | "
                     f"{'`' + row['commit'][:7] + '`' if row.get('commit') else 'not recorded'} |")
    if chosen:
        lines += ["", f"Rule: {t['chosen']['rule']}."]
    rechecked = [row for row in t["settings"] if row.get("recheck")]
    if any(not row.get("commit") for row in t["settings"]):
        lines += ["", "Rows without a commit were trained before the script recorded one (and "
                  "before it was committed, on the fer_tf code it then ran on); "
                  + (", ".join(f"the first, trained again at `{row['recheck']['commit'][:7]}` "
                               f"(`--recheck`), gave {'the same' if row['recheck']['same'] else 'other'} "
                               "fold accuracies" for row in rechecked[:1]) or "none was trained again")
                  + "."]
    return "\n".join(["", *lines, ""])


if __name__ == "__main__":
    main()

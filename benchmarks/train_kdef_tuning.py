"""How `fer-tf train` chooses its default epochs and learning rate without looking at the held-out
subjects: inner subject-disjoint cross-validation on the *training* subjects of `make bench-train`'s
split (the KDEF subset, ``--from backbone``, seed 0). The grid (:data:`GRID`): learning rate and
epochs, then augmentation and frozen batch-norm statistics.

    python benchmarks/train_kdef_tuning.py [--data ../shared/datasets/kdef-subset] [--folds 4]
        [--report reports/train/tuning.json]

The held-out subjects of `fer-tf train`'s default split are removed first (the same
:func:`fer_tf.research.own_data.subject_split`), the remaining subjects are cut into ``--folds``
subject-disjoint folds, and every setting of the grid is fine-tuned on each fold's training side and
scored on its held-out side. The report lists, per setting, the pooled inner accuracy, the fold
accuracies, the training seconds and the commit that trained it (``--recheck N`` trains the first
N rows again and records whether the current commit gives the same fold accuracies). The chosen
setting is the most accurate one, ties (within one inner image) going to the cheaper one.
Rerunning skips settings already in the report.
"""

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The settings tried, each a set of overrides of TRAIN_DEFAULTS: the learning rate and epochs,
#: then, at the defaults' rate and length, the pretraining's augmentation (rotation, zoom, shift)
#: and batch norm kept at its FER2013 statistics.
AUGMENT = {"rotation": 10.0, "scale": 0.1, "translation": 2.0}
GRID = [{"learning_rate": lr, "epochs": e}
        for lr, e in [(5e-4, 15), (1e-3, 10), (1e-3, 15), (2e-3, 10), (2e-3, 15), (5e-4, 25), (1e-3, 25)]]
GRID += [{"learning_rate": 5e-4, "epochs": 15, **AUGMENT},
         {"learning_rate": 5e-4, "epochs": 15, "freeze_batch_norm": True},
         {"learning_rate": 5e-4, "epochs": 15, "freeze_batch_norm": True, **AUGMENT}]


def settings_of(row):
    """A report row's overrides (rows of an earlier version hold only the rate and epochs)."""
    return row.get("settings") or {"learning_rate": row["learning_rate"], "epochs": row["epochs"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "kdef-subset"))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default="reports/train/tuning.json")
    parser.add_argument("--recheck", type=int, default=0, metavar="N",
                        help="train the first N settings already in the report again and record "
                             "whether this commit gives the same inner predictions")
    args = parser.parse_args()

    import numpy as np
    from fer_tf.files import atomic_write_text
    from fer_tf.research import own_data
    from fer_tf.research.reporting import git_commit

    table, _ = own_data.load_faces(args.data)
    table, labels = own_data.choose_labels(table)
    train_rows, test_rows = own_data.subject_split(table, None, args.seed)
    inner = table.take(train_rows)
    faces = inner.pixels
    plan = own_data.folds(inner, args.folds, args.seed)
    start = own_data.starting_model("backbone")
    path = REPO / args.report
    report = json.loads(path.read_text()) if path.exists() else {"settings": []}
    report.update(data=args.data, start="backbone", seed=args.seed, inner_folds=args.folds,
                  inner_subjects=int(len(np.unique(inner.subject.astype(str)))),
                  inner_images=int(len(inner)),
                  outer_held_out_subjects=sorted(np.unique(table.subject[test_rows].astype(str)).tolist()))
    commit = git_commit(REPO)

    def cross_validate(settings):
        model_cfg, train_cfg = own_data.configs("2B(N+M)", labels, seed=args.seed, **settings)
        started, confusion, accs, seconds = time.time(), 0, [], 0.0
        for tr, te in plan:
            run = own_data.fine_tune(inner, faces, tr, te, labels, start, model_cfg=model_cfg,
                                     train_cfg=train_cfg, verbose=0)
            confusion = confusion + np.asarray(run["evaluation"]["confusion"])
            accs.append(run["evaluation"]["accuracy"])
            seconds += run["train_seconds"]
        return {"settings": settings, "learning_rate": settings["learning_rate"], "epochs": settings["epochs"],
                "inner_accuracy": float(np.trace(confusion) / confusion.sum()),
                "inner_correct": int(np.trace(confusion)), "inner_images": int(confusion.sum()),
                "confusion": confusion.tolist(), "fold_accuracies": accs,
                "train_seconds": round(seconds, 1), "wall_seconds": round(time.time() - started, 1),
                "commit": commit}

    for row in report["settings"][:args.recheck]:
        again = cross_validate(settings_of(row))
        row["recheck"] = {"commit": commit, "inner_correct": again["inner_correct"],
                          "fold_accuracies": again["fold_accuracies"],
                          "same": again["fold_accuracies"] == row["fold_accuracies"]}
        print("recheck:", json.dumps(row["recheck"]), flush=True)
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    done = [settings_of(row) for row in report["settings"]]
    for settings in GRID:
        if settings in done:
            continue
        row = cross_validate(settings)
        print(json.dumps(row), flush=True)
        report["settings"].append(row)
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    rows = [row for row in report["settings"] if settings_of(row) in GRID]
    best = max(rows, key=lambda s: (s["inner_correct"], -s["epochs"]))
    close = [s for s in rows if s["inner_correct"] >= best["inner_correct"] - 1]
    chosen = min(close, key=lambda s: (s["epochs"], len(settings_of(s)), -s["inner_correct"]))
    report["chosen"] = {"settings": settings_of(chosen),
                        "rule": "most inner-correct; within one image, the fewest epochs, then the "
                                "fewest changes to the defaults"}
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    print("chosen:", report["chosen"])


if __name__ == "__main__":
    main()

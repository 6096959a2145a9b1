"""The pretraining ablation of reports/fer2013: each row of configs/pretrain-ablation.yaml at an equal budget.

    python pipelines/ablate_pretrain.py [--rows paper,cosine] [--results reports/fer2013/ablation]

A campaign: each finished row writes `<results>/<row>.json` (accuracies, epochs, seconds, config,
provenance, history) and is skipped when the command runs again, on this machine or another; a
row interrupted mid-way resumes from its checkpoint in runs/ablation/<row>. Rows run one after
another here; pipelines/device/run.sh runs them side by side on a GPU. The FER2013 report
(`python pipelines/report_fer2013.py`) turns the row files into its ablation table.
"""

import argparse
import json
import pathlib

from _common import DATASETS, REPO, load_configs, run


def ablation_rows(path=REPO / "configs" / "pretrain-ablation.yaml"):
    """``(budget_epochs, [{"name", "what", "config", "set"}])`` from the ablation config."""
    from fer_tf.config import load_yaml
    from fer_tf.errors import ConfigError

    data = load_yaml(path)
    rows = data.get("rows") or []
    names = [r.get("name") for r in rows]
    if not rows or len(set(names)) != len(names) or None in names:
        raise ConfigError(f"{path}: needs `rows`, each with a unique `name`")
    return int(data.get("budget_epochs", 30)), rows


def settings_of(row):
    """A row's ``set`` mapping as load_configs settings: {"train": {...}, "model": {...}}."""
    out = {}
    for key, value in (row.get("set") or {}).items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def run_row(row, budget, data, results_dir, work_dir, time_limit=None, max_train_images=None):
    from fer_tf.research.experiments import pretrain

    settings = settings_of(row)
    if time_limit is not None:
        settings.setdefault("train", {})["time_limit_minutes"] = time_limit
    model_cfg, train_cfg, _ = load_configs(REPO / row["config"], settings, epochs=budget)
    results = pretrain(data, model_cfg, train_cfg, output=work_dir / row["name"],
                       report_dir=work_dir / row["name"] / "report", resume=True,
                       max_train_images=max_train_images)
    summary = {"row": row["name"], "what": row["what"], "against": row.get("against"), "config": row["config"], "set": row.get("set") or {},
               "budget_epochs": budget, "epochs_run": len(results["history"]),
               "train_seconds": round(sum(r.get("epoch_seconds", 0) for r in results["history"]), 1),
               **{k: v for k, v in results.items() if k not in ("labels",)}}
    path = pathlib.Path(results_dir) / f"{row['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=REPO / "configs" / "pretrain-ablation.yaml")
    parser.add_argument("--rows", help="comma-separated row names (default: every unfinished row)")
    parser.add_argument("--data", default=DATASETS / "fer2013")
    parser.add_argument("--results", default=REPO / "reports" / "fer2013" / "ablation")
    parser.add_argument("--work", default=REPO / "runs" / "ablation")
    parser.add_argument("--time-limit", type=float, help="minutes of training per row at most")
    parser.add_argument("--budget-epochs", type=int, help="override the config's budget (smoke tests)")
    parser.add_argument("--max-train-images", type=int, help="train on a random subset (smoke tests)")
    args = parser.parse_args()
    budget, rows = ablation_rows(args.config)
    budget = args.budget_epochs or budget
    wanted = set(args.rows.split(",")) if args.rows else None
    if wanted and wanted - {r["name"] for r in rows}:
        from fer_tf.errors import ConfigError

        raise ConfigError(f"unknown row(s) {', '.join(sorted(wanted - {r['name'] for r in rows}))}; "
                          f"rows are {', '.join(r['name'] for r in rows)}")
    for row in rows:
        done = pathlib.Path(args.results) / f"{row['name']}.json"
        if (wanted and row["name"] not in wanted) or (not wanted and done.is_file()):
            continue
        summary = run_row(row, budget, args.data, args.results, pathlib.Path(args.work), args.time_limit,
                          args.max_train_images)
        print(f"{row['name']}: PrivateTest {summary['private_test_accuracy']}, {summary['epochs_run']} "
              f"epochs, {summary['train_seconds']} s")


if __name__ == "__main__":
    run(main)

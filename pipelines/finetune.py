"""`make finetune DATASET=...`: the paper's variants in subject-independent cross-validation, as a
resumable campaign; `make evaluate DATASET=...` rebuilds the report from the committed run files.

    python pipelines/finetune.py --dataset ckplus48 [--config configs/finetune/ckplus48.yaml]
        [--variants 2B(N+M),softmax] [--seeds 0,1] [--folds 0,1] [--parts main,options,tuple]
        [--time-limit MINUTES] [--max-runs N] [--report-only]

Every (variant, option, seed, fold, mode) of the config's plan (fer_tf.research.crossval.plan) is trained
from the FER2013-pretrained weights and summarised in reports/<dataset>/runs/<group>/seed<s>-fold<k>.json
(commit these: a new session, on any machine, continues with the runs that are missing). The report
(results.json, README.md, figures in reports/<dataset>/) is rebuilt from those files every time.

With --runs DIR the run files go to DIR instead (a pilot of training settings, or a study of other
starting points such as reports/ckplus48/backbones/<name>, which the dataset's report summarises);
no report is built from them unless --report says where.
"""

import argparse
import hashlib
import pathlib
import shlex
import sys

from _common import DATASETS, REPO, load_configs, parse_settings, run

DEFAULT_PRETRAINED = REPO / "pretrained" / "fer2013_backbone.keras"
FOLDERS = {"ckplus48": "ckplus48", "kdef-subset": "kdef-subset", "yale": "yalefaces"}


def _list(text, cast=str):
    return [cast(x) for x in text.split(",")] if text else None


def _shard(text):
    if not text:
        return None
    from fer_tf.errors import ConfigError

    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: write I/K, e.g. --shard 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: I must be in 0..K-1")
    return index, count


def _command(args):
    """What a run file records as its command: `make finetune`, or the actual command line when
    its flags change what the runs compute or where they go (a pilot, a study of starting points)."""
    changes = (args.config, args.data, args.runs, args.set, args.epochs, args.no_pretrained,
               pathlib.Path(args.pretrained).resolve() != DEFAULT_PRETRAINED.resolve())
    if not any(changes):
        return f"make finetune DATASET={args.dataset}"
    return " ".join(shlex.quote(a) for a in ["python", "pipelines/finetune.py", *sys.argv[1:]])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ckplus48", help="name of a config in configs/finetune/")
    parser.add_argument("--config", help="defaults to configs/finetune/<dataset>.yaml")
    parser.add_argument("--data", help="dataset folder (default ../shared/datasets/<dataset>)")
    parser.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                        help="weights to start from (default: the committed FER2013 backbone)")
    parser.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    parser.add_argument("--runs", help="per-run result files (default reports/<dataset>/runs)")
    parser.add_argument("--report", help="default reports/<dataset>; with --runs, no report unless given")
    parser.add_argument("--work", help="checkpoints of unfinished runs (default runs/finetune/<dataset>; "
                        "with --runs, a folder of that runs folder's own beside it)")
    parser.add_argument("--variants", help="comma-separated subset of the config's variants")
    parser.add_argument("--seeds", help="comma-separated subset of the seeds")
    parser.add_argument("--folds", help="comma-separated fold numbers (0-based)")
    parser.add_argument("--parts", help="comma-separated subset of main,options,tuple")
    parser.add_argument("--epochs", type=int, help="override train.epochs (a different protocol)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set train.freeze_batch_norm=true")
    parser.add_argument("--time-limit", type=float, help="start no new run after this many minutes")
    parser.add_argument("--max-runs", type=int, help="train at most this many runs, then stop")
    parser.add_argument("--shard", help="I/K: train only every K-th missing run from the I-th (0-based), "
                        "so that K processes share a campaign (pipelines/device/finetune.sh)")
    parser.add_argument("--no-probe", action="store_true", help="skip the cross-expression identity probe")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rebuild the report")
    args = parser.parse_args()
    config_path = pathlib.Path(args.config or REPO / "configs" / "finetune" / f"{args.dataset}.yaml")
    model_cfg, train_cfg, data = load_configs(config_path, parse_settings(args.set), epochs=args.epochs)
    dataset, ev = data.get("data", {}), data.get("evaluation", {})
    if "tuple_mode_fold" in dataset and "tuple_mode" not in ev:  # older configs
        ev["tuple_mode"] = {"folds": [dataset["tuple_mode_fold"]]}
    root = pathlib.Path(args.data) if args.data else DATASETS / FOLDERS.get(args.dataset, args.dataset)
    runs_dir = pathlib.Path(args.runs) if args.runs else REPO / "reports" / args.dataset / "runs"
    # with --runs elsewhere (a pilot, a study), the dataset's report is not rebuilt from those runs
    # unless --report says where, and unfinished runs keep their checkpoints apart from the campaign's
    report = (pathlib.Path(args.report) if args.report else
              None if args.runs else REPO / "reports" / args.dataset)
    work = pathlib.Path(args.work) if args.work else REPO / "runs" / "finetune" / (
        args.dataset if not args.runs else
        f"{args.dataset}-{runs_dir.name}-{hashlib.sha1(str(runs_dir.resolve()).encode()).hexdigest()[:8]}")
    pretrained = None if args.no_pretrained else pathlib.Path(args.pretrained)
    from fer_tf.errors import ConfigError

    if pretrained is not None and not pretrained.is_file():
        raise ConfigError(f"pretrained weights not found at {pretrained}: run `make pretrain` first, "
                          "or pass --no-pretrained to train from scratch")
    from fer_tf.research import crossval
    from fer_tf.research import finetune_report

    folds = dataset.get("folds", 8)
    n_folds = folds if isinstance(folds, int) and folds > 0 else None
    full_plan = crossval.plan(ev, n_folds or 0)
    if n_folds is None:
        raise ConfigError(f"{config_path}: data.folds must be a number of folds for a campaign")
    unknown = set(_list(args.variants) or []) - {r.variant for r in full_plan}
    if unknown:
        raise ConfigError(f"variant(s) {', '.join(sorted(unknown))} are not in {config_path}")
    digest = crossval.file_digest(pretrained)
    current = crossval.current_protocols(full_plan, model_cfg, train_cfg, digest, dataset)
    command = f"make evaluate DATASET={args.dataset}" if args.dataset in FOLDERS else None
    if not args.report_only:
        wanted = crossval.plan(ev, n_folds, variants=_list(args.variants), seeds=_list(args.seeds, int),
                               fold_subset=_list(args.folds, int), parts=_list(args.parts))
        probe = None
        spec = ev.get("identity_probe")
        if spec and not args.no_probe:
            probe = crossval.load_probe_set(DATASETS / spec["data"], spec.get("format", spec["data"]),
                                            name=spec["data"])
        crossval.run_campaign(root, dataset.get("format", args.dataset), model_cfg, train_cfg, dataset,
                              wanted, runs_dir, work, pretrained_path=pretrained, probe_set=probe,
                              shard=_shard(args.shard),
                              time_limit_minutes=args.time_limit, max_runs=args.max_runs,
                              command=_command(args),
                              outputs=tuple(p for p in (report, runs_dir) if p is not None))
    runs = finetune_report.load_runs(runs_dir)
    if report is None:
        print(f"{len(runs)} run files in {runs_dir}; no report built from them (--report DIR builds one)")
        return
    finetune_report.write_report(runs, model_cfg.labels, report, args.dataset, n_folds, config=data,
                                 current=current, command=command,
                                 pretrained=None if pretrained is None else {"file": pretrained.name,
                                                                             "sha256_12": digest})
    print(f"report written to {report}/README.md ({len(runs)} run files)")


if __name__ == "__main__":
    run(main)

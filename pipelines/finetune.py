"""`make finetune DATASET=...`: subject-independent cross-validation of the paper's five variants.

    python pipelines/finetune.py --dataset ckplus48 [--config configs/finetune/ckplus48.yaml]
        [--data DIR] [--pretrained pretrained/fer2013_backbone.keras] [--variants 2B(N+M),softmax]

Every (fold, variant) is trained from the FER2013-pretrained weights and summarised in
runs/finetune/<dataset>/fold<k>/<variant>/result.json; re-running resumes at the first missing
one. The report (results.json, README.md, figures) is written to reports/<dataset>/.
"""

import argparse
import time

from _common import DATASETS, REPO, load_configs, run

FOLDERS = {"ckplus48": "ckplus48", "kdef-subset": "kdef-subset", "yale": "yalefaces"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ckplus48", help="name of a config in configs/finetune/")
    parser.add_argument("--config", help="defaults to configs/finetune/<dataset>.yaml")
    parser.add_argument("--data", help="dataset folder (default ../shared/datasets/<dataset>)")
    parser.add_argument("--pretrained", default=REPO / "pretrained" / "fer2013_backbone.keras")
    parser.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    parser.add_argument("--output", help="default runs/finetune/<dataset>")
    parser.add_argument("--report", help="default reports/<dataset>")
    parser.add_argument("--variants", help="comma-separated subset of the config's variants")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-folds", type=int, help="run only the first K folds (quick checks)")
    args = parser.parse_args()
    config_path = args.config or REPO / "configs" / "finetune" / f"{args.dataset}.yaml"
    model_cfg, train_cfg, data = load_configs(config_path, epochs=args.epochs)
    ev = data.get("evaluation", {})
    variants = args.variants.split(",") if args.variants else ev.get("variants", ["2B(N+M)"])
    dataset = data.get("data", {})
    root = args.data or DATASETS / FOLDERS.get(args.dataset, args.dataset)
    output = args.output or REPO / "runs" / "finetune" / args.dataset
    report = args.report or REPO / "reports" / args.dataset
    pretrained = None if args.no_pretrained else args.pretrained
    if pretrained is not None and not __import__("pathlib").Path(pretrained).is_file():
        from fer_tf.errors import ConfigError

        raise ConfigError(f"pretrained weights not found at {pretrained}: run `make pretrain` first, "
                          "or pass --no-pretrained to train from scratch")
    from fer_tf import evaluation, reporting
    from fer_tf.config import to_dict

    started = time.time()
    results, _, splits = evaluation.cross_validate(
        root, dataset.get("format", args.dataset), variants, model_cfg, train_cfg,
        folds=dataset.get("folds", 8), pretrained_path=pretrained, output=output,
        tuple_mode_fold=dataset.get("tuple_mode_fold"), max_folds=args.max_folds)
    info = reporting.run_info({"model": to_dict(model_cfg), "train": to_dict(train_cfg), "data": dataset,
                               "variants": variants, "pretrained": str(pretrained), "config": str(config_path)},
                              seed=train_cfg.seed, started=started)
    evaluation.write_report(results, model_cfg.labels, report, output, info, args.dataset,
                            len(splits), paper=ev.get("paper"))
    print(f"report written to {report}/README.md")


if __name__ == "__main__":
    run(main)

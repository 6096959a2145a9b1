"""`make pretrain`: softmax pretraining on FER2013 (Section 5.2, first stage).

    python pipelines/pretrain.py [--config configs/pretrain.yaml] [--data DIR] [--output runs/pretrain]

Re-running the same command resumes from the last completed epoch (--no-resume starts afresh).
Under KERAS_BACKEND=jax (`make pretrain BACKEND=jax`) it needs neither TensorFlow nor mediapipe.
The paper's second stage (Multi-PIE) needs data that is not available here; `make finetune` on
any identity-labelled dataset is the identity-aware stage.
"""

import argparse

from _common import DATASETS, REPO, load_configs, parse_settings, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=REPO / "configs" / "pretrain.yaml")
    parser.add_argument("--data", default=DATASETS / "fer2013", help="FER2013 image folders")
    parser.add_argument("--output", default=REPO / "runs" / "pretrain")
    parser.add_argument("--report", default=REPO / "reports" / "fer2013")
    parser.add_argument("--publish", default=REPO / "pretrained",
                        help="folder for the float32 backbone artifact and its JSON sidecar")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set train.rotation=0 (repeatable)")
    parser.add_argument("--max-train-images", type=int, help="train on a random subset (smoke tests)")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args()
    model_cfg, train_cfg, _ = load_configs(args.config, parse_settings(args.set), epochs=args.epochs)
    from fer_tf.research.experiments import pretrain

    pretrain(args.data, model_cfg, train_cfg, output=args.output, report_dir=args.report,
             resume=not args.no_resume, max_train_images=args.max_train_images, publish=args.publish)


if __name__ == "__main__":
    run(main)

"""`make ship`: train, measure and export the shipped default model into saved_models/.

    python pipelines/ship.py [--config configs/ship.yaml] [--pretrained pretrained/fer2013_backbone.keras]

Starts from the committed FER2013 backbone (`make pretrain` reproduces it), or from the network
``--pretrained`` names (with its capacity options as ``--set model.width=...``). Writes
saved_models/fer_tf_basic7.{keras,tflite,json}, reports/shipped/results.json (held-out subjects,
FER2013 test splits, export parity, sizes, and the starting network: file, digest, how it was made
and its FER2013 accuracy, from its JSON sidecar) and the model card, which names that network; then
the model's neutral reference (pipelines/web_reference.py: into its sidecar and, for the model in
saved_models/, the web page; a model written elsewhere, such as a trial's, gets its copy beside it).
"""

import argparse
import pathlib

from _common import DATASETS, REPO, load_configs, parse_settings, run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=REPO / "configs" / "ship.yaml")
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--pretrained", default=REPO / "pretrained" / "fer2013_backbone.keras")
    parser.add_argument("--output", default=REPO / "runs" / "shipped")
    parser.add_argument("--saved-models", default=REPO / "saved_models")
    parser.add_argument("--report", default=REPO / "reports" / "shipped")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. --set train.classification_per_batch=0")
    args = parser.parse_args()
    model_cfg, train_cfg, _ = load_configs(args.config, parse_settings(args.set), epochs=args.epochs)
    if not pathlib.Path(args.pretrained).is_file():
        from fer_tf.errors import ConfigError

        raise ConfigError(f"pretrained weights not found at {args.pretrained}: run `make pretrain` "
                          "(it writes pretrained/fer2013_backbone.keras) or pass --pretrained")
    from fer_tf.research.experiments import train_shipped_model

    results = train_shipped_model(args.datasets, args.pretrained, model_cfg, train_cfg,
                                  output=args.output, saved_models=args.saved_models,
                                  report_dir=args.report)
    print({k: results[k] for k in ("held_out_subjects", "fer2013", "sizes_bytes")})
    from web_reference import write_reference  # the new model's neutral reference

    saved = pathlib.Path(args.saved_models)
    write_reference(saved / "fer_tf_basic7.tflite", args.datasets, reference_copy(saved))


def reference_copy(saved_models):
    """Where the neutral reference's copy goes: the web page's, for the model it ships
    (saved_models/); beside the model for one written elsewhere (a trial), which must leave the
    page alone."""
    from web_reference import OUT

    saved = pathlib.Path(saved_models)
    return OUT if saved.resolve() == (REPO / "saved_models").resolve() else saved / OUT.name


if __name__ == "__main__":
    run(main)

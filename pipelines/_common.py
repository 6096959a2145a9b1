"""Shared argument handling for the pipeline scripts (thin wrappers over fer_tf.research.experiments)."""

import os
import pathlib
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
# The checkout's own fer_tf, before any installed one: a second checkout (a campaign's clone) that
# shares a virtual environment whose editable install points at the first must run its own code.
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))
DATASETS = pathlib.Path(os.environ.get("FER_TF_DATASETS", REPO.parent / "shared" / "datasets"))


def parse_settings(items):
    """``["train.epochs=40", "model.label_smoothing=0"]`` -> ``{"train": {"epochs": 40}, ...}``
    (values read as YAML, so numbers, booleans and lists keep their types)."""
    import yaml

    from fer_tf.errors import ConfigError

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("model", "train") or not name:
            raise ConfigError(f"--set {item!r}: write SECTION.KEY=VALUE with SECTION model or train, "
                              "e.g. --set train.epochs=40")
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def load_configs(path, settings=None, **overrides):
    """(ModelConfig, TrainConfig, raw dict) from a YAML file with `model:` and `train:` sections;
    ``settings`` (from :func:`parse_settings`) override single keys."""
    from fer_tf.config import load_yaml, model_config, train_config

    data = load_yaml(path)
    for section, values in (settings or {}).items():
        data[section] = {**data.get(section, {}), **values}
    unknown = set(data) - {"model", "train", "data", "evaluation"}
    if unknown:
        from fer_tf.errors import ConfigError

        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; "
                          "use model, train, data, evaluation")
    train = {**data.get("train", {}), **{k: v for k, v in overrides.items() if v is not None}}
    return (model_config(data.get("model", {}), where=f"{path}: model"),
            train_config(train, where=f"{path}: train"), data)


def run(main):
    """Call ``main()``; print user errors as one line (exit 2) instead of a traceback."""
    from fer_tf.errors import FerTfError

    try:
        sys.exit(main() or 0)
    except FerTfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is checkpointed; run the same command again "
              "to resume", file=sys.stderr)
        sys.exit(130)

"""Cross-validation campaigns: every (variant, option, seed, fold, mode) of a fine-tuning config
as one small JSON file, so that a comparison too big for one session resumes on any machine.

The plan of a config (:func:`plan`) is, in the order it runs:

1. the variants on every subject-independent fold, for each seed of ``evaluation.seeds``
   (``in_batch`` mode);
2. ``evaluation.options``: named deviations (``set`` overrides of model/train keys, e.g.
   ``model.l2_normalize: false``) run for some variants and seeds (``seeds``: one list, or
   ``{variant: [seeds]}``), compared with the same variants without them;
3. ``evaluation.tuple_mode``: a variant in the paper's ``tuple`` mode on some folds, as
   configured and with each option of its ``with_options`` (e.g. the paper's settings together).

:func:`run_campaign` trains what is missing and writes ``<runs_dir>/<group>/seed<s>-fold<k>.json``
(accuracies, the selected epoch, curves, identity probes, provenance). A file counts as done when
its ``protocol`` (a digest of everything that defines the run except the seed and fold) matches
the current config's; a run of another protocol is trained again. The folds are fixed by
``data.split_seed`` (default 0): every seed sees the same test subjects in fold k, so runs pair
up across variants and seeds (:mod:`fer_tf.research.stats`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import shutil
import sys
import time

import numpy as np

from fer_tf.research import evaluation
from fer_tf.research import probes
from fer_tf.research import reporting
from fer_tf.training import loop
from fer_tf.config import ModelConfig, TrainConfig, defaults, to_dict
from fer_tf.data.splits import leave_one_subject_out, subject_kfold
from fer_tf.errors import ConfigError
from fer_tf.files import atomic_write_text
from fer_tf.preprocess.normalize import normalize_many
from fer_tf.preprocess.prepared import prepared_dataset


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a campaign."""

    variant: str
    seed: int
    fold: int
    mode: str = "in_batch"
    option: str = ""  # name of an evaluation.options entry ("" = the config as it is)
    settings: tuple = ()  # ((section.key, value), ...) of that option

    @property
    def group(self):
        """Folder name of the run's group: the variant's slug, ``+option``, ``-tuple``."""
        return (evaluation.slug(self.variant) + (f"+{self.option}" if self.option else "")
                + ("-tuple" if self.mode == "tuple" else ""))

    @property
    def name(self):
        """Display name of the group, e.g. ``2B(N+M) [no-l2]`` or ``2B(N+M), tuple mode``."""
        return (self.variant + (f" [{self.option}]" if self.option else "")
                + (", tuple mode" if self.mode == "tuple" else ""))

    @property
    def path(self):
        return pathlib.Path(self.group) / f"seed{self.seed}-fold{self.fold}.json"


def _settings_of(mapping, where):
    out = []
    for key, value in (mapping or {}).items():
        section, dot, name = str(key).partition(".")
        if section not in ("model", "train") or not dot or not name:
            raise ConfigError(f"{where}: write overrides as model.KEY or train.KEY, not {key!r}")
        out.append((str(key), value))
    return tuple(sorted(out))


def _option_seeds(option, all_variants, default_seeds, where):
    """``{variant: [seeds]}`` of an option: its ``seeds`` is a list for all of its variants, or a
    mapping ``{variant: [seeds], ...}`` (variants it leaves out run ``default_seeds``)."""
    variants = list(option.get("variants", all_variants))
    seeds = option.get("seeds", default_seeds)
    if isinstance(seeds, dict):
        unknown = sorted(set(seeds) - set(variants))
        if unknown:
            raise ConfigError(f"{where}: `seeds` names {unknown}, which are not among the option's "
                              f"variants {variants}; list them under `variants` or remove them")
        return {v: [int(s) for s in seeds.get(v, default_seeds)] for v in variants}
    return {v: [int(s) for s in seeds] for v in variants}


def plan(evaluation_config, folds, variants=None, seeds=None, fold_subset=None, parts=None):
    """The ordered list of :class:`Run` of a config's ``evaluation`` section.

    ``variants``/``seeds``/``fold_subset`` narrow it; ``parts`` is a subset of
    ``{"main", "options", "tuple"}``.
    """
    ev = evaluation_config or {}
    all_variants = list(ev.get("variants") or ["2B(N+M)"])
    all_seeds = [int(s) for s in ev.get("seeds", [0])]
    parts = set(parts or ("main", "options", "tuple"))
    keep_v = set(variants) if variants else None
    keep_s = {int(s) for s in seeds} if seeds else None
    keep_f = {int(f) for f in fold_subset} if fold_subset is not None else None

    def wanted(run):
        return ((keep_v is None or run.variant in keep_v) and (keep_s is None or run.seed in keep_s)
                and (keep_f is None or run.fold in keep_f))

    options = ev.get("options") or []
    settings_of = {}  # option name -> its settings, worked out once for both parts that use them
    for i, option in enumerate(options):
        if not option.get("name"):
            raise ConfigError(f"evaluation.options[{i}]: needs a `name`")
        if option["name"] in settings_of:
            raise ConfigError(f"evaluation.options[{i}]: the name {option['name']!r} is taken by an "
                              "earlier option; give each option its own name")
        settings_of[option["name"]] = _settings_of(option.get("set"), f"evaluation.options[{i}]")

    runs = []
    if "main" in parts:
        runs += [Run(v, s, k) for s in all_seeds for k in range(folds) for v in all_variants]
    if "options" in parts:
        for i, option in enumerate(options):
            name = option["name"]
            seeds_of = _option_seeds(option, all_variants, all_seeds[:1], f"evaluation.options[{i}]")
            for s in sorted({s for v_seeds in seeds_of.values() for s in v_seeds}):
                runs += [Run(v, s, k, option=name, settings=settings_of[name])
                         for k in range(folds) for v in seeds_of if s in seeds_of[v]]
    tuple_mode = ev.get("tuple_mode")
    if "tuple" in parts and tuple_mode:
        # with_options: named options that also run in tuple mode (e.g. the paper's settings together)
        extra = []
        for name in tuple_mode.get("with_options") or []:
            if name not in settings_of:
                raise ConfigError(f"evaluation.tuple_mode.with_options: no option named {name!r}; "
                                  f"the options are {sorted(settings_of)}")
            extra.append((name, settings_of[name]))
        for option, settings in [("", ())] + extra:
            for s in tuple_mode.get("seeds", all_seeds[:1]):
                runs += [Run(tuple_mode.get("variant", "2B(N+M)"), int(s), int(k), mode="tuple",
                             option=option, settings=settings)
                         for k in tuple_mode.get("folds", [0]) if int(k) < folds]
    return [r for r in runs if wanted(r)]


def configs_for(run: Run, model_config: ModelConfig, train_config: TrainConfig):
    """The model and train configs of ``run``: its option's overrides, its seed and mode."""
    model_values, train_values = {}, {"seed": run.seed, "mode": run.mode}
    for key, value in run.settings:
        section, _, name = key.partition(".")
        (model_values if section == "model" else train_values)[name] = value
    try:
        return (dataclasses.replace(model_config, variant=run.variant, **model_values),
                dataclasses.replace(train_config, **train_values))
    except TypeError as exc:
        raise ConfigError(f"option {run.option!r}: {exc}") from None


def file_digest(path):
    """First 12 hex digits of a file's SHA-256 (None for no file)."""
    if path is None:
        return None
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:12]


#: Bumped when the code changes what a run computes for the same configs (2: the new layers are
#: initialised from the run's seed, not from the process's random state).
PROTOCOL_VERSION = 2
#: Train keys that do not change what a run computes (how often it checkpoints, when it stops to
#: resume later), so they are not part of its protocol; the seed is recorded per run.
NOT_PROTOCOL = ("seed", "time_limit_minutes", "checkpoint_every")
#: Train options added after runs were committed. At their defaults they compute what runs did
#: before the option existed, so they enter the digest only when set otherwise (else every
#: committed run would count as stale and be trained again).
LATER_OPTIONS = ("distill_from", "distill_weight", "distill_temperature", "select_epoch", "swa_epochs",
                 "swa_learning_rate", "init_from", "mixing", "mixing_alpha", "mixing_probability")
_TRAIN_DEFAULTS = defaults(TrainConfig)
#: Model options added after runs were committed, likewise (the metric loss's parts: at their
#: defaults, the paper's, they build the loss the runs used; the capacity options: at their
#: defaults, the paper's network).
MODEL_LATER_OPTIONS = ("miner", "distance", "reducer", "width", "extra_blocks")
_MODEL_DEFAULTS = defaults(ModelConfig)


def protocol_digest(model_config, train_config, pretrained_digest, data_config):
    """A digest of everything that defines a run except its seed and fold."""
    train = {k: v for k, v in to_dict(train_config).items()
             if k not in NOT_PROTOCOL and not (k in LATER_OPTIONS and v == _TRAIN_DEFAULTS[k])}
    model = {k: v for k, v in to_dict(model_config).items()
             if not (k in MODEL_LATER_OPTIONS and v == _MODEL_DEFAULTS[k])}
    blob = json.dumps({"version": PROTOCOL_VERSION, "model": model, "train": train,
                       "pretrained": pretrained_digest,
                       "data": {k: data_config.get(k) for k in ("format", "folds", "split_seed")}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def current_protocols(runs, model_config, train_config, pretrained_digest, data_config):
    """``{run file path (str, relative to the runs folder): protocol}`` for planned ``runs`` under
    the given configs: the protocol a committed run file must have to count."""
    out = {}
    for run in runs:
        m, t = configs_for(run, model_config, train_config)
        out[str(run.path)] = protocol_digest(m, t, pretrained_digest, data_config)
    return out


def folds_of(table, data_config):
    folds = data_config.get("folds", 8)
    if folds in ("loso", 0):
        return leave_one_subject_out(table)
    return subject_kfold(table, k=int(folds), seed=int(data_config.get("split_seed", 0)))


def _round(value, digits=4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    return value


def _summary(run, result, table, test_rows, labels, protocol, probe_set, embedding):
    ids = table.expression_ids(labels)[test_rows]
    p = result["probabilities"]
    seq_p, seq_y, _ = evaluation.sequence_scores(p, table.sequence[test_rows], ids)
    probe, probed = probes.identity_probe(result["features"], table.subject[test_rows],
                                          table.sequence[test_rows])
    history = result["history"]
    out = {
        "variant": run.variant, "option": run.option, "settings": dict(run.settings), "mode": run.mode,
        "seed": run.seed, "fold": run.fold, "protocol": protocol,
        "sequence_accuracy": float(np.mean(np.argmax(seq_p, 1) == seq_y)),
        "image_accuracy": float(np.mean(np.argmax(p, 1) == ids)),
        "selected_epoch": result["selected_epoch"], "epochs": len(history),
        "last_epoch_image_accuracy": history[-1].get("fold_accuracy") if history else None,
        "images": int(len(ids)), "sequences": int(len(seq_y)),
        "train_images": result["train_rows"], "inner_validation_images": result["inner_rows"],
        "sequence_confusion": evaluation.confusion(seq_y, np.argmax(seq_p, 1), len(labels)).tolist(),
        "identity_probe_accuracy": probe, "identity_probe_subjects": probed,
        "train_seconds": result["train_seconds"], "steps_per_epoch": result["steps_per_epoch"],
        "history": [{k: v for k, v in row.items() if not k.startswith("val_") or k == "val_accuracy"}
                    for row in history],
    }
    if probe_set is not None and result.get("extra_features") is not None:
        acc, n = probes.cross_expression_probe(result["extra_features"], probe_set["subject"],
                                               probe_set["expression"])
        out["cross_expression_probe"] = {"dataset": probe_set["name"], "accuracy": acc, "subjects": n,
                                         "chance": (1 / n) if n else None}
    if embedding:
        x = np.asarray(result["features"], np.float64)
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        out["embedding"] = {"pca": np.round(x @ vt[:2].T, 3).tolist(),
                            "expression": table.expression[test_rows].astype(str).tolist(),
                            "subject": table.subject[test_rows].astype(str).tolist()}
    return _round(out)


def load_probe_set(root, fmt, name=None):
    """Faces of an identity-probe dataset (every subject in several expressions), normalised."""
    table, faces = prepared_dataset(root, fmt)
    keep = table.expression.astype(str) != ""
    return {"name": name or fmt, "faces": normalize_many(faces[keep]),
            "subject": table.subject[keep].astype(str), "expression": table.expression[keep].astype(str)}


def run_campaign(root, fmt, model_config: ModelConfig, train_config: TrainConfig, data_config, runs,
                 runs_dir, work_dir, pretrained_path=None, probe_set=None, time_limit_minutes=None,
                 max_runs=None, command=None, verbose=2, shard=None, outputs=()):
    """Train the ``runs`` (from :func:`plan`) that have no up-to-date JSON in ``runs_dir``.

    Stops before starting a run once ``time_limit_minutes`` have passed or ``max_runs`` runs were
    trained (a later call continues). ``shard=(i, k)``: of the missing runs, only every k-th from
    the i-th (k processes share one campaign). Returns ``(trained, remaining)`` counts.
    ``outputs``: folders the caller rewrites (its report), not counted as changes to the code.
    """
    commit = reporting.git_commit(outputs=outputs)  # before this campaign writes its first run file
    runs_dir, work_dir = pathlib.Path(runs_dir), pathlib.Path(work_dir)
    table, faces = prepared_dataset(root, fmt)
    keep = table.expression_ids(model_config.labels) >= 0
    table, faces = table.take(keep), normalize_many(faces[keep])
    splits = folds_of(table, data_config)
    bad = sorted({r.fold for r in runs if r.fold >= len(splits)})
    if bad:
        raise ConfigError(f"fold(s) {bad} requested but the data has {len(splits)} folds")
    pretrained_digest = file_digest(pretrained_path)
    todo = []
    for run in runs:
        m, t = configs_for(run, model_config, train_config)
        protocol = protocol_digest(m, t, pretrained_digest, data_config)
        done = runs_dir / run.path
        if done.is_file():
            try:
                if json.loads(done.read_text()).get("protocol") == protocol:
                    continue
            except (OSError, json.JSONDecodeError):
                pass
        todo.append((run, m, t, protocol))
    print(f"{len(runs) - len(todo)} of {len(runs)} runs done; {len(todo)} to train", file=sys.stderr)
    if shard is not None:
        todo = todo[shard[0]::shard[1]]
        print(f"shard {shard[0]} of {shard[1]}: {len(todo)} of them here", file=sys.stderr)
    if not todo:
        return 0, 0
    pretrained = loop.load_checkpoint(pretrained_path, compile=False) if pretrained_path else None
    first_seed = min(r.seed for r in runs)
    started, trained = time.time(), 0
    for n, (run, m, t, protocol) in enumerate(todo, 1):
        elapsed = (time.time() - started) / 60
        if (max_runs is not None and trained >= max_runs) or (
                time_limit_minutes is not None and elapsed >= time_limit_minutes):
            break
        eta = f", about {elapsed / trained * (len(todo) - n + 1):.0f} min left" if trained else ""
        print(f"[{n}/{len(todo)}] {run.name}, seed {run.seed}, fold {run.fold + 1}/{len(splits)}{eta}",
              file=sys.stderr)
        train_rows, test_rows = splits[run.fold]
        workdir = work_dir / run.group / f"seed{run.seed}-fold{run.fold}"
        arguments = dict(workdir=workdir, mode=run.mode, verbose=verbose,
                         extra_faces=None if probe_set is None else probe_set["faces"])
        try:
            result = evaluation.train_variant(run.variant, table, faces, train_rows, test_rows, m, t,
                                              pretrained, **arguments)
        except loop.CheckpointMismatch as error:
            # an unfinished run of an earlier protocol: its checkpoint is of no use to this one
            print(f"    {error}\n    starting this run afresh", file=sys.stderr)
            shutil.rmtree(workdir)
            result = evaluation.train_variant(run.variant, table, faces, train_rows, test_rows, m, t,
                                              pretrained, **arguments)
        summary = _summary(run, result, table, test_rows, m.labels, protocol, probe_set,
                           embedding=run.fold == 0 and run.seed == first_seed and not run.option
                           and run.mode == "in_batch")
        summary["run"] = {k: v for k, v in reporting.run_info(seed=run.seed, commit=commit).items() if k != "config"}
        if command:
            summary["run"]["command"] = command
        (runs_dir / run.path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(runs_dir / run.path, json.dumps(summary, indent=1, default=str) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)  # the summary is all we keep
        trained += 1
        print(f"    sequence accuracy {summary['sequence_accuracy']:.4f}, image accuracy "
              f"{summary['image_accuracy']:.4f} (epoch {summary['selected_epoch']} of "
              f"{summary['epochs']}), {summary['train_seconds']:.0f} s", file=sys.stderr)
    remaining = len(todo) - trained
    if remaining:
        print(f"stopped with {remaining} run(s) left: run the same command again to continue",
              file=sys.stderr)
    return trained, remaining

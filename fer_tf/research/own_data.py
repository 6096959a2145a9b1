"""Train on your own identity-labelled data: what `fer-tf train` runs, as functions a notebook calls.

The steps, each usable alone::

    table, _ = load_faces("photos/manifest.csv")              # aligned 60x60 faces (the usual cache)
    start = starting_model("backbone")                         # shipped | backbone | scratch | PATH
    table, labels = choose_labels(table, "anger,happiness")    # or None: every label of the data
    train_rows, test_rows = subject_split(table, test_subjects=2, seed=0)
    run = fine_tune(table, table.pixels, train_rows, test_rows, labels, start)  # the kept rows' faces
    run["evaluation"]["accuracy"]                              # held-out subjects only

:func:`train` runs them all for `fer-tf train` (one split, or ``folds`` subject-disjoint folds of
cross-validation followed by a final model on every subject) and :func:`write_report` writes its
``results.json``, ``report.md`` and figures. Export is the caller's (:mod:`fer_tf.deploy.export`).

Defaults (:data:`TRAIN_DEFAULTS`) are the fine-tuning protocol of ``configs/finetune/*.yaml``
(Adam, warm-up + cosine) with a fixed epoch count: the model of the last epoch is the one
evaluated, so the held-out subjects never choose anything.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import numpy as np

from fer_tf.config import load_yaml, model_config, to_dict, train_config
from fer_tf.data.labels import EXPRESSIONS, canonical_expression, label_set
from fer_tf.data.readers import detect_format
from fer_tf.data.splits import subject_kfold
from fer_tf.errors import ConfigError, DatasetError, ModelFileError
from fer_tf.files import atomic_path, atomic_write_text
from fer_tf.people.baseline import NEUTRAL_DEFAULTS, people_reference

#: Where the shipped model and the pretrained backbone live (the repository root).
REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = REPO / "saved_models" / "fer_tf_basic7.keras"
BACKBONE = REPO / "pretrained" / "fer2013_backbone.keras"
STARTS = ("shipped", "backbone", "scratch")

#: `fer-tf train`'s training settings where they differ from :class:`fer_tf.config.TrainConfig`.
#: The rate, the epochs and frozen batch-norm statistics were chosen by inner cross-validation on
#: the KDEF subset's training subjects (benchmarks/train_kdef_tuning.py, reports/train/); batch
#: norm is frozen only when training starts from trained weights (from scratch it learns).
TRAIN_DEFAULTS = {"optimizer": "adam", "learning_rate": 5e-4, "schedule": "cosine",
                  "warmup_epochs": 1.0, "epochs": 15, "select_epoch": "last",
                  "freeze_batch_norm": True, "checkpoint_every": 1, "seed": 0}
#: Held out by default: about this fraction of the subjects (at least :data:`MIN_TEST_SUBJECTS`).
TEST_FRACTION = 1 / 8
MIN_TEST_SUBJECTS = 2


# --- data ----------------------------------------------------------------------------------------

def load_faces(root, fmt=None, cache_root=None):
    """``(table, faces uint8 [n, 60, 60])``: every usable image of ``root`` (any format the readers
    take, a manifest CSV included), aligned into the usual face cache (``runs/cache``) with a
    progress bar on a terminal; a second call reads the cache."""
    from fer_tf.preprocess.prepared import DEFAULT_CACHE, prepared_dataset  # deferred: OpenCV, MediaPipe

    root = pathlib.Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: not found; pass a dataset folder or a manifest CSV "
                           "(path,expression,subject)")
    fmt = fmt or detect_format(root)
    if fmt is None:
        raise DatasetError(f"cannot tell the layout of {root}; pass --format (e.g. manifest)")
    table, faces = prepared_dataset(root, fmt, cache_root=cache_root or DEFAULT_CACHE)
    if not table.has_subjects:
        missing = int(sum(1 for s in table.subject if s == ""))
        raise DatasetError(
            f"{root}: {missing} of {len(table)} images have no subject id; training splits by "
            "subject, so give every image one (the manifest's subject column)")
    return table, faces


def parse_labels(text):
    """``--labels`` -> ``(labels, mapping)``: comma-separated names (the classes, in output order)
    and ``SOURCE=TARGET`` entries that relabel the data's SOURCE images as TARGET (TARGET becomes
    a class when it is not listed). Preset names ``basic7``, ``ckplus7`` and ``all`` are allowed."""
    labels, mapping = [], {}
    for item in (x.strip() for x in str(text).split(",")):
        if not item:
            continue
        if "=" in item:
            src, dst = (canonical_expression(x) for x in item.split("=", 1))
            if src is None or dst is None:
                raise ConfigError(f"--labels {item!r}: both sides must be expressions "
                                  f"({', '.join(EXPRESSIONS)})")
            mapping[src] = dst
            item = dst
            names = (dst,)
        else:
            names = label_set(item)
        labels.extend(n for n in names if n not in labels)
    if not labels:
        raise ConfigError("--labels is empty; name at least two expressions")
    return tuple(labels), mapping


def choose_labels(table, labels=None):
    """``(table, labels)``: the rows of the chosen classes, relabelled by ``labels``' mapping.

    ``labels``: ``None`` (every expression of the data, in the canonical order), a sequence of
    names, or a ``--labels`` string (:func:`parse_labels`). Classes without images are refused."""
    mapping = {}
    if labels is None:
        present = set(table.expression.tolist())
        labels = tuple(e for e in EXPRESSIONS if e in present)
    elif isinstance(labels, str):
        labels, mapping = parse_labels(labels)
    else:
        labels, mapping = parse_labels(",".join(labels))
    expression = np.array([mapping.get(e, e) for e in table.expression], dtype=object)
    table = dataclasses.replace(table, expression=expression)
    table = table.take(np.isin(expression, labels))
    counts = table.counts()
    empty = [name for name in labels if not counts.get(name)]
    if empty:
        raise DatasetError(f"no image of {', '.join(empty)} in the data; leave it out of --labels")
    if len(labels) < 2:
        raise DatasetError(f"only one expression ({labels[0]}) to learn; training needs two or more")
    return table, tuple(labels)


# --- subject splits --------------------------------------------------------------------------------

def default_test_subjects(n_subjects):
    """About 1/8 of the subjects, at least :data:`MIN_TEST_SUBJECTS`."""
    return max(MIN_TEST_SUBJECTS, round(n_subjects * TEST_FRACTION))


def subject_split(table, test_subjects=None, seed=0):
    """``(train_rows, test_rows)``: every image of a subject on the same side.

    ``test_subjects``: ``None`` (:func:`default_test_subjects`), a count K (K subjects, chosen to
    keep each expression's share close to the whole's, as :func:`fer_tf.data.splits.subject_kfold`
    does), or subject ids (a list, or a comma-separated string)."""
    subjects = np.unique(table.subject.astype(str))
    n = len(subjects)
    if isinstance(test_subjects, str) and not test_subjects.strip().isdigit():
        test_subjects = [s.strip() for s in test_subjects.split(",") if s.strip()]
    elif isinstance(test_subjects, str):
        test_subjects = int(test_subjects)
    if test_subjects is None:
        test_subjects = default_test_subjects(n)
    if isinstance(test_subjects, (int, np.integer)):
        k = int(test_subjects)
        if not 1 <= k <= n - 2:
            raise DatasetError(f"--test-subjects {k}: the data has {n} subjects; hold out between "
                               f"1 and {max(1, n - 2)} so that at least 2 remain for training")
        folds = subject_kfold(table, k=max(2, round(n / k)), seed=seed)
        chosen = list(np.unique(table.subject[folds[0][1]].astype(str)))
        rest = [s for s in np.random.default_rng(seed).permutation(subjects) if s not in chosen]
        test = set((chosen + rest)[:k]) if len(chosen) < k else set(chosen[:k])
    else:
        test = {str(s) for s in test_subjects}
        unknown = sorted(test - set(subjects))
        if unknown:
            raise DatasetError(f"--test-subjects: no subject {', '.join(unknown)} in the data "
                               f"(subjects: {', '.join(subjects[:12])}{', ...' if n > 12 else ''})")
        if n - len(test) < 2:
            raise DatasetError(f"--test-subjects leaves {n - len(test)} subject(s) for training; "
                               "at least 2 are needed")
    is_test = np.isin(table.subject.astype(str), sorted(test))
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def folds(table, k, seed=0):
    """``k`` subject-disjoint ``(train_rows, test_rows)`` folds (cross-validation)."""
    if int(k) < 2:
        raise ConfigError(f"--folds {k}: cross-validation needs at least 2 folds")
    return subject_kfold(table, k=int(k), seed=seed)


# --- the starting point ----------------------------------------------------------------------------

def starting_model(start="shipped"):
    """The model whose weights fine-tuning starts from: ``"shipped"`` (the default model of
    `fer-tf predict`), ``"backbone"`` (the FER2013-pretrained network), ``"scratch"`` (``None``:
    random weights) or a ``.keras`` path (a checkpoint, an exported model, a model.keras of an
    earlier `fer-tf train`). Its class names are in its ``labels`` attribute."""
    from fer_tf.model import saving  # deferred: keras

    if start in (None, "scratch"):
        return None
    path = {"shipped": SHIPPED, "backbone": BACKBONE}.get(start, pathlib.Path(str(start)))
    if str(start) not in STARTS and path.suffix.lower() != ".keras":
        raise ConfigError(f"--from {start}: use shipped, backbone, scratch or a .keras file "
                          "(a .tflite file holds no trainable weights)")
    model = saving.load_model(path, advice="pass --from shipped, backbone, scratch or a .keras model")
    if getattr(model, "labels", None) is None:
        meta = saving.read_metadata(path)
        if not meta:
            raise ModelFileError(f"{path}: the model does not say its labels (no {path.stem}.json "
                                 "beside it); start from a model written by fer_tf")
        object.__setattr__(model, "labels", tuple(meta["labels"]))
    return model


# --- configuration ---------------------------------------------------------------------------------

def configs(variant="2B(N+M)", labels=(), config_path=None, **train_overrides):
    """``(ModelConfig, TrainConfig)``: :data:`TRAIN_DEFAULTS`, then the ``model:`` and ``train:``
    sections of the YAML file ``config_path`` (the layout of ``configs/finetune/*.yaml``; other
    sections are ignored), then ``train_overrides`` (``None`` values left out)."""
    model_values, train_values = {}, dict(TRAIN_DEFAULTS)
    if config_path:
        data = load_yaml(config_path)
        model_values.update(data.get("model") or {})
        train_values.update(data.get("train") or {})
        model_values.pop("labels", None)  # the labels are --labels' (or the data's)
    train_values.update({k: v for k, v in train_overrides.items() if v is not None})
    if variant:
        model_values["variant"] = variant
    where = str(config_path or "fer-tf train")
    return (model_config(model_values, where=where, labels=tuple(labels)),
            train_config(train_values, where=where))


def with_start_capacity(model_cfg, start):
    """``model_cfg`` with the capacity options (width, extra blocks) of the starting network
    ``start``: the network trained here is built like the one it starts from (a note says so
    where they differ), so that every layer's weights carry over."""
    from fer_tf.model.network import capacity_of  # deferred: keras

    theirs = capacity_of(start) if start is not None else None
    changed = {k: v for k, v in (theirs or {}).items() if getattr(model_cfg, k) != v}
    if not changed:
        return model_cfg
    print("building the network like the starting one: "
          + ", ".join(f"{k} {v}" for k, v in changed.items()), file=sys.stderr)
    return dataclasses.replace(model_cfg, **changed)


def for_start(train_cfg, start):
    """``train_cfg`` for training from ``start``: batch-norm statistics are kept frozen only when
    there are trained ones (``start`` a model); from scratch (``None``) batch norm learns."""
    if start is None and train_cfg.freeze_batch_norm:
        return dataclasses.replace(train_cfg, freeze_batch_norm=False)
    return train_cfg


# --- training and evaluation ---------------------------------------------------------------------

def evaluate(model, faces, label_ids, labels):
    """Held-out evaluation of a JointModel (or EC network) on uint8 60x60 faces (:func:`load_faces`):
    ``{"accuracy", "recall": {label: fraction}, "confusion": [[count]] (rows = true), "images"}``."""
    # deferred: keras and the backend
    from fer_tf.preprocess.normalize import normalize_many
    from fer_tf.model.predict import predict_probabilities

    probabilities = predict_probabilities(model, normalize_many(faces))
    return _scores(probabilities, label_ids, labels)


def _scores(probabilities, label_ids, labels):
    from fer_tf.model.predict import accuracy, per_label_recall  # deferred: keras
    from fer_tf.research.evaluation import confusion

    label_ids = np.asarray(label_ids)
    return {"accuracy": accuracy(probabilities, label_ids),
            "recall": per_label_recall(probabilities, label_ids, labels),
            "confusion": confusion(label_ids, np.argmax(probabilities, 1), len(labels)).tolist(),
            "images": int(len(label_ids))}


def fine_tune(table, faces, train_rows, test_rows, labels, start=None, variant="2B(N+M)",
              train_cfg=None, model_cfg=None, workdir=None, verbose=2):
    """Fine-tune ``variant`` from ``start`` (a model from :func:`starting_model`, or ``None``) on
    ``train_rows``; evaluate on ``test_rows``. ``faces``: uint8 ``[n, 60, 60]`` as
    :func:`load_faces` gives them. ``workdir``: the checkpoint folder (a rerun resumes).

    Returns ``{"model", "history", "evaluation", "probabilities", "train_seconds",
    "transferred_layers", "new_classes"}`` (``evaluation`` and the held-out faces'
    ``probabilities`` are ``None`` without ``test_rows``)."""
    if len(faces) != len(table):
        raise DatasetError(f"{len(faces)} faces for a table of {len(table)} rows: pass the faces of the "
                           "same rows (table.pixels after choose_labels)")
    # deferred: keras and the backend
    from fer_tf.preprocess.normalize import normalize_many
    from fer_tf.research.evaluation import train_variant

    if model_cfg is None or train_cfg is None:
        m, t = configs(variant, labels)
        model_cfg, train_cfg = model_cfg or m, train_cfg or t
    model_cfg = with_start_capacity(dataclasses.replace(model_cfg, labels=tuple(labels)), start)
    train_cfg = for_start(train_cfg, start)
    normalised = normalize_many(faces)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    test_rows = np.asarray(test_rows, dtype=np.int64)
    held_out = len(test_rows) > 0
    # without held-out subjects (a final model on all of them) the per-epoch curve that
    # train_variant records is on training images: it is dropped below
    result = train_variant(model_cfg.variant, table, normalised, train_rows,
                           test_rows if held_out else train_rows[:256], model_cfg, train_cfg,
                           pretrained=start, workdir=workdir, verbose=verbose)
    history = result["history"]
    evaluation = None
    if held_out:
        evaluation = _scores(result["probabilities"], table.expression_ids(labels)[test_rows], labels)
    else:
        history = [{k: v for k, v in row.items() if k != "fold_accuracy"} for row in history]
    old = tuple(getattr(start, "labels", None) or ())
    return {"model": result["model"], "history": history, "evaluation": evaluation,
            "probabilities": result["probabilities"] if held_out else None,
            "train_seconds": result["train_seconds"],
            "transferred_layers": result["transferred_layers"],
            "new_classes": [n for n in labels if start is not None and n not in old]}


def data_summary(table, labels, skipped=0):
    """What a report says about the data: images, subjects, images per class."""
    return {"images": int(len(table)), "subjects": int(len(np.unique(table.subject.astype(str)))),
            "per_class": {name: int(np.sum(table.expression == name)) for name in labels},
            "left_out": int(skipped)}


def _side(table, rows):
    return {"images": int(len(rows)),
            "subjects": sorted(np.unique(table.subject[rows].astype(str)).tolist())}


def train(table, faces, labels, start=None, model_cfg=None, train_cfg=None, test_subjects=None,
          n_folds=None, workdir=None, verbose=2, log=sys.stderr):
    """`fer-tf train`'s runs: one subject split (``test_subjects``), or ``n_folds`` folds of
    cross-validation and then a model trained on every subject. ``workdir``/``split`` (or
    ``fold<k>`` and ``final``) hold the checkpoints, so a rerun resumes.

    Returns ``{"model": the model to keep, "runs": [per split: "name", "train", "test",
    "evaluation", "history", "train_seconds"], "evaluation": held-out scores (pooled over
    folds), "test_faces": uint8 faces of the held-out subjects (for export's parity check),
    "neutral_reference": :func:`neutral_reference` of the held-out subjects}``."""
    if model_cfg is None or train_cfg is None:
        m, t = configs("2B(N+M)", labels)
        model_cfg, train_cfg = model_cfg or m, train_cfg or t
    seed = train_cfg.seed
    workdir = None if workdir is None else pathlib.Path(workdir)
    if n_folds:
        plan = [(f"fold{i + 1}", tr, te) for i, (tr, te) in enumerate(folds(table, n_folds, seed))]
    else:
        tr, te = subject_split(table, test_subjects, seed)
        plan = [("split", tr, te)]
    runs, kept, held_out = [], None, []
    for i, (name, tr, te) in enumerate(plan, 1):
        print(f"[{i}/{len(plan) + bool(n_folds)}] {name}: training on {len(tr)} images of "
              f"{len(np.unique(table.subject[tr]))} subjects, testing on {len(te)} images of "
              f"{len(np.unique(table.subject[te]))} held-out subjects", file=log)
        run = fine_tune(table, faces, tr, te, labels, start, model_cfg=model_cfg,
                        train_cfg=train_cfg, workdir=None if workdir is None else workdir / name, verbose=verbose)
        runs.append({"name": name, "train": _side(table, tr), "test": _side(table, te),
                     "evaluation": run["evaluation"], "history": run["history"],
                     "train_seconds": run["train_seconds"],
                     "transferred_layers": run["transferred_layers"],
                     "new_classes": run["new_classes"]})
        print(f"    held-out accuracy {run['evaluation']['accuracy']:.1%} "
              f"({run['train_seconds']:.0f} s)", file=log)
        held_out.append((te, run.get("probabilities")))
        kept = run
    test_rows = np.concatenate([te for _, _, te in plan])
    if n_folds:  # the model to keep learns from every subject, for as many epochs
        print(f"[{len(plan) + 1}/{len(plan) + 1}] final model on all {len(table)} images", file=log)
        kept = fine_tune(table, faces, np.arange(len(table)), [], labels, start, model_cfg=model_cfg,
                         train_cfg=train_cfg, workdir=None if workdir is None else workdir / "final",
                         verbose=verbose)
    pooled = np.sum([r["evaluation"]["confusion"] for r in runs], axis=0)
    evaluation = {"accuracy": float(np.trace(pooled) / max(pooled.sum(), 1)),
                  "recall": {n: float(pooled[i, i] / pooled[i].sum())
                             for i, n in enumerate(labels) if pooled[i].sum()},
                  "confusion": pooled.tolist(), "images": int(pooled.sum())}
    if n_folds:
        accs = [r["evaluation"]["accuracy"] for r in runs]
        evaluation.update(fold_mean=float(np.mean(accs)), fold_std=float(np.std(accs)))
    return {"model": kept["model"], "runs": runs, "evaluation": evaluation,
            "test_faces": np.asarray(faces[test_rows], dtype=np.uint8),
            "neutral_reference": neutral_reference(table, labels, held_out, folds=bool(n_folds))}


def neutral_reference(table, labels, held_out, folds=False):
    """The reference of the neutral-photo correction stored with the model (its sidecar's
    ``neutral_reference``, :func:`fer_tf.deploy.people.stored_reference`), so that ``fer-tf predict
    --baseline DIR`` corrects one person by their neutral photo as it does with the shipped model.

    It is what ``reference="run"`` gives people the network never trained on, enrolled together:
    the mean, over the held-out subjects with neutral faces, of the offset of those faces
    (:func:`fer_tf.people.baseline.people_reference`), scored by the network that did not train
    on them (with ``folds``: each fold's network; the kept model then learns from every subject).
    Training subjects would not do: the network is surer of faces it trained on.
    ``held_out``: ``[(rows, probabilities [len(rows), C])]``, one per split. Returns
    ``{"space", "labels", "reference", "subjects", "images", "description"}``, or ``{"reason"}``
    saying why there is none."""
    if "neutral" not in labels:
        return {"reason": "the labels have no neutral class"}
    neutral = list(labels).index("neutral")
    ids = table.expression_ids(labels)
    probabilities, persons = [], []
    for rows, probs in held_out:
        rows = np.asarray(rows, dtype=np.int64)
        if probs is None or not len(rows):
            continue
        mine = ids[rows] == neutral
        probabilities.append(np.asarray(probs, np.float64)[mine])
        persons += table.subject[rows][mine].astype(str).tolist()
    if not persons:
        return {"reason": "no held-out subject has a neutral face"}
    space = NEUTRAL_DEFAULTS["space"]
    reference = people_reference(np.concatenate(probabilities), persons, space)
    subjects = len(set(persons))
    scored = "each fold's network, which did not train on them" if folds else "this network, which did not train on them"
    return {"space": space, "labels": list(labels),
            "reference": [round(float(v), 8) for v in reference],
            "subjects": subjects, "images": len(persons),
            "description": f"the mean offset of {subjects} held-out subjects' neutral faces "
                           f"({len(persons)} images), scored by {scored}"}


# --- results and report ----------------------------------------------------------------------------

def results_of(result, labels, data, table, images_read, start_name, model_cfg, train_cfg,
               seconds=None, export=None, command=None):
    """The content of ``results.json`` for a :func:`train` result."""
    from fer_tf.research import reporting  # deferred: keras (the machine's description)

    runs = result["runs"]
    test_subjects = sorted({s for r in runs for s in r["test"]["subjects"]})
    info = reporting.run_info(seed=train_cfg.seed)
    return {
        "evaluation": result["evaluation"],
        "labels": list(labels),
        "variant": model_cfg.variant,
        "from": str(start_name),
        "new_classes": runs[0]["new_classes"],
        "split": {"kind": "folds" if len(runs) > 1 or runs[0]["name"] != "split" else "held-out subjects",
                  "folds": len(runs) if runs[0]["name"] != "split" else None,
                  "test_subjects": len(test_subjects),
                  "train_subjects": len(np.unique(table.subject.astype(str))) - (
                      len(test_subjects) if runs[0]["name"] == "split" else 0)},
        "runs": runs,
        "data": {"source": str(data), **data_summary(table, labels, images_read - len(table))},
        "seconds": {k: round(float(v), 1) for k, v in (seconds or {}).items()},
        "export": export,
        "neutral_reference": result.get("neutral_reference"),
        "command": command or info["command"],
        "seed": train_cfg.seed,
        "git_commit": info["git_commit"],
        "date": info["date"],
        "machine": info["machine"],
        "config": {"model": to_dict(model_cfg), "train": to_dict(train_cfg)},
    }


def write_report(out, results):
    """``out``/``curves.png``, ``confusion_matrix.png``, ``report.md`` and, last,
    ``results.json`` (each written atomically)."""
    from fer_tf.research import plots, reporting  # deferred: matplotlib, keras

    out = pathlib.Path(out)
    labels, evaluation = results["labels"], results["evaluation"]
    with atomic_path(out / "curves.png") as tmp:
        plots.mean_curves({results["variant"]: [r["history"] for r in results["runs"]]}, tmp,
                          panels=(("loss", "training loss"),
                                  ("fold_accuracy", "held-out accuracy (not used to select)")))
    with atomic_path(out / "confusion_matrix.png") as tmp:
        plots.confusion_matrix(evaluation["confusion"], labels, tmp,
                               title="held-out subjects (rows = true)")
    atomic_write_text(out / "report.md", report_markdown(results))
    reporting.write_json(out / "results.json", results)


def _machine(info):
    if not isinstance(info, dict):
        return str(info)
    return f"{info.get('cpu', '?')} ({info.get('cores', '?')} cores, {info.get('backend', '?')})"


def _neutral_line(neutral):
    if not neutral:
        return "- one person's neutral photo: no reference recorded (a run of an older fer-tf train)"
    if "reference" not in neutral:
        return (f"- one person's neutral photo (`fer-tf predict --baseline DIR`) cannot correct "
                f"this model: {neutral['reason']}")
    return (f"- `model.json` holds the reference with which `fer-tf predict --baseline DIR` corrects "
            f"one person by their neutral photo: {neutral['description']}")


def report_markdown(results):
    """The text of ``report.md``."""
    ev, labels, data = results["evaluation"], results["labels"], results["data"]
    split = results["split"]
    if split["folds"]:
        held = (f"{split['folds']}-fold subject-independent cross-validation (every subject held "
                f"out once; mean over folds {ev['fold_mean']:.1%} +- {ev['fold_std']:.1%}); the "
                "model kept was then trained on every subject")
    else:
        held = (f"{split['test_subjects']} held-out subjects "
                f"({', '.join(results['runs'][0]['test']['subjects'])}), "
                f"{split['train_subjects']} training subjects")
    lines = [
        f"# fer-tf train: {results['variant']} on {data['source']}", "",
        f"**Held-out accuracy: {ev['accuracy']:.1%}** ({ev['images']} images; {held}).", "",
        "Produced by:", "", "```", results["command"], "```", "",
        f"Commit `{results['git_commit']}`, {results['date']}, {_machine(results['machine'])}, seed "
        f"{results['seed']}. Started from `{results['from']}`"
        + (f"; new classes (fresh rows of the classifier): {', '.join(results['new_classes'])}"
           if results["new_classes"] else "") + "."
        + (f" Time: {results['seconds'].get('total', 0):.0f} s (alignment "
           f"{results['seconds'].get('align', 0):.0f} s, training {results['seconds'].get('train', 0):.0f}"
           f" s, export {results['seconds'].get('export', 0):.0f} s)." if results["seconds"] else ""),
        "", "## Data", "",
        f"{data['images']} images of {data['subjects']} subjects"
        + (f" ({data['left_out']} images of other labels left out)" if data["left_out"] else "") + ".",
        "", "| class | images | held-out recall |", "|---|---|---|",
    ]
    for name in labels:
        recall = ev["recall"].get(name)
        lines.append(f"| {name} | {data['per_class'][name]} | "
                     f"{'-' if recall is None else f'{recall:.1%}'} |")
    matrix = ev["confusion"]
    lines += ["", "## Confusion matrix (held-out images; rows = true, columns = predicted)", "",
              "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(labels, matrix)]
    lines += ["", "![confusion matrix](confusion_matrix.png)", "![curves](curves.png)", "",
              "## Files", "",
              "- `model.keras`: the trained network (`keras.saving.load_model` after `import fer_tf`; "
              "`fer-tf predict -m`, or `--from` of another `fer-tf train`)",
              "- `model.tflite` + `model.json`: the TFLite model for `fer-tf predict -m` and phones "
              + (f"(variant {results['export']['default']})" if results.get("export") else ""),
              "- `export/`: every exported variant, the SavedModel and `export_report.json`",
              _neutral_line(results.get("neutral_reference")),
              "- `results.json`: everything above, with the per-epoch history",
              "- `checkpoint/`: the training checkpoint (the same command resumes an interrupted run)",
              ""]
    return "\n".join(lines)

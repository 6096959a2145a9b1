"""The experiments behind `make pretrain` and `make finetune`, as functions the pipelines call.

- :func:`prepared_dataset`: a dataset's aligned 60x60 faces from the resumable preprocess cache.
- :func:`pretrain`: Section 5.2's first stage: convolutional groups + EC branch on FER2013
  ``Training`` with softmax (SGD, momentum 0.9, batch 128, weight decay 1e-4, halve-and-reload),
  validated on ``PublicTest``, tested on ``PrivateTest``.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time

import keras
import numpy as np

from fer_tf import locking
from fer_tf.training import distillation
from fer_tf.research import ensembles, evaluation
from fer_tf.deploy import export
from fer_tf.model import network, saving
from fer_tf.research import pretrain_report
from fer_tf.research import reporting
from fer_tf.training import loop, precision
from fer_tf.config import ModelConfig, TrainConfig, to_dict
from fer_tf.data.splits import subject_kfold
from fer_tf.data.table import FaceTable
from fer_tf.errors import ConfigError
from fer_tf.preprocess.normalize import normalize_many
from fer_tf.feeding.augment import Augmentation
from fer_tf.feeding.mixing import Mixing
from fer_tf.feeding.feeders import classification_dataset, eval_dataset, identity_aware_dataset, joint_dataset
from fer_tf.data.sampling import steps_per_epoch
from fer_tf.model.predict import accuracy, per_label_recall, predict_probabilities
from fer_tf.preprocess.prepared import prepared_dataset

BACKBONE_DIR = pathlib.Path("pretrained")
BACKBONE_NAME, COMMITTED_BACKBONE = pretrain_report.BACKBONE_NAME, pretrain_report.COMMITTED_BACKBONE


def float32_copy(model):
    """``model`` rebuilt under the float32 policy with the same weights (a mixed-precision run's
    checkpoint would otherwise build bfloat16 layers wherever it is loaded)."""
    if not isinstance(model, network.JointModel):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = network.JointModel(config=model.config, name=model.name)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def pretrain(data_root, model_config: ModelConfig, train_config: TrainConfig, output="runs/pretrain",
             report_dir="reports/fer2013", resume=True, verbose=2, max_train_images=None,
             publish=None):
    """Softmax pretraining on FER2013; writes ``output/pretrained.keras`` and the report.

    ``publish``: a folder that receives the float32 network as :data:`BACKBONE_NAME` with a JSON
    sidecar (labels, accuracies, provenance): the artifact `make finetune` and `make ship` start
    from.

    ``output`` is held by this process from the start (:mod:`fer_tf.locking`), so that a second
    run on it stops before it spends minutes reading the data.
    """
    with locking.holding(output, "the output folder"):
        return _pretrain(data_root, model_config, train_config, output, report_dir, resume, verbose,
                         max_train_images, publish)


def _pretrain(data_root, model_config, train_config, output, report_dir, resume, verbose,
              max_train_images, publish):
    from fer_tf.research import plots  # deferred: matplotlib

    started = time.time()
    loop.set_seed(train_config.seed)
    labels = model_config.labels
    table, faces, ids, split = fer2013_splits(data_root, labels)
    train_rows = split["Training"]
    if max_train_images:
        train_rows = np.random.default_rng(train_config.seed).permutation(train_rows)[:max_train_images]
    print(f"FER2013: {len(train_rows)} training, {len(split['PublicTest'])} validation, "
          f"{len(split['PrivateTest'])} test faces", file=sys.stderr)
    augmentation = Augmentation.from_config(train_config, model_config.input_size)
    train_faces, train_ids = faces[train_rows], ids[train_rows]  # one array: its tensor is reused
    targets, distilled = None, None
    if train_config.distill_from:
        targets, distilled = distillation.teacher_targets(
            train_config.distill_from, train_faces, train_ids, labels, train_config.distill_weight,
            train_config.distill_temperature, model_config.label_smoothing,
            keys=face_keys(table, data_root, train_rows))
        print(f"distillation: the teacher scores {distilled['teacher_train_accuracy']:.4f} on the training "
              f"faces; mean top probability {distilled['teacher_mean_top_probability']:.3f}", file=sys.stderr)

    def make_train(start_epoch):
        return classification_dataset(train_faces, train_ids, train_config.batch_size,
                                      augment=augmentation, seed=train_config.seed,
                                      start_epoch=start_epoch, soft_targets=targets,
                                      mixing=Mixing.from_config(train_config), num_classes=len(labels),
                                      label_smoothing=model_config.label_smoothing)

    val = split["PublicTest"]
    val_ds = eval_dataset(faces[val], batch_size=512, targets={"expression": ids[val]})
    previous_policy = keras.mixed_precision.global_policy()
    warning = precision.bfloat16_warning(train_config.mixed_precision,
                                         accelerators=reporting.machine().get("gpus", 0))
    if warning:
        print(warning, file=sys.stderr)
    if train_config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = network.build_model(model_config.variant, **{k: v for k, v in to_dict(model_config).items()
                                                            if k != "variant"})
        steps = train_config.steps_per_epoch or steps_per_epoch(len(train_rows), train_config.batch_size)
        settings = {"model": to_dict(model_config), "data": str(pathlib.Path(data_root).resolve()),
                    "training_faces": len(train_rows)}
        model, history = loop.fit(model, make_train, train_config, steps, validation_data=val_ds,
                                  workdir=output, resume=resume, verbose=verbose, settings=settings)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    model = float32_copy(model)
    out = pathlib.Path(output)
    model.save(out / "pretrained.keras")
    results = {**split_accuracies(model, faces, ids, split),
        "train_images": int(len(train_rows)),
        "labels": list(labels),
        **({"distillation": distilled} if distilled else {}),
        "history": history,
        "run": reporting.run_info({"model": to_dict(model_config), "train": to_dict(train_config),
                                   "data": str(data_root)}, seed=train_config.seed, started=started),
    }
    report = pathlib.Path(report_dir)
    reporting.write_json(report / "results.json", results)
    plots.training_curves({"softmax (FER2013)": history}, report / "curves.png")
    pretrain_report.write_readme(report)
    if publish is not None:
        publish_backbone(model, results, publish)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items() if k.endswith(("accuracy", "_flip"))
                      and v is not None)
    print(f"FER2013 {shown}; saved {out / 'pretrained.keras'}", file=sys.stderr)
    return results


def fer2013_splits(data_root, labels):
    """FER2013 as pretraining reads it: ``(table, normalised faces, label ids, {split: rows})``
    for the splits Training, PublicTest and PrivateTest (rows of faces with a label)."""
    table, faces = prepared_dataset(data_root, "fer2013")
    ids = table.expression_ids(labels)
    split = {name: np.flatnonzero((table.split == name) & (ids >= 0))
             for name in ("Training", "PublicTest", "PrivateTest")}
    return table, normalize_many(faces), ids, split


def face_keys(table, data_root, rows):
    """Each row's image path under ``data_root`` (``/``-separated): names the faces the same way on
    every machine (stored teacher probabilities are checked against them)."""
    root = pathlib.Path(data_root).resolve()
    keys = []
    for path in table.path[rows]:
        path = pathlib.Path(str(path)).resolve()
        keys.append(path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name)
    return keys


def split_accuracies(model, faces, ids, split):
    """PublicTest / PrivateTest accuracy, centre crop and flip-averaged (None for an absent split,
    e.g. a copy of FER2013 without its PrivateTest images)."""
    return ensembles.split_accuracies_of(ensembles.split_probabilities(model, faces, split), ids, split)


def publish_backbone(model, results, folder):
    """Write the pretrained network to ``folder/BACKBONE_NAME`` with a JSON sidecar."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / BACKBONE_NAME
    saving.save_model(model, path)
    sidecar = {
        "file": BACKBONE_NAME,
        "what": "FER2013-pretrained fer_tf network (softmax variant): backbone + expression branch",
        "labels": results["labels"],
        "input": "[B, 48, 48, 1] float32: normalised (fer_tf.preprocess.normalize) centre crops",
        "accuracy": {k: results[k] for k in ("public_test_accuracy", "private_test_accuracy",
                                             "public_test_accuracy_flip", "private_test_accuracy_flip")},
        "epochs": len(results["history"]),
        "git_commit": results["run"]["git_commit"],
        "command": results["run"].get("make_command") or results["run"]["command"],
        "report": "reports/fer2013/",
    }
    reporting.write_json(path.with_suffix(".json"), sidecar)
    return path


#: The identity-labelled shared datasets the shipped model is fine-tuned on: (folder, format).
IDENTITY_DATASETS = (("ckplus48", "ckplus48"), ("kdef-subset", "kdef"), ("yalefaces", "yale"))


def identity_training_set(datasets_dir, labels, datasets=IDENTITY_DATASETS):
    """The union of the identity-labelled datasets restricted to ``labels`` (ids namespaced)."""
    tables = []
    for folder, fmt in datasets:
        table, _ = prepared_dataset(pathlib.Path(datasets_dir) / folder, fmt)
        table.name = fmt
        tables.append(table.take(table.expression_ids(labels) >= 0))
    combined = FaceTable.concat(tables, name="identity")
    return combined, combined.pixels


def train_shipped_model(datasets_dir, pretrained_path, model_config: ModelConfig,
                        train_config: TrainConfig, output="runs/shipped", saved_models="saved_models",
                        report_dir="reports/shipped", verbose=2):
    """The shipped model: the FER2013-pretrained network trained jointly, in one run, on

    - identity-aware 2B(N+M) batches from the identity-labelled shared data (CK+48 without
      contempt, the KDEF subset, Yale), one subject-independent eighth of the subjects held out;
    - FER2013 ``Training`` images with softmax cross-entropy, ``train_config.classification_per_batch``
      of them appended to every batch (0: identity data only, which forgets FER2013); with
      ``train_config.distill_from``, their targets are the teachers' soft targets (the identity rows
      keep their labels).

    The held-out subjects and the FER2013 test splits measure it; it is exported (SavedModel,
    TFLite) and its inference ``.keras`` and default ``.tflite`` (the smallest variant that keeps
    top-1 agreement with Keras, :func:`fer_tf.deploy.choose.choose_default` with ``prefer="size"``:
    it runs on phones and in the web page, not on the machine that builds it, so the choice must
    not depend on this CPU) are copied into
    ``saved_models/`` with their label/preprocessing sidecars.
    """
    train_config.refuse_mixing("the shipped model (make ship)")
    started, commit = time.time(), reporting.git_commit()  # before this run writes its artefacts
    loop.set_seed(train_config.seed)
    labels = model_config.labels
    table, raw_faces = identity_training_set(datasets_dir, labels)
    faces = normalize_many(raw_faces)
    ids = table.expression_ids(labels)
    train_rows, test_rows = subject_kfold(table, k=8, seed=train_config.seed)[0]
    fer_table, fer_raw = prepared_dataset(pathlib.Path(datasets_dir) / "fer2013", "fer2013")
    fer_ids = fer_table.expression_ids(labels)
    fer_faces = normalize_many(fer_raw)
    fer_split = {name: np.flatnonzero((fer_table.split == name) & (fer_ids >= 0))
                 for name in ("Training", "PublicTest", "PrivateTest")}

    model = network.build_model(model_config.variant, **{k: v for k, v in to_dict(model_config).items()
                                                        if k != "variant"})
    pretrained = loop.load_checkpoint(pretrained_path, compile=False)
    copied = network.transfer_weights(pretrained, model)
    augmentation = Augmentation.from_config(train_config, model_config.input_size)
    train_table = table.take(train_rows)
    identity_args = dict(mode="in_batch", num_positives=model_config.num_positives,
                         num_negatives=model_config.num_negatives,
                         queries_per_batch=train_config.queries_per_batch, seed=train_config.seed,
                         augment=augmentation)
    train_faces = faces[train_rows]  # one array per source: their tensors are reused every epoch
    fer_train_faces, fer_train_ids = fer_faces[fer_split["Training"]], fer_ids[fer_split["Training"]]
    _, sampler = identity_aware_dataset(train_table, train_faces, labels, repeat=False,
                                        return_sampler=True, **identity_args)
    steps = train_config.steps_per_epoch or sampler.steps_per_epoch
    identity_epochs = -(-steps // sampler.steps_per_epoch)  # sampler epochs per training epoch
    per_batch = train_config.classification_per_batch
    targets, distilled = None, None
    if train_config.distill_from:
        if not per_batch:
            raise ConfigError("train.distill_from: the shipped model distils on its FER2013 rows; set "
                              "train.classification_per_batch above 0, or leave distill_from empty")
        fer_root = pathlib.Path(datasets_dir) / "fer2013"
        targets, distilled = distillation.teacher_targets(
            train_config.distill_from, fer_train_faces, fer_train_ids, labels, train_config.distill_weight,
            train_config.distill_temperature, model_config.label_smoothing,
            keys=face_keys(fer_table, fer_root, fer_split["Training"]))
        print(f"distillation on the FER2013 rows: the teacher scores {distilled['teacher_train_accuracy']:.4f} "
              "on the training faces", file=sys.stderr)

    def make_train(epoch):
        identity = identity_aware_dataset(train_table, train_faces, labels,
                                          start_epoch=epoch * identity_epochs, min_batches=steps,
                                          **identity_args)
        if not per_batch:
            return identity
        return joint_dataset(identity, classification_dataset(
            fer_train_faces, fer_train_ids, per_batch, augment=augmentation, seed=train_config.seed,
            start_epoch=epoch, soft_targets=targets))

    print(f"shipped model: {len(train_rows)} identity-labelled training images ({len(test_rows)} held "
          f"out), {per_batch} FER2013 images per batch, {steps} steps per epoch; "
          f"{len(copied)} layers from {pretrained_path}", file=sys.stderr)
    model, history = loop.fit(
        model, make_train, train_config, steps, workdir=pathlib.Path(output) / "train", verbose=verbose,
        callbacks=[evaluation.FoldAccuracy(faces[test_rows], ids[test_rows])],
        settings={"model": to_dict(model_config), "pretrained": str(pretrained_path),
                  "training_faces": len(train_rows)})
    p = predict_probabilities(model, faces[test_rows])
    held_out = {"images": int(len(test_rows)),
                "image_accuracy": accuracy(p, ids[test_rows]),
                "recall": per_label_recall(p, ids[test_rows], labels)}
    for name in np.unique([s.split(":")[0] for s in table.subject[test_rows]]):
        sel = np.array([s.startswith(name + ":") for s in table.subject[test_rows]])
        held_out[f"{name}_image_accuracy"] = accuracy(p[sel], ids[test_rows][sel])
        held_out[f"{name}_images"] = int(sel.sum())
    seq_p, seq_y, _ = evaluation.sequence_scores(p, table.sequence[test_rows], ids[test_rows])
    held_out["sequence_accuracy"] = float(np.mean(np.argmax(seq_p, 1) == seq_y))

    # FER2013 test splits, which training never saw.
    fer = {}
    for name in ("PublicTest", "PrivateTest"):
        rows = fer_split[name]
        fer[f"{name}_accuracy"] = accuracy(predict_probabilities(model, fer_faces[rows]), fer_ids[rows])
        fer[f"{name}_accuracy_flip"] = accuracy(predict_probabilities(model, fer_faces[rows], flip=True),
                                                fer_ids[rows])
    private = fer_split["PrivateTest"]
    fer["PrivateTest_recall"] = per_label_recall(predict_probabilities(model, fer_faces[private]),
                                                 fer_ids[private], labels)
    out = pathlib.Path(output)
    report = export.export_model(model, out / "export", labels=labels,
                                 calibration_faces=raw_faces[train_rows][::4],
                                 # held-out subjects and FER2013 PrivateTest: the default variant
                                 # must agree with Keras on the faces it will be checked on
                                 parity_faces=np.concatenate([raw_faces[test_rows],
                                                              fer_raw[fer_split["PrivateTest"]]]),
                                 source="make ship", prefer="size")
    target = pathlib.Path(saved_models)
    target.mkdir(parents=True, exist_ok=True)
    for src, dst in (("inference.keras", "fer_tf_basic7.keras"),
                     ("model.tflite", "fer_tf_basic7.tflite")):  # the chosen default variant
        shutil.copyfile(out / "export" / src, target / dst)
        sidecar = (out / "export" / src).with_suffix(".json")
        if sidecar.is_file():
            shutil.copyfile(sidecar, (target / dst).with_suffix(".json"))
    results = {
        "held_out_subjects": held_out, "fer2013": fer, "labels": list(labels),
        "train_images": int(len(train_rows)), "history": history,
        "fer2013_train_images": int(len(fer_split["Training"])) if per_batch else 0,
        "batch": {"identity_queries": int(sampler.batch_size), "fer2013_images": int(per_batch),
                  "steps_per_epoch": int(steps)},
        "export": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in report["variants"].items()},
        "tflite_default": {k: v for k, v in (report.get("default") or {}).items() if k != "path"},
        "sizes_bytes": {p.name: p.stat().st_size for p in sorted(target.glob("fer_tf_basic7.*"))},
        **({"distillation": distilled} if distilled else {}),
        "run": reporting.run_info({"model": to_dict(model_config), "train": to_dict(train_config),
                                   "pretrained": str(pretrained_path)}, seed=train_config.seed,
                                  started=started, commit=commit),
    }
    results["pretrained"] = start = starting_network(pretrained_path)
    pretrain_results = pathlib.Path(report_dir).parent / "fer2013" / "results.json"
    if "private_test_accuracy" in start:  # what the network it started from scores, from its sidecar
        results["pretrained_fer2013"] = {k: start[k] for k in ("public_test_accuracy", "private_test_accuracy")}
    elif pretrain_results.is_file():  # a backbone without a sidecar: the committed one's report
        pre = json.loads(pretrain_results.read_text())
        results["pretrained_fer2013"] = {k: pre[k] for k in ("public_test_accuracy", "private_test_accuracy")}
    reporting.write_json(pathlib.Path(report_dir) / "results.json", results)
    write_model_card(results, target / "MODEL_CARD.md")
    return results


def starting_network(path):
    """What a run starts from: the network file (relative to the working directory where it is
    inside it), its digest and, from its JSON sidecar (:func:`publish_backbone`), how it was made
    and what it scores on FER2013."""
    from fer_tf.research.crossval import file_digest  # deferred: its campaign machinery

    path = pathlib.Path(path)
    shown = path.resolve()
    shown = shown.relative_to(pathlib.Path.cwd()) if shown.is_relative_to(pathlib.Path.cwd()) else shown
    info = {"file": shown.as_posix(), "sha256_12": file_digest(path)}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        info.update({k: meta[k] for k in ("command", "git_commit") if meta.get(k)})
        if info["file"] == COMMITTED_BACKBONE and meta.get("report"):  # others name the committed one's
            info["report"] = meta["report"]
        info.update({k: v for k, v in (meta.get("accuracy") or {}).items()
                     if k in ("public_test_accuracy", "private_test_accuracy")})
    return info


def _pretraining_step(start):
    """Step 1 of the model card: the FER2013-pretrained network the shipped model starts from."""
    if not start:  # results written before the start was recorded: the committed backbone
        return ("`make pretrain`: the network and its expression branch on FER2013 `Training` with softmax\n"
                "   (`configs/pretrain.yaml`; report in `reports/fer2013/`).")
    made = (f", made by `{start['command']}`" if start.get("command") else "") + (
        f" at commit `{start['git_commit'][:7]}`" if start.get("git_commit") else "")
    scores = (f"; {100 * start['private_test_accuracy']:.1f}% on FER2013 PrivateTest"
              if start.get("private_test_accuracy") is not None else "")
    report = f"; report in `{start['report']}`" if start.get("report") else ""
    return (f"FER2013 pretraining: the network and its expression branch on FER2013 `Training` with\n"
            f"   softmax. The shipped model starts from `{start['file']}`\n   (sha256 `{start['sha256_12']}`"
            f"{made}{scores}{report}).")


def _distillation_note(distilled):
    """Step 2 of the model card, when the FER2013 rows learnt a teacher's soft targets."""
    if not distilled:
        return ""
    teacher = distilled["teacher"]
    teacher = (f"the mean of {len(teacher)} networks' probabilities ({', '.join(f'`{pathlib.Path(t).name}`' for t in teacher)})"
               if isinstance(teacher, list) else f"the probabilities of `{pathlib.Path(teacher).name}`")
    return (f"\n   The FER2013 rows learn soft targets: {distilled['weight']:g} x {teacher}, which score "
            f"{100 * distilled['teacher_train_accuracy']:.1f}% on those training faces, plus "
            f"{1 - distilled['weight']:g} x their smoothed labels (`train.distill_from`).")


def write_model_card(results, path):
    """saved_models/MODEL_CARD.md from the measured results of `make ship`."""
    h, fer, run = results["held_out_subjects"], results["fer2013"], results["run"]
    default = (results.get("tflite_default") or {}).get("variant", "dynamic")
    chosen_for = ("the smallest" if (results.get("tflite_default") or {}).get("prefer") == "size"
                  else "the fastest")  # results written before `prefer` chose by speed
    dyn = results["export"].get(default, {}).get("parity", {})
    sizes = ", ".join(f"`{k}` {v / 1e6:.2f} MB" for k, v in results["sizes_bytes"].items()
                      if not k.endswith(".json"))
    pre = results.get("pretrained_fer2013") or {}
    forgetting = ""
    if pre:
        start = results.get("pretrained")
        where = "" if start and not start.get("report") else f" (`{(start or {}).get('report', 'reports/fer2013/')}`)"
        forgetting = (f"\n- In-the-wild accuracy: the FER2013-pretrained network scores "
                      f"{100 * pre['private_test_accuracy']:.1f}% on PrivateTest{where}, the "
                      f"shipped model {100 * fer['PrivateTest_accuracy']:.1f}%.")
    batch = results.get("batch") or {}
    recall_rows = "\n".join(
        f"| {name} | {100 * h['recall'][name]:.1f}% | "
        f"{100 * fer['PrivateTest_recall'][name]:.1f}% |" if name in fer.get("PrivateTest_recall", {}) else
        f"| {name} | {100 * h['recall'][name]:.1f}% | n/a |"
        for name in results["labels"] if name in h.get("recall", {}))
    per_dataset = "\n".join(
        f"| held-out subjects: {name} | {h[f'{name}_images']} images | {100 * h[f'{name}_image_accuracy']:.1f}% |"
        for name in sorted({k.split('_image_accuracy')[0] for k in h if k.endswith('_image_accuracy')}))
    text = f"""# Model card: fer_tf_basic7

The default model of `fer-tf predict` and `fer_tf.Recognizer()`.

- **Files:** `fer_tf_basic7.keras` (Keras 3, loads in safe mode) and `fer_tf_basic7.tflite`
  (the `{default}` variant, {chosen_for} that keeps top-1 agreement with Keras; runs with
  `ai_edge_litert`), each with a JSON sidecar holding the labels
  and the input contract. Sizes: {sizes}.
- **Labels:** {", ".join(results["labels"])}.
- **Input:** one aligned grey face, `[1, 60, 60, 1]` float32 in 0..255: detected with mediapipe,
  rotated so the eyes are level, cropped square around the face-mesh landmarks (1.10 x their extent, centred 0.05 of
  the side above them, the framing of FER2013's faces: `reports/framing`)
  and resized to 60x60 (`fer_tf.preprocess.align.FaceAligner`). Histogram equalisation, plane
  fitting, zero mean / unit variance and the centre 48x48 crop are inside the model.
- **Output:** probabilities over the labels.

## How it was trained
1. {_pretraining_step(results.get("pretrained"))}
2. `make ship`: {len(results["history"])} epochs of joint training in one run (`configs/ship.yaml`):
   every batch holds {batch.get("identity_queries", "?")} identity-aware 2B(N+M) queries (identity-aware
   negatives, online positive mining, adaptive threshold) from the identity-labelled shared data,
   CK+48 (without contempt), the frontal KDEF subset (anger, happiness, sadness) and Yale faces
   (happiness, neutral, sadness, surprise), followed by {batch.get("fer2013_images", 0)} FER2013
   `Training` faces that count in the cross-entropy only. One eighth of the identity subjects is
   held out ({h["images"]} images) to measure it; {results["train_images"]} identity training images,
   {results.get("fer2013_train_images", 0)} FER2013 training images.{_distillation_note(results.get("distillation"))}

Commit `{run["git_commit"]}`, {run["date"]}, {run["machine"]["cpu"]} ({run["machine"]["cores"]} cores),
seed {run["seed"]}. All figures below are in `reports/shipped/results.json`.

## Accuracy

| benchmark | protocol | accuracy |
|---|---|---|
| held-out subjects, all | image level, subjects never seen in training | {100 * h["image_accuracy"]:.1f}% |
| held-out subjects, all | sequence level (CK+ frames averaged) | {100 * h["sequence_accuracy"]:.1f}% |
{per_dataset}
| FER2013 PublicTest | single model, centre crop, 3,589 images | {100 * fer["PublicTest_accuracy"]:.1f}% |
| FER2013 PrivateTest | single model, centre crop, 3,589 images | {100 * fer["PrivateTest_accuracy"]:.1f}% |

Recall per expression (the fraction of its images called by its name):

| expression | held-out identity subjects | FER2013 PrivateTest |
|---|---|---|
{recall_rows}

The paper's cross-validated comparison of the variants on CK+ is in `reports/ckplus48/`.
TFLite (`{default}`) vs Keras on the held-out faces and FER2013 PrivateTest: top-1 agreement
{100 * dyn.get("top1_agreement", float("nan")):.1f}%, largest probability difference
{dyn.get("max_abs_prob_diff", float("nan")):.3f}.

## Intended use and limitations
- For research, teaching and prototypes that recognise posed or clear expressions of one or more
  frontal faces. Not for judging a person's feelings, honesty or suitability for anything: an
  expression is not an emotion, and the model's errors are not evenly spread.
- Trained on small research datasets of mostly young adults, posed in a lab (CK+, KDEF, Yale) and
  on web images (FER2013); accuracy on other ages, skin tones, poses, lighting, occlusions and
  spontaneous expressions is unmeasured and likely lower. Neutral comes from FER2013 and 15 Yale
  subjects; contempt is not among the labels.
- Faces that mediapipe does not detect (strong profile, very small, heavily occluded) are reported
  as "no face found", not classified.
- The training datasets are licensed for research only; check their licences before any other use.{forgetting}
"""
    pathlib.Path(path).write_text(text)



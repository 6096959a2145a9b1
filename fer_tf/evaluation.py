"""Cross-validation of the paper's variants; predictions, accuracies, sequence voting, confusion
matrices, identity probe.

:func:`cross_validate` runs every variant on every subject-independent fold from the pretrained
weights and keeps one small ``result.json`` per (fold, variant) under the run folder, so an
interrupted cross-validation resumes at the fold and variant where it stopped. :func:`write_report`
turns those results into ``results.json``, a README laid out like the paper's Table 3 and Table 1,
and the figures.

Model selection never looks at the test fold: the learning-rate schedule watches the training
loss, the model after the last epoch is the one evaluated, and the per-epoch test-fold accuracy is
recorded for the curves only.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import keras
import numpy as np

from fer_tf import models, training
from fer_tf.config import ModelConfig, TrainConfig, to_dict
from fer_tf.data.splits import leave_one_subject_out, subject_kfold
from fer_tf.preprocess.normalize import normalize_many
from fer_tf.preprocess.prepared import prepared_dataset
from fer_tf.reporting import write_json
from fer_tf.sampling import eval_dataset, identity_aware_dataset

#: Table 3 of the paper: CK+ sequence-level accuracy (8-fold, subject-independent, 7 expressions).
PAPER_CKPLUS = {"softmax": None, "1B(N+1)": 0.9321, "2B(N+1)": 0.943, "1B(N+M)": 0.9655, "2B(N+M)": 0.971}


def slug(variant):
    return variant.lower().replace("(", "_").replace(")", "").replace("+", "p")


def predict_probabilities(model, faces, batch_size=256, flip=False):
    """Class probabilities of the EC branch on centre-cropped faces (batched, not per image).

    ``flip=True`` averages them with those of the mirrored crops (test-time flip averaging)."""
    ec = model.ec_model() if hasattr(model, "ec_model") else model
    p = ec.predict(eval_dataset(faces, batch_size=batch_size), verbose=0)
    if flip:
        p = 0.5 * (p + ec.predict(eval_dataset(np.asarray(faces)[:, :, ::-1], batch_size=batch_size),
                                  verbose=0))
    return p


def per_label_recall(probabilities, label_ids, labels):
    """``{label: fraction of its images predicted as it}`` (labels with no image are left out)."""
    label_ids = np.asarray(label_ids)
    predicted = np.argmax(probabilities, axis=1)
    return {name: float(np.mean(predicted[label_ids == i] == i))
            for i, name in enumerate(labels) if np.any(label_ids == i)}


def accuracy(probabilities, label_ids):
    """Fraction of the rows with a label (``label_ids >= 0``) whose arg-max is that label."""
    label_ids = np.asarray(label_ids)
    keep = label_ids >= 0
    return float(np.mean(np.argmax(probabilities[keep], axis=1) == label_ids[keep]))


def sequence_scores(probabilities, sequence, labels_ids):
    """Average the scores of each sequence's frames (the paper's sequence-level prediction).

    Rows with an empty sequence id are their own sequence. Returns (mean probabilities, label ids,
    sequence ids) per sequence.
    """
    keys = np.array([s if s != "" else f"#row{i}" for i, s in enumerate(sequence)], dtype=object)
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    sums = np.zeros((len(uniq), probabilities.shape[1]))
    np.add.at(sums, inverse, probabilities)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    seq_labels = np.full(len(uniq), -1)
    seq_labels[inverse] = labels_ids
    return sums / counts, seq_labels, uniq


def confusion(true_ids, pred_ids, n):
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_ids), np.asarray(pred_ids)), 1)
    return matrix


def identity_probe(features, subjects, sequences, seed=0, steps=300):
    """Accuracy of a linear probe that predicts the subject from features of held-out images.

    For subjects with two or more sequences (or images, when there are no sequences), one sequence
    per subject is held out; a softmax-regression probe is trained on the others and tested on the
    held-out ones. Chance level is 1 / (number of probed subjects). Returns (accuracy, subjects).
    """
    rng = np.random.default_rng(seed)
    subjects = np.asarray(subjects).astype(str)
    groups = np.asarray([s if s != "" else f"#{i}" for i, s in enumerate(sequences)]).astype(str)
    train_rows, test_rows = [], []
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        seqs = np.unique(groups[rows])
        if len(seqs) < 2:
            continue
        held = rng.choice(seqs)
        test_rows.extend(rows[groups[rows] == held])
        train_rows.extend(rows[groups[rows] != held])
    if not test_rows:
        return None, 0
    probed = np.unique(subjects[test_rows])
    index = {s: i for i, s in enumerate(probed)}
    x = np.asarray(features, np.float32)
    x = (x - x[train_rows].mean(0)) / (x[train_rows].std(0) + 1e-6)
    y = np.array([index.get(s, -1) for s in subjects])
    keras.utils.set_random_seed(seed)
    probe = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(len(probed))])
    probe.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe.fit(x[train_rows], y[train_rows], batch_size=len(train_rows), epochs=steps, verbose=0)
    predicted = np.argmax(probe.predict(x[test_rows], verbose=0), axis=1)
    return float(np.mean(predicted == y[test_rows])), len(probed)


class FoldAccuracy(keras.callbacks.Callback):
    """Record the image-level accuracy on the held-out fold after each epoch (curves only)."""

    def __init__(self, faces, label_ids):
        super().__init__()
        self.dataset = eval_dataset(faces, batch_size=256)
        self.label_ids = np.asarray(label_ids)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "_ec_of", None) is not self.model:  # built once per model, not per epoch
            self._ec, self._ec_of = self.model.ec_model(), self.model
        probabilities = self._ec.predict(self.dataset, verbose=0)
        logs["fold_accuracy"] = float(np.mean(np.argmax(probabilities, 1) == self.label_ids))


def train_variant(variant, table, faces, train_rows, test_rows, model_config: ModelConfig,
                  train_config: TrainConfig, pretrained=None, workdir=None, mode="in_batch",
                  verbose=2):
    """Fine-tune one variant on ``train_rows``; evaluate on ``test_rows``. Returns a result dict."""
    labels = model_config.labels
    ids = table.expression_ids(labels)
    values = {k: v for k, v in to_dict(model_config).items() if k != "variant"}
    model = models.build_model(variant, **values)
    copied = []
    if pretrained is not None:
        copied = models.transfer_weights(pretrained, model)
    train_table = table.take(train_rows)
    queries = train_config.queries_per_batch if mode == "in_batch" else 12
    train_faces = faces[train_rows]  # one array: its tensor is reused every epoch

    def make_train(start_epoch):
        return identity_aware_dataset(
            train_table, train_faces, labels, mode=mode,
            num_positives=model_config.num_positives, num_negatives=model_config.num_negatives,
            queries_per_batch=queries, seed=train_config.seed, start_epoch=start_epoch)

    _, sampler = identity_aware_dataset(
        train_table, train_faces, labels, mode=mode, num_positives=model_config.num_positives,
        num_negatives=model_config.num_negatives, queries_per_batch=queries, seed=train_config.seed,
        repeat=False, return_sampler=True)
    steps = train_config.steps_per_epoch or sampler.steps_per_epoch
    started = time.time()
    model, history = training.fit(
        model, make_train, train_config, steps, workdir=workdir, verbose=verbose,
        callbacks=[FoldAccuracy(faces[test_rows], ids[test_rows])])
    probabilities = predict_probabilities(model, faces[test_rows])
    features = model.feature_model().predict(eval_dataset(faces[test_rows]), verbose=0)
    return {
        "variant": variant, "mode": mode, "train_rows": len(train_rows), "test_rows": len(test_rows),
        "transferred_layers": len(copied), "steps_per_epoch": int(steps),
        "train_seconds": round(time.time() - started, 1),
        "history": history, "probabilities": probabilities, "features": features, "model": model,
    }


def _summarise_fold(result, table, test_rows, labels):
    ids = table.expression_ids(labels)[test_rows]
    p = result["probabilities"]
    seq_p, seq_y, _ = sequence_scores(p, table.sequence[test_rows], ids)
    probe, probed = identity_probe(result["features"], table.subject[test_rows],
                                   table.sequence[test_rows])
    return {
        "image_accuracy": float(np.mean(np.argmax(p, 1) == ids)),
        "sequence_accuracy": float(np.mean(np.argmax(seq_p, 1) == seq_y)),
        "images": int(len(ids)), "sequences": int(len(seq_y)),
        "sequence_confusion": confusion(seq_y, np.argmax(seq_p, 1), len(labels)).tolist(),
        "identity_probe_accuracy": probe, "identity_probe_subjects": probed,
        "history": result["history"], "train_seconds": result["train_seconds"],
        "steps_per_epoch": result["steps_per_epoch"], "mode": result["mode"],
    }


def cross_validate(root, fmt, variants, model_config: ModelConfig, train_config: TrainConfig,
                   folds=8, pretrained_path=None, output="runs/finetune", tuple_mode_fold=None,
                   verbose=2, embedding_fold=0, max_folds=None):
    """k-fold subject-independent cross-validation of ``variants``; resumable per (fold, variant).

    Returns the per-fold summaries ``{variant: [fold dicts]}`` plus ``"tuple_mode"`` when
    ``tuple_mode_fold`` is given (2B(N+M) trained on that fold in the paper's tuple mode).
    """
    table, faces = prepared_dataset(root, fmt)
    keep = table.expression_ids(model_config.labels) >= 0
    table, faces = table.take(keep), faces[keep]
    faces = normalize_many(faces)
    splits = leave_one_subject_out(table) if folds in ("loso", 0) else subject_kfold(
        table, k=folds, seed=train_config.seed)
    pretrained = training.load_checkpoint(pretrained_path, compile=False) if pretrained_path else None
    output = pathlib.Path(output)
    jobs = [(k, v, "in_batch") for k in range(min(len(splits), max_folds or len(splits)))
            for v in variants]
    if tuple_mode_fold is not None:
        jobs.append((tuple_mode_fold, "2B(N+M)", "tuple"))
    results = {}
    for n, (k, variant, mode) in enumerate(jobs, 1):
        name = slug(variant) + ("" if mode == "in_batch" else "-tuple")
        done = output / f"fold{k}" / name / "result.json"
        if done.is_file():
            summary = json.loads(done.read_text())
        else:
            print(f"[{n}/{len(jobs)}] fold {k + 1}/{len(splits)}, {variant}, {mode} mode",
                  file=sys.stderr)
            train_rows, test_rows = splits[k]
            result = train_variant(variant, table, faces, train_rows, test_rows, model_config,
                                   train_config, pretrained, workdir=done.parent, mode=mode,
                                   verbose=verbose)
            summary = _summarise_fold(result, table, test_rows, model_config.labels)
            if k == embedding_fold and mode == "in_batch":
                np.savez_compressed(done.parent / "test_features.npz", features=result["features"],
                                    expression=table.expression[test_rows].astype(str),
                                    subject=table.subject[test_rows].astype(str))
            write_json(done, summary)
            for leftover in ("last.keras", "best.weights.h5"):  # the summary is all we keep
                (done.parent / leftover).unlink(missing_ok=True)
            print(f"    sequence accuracy {summary['sequence_accuracy']:.4f}, image accuracy "
                  f"{summary['image_accuracy']:.4f}", file=sys.stderr)
        key = variant if mode == "in_batch" else "tuple_mode"
        results.setdefault(key, [None] * len(splits))[k] = summary
    return results, table, splits


def _pca(features, dims=2):
    x = np.asarray(features, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:dims].T


def aggregate(results, labels):
    """Fold summaries -> the ``variants`` section of results.json."""
    out = {}
    for variant, folds in results.items():
        folds = [f for f in folds if f is not None]
        if not folds:
            continue
        seq_correct = sum(f["sequence_accuracy"] * f["sequences"] for f in folds)
        img_correct = sum(f["image_accuracy"] * f["images"] for f in folds)
        probes = [(f["identity_probe_accuracy"], f["identity_probe_subjects"]) for f in folds
                  if f["identity_probe_accuracy"] is not None]
        out[variant] = {
            "sequence_accuracy": seq_correct / sum(f["sequences"] for f in folds),
            "image_accuracy": img_correct / sum(f["images"] for f in folds),
            "fold_sequence_accuracy": [f["sequence_accuracy"] for f in folds],
            "fold_image_accuracy": [f["image_accuracy"] for f in folds],
            "folds_done": len(folds),
            "identity_probe_accuracy": (float(np.mean([p for p, _ in probes])) if probes else None),
            "identity_probe_chance": (float(np.mean([1 / n for _, n in probes])) if probes else None),
            "train_seconds": float(sum(f["train_seconds"] for f in folds)),
            "sequence_confusion": np.sum([f["sequence_confusion"] for f in folds], axis=0).tolist(),
        }
    return out


def write_report(results, labels, report_dir, run_dir, run_info, dataset, folds, paper=None,
                 embedding_fold=0):
    """results.json, README.md (Table 3 and Table 1 layouts) and the PNG figures."""
    from fer_tf import plots  # deferred: matplotlib

    report = pathlib.Path(report_dir)
    report.mkdir(parents=True, exist_ok=True)
    variants = aggregate({k: v for k, v in results.items() if k != "tuple_mode"}, labels)
    tuple_mode = None
    if "tuple_mode" in results:
        done = [(k, f) for k, f in enumerate(results["tuple_mode"]) if f is not None]
        if done:
            k, f = done[0]
            in_batch = (results.get("2B(N+M)") or [None] * (k + 1))[k]
            tuple_mode = {
                "fold": k, "tuple_sequence_accuracy": f["sequence_accuracy"],
                "tuple_image_accuracy": f["image_accuracy"], "tuple_train_seconds": f["train_seconds"],
                "in_batch_sequence_accuracy": in_batch and in_batch["sequence_accuracy"],
                "in_batch_image_accuracy": in_batch and in_batch["image_accuracy"],
                "in_batch_train_seconds": in_batch and in_batch["train_seconds"],
            }
    best = max(variants, key=lambda v: variants[v]["sequence_accuracy"]) if variants else None
    has_sequences = any(f is not None and f["sequences"] < f["images"]
                        for runs in results.values() for f in runs)
    data = {"dataset": dataset, "folds": folds, "labels": list(labels), "variants": variants,
            "has_sequences": has_sequences,
            "best_variant": best, "tuple_mode": tuple_mode, "paper": paper, "run": run_info}
    write_json(report / "results.json", data)

    figures = []
    if best:
        figures.append(plots.confusion_matrix(variants[best]["sequence_confusion"], labels,
                                              report / "confusion_matrix.png",
                                              title=f"{best}: sequence-level confusion ({dataset})"))
    histories = {}
    for variant, folds_ in results.items():
        fold = next((f for f in folds_ if f is not None), None)
        if fold is not None:
            hist = [dict(row, val_accuracy=row.get("fold_accuracy")) for row in fold["history"]]
            histories[variant if variant != "tuple_mode" else "2B(N+M), tuple mode"] = hist
    if histories:
        figures.append(plots.training_curves(histories, report / "curves.png",
                                             title=f"{dataset}: first fold (accuracy on its held-out subjects)"))
    for variant in variants:
        path = pathlib.Path(run_dir) / f"fold{embedding_fold}" / slug(variant) / "test_features.npz"
        if path.is_file():
            with np.load(path) as z:
                figures.append(plots.embedding_scatter(
                    _pca(z["features"]), z["expression"], z["subject"],
                    report / f"embedding_{slug(variant)}.png",
                    title=f"{variant} FC2 features (PCA, fold {embedding_fold + 1})"))
    (report / "README.md").write_text(_readme(data, figures, report))
    return data


def _pct(x):
    return "–" if x is None else f"{100 * x:.2f}%"


def _readme(data, figures, report):
    v, paper = data["variants"], data.get("paper") or {}
    lines = [f"# {data['dataset']}: subject-independent {data['folds']}-fold cross-validation", "",
             "Produced by:", "", "```", data["run"].get("make_command") or data["run"]["command"], "```",
             "", f"Commit `{data['run']['git_commit']}`, {data['run']['date']}, "
             f"{data['run']['machine']['cpu']} ({data['run']['machine']['cores']} cores), seed "
             f"{data['run']['seed']}. Training time summed over folds and variants: "
             f"{sum(r['train_seconds'] for r in v.values()) / 60:.0f} min (the command that wrote "
             f"this report ran {data['run'].get('wall_time_s', '?')} s; finished folds are reused).", "",
             "## Accuracy (layout of the paper's Table 3)", "",
             "| method | sequence-level (ours) | image-level (ours) | paper | folds done | identity probe (chance) |",
             "|---|---|---|---|---|---|"]
    for name, r in v.items():
        probe = (f"{_pct(r['identity_probe_accuracy'])} ({_pct(r['identity_probe_chance'])})"
                 if r["identity_probe_accuracy"] is not None else "–")
        lines.append(f"| {name} | {_pct(r['sequence_accuracy'])} | {_pct(r['image_accuracy'])} | "
                     f"{_pct(paper.get(name))} | {r['folds_done']}/{data['folds']} | {probe} |")
    lines += ["", "Sequence-level: the scores of a sequence's frames are averaged (datasets without "
              "sequences: sequence = image). Identity probe: accuracy of a linear classifier that "
              "predicts the subject from the EC branch's FC2 features of held-out images (one "
              "sequence per subject held out); lower means the features carry less identity."]
    if data.get("has_sequences"):
        lines[-1] += (" Each sequence shows one expression, so the probe must recognise a subject "
                      "in an expression it never saw for them: it measures identity that survives "
                      "a change of expression, and values below chance mean the features group "
                      "faces by expression rather than by person.")
    lines += [""]
    if data.get("tuple_mode"):
        t = data["tuple_mode"]
        lines += ["## `tuple` vs `in_batch` mode (2B(N+M), fold "
                  f"{t['fold'] + 1})", "", "| mode | sequence-level | image-level | training time |",
                  "|---|---|---|---|",
                  f"| in_batch | {_pct(t['in_batch_sequence_accuracy'])} | {_pct(t['in_batch_image_accuracy'])} | {t['in_batch_train_seconds']} s |",
                  f"| tuple | {_pct(t['tuple_sequence_accuracy'])} | {_pct(t['tuple_image_accuracy'])} | {t['tuple_train_seconds']} s |", ""]
    lines += _against_paper(data, pathlib.Path(report).parent / "fer2013" / "results.json")
    best = data.get("best_variant")
    if best:
        labels = data["labels"]
        m = np.asarray(v[best]["sequence_confusion"], float)
        rates = m / np.maximum(m.sum(1, keepdims=True), 1)
        lines += [f"## Confusion matrix of {best}, sequence level (layout of Table 1, rows = true)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, name in enumerate(labels):
            lines.append(f"| {name} | " + " | ".join(f"{100 * rates[i, j]:.1f}" for j in range(len(labels))) + " |")
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def _against_paper(data, pretrain_results):
    """A measured comparison with the paper's figures and ordering (when the config gives them)."""
    v, paper = data["variants"], data.get("paper") or {}
    shared = [name for name in paper if name in v and paper[name] is not None]
    if not shared:
        return []
    lines = ["## Against the paper", "",
             "| method | ours - paper (sequence level, points) |", "|---|---|"]
    for name in shared:
        lines.append(f"| {name} | {100 * (v[name]['sequence_accuracy'] - paper[name]):+.2f} |")
    ours = sorted(shared, key=lambda n: -v[n]["sequence_accuracy"])
    theirs = sorted(shared, key=lambda n: -paper[n])
    same = "the same as" if ours == theirs else "different from"
    lines += ["", f"Ordering by sequence-level accuracy: ours {' > '.join(ours)}; the paper's "
              f"{' > '.join(theirs)} ({same} the paper's)."]
    folds = {name: v[name]["fold_sequence_accuracy"] for name in shared}
    spread = max(float(np.std(f)) for f in folds.values())
    lines += [f"The largest standard deviation of a variant's accuracy across folds is "
              f"{100 * spread:.1f} points, so differences between variants smaller than that are "
              "within the noise of one cross-validation run.", ""]
    if pathlib.Path(pretrain_results).is_file():
        fer = json.loads(pathlib.Path(pretrain_results).read_text())
        lines += [f"What differs from the paper's setup: the pretrained network reaches "
                  f"{100 * fer['private_test_accuracy']:.1f}% on FER2013 PrivateTest after the CPU "
                  "schedule of `configs/pretrain.yaml` (reports/fer2013), the paper's second "
                  "pretraining stage on Multi-PIE is not available here, and each fold is "
                  f"fine-tuned for {data['run']['config']['train']['epochs']} epochs on a 2-core CPU. "
                  "Weaker starting features and short fine-tuning lower every variant; the "
                  "comparison between variants is made under the same conditions.", ""]
    return lines

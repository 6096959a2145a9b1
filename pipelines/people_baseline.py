"""Measure a person's own expression baseline (fer_tf.people.baseline) -> reports/people/.

    python pipelines/people_baseline.py [--datasets ../shared/datasets] [--samples 10000]

Models, each only on people it never saw in training:
- ``shipped``: saved_models/fer_tf_basic7.keras on the subjects `make ship` held out (the first of
  its 8 subject folds, seed 0: 13 CK+48, 8 KDEF and 2 Yale subjects);
- ``backbone``: pretrained/fer2013_backbone.keras (FER2013 only) on every CK+48, KDEF and Yale
  subject.
Faces: the experiments' face cache (CK+48 resized, KDEF and Yale detected and aligned by
fer_tf.preprocess). Predictions are cached in runs/people/.

Conditions, per dataset: plain; ``self`` (each person's own faces, true identities) under every
option of the grid; ``neutral`` (Yale only: each subject's ``normal`` photo enrolled, scored on
their other photos); and ``self`` on skewed runs, where a person's faces are 80% one expression
(their faces of that expression repeated, like the frames of a video). Statistics: accuracy
difference to plain with a paired bootstrap over subjects (95% CI).
"""

import argparse
import itertools
import json
import pathlib
import sys

import numpy as np

from _common import DATASETS, REPO, run

LABELS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
DATASET_NAMES = ("ckplus48", "kdef", "yale")
SHRINKAGE = (0.0, 1.0, 2.0, 4.0)
SKEW_SHARE = 0.8
YALE_NEUTRAL = ("noglasses", "glasses", "centerlight")


# --- predictions ----------------------------------------------------------------------------------

def predictions(datasets, cache):
    """``{model: {"probabilities", "dataset", "subject", "expression_id", "condition", "held_out"}}``
    for the identity-labelled faces (Yale with its normal photos), cached in ``cache``."""
    cache = pathlib.Path(cache)
    path = cache / "predictions.npz"
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        return {m: {k[len(m) + 1:]: data[k] for k in data.files if k.startswith(m + "/")}
                for m in ("shipped", "backbone")}
    from fer_tf.data.splits import subject_kfold
    from fer_tf.data.table import FaceTable
    from fer_tf.model import saving
    from fer_tf.preprocess.normalize import normalize_many
    from fer_tf.model.predict import predict_probabilities
    from fer_tf.research.experiments import identity_training_set

    table, faces = identity_training_set(datasets, LABELS)
    extra_table, extra_faces = yale_neutral_conditions(datasets, cache)
    table = FaceTable.concat([table, extra_table], name="people", namespace=False)
    faces = np.concatenate([faces, extra_faces])
    held_out = np.zeros(len(table), bool)
    identity = np.arange(len(table) - len(extra_table))
    # the split train_shipped_model uses, on the same identity-labelled table
    held_out[identity[subject_kfold(table.take(identity), k=8, seed=0)[0][1]]] = True
    held_out[len(identity):] = np.isin(table.subject[len(identity):], table.subject[held_out])
    meta = {"dataset": np.array([s.split(":")[0] for s in table.subject]),
            "subject": table.subject.astype(str), "expression_id": table.expression_ids(LABELS),
            "path": np.array([pathlib.Path(p).name for p in table.path]), "held_out": held_out,
            "extra": np.arange(len(table)) >= len(identity)}
    shipped = saving.load_model(REPO / "saved_models" / "fer_tf_basic7.keras")
    backbone = saving.load_model(REPO / "pretrained" / "fer2013_backbone.keras", check=False)
    print(f"predicting {len(table)} faces with the shipped model and the FER2013 backbone", file=sys.stderr)
    out = {"shipped": {**meta, "probabilities": shipped.predict(faces[..., None].astype(np.float32),
                                                               batch_size=256, verbose=0)},
           "backbone": {**meta, "probabilities": predict_probabilities(backbone, normalize_many(faces))}}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"{m}/{k}": v for m, d in out.items() for k, v in d.items()})
    return out


def yale_neutral_conditions(datasets, cache):
    """Yale's ``noglasses``, ``glasses`` and ``centerlight`` photos (neutral expressions under
    other conditions, which the Yale reader leaves out) as neutral faces: the check that a neutral
    face stays neutral after its person's neutral photo is subtracted. Read through a manifest of
    links in ``cache`` and the same face cache as the rest. ``(table, faces)``."""
    from fer_tf.preprocess.prepared import prepared_dataset

    folder = pathlib.Path(cache) / "yale-neutral"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["path,expression,subject"]
    for source in sorted((pathlib.Path(datasets) / "yalefaces").iterdir()):
        stem, _, condition = source.name.partition(".")
        if condition in YALE_NEUTRAL:
            link = folder / source.name
            if not link.is_symlink():
                link.symlink_to(source.resolve())
            lines.append(f"{source.name},neutral,yale:{stem}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    table, faces = prepared_dataset(folder, "manifest")
    table.name = "yale"
    return table, faces


# --- statistics -----------------------------------------------------------------------------------

def compare(correct_a, correct_b, subjects, samples, seed=0):
    """Accuracy of a and b and the paired difference a - b, with a bootstrap over subjects."""
    from fer_tf.research.stats import subject_bootstrap

    diff = correct_a.astype(np.float64) - correct_b
    lo, hi = subject_bootstrap(diff, subjects, samples=samples, seed=seed)
    return {"accuracy": float(correct_a.mean()), "plain_accuracy": float(correct_b.mean()),
            "difference": float(diff.mean()), "ci95": [lo, hi], "faces": int(len(diff)),
            "subjects": int(len(np.unique(subjects))),
            "faces_gained": int(np.sum(diff > 0)), "faces_lost": int(np.sum(diff < 0))}


# --- conditions -----------------------------------------------------------------------------------

def self_grid(other_faces):
    """Every option combination of the self baseline: name -> kwargs. ``ref=other-datasets``: a
    reference fixed in advance, :func:`~fer_tf.people.baseline.reference_offset` of the other
    datasets' faces (what a reference stored with the model would do)."""
    from fer_tf.people.baseline import ESTIMATORS, EVIDENCE, SPACES, reference_offset

    grid = {}
    for space, estimator, evidence, k, reference in itertools.product(
            SPACES, ESTIMATORS, EVIDENCE, SHRINKAGE, ("none", "run", "other-datasets")):
        name = f"{space}/{estimator}/{evidence}/k={k:g}/ref={reference}"
        if reference == "other-datasets":
            reference = reference_offset(other_faces, space=space, estimator=estimator)
        grid[name] = dict(space=space, estimator=estimator, evidence=evidence, shrinkage=k,
                          reference=reference)
    return grid


def skewed_runs(subjects, labels, seed=0, share=SKEW_SHARE):
    """Rows of the skewed runs: for every person and every expression they show that is not
    their only one, all their other faces plus that expression's faces repeated (cycled) to make
    ``share`` of the run. Returns ``(rows, run_ids, person_of_run)``."""
    rows, runs, owners = [], [], []
    rng = np.random.default_rng(seed)
    for person in np.unique(subjects):
        mine = np.flatnonzero(subjects == person)
        for expression in np.unique(labels[mine]):
            dominant = mine[labels[mine] == expression]
            others = mine[labels[mine] != expression]
            if not len(others):
                continue
            need = int(round(share / (1 - share) * len(others)))
            repeated = np.resize(rng.permutation(dominant), need)
            run_rows = np.concatenate([repeated, others])
            rows.append(run_rows)
            runs.append(np.full(len(run_rows), f"{person}#{expression}", object))
            owners.append(np.full(len(run_rows), person, object))
    if not rows:
        return np.zeros(0, int), np.zeros(0, object), np.zeros(0, object)
    return np.concatenate(rows), np.concatenate(runs), np.concatenate(owners)


def measure_dataset(p, subjects, y, samples, grid):
    """All conditions on one dataset's faces of one model."""
    from fer_tf.people import baseline

    out = {"faces": int(len(y)), "subjects": int(len(np.unique(subjects))),
           "plain_accuracy": float(np.mean(np.argmax(p, 1) == y)), "self": {}, "skewed": {}}
    plain = np.argmax(p, 1) == y
    persons = subjects.astype(object)
    for name, options in grid.items():
        result = baseline.correct_self(p, persons, **options)
        out["self"][name] = compare(result.predicted == y, plain, subjects, samples)
    rows, runs, owners = skewed_runs(subjects, y)
    if len(rows):
        plain_skewed = np.argmax(p[rows], 1) == y[rows]
        out["skewed_faces"] = int(len(rows))
        out["skewed_runs"] = int(len(np.unique(runs)))
        for name, options in grid.items():
            result = baseline.correct_self(p[rows], runs, **options)
            out["skewed"][name] = compare(result.predicted == y[rows], plain_skewed,
                                          owners.astype(str), samples)
    return out


def measure_neutral(p, subjects, y, paths, extra, samples):
    """Yale: each subject's ``normal`` photo enrolled; scored on their happy, sad and surprised
    photos and on their neutral photos under other conditions (``extra``)."""
    from fer_tf.people import baseline

    enrolled = np.array([n.endswith(".normal") for n in paths])
    test = ~enrolled & np.isin(subjects, subjects[enrolled])
    plain = np.argmax(p[test], 1) == y[test]
    neutral_faces = extra[test]
    out = {"faces": int(test.sum()), "neutral_faces": int(neutral_faces.sum()),
           "subjects": int(len(np.unique(subjects[test]))), "neutral": {}}

    def scored(correct):
        # all test faces; the expressive ones only; the neutral ones only
        return {"all": compare(correct, plain, subjects[test], samples),
                "expressive": compare(correct[~neutral_faces], plain[~neutral_faces],
                                      subjects[test][~neutral_faces], samples),
                "neutral": compare(correct[neutral_faces], plain[neutral_faces],
                                   subjects[test][neutral_faces], samples)}

    for space, k, reference in itertools.product(baseline.SPACES, SHRINKAGE, ("none", "run")):
        name = f"{space}/k={k:g}/ref={reference}"
        result = baseline.correct_neutral(p[test], subjects[test].astype(object), p[enrolled],
                                          subjects[enrolled].astype(object), space=space, shrinkage=k,
                                          reference=reference)
        out["neutral"][name] = scored(result.predicted == y[test])
    # the self baseline (defaults) on the same faces, the enrolled photo not among them
    out["self_defaults"] = scored(baseline.correct_self(p[test], subjects[test].astype(object)).predicted
                                  == y[test])
    return out


def measure(data, samples):
    grid = self_grid
    results = {}
    for model, d in data.items():
        results[model] = {}
        for name in DATASET_NAMES:
            seen = d["held_out"] if model == "shipped" else np.ones(len(d["held_out"]), bool)
            keep = (d["dataset"] == name) & (d["expression_id"] >= 0) & seen
            if not keep.any():
                continue
            others = (d["dataset"] != name) & (d["expression_id"] >= 0) & seen & ~d["extra"]
            main = keep & ~d["extra"]
            p, s, y = d["probabilities"][main], d["subject"][main], d["expression_id"][main]
            print(f"{model} {name}: {main.sum()} faces", file=sys.stderr)
            results[model][name] = measure_dataset(p, s, y, samples, grid(d["probabilities"][others]))
            if name == "yale":
                results[model][name]["enrolled_neutral"] = measure_neutral(
                    d["probabilities"][keep], d["subject"][keep], d["expression_id"][keep],
                    d["path"][keep], d["extra"][keep], samples)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--cache", default=REPO / "runs" / "people")
    parser.add_argument("--report", default=REPO / "reports" / "people")
    parser.add_argument("--samples", type=int, default=10000, help="bootstrap samples")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite README.md from the report's results.json without measuring")
    args = parser.parse_args()
    from fer_tf.research import reporting

    if args.report_only:
        from fer_tf.research.people_report import write_report

        report = pathlib.Path(args.report)
        write_report(json.loads((report / "results.json").read_text()), report / "README.md")
        return

    data = predictions(args.datasets, args.cache)
    from fer_tf.people.baseline import NEUTRAL_DEFAULTS, SELF_DEFAULTS
    from fer_tf.research.people_report import choose_defaults, write_report

    models = measure(data, args.samples)
    d, n = SELF_DEFAULTS, NEUTRAL_DEFAULTS
    module = {"self": f"{d['space']}/{d['estimator']}/{d['evidence']}/k={d['shrinkage']:g}/ref={d['reference']}",
              "neutral": f"{n['space']}/k={n['shrinkage']:g}/ref={n['reference']}"}
    results = {"models": models, "defaults": {"chosen": choose_defaults(models), "module": module},
               "labels": list(LABELS), "skew_share": SKEW_SHARE, "bootstrap_samples": args.samples,
               "run": reporting.run_info({"samples": args.samples}, seed=0)}

    report = pathlib.Path(args.report)
    reporting.write_json(report / "results.json", results)
    write_report(results, report / "README.md")
    print(json.dumps(results["defaults"]))
    if results["defaults"]["chosen"] != module:
        print("note: the measured defaults differ from fer_tf.people.baseline's; update SELF_DEFAULTS / "
              "NEUTRAL_DEFAULTS", file=sys.stderr)


if __name__ == "__main__":
    run(main)

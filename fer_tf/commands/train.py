"""`fer-tf train DATA -o OUT`: fine-tune on your own identity-labelled faces, evaluate, export.

DATA is any dataset the readers take (a folder, or a manifest CSV ``path,expression,subject``).
The faces are aligned into the usual cache (runs/cache, or $FER_TF_CACHE; a progress bar on a
terminal), a few subjects are held out (all their images: ``--test-subjects``, by default about 1/8
of the subjects, at least 2; ``--folds K`` cross-validates instead, then trains the kept model on
every subject),
the ``--variant`` is fine-tuned ``--from`` the shipped model (default), the FER2013-pretrained
backbone, random weights or a .keras file, evaluated on the held-out subjects, and exported.

OUT then holds model.keras (the trained network: ``keras.saving.load_model`` after ``import
fer_tf``, or ``fer-tf predict -m``), model.tflite with its sidecar model.json, results.json and
report.md (held-out accuracy, per-class recall, confusion matrix, curves as PNGs, the command, seed,
commit and a data summary), export/ (every TFLite variant, the SavedModel) and checkpoint/
(running the same command again resumes an interrupted run). Files of a finished run are never
replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import shutil
import sys
import time

from fer_tf import locking
from fer_tf.data.formats import FORMATS as _FORMATS
from fer_tf.errors import ConfigError, OutputError
from fer_tf.files import atomic_write_bytes, atomic_write_text

_VARIANTS = ("softmax", "1B(N+1)", "2B(N+1)", "1B(N+M)", "2B(N+M)")


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def register(subparsers):
    parser = subparsers.add_parser(
        "train", help="fine-tune on your own data, evaluate on held-out subjects, export",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", metavar="DATA", help="dataset folder or manifest CSV")
    parser.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--format", "-f", choices=_FORMATS, default=None,
                        help="layout of DATA (detected when left out)")
    parser.add_argument("--from", dest="start", default="shipped", metavar="START",
                        help="shipped (default: the model of fer-tf predict), backbone "
                             "(pretrained/fer2013_backbone.keras), scratch, or a .keras file")
    parser.add_argument("--variant", default="2B(N+M)", choices=_VARIANTS,
                        help="loss variant (default 2B(N+M))")
    parser.add_argument("--labels", metavar="NAMES",
                        help="classes in output order, e.g. anger,happiness,sadness; SRC=DST "
                             "relabels SRC images as DST (default: every expression in DATA)")
    parser.add_argument("--test-subjects", metavar="K|ID,ID",
                        help="hold out K subjects, or these ones (default: about 1/8, at least 2)")
    parser.add_argument("--folds", type=_positive, metavar="K",
                        help="K-fold subject-independent cross-validation instead of one split")
    parser.add_argument("--epochs", type=_positive, help="epochs (default 15)")
    parser.add_argument("--seed", type=int, help="seed of the split and the training (default 0)")
    parser.add_argument("--config", metavar="YAML",
                        help="model: and train: settings (the layout of configs/finetune/*.yaml)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of a finished run in OUT (and start afresh)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-epoch lines")
    parser.set_defaults(func=run)


def run(args):
    if args.folds is not None and args.test_subjects is not None:
        raise ConfigError("--folds and --test-subjects exclude each other: cross-validation holds "
                          "out every subject once")
    if args.folds == 1:
        raise ConfigError("--folds 1: cross-validation needs at least 2 folds")
    started = time.time()
    out = pathlib.Path(args.output)
    settings = _settings(args)
    # a run training into -o now: neither resume it a second time nor clear it (--overwrite)
    locking.ensure_free(out / "checkpoint", "the checkpoint folder")
    _check_output(out, settings, args.overwrite)
    # deferred: numpy, OpenCV and MediaPipe (alignment), keras and TensorFlow (training, export)
    from fer_tf.research import own_data

    log = sys.stderr
    from fer_tf.preprocess.prepared import DEFAULT_CACHE  # deferred: OpenCV, MediaPipe (aligning next)

    print(f"reading and aligning {args.data} (cached in {DEFAULT_CACHE})", file=log)
    table, faces = own_data.load_faces(args.data, args.format)
    read = len(table)
    table, labels = own_data.choose_labels(table, args.labels)
    faces = table.pixels  # the faces of the rows kept
    model_cfg, train_cfg = own_data.configs(args.variant, labels, args.config, epochs=args.epochs,
                                            seed=args.seed)
    start = own_data.starting_model(args.start)
    train_cfg = own_data.for_start(train_cfg, start)
    model_cfg = own_data.with_start_capacity(model_cfg, start)
    aligned = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint").mkdir(exist_ok=True)
    atomic_write_text(out / "checkpoint" / SETTINGS, json.dumps(settings, indent=2) + "\n")
    result = own_data.train(table, faces, labels, start, model_cfg, train_cfg, args.test_subjects,
                            args.folds, workdir=out / "checkpoint", verbose=0 if args.quiet else 2,
                            log=log)
    trained = time.time()

    from fer_tf.deploy.export import export_model  # deferred: TensorFlow's converter
    from fer_tf.model import saving

    saving.save_model(result["model"], out / "model.keras")
    print(f"exporting to {out / 'model.tflite'}", file=log)
    report = export_model(result["model"], out / "export", variants=("fp32", "dynamic"),
                          labels=labels, parity_faces=result["test_faces"],
                          source=str(out / "model.keras"))
    default = (report.get("default") or {}).get("path")
    if not default:
        raise OutputError(f"no TFLite model could be exported: {report['default']['reason']} "
                          f"(see {out / 'export' / 'export_report.json'})")
    atomic_write_bytes(out / "model.tflite", pathlib.Path(default).read_bytes())
    sidecar = json.loads(saving.metadata_path(default).read_text(encoding="utf-8"))
    sidecar["source"] = str(out / "model.keras")
    neutral = result["neutral_reference"]
    if "reference" in neutral:  # one person's neutral photo corrects against it (fer-tf predict --baseline)
        from fer_tf.deploy.people import NEUTRAL_REFERENCE  # deferred: numpy (the command starts light)

        sidecar[NEUTRAL_REFERENCE] = neutral
    atomic_write_text(out / "model.json", json.dumps(sidecar, indent=2) + "\n")
    results = own_data.results_of(
        result, labels, args.data, table, read, start_name=args.start, model_cfg=model_cfg,
        train_cfg=train_cfg, seconds={"align": aligned - started, "train": trained - aligned,
                                      "export": time.time() - trained,
                                      "total": time.time() - started},
        export={"default": report["default"]["variant"],
                "files": ["model.keras", "model.tflite", "model.json", "export/"]},
        command=command_line(args))
    own_data.write_report(out, results)  # results.json last: it marks the run finished
    evaluation = results["evaluation"]
    what = "cross-validated" if args.folds else "held-out"
    print(f"{what} accuracy {evaluation['accuracy']:.1%} on {evaluation['images']} images of "
          f"{results['split']['test_subjects']} subjects; wrote {out}/model.keras, model.tflite, "
          f"report.md, results.json ({results['seconds']['total']:.0f} s)")
    return 0


def command_line(args):
    """The `fer-tf train` command that ``args`` stand for (options at their defaults left out)."""
    words = ["fer-tf", "train", args.data, "-o", args.output]
    for flag, value, default in (("--format", args.format, None), ("--from", args.start, "shipped"),
                                 ("--variant", args.variant, "2B(N+M)"), ("--labels", args.labels, None),
                                 ("--test-subjects", args.test_subjects, None),
                                 ("--folds", args.folds, None), ("--epochs", args.epochs, None),
                                 ("--seed", args.seed, None), ("--config", args.config, None)):
        if value is not None and value != default:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words + (["--overwrite"] if args.overwrite else []))


#: The settings file that ties OUT's checkpoint to the options that made it.
SETTINGS = "settings.json"
#: What a finished run writes into OUT (the checkpoint folder aside); results.json comes last.
OUTPUTS = ("model.keras", "model.tflite", "model.json", "report.md", "confusion_matrix.png",
           "curves.png", "export", "results.json")
#: Options that change what the checkpoint holds (the others only change where things go).
_RESUMABLE = ("data", "format", "start", "variant", "labels", "test_subjects", "folds", "epochs",
              "seed", "config")


def _settings(args):
    values = {k: getattr(args, k) for k in _RESUMABLE}
    values["data"] = str(pathlib.Path(args.data).resolve())
    if args.config:
        path = pathlib.Path(args.config)
        values["config"] = {"path": str(path.resolve()),
                            "text": path.read_text(encoding="utf-8") if path.is_file() else None}
    return values


def _check_output(out, settings, overwrite):
    """Refuse to replace a finished run's files (without --overwrite) or to resume a checkpoint of
    other settings; with --overwrite, remove the earlier run's files (only those)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; pass another -o")
    checkpoint = out / "checkpoint"
    ours = checkpoint / SETTINGS
    present = [name for name in OUTPUTS if (out / name).exists()]
    if overwrite:
        for name in present:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if checkpoint.is_dir() and ours.is_file():
            shutil.rmtree(checkpoint)
        return
    if (out / "results.json").exists():
        raise OutputError(f"{out} holds a finished run (results.json, model.keras, ...); pass "
                          "--overwrite to replace it, or another -o")
    if present and not ours.is_file():
        raise OutputError(f"{out} holds files of another kind ({', '.join(present)}); pass "
                          "--overwrite to replace them, or another -o")
    if checkpoint.exists() and not ours.is_file() and any(checkpoint.iterdir()):
        raise OutputError(f"{checkpoint} holds files that fer-tf train did not write; pass another -o")
    if ours.is_file():
        try:
            before = json.loads(ours.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        changed = sorted(k for k in settings if not isinstance(before, dict)
                         or before.get(k) != settings[k])
        if changed:
            raise OutputError(
                f"{out} holds the checkpoint of a run with other settings ({', '.join(changed)} "
                "differ); rerun with the same options to resume it, pass --overwrite to start "
                "afresh, or choose another -o")
        print(f"resuming the run in {out}", file=sys.stderr)


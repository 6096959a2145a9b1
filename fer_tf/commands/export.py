"""`fer-tf export CHECKPOINT --output DIR`: SavedModel, inference.keras and TFLite variants.

Writes ``DIR/saved_model/``, ``DIR/inference.keras`` and ``DIR/model_{fp32,float16,dynamic,int8}.tflite``,
each with a ``<stem>.json`` metadata file (labels, input contract, preprocessing), and prints a table
of the variants with their sizes. ``--calibration ROOT`` gives the training faces that calibrate the
full-integer (int8) variant (without it int8 is skipped); ``--parity-data ROOT`` compares every TFLite
variant with the Keras model on faces from ROOT (top-1 agreement, largest probability difference);
``model.tflite`` is then the fastest variant on this machine that keeps top-1 agreement, or with
``--prefer size`` the smallest (for a model that will run on other machines: which variant is
fastest depends on the CPU).
The input and output of every variant, int8 included, are float32: ``[B, 60, 60, 1]`` grey pixels
0..255 in, ``[B, C]`` probabilities out.

An earlier export in DIR is replaced only with ``--overwrite`` (then all of its files, so that none
mixes with the new ones), never the checkpoint being exported; the export is built beside DIR and
moved in when complete, so a failure (a full disk) leaves DIR as it was.

``--flip-average`` (test-time augmentation, not in the paper) builds every artefact to average each
face's probabilities with those of its mirror image: about twice the network's cost per face (the
export report times every variant; `make bench` compares both); the sidecars say
``"flip_average": true``.
"""

from __future__ import annotations

import json

from fer_tf.data.formats import FORMATS as _FORMATS
from fer_tf.errors import ConfigError, DatasetError

_VARIANTS = ("fp32", "float16", "dynamic", "int8")


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to SavedModel and TFLite", description=__doc__)
    parser.add_argument("checkpoint",
                        help=".keras checkpoint written by training (make finetune, make ship) or "
                             "an inference.keras written by `fer-tf export`")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--calibration", metavar="ROOT",
                        help="dataset of training faces that calibrates the int8 variant")
    parser.add_argument("--parity-data", metavar="ROOT",
                        help="dataset of faces on which each TFLite variant is compared with Keras")
    parser.add_argument("--format", "-f", choices=_FORMATS, default=None,
                        help="layout of --calibration and --parity-data (detected when left out)")
    parser.add_argument("--calibration-format", choices=_FORMATS, default=None,
                        help="layout of --calibration when it differs from --format")
    parser.add_argument("--parity-format", choices=_FORMATS, default=None,
                        help="layout of --parity-data when it differs from --format")
    parser.add_argument("--calibration-size", type=int, default=200, metavar="N",
                        help="calibration faces drawn at random (default 200)")
    parser.add_argument("--parity-size", type=int, default=300, metavar="N",
                        help="parity faces drawn at random (default 300)")
    parser.add_argument("--variants", default=",".join(_VARIANTS),
                        help=f"comma-separated TFLite variants (default {','.join(_VARIANTS)})")
    parser.add_argument("--flip-average", action="store_true",
                        help="average each face's probabilities with its mirror image's (about "
                             "twice the cost per face; not in the paper)")
    parser.add_argument("--prefer", choices=("speed", "size"), default="speed",
                        help="the default model.tflite: the fastest variant on this machine that "
                             "keeps top-1 agreement with Keras (speed, the default), or the smallest "
                             "(size: for a model that will run on other machines, e.g. phones)")
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in DIR (all of its files)")
    parser.set_defaults(func=run)


def load_faces(root, fmt=None, limit=200, seed=0):
    """``[n, 60, 60]`` uint8 faces from a dataset (a random subset of at most ``limit``)."""
    # deferred: numpy and the code that needs it (`fer-tf --help` imports every command module)
    import numpy as np

    from fer_tf.data.readers import detect_format, read_dataset

    if fmt is None:
        fmt = detect_format(root)
        if fmt is None:
            raise DatasetError(f"cannot tell the dataset layout of {root}; pass --format")
    table = read_dataset(root, fmt)
    if len(table) > limit:
        pick = np.sort(np.random.default_rng(seed).choice(len(table), size=limit, replace=False))
        table = table.take(pick)
    faces = _prepare(table)
    if len(faces) == 0:
        raise DatasetError(f"no usable faces in {root} (no face found in the images drawn)")
    return faces


def _prepare(table):
    # deferred: numpy, and face alignment (OpenCV, MediaPipe)
    import numpy as np

    from fer_tf.preprocess.cache import prepare_faces

    faces, _kept, _skipped = prepare_faces(table, size=60)
    return np.asarray(faces, dtype=np.uint8)


def run(args):
    # deferred: numpy, LiteRT, TensorFlow
    from fer_tf.deploy.export import check_output, export_model, format_report

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = [v for v in variants if v not in _VARIANTS]
    if unknown or not variants:
        raise ConfigError(f"unknown --variants {unknown or args.variants!r}; use {', '.join(_VARIANTS)}")
    check_output(args.output, args.checkpoint, args.overwrite)  # before any slow work
    calibration = parity_faces = None
    if args.calibration:
        calibration = load_faces(args.calibration, args.calibration_format or args.format,
                                 args.calibration_size, seed=0)
    elif "int8" in variants and not args.json:
        print("note: no --calibration data, the int8 variant is skipped")
    if args.parity_data:
        parity_faces = load_faces(args.parity_data, args.parity_format or args.format,
                                  args.parity_size, seed=1)
    report = export_model(args.checkpoint, args.output, calibration_faces=calibration,
                          variants=variants, parity_faces=parity_faces, overwrite=args.overwrite,
                          flip_average=args.flip_average, prefer=args.prefer)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    failed = [v for v, e in report["variants"].items() if e["status"] == "failed"]
    return 1 if failed and len(failed) == len(variants) else 0

"""`fer-tf data summary ROOT [--format F] [--json]`: what a dataset folder holds, before training.

Prints images, subjects, sequences, images per expression, official splits, subjects that show only
one expression (they cannot give identity-aware negatives) and how many files the reader skipped,
with their reasons.

`fer-tf data identities ROOT [--format F] -o manifest.csv`: pseudo subject ids for a dataset without
them (the paper's advice for SFEW: an off-the-shelf face recogniser labels the subjects). Each
image's largest face is embedded (fer_tf.people.embedding) and all faces are grouped into people
(fer_tf.people.grouping); the manifest ``path,expression,subject`` has ``person-1``, ``person-2``,
... as subjects, and an empty subject where a face is missing, too small or too blurred (the
manifest reader skips those rows: they are never put with a person at random).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections import Counter

from fer_tf.data.formats import FORMATS as _FORMATS
from fer_tf.errors import ConfigError, DatasetError, OutputError
from fer_tf.files import atomic_write_text
from fer_tf.progress import Bar



def register(subparsers):
    parser = subparsers.add_parser("data", help="inspect datasets", description=__doc__)
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    summary = sub.add_parser("summary", help="count images, subjects, sequences and expressions")
    summary.add_argument("root", help="dataset folder (or CSV file for manifest / fer2013-csv)")
    summary.add_argument("--format", "-f", choices=_FORMATS, default=None,
                         help="dataset layout; detected from the folder when left out")
    add_reader_options(summary)
    summary.add_argument("--json", action="store_true", help="print JSON instead of text")
    summary.add_argument("--show-skipped", type=int, default=5, metavar="N",
                         help="list the first N skipped files (text output; default 5)")
    summary.set_defaults(func=run_summary)

    ids = sub.add_parser("identities", help="pseudo subject ids from face recognition -> manifest CSV",
                         description="Group a dataset's faces into people and write a manifest "
                                     "path,expression,subject with pseudo subject ids (person-1, "
                                     "person-2, ...). Paths are relative to the manifest's folder; "
                                     "read it with --format manifest (and --allow-outside when the "
                                     "images lie outside that folder).")
    ids.add_argument("root", help="dataset folder (or CSV file for manifest)")
    ids.add_argument("--format", "-f", choices=[f for f in _FORMATS if f not in ("fer2013-csv", "cache")],
                     default=None, help="dataset layout; detected from the folder when left out")
    ids.add_argument("--output", "-o", required=True, metavar="CSV", help="manifest to write")
    ids.add_argument("--overwrite", action="store_true", help="replace the manifest if it exists")
    ids.add_argument("--grouping", choices=("adaptive", "silhouette", "fixed"), default="adaptive",
                     help="adaptive (default): the number of people from the run's own distances; "
                          "silhouette: the earlier rule (best distance silhouette; splits photo "
                          "sessions); fixed: one distance threshold (--threshold)")
    ids.add_argument("--threshold", type=float, default=None,
                     help="--grouping fixed: the distance threshold (default 0.6, dlib's LFW value)")
    ids.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_reader_options(ids)
    ids.set_defaults(func=run_identities)


def add_reader_options(parser):
    """``--option KEY=VALUE`` (repeatable) and ``--allow-outside``, shared by the subcommands
    that read datasets (``-o`` is ``--output`` everywhere, so ``--option`` has no short form)."""
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. --option poses=S,FL or --option include_neutral=true")
    parser.add_argument("--allow-outside", action="store_true",
                        help="manifest: also read paths outside the manifest's folder (../ or "
                             "absolute paths elsewhere), which are skipped by default")


def reader_options(args, fmt):
    """The reader options of ``args`` for format ``fmt`` (``--allow-outside`` for manifests)."""
    options = parse_options(args.option)
    if getattr(args, "allow_outside", False):
        if fmt != "manifest":
            raise ConfigError(f"--allow-outside applies to manifest datasets, not {fmt}")
        options["allow_outside"] = True
    return options


def parse_options(items):
    """``["a=1", "poses=S,FL"]`` -> ``{"a": 1, "poses": ("S", "FL")}``."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"reader option {item!r} is not KEY=VALUE")
        value = value.strip()
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        elif value.lstrip("-").isdigit():
            parsed = int(value)
        elif "," in value:
            parsed = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            parsed = value
        options[key.strip().replace("-", "_")] = parsed
    return options


def collect_summary(root, fmt=None, options=None, args=None):
    """Read ``root`` and return the summary dict printed by the command (``args``: the command's
    arguments, whose reader options are added once the format is known)."""
    # deferred: numpy (`fer-tf --help` imports every command module)
    from fer_tf.data.readers import LAYOUTS, detect_format, read_dataset

    if fmt is None:
        fmt = detect_format(root)
        if fmt is None:
            raise DatasetError(
                f"cannot tell the dataset layout of {root}; pass --format with one of: "
                f"{', '.join(LAYOUTS)}"
            )
    options = dict(options or {})
    if args is not None:
        options.update(reader_options(args, fmt))
    table, skipped = read_dataset(root, fmt, return_skipped=True, **options)
    info = {"root": str(root), "format": fmt}
    info.update(table.summary())
    info["skipped"] = len(skipped)
    info["skipped_reasons"] = dict(sorted(Counter(s["reason"] for s in skipped).items()))
    info["skipped_files"] = skipped
    return info


def run_summary(args):
    try:
        parse_options(args.option)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    info = collect_summary(args.root, args.format, args=args)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_summary(info, args.show_skipped))
    return 0


def format_summary(info, show_skipped=5):
    lines = [
        f"dataset:    {info['root']} (format {info['format']})",
        f"images:     {info['images']}",
        f"subjects:   {info['subjects']}",
        f"sequences:  {info['sequences']}",
        "expressions:",
    ]
    lines += [f"  {name:<10} {n}" for name, n in info["expressions"].items()]
    if info["splits"]:
        lines.append("splits:")
        lines += [f"  {name:<12} {n}" for name, n in info["splits"].items()]
    single = info["single_expression_subjects"]
    if info["subjects"]:
        shown = ", ".join(single[:10]) + (", ..." if len(single) > 10 else "")
        lines.append(f"subjects with one expression only: {len(single)}" + (f" ({shown})" if single else ""))
    lines.append(f"skipped files: {info['skipped']}")
    lines += [f"  {reason}: {n}" for reason, n in info["skipped_reasons"].items()]
    for item in info["skipped_files"][:show_skipped]:
        lines.append(f"    {item['path']}: {item['reason']}")
    return "\n".join(lines)


def run_identities(args):
    """``fer-tf data identities``: the manifest with pseudo subject ids (module docstring)."""
    out = pathlib.Path(args.output)
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise OutputError(f"{out} is a folder; give the manifest's file name, e.g. {out / 'manifest.csv'}")
    if args.threshold is not None and args.grouping != "fixed":
        raise ConfigError("--threshold applies to --grouping fixed")
    # deferred: numpy, OpenCV, MediaPipe and dlib (`fer-tf --help` imports every command module)
    from fer_tf.data.readers import LAYOUTS, detect_format, read_dataset
    from fer_tf.people.embedding import IdentityEmbedder
    from fer_tf.people.folder import detect_largest, embed_all, manifest_text, pseudo_subjects
    from fer_tf.preprocess.align import FaceAligner

    fmt = args.format or detect_format(args.root)
    if fmt is None or fmt == "cache":
        raise DatasetError(f"cannot tell the dataset layout of {args.root}; pass --format with one of: "
                           f"{', '.join(f for f in LAYOUTS if f != 'cache')}")
    table = read_dataset(args.root, fmt, **reader_options(args, fmt))
    if not len(table):
        raise DatasetError(f"{args.root}: no images to group (format {fmt})")
    paths = list(table.path)
    bar = Bar(len(paths), unit="images (faces)", enabled=not args.quiet)
    with FaceAligner(engine="litert") as aligner:
        found = detect_largest(paths, aligner, progress=bar)
    bar.close()
    bar = Bar(len(paths), unit="images (identities)", enabled=not args.quiet)
    vectors, reasons = embed_all(found, IdentityEmbedder(), progress=bar)
    bar.close()
    subjects, grouping = pseudo_subjects(vectors, method=args.grouping, threshold=args.threshold)
    base = os.path.dirname(os.path.abspath(out))  # links are kept: the reader checks the text
    rows = [{"path": os.path.relpath(os.path.abspath(p), base), "expression": e, "subject": s or ""}
            for p, e, s in zip(paths, table.expression, subjects)]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, manifest_text(rows))
    missing = Counter(r.split(":")[0] for r in reasons if r)
    print(f"identities: {len(paths)} images, {sum(s is not None for s in subjects)} faces in "
          f"{grouping.count} people -> {out}")
    for reason, n in sorted(missing.items()):
        print(f"  no subject ({reason}): {n}")
    if any(r["path"].startswith("..") or os.path.isabs(r["path"]) for r in rows):
        print(f"  the images lie outside {base}: read the manifest with --format manifest --allow-outside")
    return 0

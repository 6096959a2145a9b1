"""`fer-tf preprocess ROOT [--format F] --output OUT [--json] [--align|--no-align]`: the face cache.

Aligns (or, for datasets of pre-cropped faces, resizes) every image of a dataset once and writes
OUT/faces.npz (uint8 [n, 60, 60]) and OUT/manifest.json (rows, labels, source, settings, skipped
files with reasons). Training and `fer-tf data summary` read OUT as format ``cache``. The run works in
chunks: if it is interrupted, run the same command again to resume; on a complete cache it does
nothing and prints the same summary. OUT must be a new or empty folder, or a cache written by this
command: a folder holding other files (for example the dataset itself) is refused.
"""

from __future__ import annotations

import json
import os
import re
import sys

from fer_tf.commands.data import add_reader_options, reader_options
from fer_tf.data.formats import IMAGE_FORMATS as _FORMATS
from fer_tf.errors import ConfigError, DatasetError



def register(subparsers):
    parser = subparsers.add_parser(
        "preprocess", help="align faces once and cache them for training", description=__doc__)
    parser.add_argument("root", help="dataset folder (or CSV file for manifest / fer2013-csv)")
    parser.add_argument("--format", "-f", choices=_FORMATS, default=None,
                        help="dataset layout; detected from the folder when left out")
    parser.add_argument("--output", "-o", required=True, metavar="OUT",
                        help="cache folder to write: new, empty, or a cache of the same settings")
    add_reader_options(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--align", dest="align", action="store_const", const=True, default=None,
                       help="detect and align every image (default: auto, resize pre-cropped "
                            "datasets such as ckplus48/fer2013, align the others)")
    group.add_argument("--no-align", dest="align", action="store_const", const=False,
                       help="never detect: resize every image to the face size")
    parser.add_argument("--size", type=int, default=60, help="face side in pixels (default 60)")
    parser.add_argument("--chunk-size", type=int, default=512,
                        help="images per resumable chunk (default 512)")
    parser.add_argument("--json", action="store_true",
                        help='print {"kept": n, "skipped": [{"path", "reason"}]} as JSON')
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--show-skipped", type=int, default=20, metavar="N",
                        help="list the first N skipped files (text output; default 20)")
    parser.set_defaults(func=run)


def run(args):
    if args.size < 8:
        raise ConfigError(f"--size must be at least 8, got {args.size}")
    if args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if re.fullmatch(r"\w+=.*", str(args.output)) and not os.path.exists(args.output):
        # `-o` used to be --option here: refuse to create a folder named "poses=S,FL"
        raise ConfigError(f"--output {args.output!r} looks like a reader option; reader options "
                          f"are given with --option KEY=VALUE (-o is --output)")
    # deferred: numpy and the code that needs it (`fer-tf --help` imports every command module);
    # face alignment also loads OpenCV and MediaPipe
    from fer_tf.data.readers import LAYOUTS, detect_format
    from fer_tf.preprocess.cache import build_cache

    fmt = args.format
    if fmt is None:
        fmt = detect_format(args.root)
        if fmt is None or fmt == "cache":
            raise DatasetError(
                f"cannot tell the dataset layout of {args.root}; pass --format with one of: "
                f"{', '.join(f for f in LAYOUTS if f != 'cache')}")
    options = reader_options(args, fmt)
    try:
        result = build_cache(args.root, fmt, args.output, align=args.align, size=args.size,
                             chunk_size=args.chunk_size, options=options, progress=not args.quiet)
    except TypeError as exc:  # a reader option the reader does not take
        raise DatasetError(f"bad reader option for format {fmt}: {exc}") from None
    if args.json:
        print(json.dumps({"kept": result["kept"], "skipped": result["skipped"]}, indent=1))
        return 0
    skipped = result["skipped"]
    print(f"preprocess: {result['kept']} faces kept, {len(skipped)} skipped -> {result['output']}")
    for item in skipped[: max(args.show_skipped, 0)]:
        print(f"  skipped {item['path']}: {item['reason']}")
    if len(skipped) > args.show_skipped:
        print(f"  ... and {len(skipped) - args.show_skipped} more (see --json or manifest.json)")
    if result.get("complete_before") and not args.quiet:
        print("preprocess: the cache was already complete; nothing to do", file=sys.stderr)
    return 0

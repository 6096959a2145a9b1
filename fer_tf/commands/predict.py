"""`fer-tf predict PATH... [--model M] [--json] [--annotate OUT]`: expressions of the faces in
images, folders and videos.

PATH may be an image, a video (.mp4, .avi, .mov, .mkv) or a folder, searched recursively for images
(by extension; files without an extension, or with one this program does not know but whose first
bytes are an image's, are tried too) and videos. Every face found is printed with its box
(x, y, width, height in pixels), its expression and the most likely expressions. ``--json`` prints a
JSON list with one entry per input: ``{"path", "faces": [{"box", "expression", "probabilities"}]}``
for images, ``{"path", "fps", "frames": [{"frame", "time", "faces"}], "summary"}`` for videos (the
largest face's probabilities are averaged over ``--window`` frames), and ``{"path", "error"}`` for
inputs that could not be processed.

Inputs that cannot be processed (missing, not an image, truncated, no face) are reported on stderr
and the others are still processed. The exit code is 0 when at least one input was processed, 1 when
none was, and 2 for a model or option error. Without ``--model`` the shipped model
``saved_models/fer_tf_basic7.tflite`` is used.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                    ".ppm", ".pbm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
# first bytes of the image formats Pillow reads, for files without a known extension
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def register(subparsers):
    parser = subparsers.add_parser(
        "predict", help="recognise facial expressions in images, folders and videos",
        description=__doc__, formatter_class=_RawFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image, video or folder")
    parser.add_argument("--model", "-m", default=None,
                        help="model file (.tflite or .keras from `fer-tf export`; default: the "
                             "shipped saved_models/fer_tf_basic7.tflite)")
    parser.add_argument("--backend", choices=("auto", "litert", "keras"), default="auto",
                        help="runtime (default: litert for .tflite, keras for .keras)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--annotate", metavar="OUT", default=None,
                        help="write annotated copies: OUT is a file for one input, else a folder")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="LiteRT interpreter threads (default: LiteRT's choice)")
    parser.add_argument("--window", type=int, default=5, metavar="N",
                        help="videos: average the tracked face over the last N frames (default 5)")
    parser.add_argument("--every", type=int, default=1, metavar="K",
                        help="videos: process every K-th frame (default 1)")
    parser.add_argument("--top", type=int, default=3, metavar="K",
                        help="text output: show the K most likely expressions (default 3)")
    parser.set_defaults(func=run)


class _RawFormatter(argparse.RawDescriptionHelpFormatter):
    pass


def _looks_like_image(path):
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(m) for m in _IMAGE_MAGIC)


def _kind(path):
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image"


def expand_inputs(paths):
    """The inputs in order: ``(path, kind, root)`` to process, or ``{"path", "error"}`` for a path
    that does not exist or a folder without images.

    Folders are walked recursively (sorted, hidden entries skipped); ``root`` is the folder an input
    came from (for naming annotated copies), or ``None`` for paths given directly.
    """
    items = []
    for arg in paths:
        p = pathlib.Path(arg)
        if not p.exists():
            items.append({"path": str(arg), "error": "file not found"})
            continue
        if not p.is_dir():
            items.append((p, _kind(p), None))
            continue
        found = False
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                f = pathlib.Path(dirpath) / name
                suffix = f.suffix.lower()
                if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS or suffix == "" \
                        or _looks_like_image(f):
                    items.append((f, _kind(f), p))
                    found = True
        if not found:
            items.append({"path": str(arg), "error": "folder holds no image or video files"})
    return items


def _annotation_target(out, path, root, kind, single):
    suffix = ".mp4" if kind == "video" else ".png"
    out = pathlib.Path(out)
    wanted = (VIDEO_EXTENSIONS if kind == "video" else IMAGE_EXTENSIONS)
    if single and out.suffix.lower() in wanted:
        return out
    if root is not None:
        rel = path.relative_to(root)
        stem = "__".join(rel.with_suffix("").parts) if rel.suffix else "__".join(rel.parts)
        stem = f"{root.name}__{stem}" if root.name else stem
    else:
        stem = path.stem if path.suffix else path.name
    return out / f"{stem}_annotated{suffix}"


def _format_face(i, face, top):
    x, y, w, h = face["box"]
    ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])[:max(1, top)]
    others = ", ".join(f"{name} {p:.2f}" for name, p in ranked)
    return f"  face {i} at x={x} y={y} w={w} h={h}: {face['expression']}  ({others})"


def _print_text(entry, top):
    if "error" in entry:
        return
    if "frames" in entry:
        s = entry["summary"]
        exprs = ", ".join(f"{name} in {n}" for name, n in s["expressions"].items()) or "none"
        print(f"{entry['path']}: video, {s['frames']} frames, a face in {s['frames_with_face']}; "
              f"tracked face: {exprs}")
        return
    faces = entry["faces"]
    print(f"{entry['path']}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
    for i, face in enumerate(faces, 1):
        print(_format_face(i, face, top))


def _error_text(exc):
    from fer_tf.errors import ImageError

    if isinstance(exc, ImageError):
        return exc.reason
    return str(exc)


def run(args):
    from fer_tf.errors import ConfigError, FerTfError

    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.window < 1 or args.every < 1:
        raise ConfigError("--window and --every must be at least 1")
    items = expand_inputs(args.paths)
    todo = [item for item in items if not isinstance(item, dict)]
    results = []
    recognizer = annotate = None
    if todo:
        from fer_tf.inference import Recognizer, annotate

        recognizer = Recognizer(args.model, backend=args.backend, window=args.window,
                                num_threads=args.threads)
    single = len(items) == 1 and len(todo) == 1 and todo[0][2] is None
    if args.annotate and todo and not single:
        pathlib.Path(args.annotate).mkdir(parents=True, exist_ok=True)
    try:
        for item in items:
            if isinstance(item, dict):
                print(f"fer-tf predict: {item['path']}: {item['error']}", file=sys.stderr)
                results.append(item)
                continue
            path, kind, root = item
            target = None
            if args.annotate:
                target = _annotation_target(args.annotate, path, root, kind, single)
            try:
                if kind == "video":
                    entry = recognizer.predict_video(path, every=args.every, annotate_to=target)
                    if not entry["summary"]["frames_with_face"]:
                        raise _NoFaceInVideo(path, entry["summary"]["frames"])
                else:
                    entry = recognizer.predict_path(path)
                    if target is not None:
                        _save_image(annotate(path, entry), target)
            except (FerTfError, _NoFaceInVideo) as exc:
                entry = {"path": str(path), "error": _error_text(exc)}
            except Exception as exc:  # noqa: BLE001 - never a traceback for one bad input
                entry = {"path": str(path), "error": f"unexpected {type(exc).__name__}: {exc}"}
            if "error" in entry:
                print(f"fer-tf predict: {entry['path']}: {entry['error']}", file=sys.stderr)
            elif not args.json:
                _print_text(entry, args.top)
            results.append(entry)
    finally:
        if recognizer is not None:
            recognizer.close()

    ok = [r for r in results if "error" not in r]
    failed = len(results) - len(ok)
    if args.json:
        print(json.dumps(results, indent=2))
    if failed:
        print(f"fer-tf predict: {failed} of {len(results)} inputs could not be processed"
              + ("" if ok else "; nothing was processed"), file=sys.stderr)
    return 0 if ok else 1


class _NoFaceInVideo(Exception):
    def __init__(self, path, frames):
        self.reason = f"no face found in any of {frames} frames"
        super().__init__(f"{path}: {self.reason}")

    def __str__(self):
        return self.reason


def _save_image(rgb, target):
    from PIL import Image

    target = pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(target)

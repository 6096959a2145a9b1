"""`fer-tf predict PATH... [--model M] [--json | --jsonl] [--csv OUT.csv] [--annotate OUT]
[--timeline OUT.png] [--people] [--enroll DIR] [--baseline DIR|self]`: expressions of the faces in
images, folders and videos, and who is who.

PATH may be an image, a video (.mp4, .webm, .avi, .mov, .mkv, .m4v) or a folder, searched
recursively for images (by extension; files without an extension, or with one this program does
not know but whose first bytes are an image's, are tried too) and videos. Every face found is
printed with its box (x, y, width, height in pixels), its expression and the most likely
expressions; a video prints one summary line (per-frame results: --csv, --jsonl or --json).

Outputs:
  --json       one JSON list at the end, one entry per input: {"path", "faces": [{"box",
               "expression", "probabilities"}]} for images, {"path", "fps", "frames": [{"frame",
               "time_s", "faces"}], "summary"} for videos (the largest face's probabilities are
               averaged over --window frames), {"path", "error"} for inputs that failed.
  --jsonl      the same as JSON lines, printed as they come (for large folders and long videos):
               one line per image, one per video frame ({"path", "frame", "time_s", "faces"}) then
               one per video ({"path", "fps", "summary"}), one per failed input.
  --csv OUT    one row per (image or frame, face): path, frame, time_s, face, x, y, w, h,
               expression, then one probability column per label. Images have frame 0 and an
               empty time_s; face counts from 1 (largest first); frames without a face have no
               row; video rows hold each frame's own probabilities (not averaged). OUT "-" writes
               the CSV to stdout instead of the text.
  --annotate OUT   annotated copies: OUT is a file when there is one input (an image name for an
               image, a video name for a video), else a folder of <name>_annotated.png and
               <name>_annotated.mp4 (H.264) or .webm (VP8, when this OpenCV has no H.264 encoder):
               both play in web browsers. Inputs with the same name get distinct output names;
               an input given twice is processed once. An input without any face gets no
               annotated copy. A video's copy lasts as long as the video (with --every K, at
               1/K of its frame rate) and appears once the video has been read.
  --timeline OUT   plots each video's expression probabilities over time (a file for one video,
               else a folder of <name>_timeline.png).

People (--people; --enroll and --baseline imply it):
  every face gets "person" (person-1, person-2, ... numbered in order of appearance, or an
  enrolled name; null with "person_reason" when the face is too small or blurred for a reliable
  identity) and, in videos, "track"; CSV rows get person and track columns. All images of a run
  are grouped into people together (the number of people comes from the faces), so their lines
  come once every image is read; each video has its own tracks and people. A per-person summary
  (faces, share, count and share of each expression; in videos the seconds in each) follows:
  {"inputs": [...], "people": {...}, "unmatched": [...]} for --json (the images' people; the
  enrolled names that matched no face in any input), a last {"people", "unmatched"} line for
  --jsonl, and "people" and "unmatched" in each video's summary. --enroll DIR: one subfolder of photos
  or one photo per name (the name is the subfolder's name or the file's stem); names that match
  no face are reported. --baseline self corrects each face by its person's own faces in the run;
  --baseline DIR by the neutral photos in DIR, matched to the people by face (no names needed;
  exit 2 when no photo there has a usable face). With a baseline, "expression" and
  "probabilities" are the corrected ones and "raw_expression", "raw_probabilities" (and in
  videos "raw_frame_probabilities") the model's own; the CSV adds raw_expression and raw_<label>
  columns; a video's frames are written once the video is read. --timeline draws one panel per
  person, annotated copies name each face's person.

No output file is ever replaced unless --overwrite is given, and an input is never replaced. A
progress bar is drawn on stderr when it is a terminal (-q hides it). Faces are searched down to
--min-face pixels (default 40) in photos of up to --max-pixels pixels (default 64 million); every
face is reported unless --max-faces N keeps the N largest (a note says how many were found).
MediaPipe's face networks run directly in LiteRT; --engine mediapipe runs them in MediaPipe's
graphs instead, as the training caches are built (slower; reports/engines compares the two).

Inputs that cannot be processed (missing, not an image, truncated, no face) are reported on stderr,
one line each, and the others are still processed. A video that ends before the frames its header
announces (truncated or damaged) is processed up to there, and a note says where it stopped (the
summary's "truncated": {"last_frame", "time_s", "frame_count"}). The README's "predict in detail"
lists every JSON key. Exit code: 0 when every input was processed, 3
when some were and some were not, 1 when none was, 2 for a model, option or output error (before
any input is processed), 141 when the reader of the output went away (`| head`). Without --model
the shipped model saved_models/fer_tf_basic7.tflite is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import re
import sys

from fer_tf.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, looks_like_image, walk_files
from fer_tf.commands import predict_people
from fer_tf.commands.predict_outputs import plan_outputs
from fer_tf.errors import ConfigError, FerTfError, ImageError, OutputError
from fer_tf.files import atomic_path
from fer_tf.progress import Bar

CSV_COLUMNS = ("path", "frame", "time_s", "face", "x", "y", "w", "h", "expression")

EXIT_OK, EXIT_NONE, EXIT_PARTIAL = 0, 1, 3


def _count(text):
    """``"64M"``, ``"48e6"``, ``"1.5G"``, ``"100000000"`` -> an integer (K/M/G are decimal)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"not a number of pixels: {text!r} (e.g. 64M or 48000000)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return int(value)


def _number(convert, minimum):
    """An argparse type: ``convert(text)`` (int or float), at least ``minimum``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


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
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print one JSON list at the end")
    fmt.add_argument("--jsonl", action="store_true",
                     help="print JSON lines as results come (one per image, video frame, video)")
    parser.add_argument("--csv", metavar="OUT.csv", default=None,
                        help="write one CSV row per (image or frame, face); '-' for stdout")
    parser.add_argument("--annotate", metavar="OUT", default=None,
                        help="write annotated copies: OUT is a file for one input, else a folder")
    parser.add_argument("--timeline", metavar="OUT", default=None,
                        help="videos: plot the probabilities over time (a .png for one video, "
                             "else a folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist (never an input)")
    parser.add_argument("--max-faces", type=_number(int, 1), default=None, metavar="N",
                        help="keep the N largest faces per image or frame (default: all)")
    parser.add_argument("--min-face", type=_number(float, 0), default=40, metavar="PX",
                        help="smallest face width searched for, in pixels (default 40; larger "
                             "is faster on large photos and videos)")
    parser.add_argument("--engine", choices=("litert", "mediapipe"), default="litert",
                        help="how MediaPipe's face networks run: directly in LiteRT (default, "
                             "faster) or in MediaPipe's graphs (as the training caches)")
    parser.add_argument("--max-pixels", type=_count, default=64_000_000, metavar="N",
                        help="refuse images with more pixels (default 64M; e.g. 100M)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="LiteRT interpreter threads (default: LiteRT's choice)")
    parser.add_argument("--window", type=int, default=5, metavar="N",
                        help="videos: average the tracked face over the last N frames (default 5)")
    parser.add_argument("--every", type=int, default=1, metavar="K",
                        help="videos: process every K-th frame (default 1)")
    parser.add_argument("--top", type=int, default=3, metavar="K",
                        help="text output: show the K most likely expressions (default 3)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar on stderr")
    predict_people.add_arguments(parser)
    parser.set_defaults(func=run)


class _RawFormatter(argparse.RawDescriptionHelpFormatter):
    pass


# -- inputs ---------------------------------------------------------------------------------------


def _kind(path):
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image"


def _file_key(path):
    """What makes two inputs the same file: its device and inode (links and ``./a`` vs ``a``
    included), else its absolute path."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.abspath(path)


def expand_inputs(paths, skip_dirs=(), repeated=None):
    """The inputs in order: ``(path, kind, root)`` to process, or ``{"path", "error"}`` for a path
    that does not exist or a folder without images.

    Folders are walked recursively (sorted, hidden entries and ``skip_dirs``, the output folders,
    skipped); ``root`` is the folder an input came from (for naming annotated copies), or ``None``
    for paths given directly. A file met twice (given twice, or given and inside a folder given)
    is processed once, at its first place; the later paths are appended to ``repeated``.
    """
    items = []
    seen = set()

    def add(path, root):
        key = _file_key(path)
        if key in seen:
            if repeated is not None:
                repeated.append(str(path))
            return
        seen.add(key)
        items.append((path, _kind(path), root))

    for arg in paths:
        p = pathlib.Path(arg)
        if not p.exists():
            items.append({"path": str(arg), "error": "file not found"})
            continue
        if not p.is_dir():
            add(p, None)
            continue
        found = False
        for f in walk_files(p, skip_dirs):
            suffix = f.suffix.lower()
            if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS or suffix == "" \
                    or looks_like_image(f):
                add(f, p)
                found = True
        if not found:
            items.append({"path": str(arg), "error": "folder holds no image or video files"})
    return items


# -- writers --------------------------------------------------------------------------------------


def _save_image(rgb, target, overwrite):
    """Write an image; without ``overwrite`` the file is created exclusively (never replaced),
    with it the new file is written beside and renamed over the old one."""
    from PIL import Image  # deferred: only --annotate writes images

    target = pathlib.Path(target)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    image = Image.fromarray(rgb)
    if overwrite:
        with atomic_path(target) as tmp:
            image.save(tmp, format=fmt)
    else:
        with open(target, "xb") as f:
            image.save(f, format=fmt)


class _CsvOut:
    """The --csv file, written row by row (flushed after every input)."""

    def __init__(self, target, labels, overwrite, people=False, raw=False):
        self.labels = list(labels)
        self.people, self.raw = people, raw
        if target == "-":
            self.file, self.own = sys.stdout, False
        else:
            self.file = open(target, "w" if overwrite else "x", newline="", encoding="utf-8")
            self.own = True
        self.writer = csv.writer(self.file)
        columns = list(CSV_COLUMNS)
        if people:
            columns[4:4] = ["person", "track"]
        raw = ["raw_expression", *(f"raw_{n}" for n in self.labels)] if raw else []
        self.writer.writerow([*columns, *self.labels, *raw])

    def _probabilities(self, probs):
        expression = max(self.labels, key=lambda n: probs[n])
        return [expression, *(f"{probs[n]:.6f}" for n in self.labels)]

    def faces(self, path, frame, time_s, faces):
        for i, face in enumerate(faces, 1):
            row = [path, frame, "" if time_s is None else time_s, i]
            if self.people:
                person, track = face.get("person"), face.get("track")
                row += ["" if person is None else person, "" if track is None else track]
            row += face["box"]
            row += self._probabilities(face.get("frame_probabilities", face["probabilities"]))
            if self.raw:
                row += self._probabilities(face.get("raw_frame_probabilities", face["raw_probabilities"]))
            self.writer.writerow(row)

    def flush(self):
        self.file.flush()

    def close(self):
        if self.own:
            self.file.close()


# -- text -----------------------------------------------------------------------------------------


def _format_face(i, face, top):
    x, y, w, h = face["box"]
    ranked = sorted(face["probabilities"].items(), key=lambda kv: -kv[1])[:max(1, top)]
    others = ", ".join(f"{name} {p:.2f}" for name, p in ranked)
    who = ""
    if "person" in face:
        who = f" {face['person']}" if face["person"] is not None else f" (no person: {face['person_reason']})"
    raw = f" [raw {face['raw_expression']}]" if face.get("raw_expression", face["expression"]) != \
        face["expression"] else ""
    return f"  face {i} at x={x} y={y} w={w} h={h}{who}: {face['expression']}{raw}  ({others})"


def _text(entry, top):
    if "frames" in entry or "summary" in entry:
        s = entry["summary"]
        exprs = ", ".join(f"{name} in {n}" for name, n in s["expressions"].items()) or "none"
        if "people" in s:
            return [f"{entry['path']}: video, {s['frames']} frames, a face in {s['frames_with_face']}; "
                    f"{len(s['people'])} {'person' if len(s['people']) == 1 else 'people'}",
                    *predict_people.summary_lines(s["people"])]
        return [f"{entry['path']}: video, {s['frames']} frames, a face in {s['frames_with_face']}; "
                f"tracked face: {exprs}"]
    faces = entry["faces"]
    lines = [f"{entry['path']}: {len(faces)} face{'s' if len(faces) != 1 else ''}"]
    lines += [_format_face(i, face, top) for i, face in enumerate(faces, 1)]
    return lines


def _error_text(exc):
    reason = exc.reason if isinstance(exc, ImageError) else str(exc)
    if reason.startswith("image too large"):
        reason += "; raise the limit with --max-pixels"
    return reason


class _NoFaceInVideo(Exception):
    def __init__(self, path, frames, annotate=False):
        self.reason = f"no face found in {'the only frame' if frames == 1 else f'any of {frames} frames'}" + (
            "; no annotated copy was written" if annotate else "")
        super().__init__(f"{path}: {self.reason}")

    def __str__(self):
        return self.reason


# -- the command ----------------------------------------------------------------------------------


def run(args):
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.window < 1 or args.every < 1:
        raise ConfigError("--window and --every must be at least 1")
    if args.csv == "-" and (args.json or args.jsonl):
        raise ConfigError("--csv - and --json/--jsonl would both write to stdout; give --csv a file")
    outputs = [d for d in (args.annotate, args.timeline) if d and os.path.isdir(d)]
    repeated = []
    items = expand_inputs(args.paths, skip_dirs=outputs, repeated=repeated)  # (not its own outputs)
    todo = [item for item in items if not isinstance(item, dict)]
    plan = plan_outputs(items, args)
    recognizer = annotate = csv_out = None
    if todo:
        # deferred: numpy, LiteRT, MediaPipe
        from fer_tf.deploy.annotate import annotate
        from fer_tf.deploy.recognizer import Recognizer

        recognizer = Recognizer(args.model, backend=args.backend, window=args.window,
                                num_threads=args.threads, max_faces=args.max_faces,
                                min_face=args.min_face, max_pixels=args.max_pixels,
                                engine=args.engine)
    people = predict_people.People(recognizer, args) if todo and predict_people.wanted(args) else None
    text = not (args.json or args.jsonl or args.csv == "-")
    bar = Bar(len(items), enabled=not args.quiet and (len(items) > 1 or any(
        kind == "video" for _, kind, _ in todo)))

    def out(line):
        bar.clear()
        print(line, flush=args.jsonl)

    def note(path, message):
        bar.message(f"fer-tf predict: {path}: {message}")

    for path in repeated:
        note(path, "given more than once; processed once")
    results = [] if args.json else None
    ok = failed = 0
    grouped = {}  # --people: every image's entry, grouped into people together
    try:
        if people is not None:
            images = [path for path, kind, _ in todo if kind == "image"]
            if images:
                bar.detail(f"people in {len(images)} image{'s' if len(images) != 1 else ''}")
                grouped = people.images(images, progress=bar)
                for name in people.summary["unmatched"]:
                    note(f"--enroll {args.enroll}", f"{name} matched no face in the images")
        if todo and args.csv:
            try:
                csv_out = _CsvOut(args.csv, recognizer.labels, args.overwrite,
                                  people=people is not None,
                                  raw=people is not None and args.baseline is not None)
            except FileExistsError:
                raise OutputError(f"{args.csv} exists; pass --overwrite to replace") from None
            except OSError as exc:
                raise OutputError(f"--csv {args.csv}: {exc.strerror or exc}") from None
        for item in items:
            if isinstance(item, dict):
                entry = item
            else:
                path, kind, _ = item
                outputs = plan.get(str(path), {})
                try:
                    if kind == "video":
                        entry = _video(recognizer, path, args, outputs, csv_out, out, note, bar, people)
                    else:
                        entry = grouped[str(path)] if people is not None else recognizer.predict_path(path)
                        if "error" in entry:
                            raise ImageError(path, entry["error"])
                        if "faces_found" in entry:
                            note(path, f"{entry['faces_found']} faces found, the "
                                       f"{len(entry['faces'])} largest kept (--max-faces)")
                        if csv_out is not None:
                            csv_out.faces(str(path), 0, None, entry["faces"])
                        if "annotate" in outputs:
                            _write_annotated(annotate(path, entry), outputs["annotate"], args)
                except BrokenPipeError:
                    raise
                except (FerTfError, _NoFaceInVideo) as exc:
                    entry = {"path": str(path), "error": _error_text(exc)}
                except OSError as exc:
                    entry = {"path": str(path), "error": exc.strerror or str(exc)}
                except Exception as exc:  # noqa: BLE001 - never a traceback for one bad input
                    entry = {"path": str(path), "error": f"unexpected {type(exc).__name__}: {exc}"}
            if "error" in entry:
                failed += 1
                note(entry["path"], entry["error"])
            else:
                ok += 1
                if text:
                    for line in _text(entry, args.top):
                        out(line)
            if args.jsonl:  # (a video's frames were printed as they came)
                out(json.dumps(entry))
            if results is not None:
                results.append(entry)
            if csv_out is not None:
                csv_out.flush()
            if not (isinstance(item, tuple) and str(item[0]) in grouped):  # grouped images: advanced
                bar.advance()
    finally:
        bar.close()
        if csv_out is not None:
            try:
                csv_out.close()
            except OSError:
                pass
        if recognizer is not None:
            recognizer.close()
    summary = people.run_summary() if people is not None else None
    if results is not None:
        print(json.dumps(results if summary is None else {"inputs": results, **summary}, indent=2))
    elif summary is not None and args.jsonl:
        print(json.dumps(summary))
    elif summary is not None and text and summary["people"]:
        count = len(summary["people"])
        print(f"{count} {'person' if count == 1 else 'people'} in the images:")
        for line in predict_people.summary_lines(summary["people"]):
            print(line)
    if failed:
        print(f"fer-tf predict: {failed} of {ok + failed} inputs could not be processed"
              + ("" if ok else "; nothing was processed"), file=sys.stderr)
    return EXIT_OK if not failed else (EXIT_PARTIAL if ok else EXIT_NONE)


def _write_annotated(rgb, target, args):
    try:
        _save_image(rgb, target, args.overwrite)
    except FileExistsError:
        raise OutputError(f"cannot write the annotated copy {target}: it exists (it appeared "
                          f"during the run); pass --overwrite to replace") from None
    except OSError as exc:
        raise OutputError(f"cannot write the annotated copy {target}: "
                          f"{exc.strerror or exc}") from None


def _video(recognizer, path, args, outputs, csv_out, out, note, bar, people=None):
    """Stream one video: per-frame CSV rows and JSON lines, the timeline, the annotated copy;
    returns the video's entry (with every frame only for --json). With a --baseline the frames
    are held until the video is read, corrected, then written."""
    target = outputs.get("annotate")
    if target is not None and target.exists() and not args.overwrite:
        raise OutputError(f"cannot write the annotated copy {target}: it exists; pass --overwrite")
    hold = people is not None and args.baseline is not None
    frames = [] if args.json or hold else None
    timeline = predict_people.Timeline(recognizer.labels, people is not None) \
        if "timeline" in outputs else None
    tracker = people.video_tracker() if people is not None else None

    def emit(frame, fps):
        if csv_out is not None:
            csv_out.faces(str(path), frame["frame"], frame["time_s"], frame["faces"])
        if args.jsonl:
            out(json.dumps({"path": str(path), **frame}))
        if timeline is not None:
            timeline.add(frame["time_s"] if fps else frame["frame"], frame["faces"])

    with recognizer.open_video(path, every=args.every, annotate_to=target, people=tracker) as stream:
        if stream.note:
            note(path, f"note: {stream.note}")
        for frame in stream:
            if not hold:
                emit(frame, stream.fps)
            if frames is not None:
                frames.append(frame)
            done = frame["frame"] // stream.every + 1
            if stream.expected:
                bar.detail(f"{path.name} frame {frame['frame'] + 1}/{stream.frame_count}",
                           done / stream.expected)
            else:
                bar.detail(f"{path.name} frame {frame['frame'] + 1}")
        summary = stream.summary
        if stream.stopped():
            note(path, stream.stopped())
        if stream.capped_frames:
            note(path, f"{stream.capped_frames} frames had more than {args.max_faces} faces; the "
                       f"{args.max_faces} largest were kept (--max-faces)")
        fps = stream.fps or None
    entry = {"path": str(path), "fps": fps, "frames": frames, "summary": summary}
    if hold:
        people.finish_video(entry, tracker, args.every)
        for frame in frames:
            emit(frame, fps)
    if people is not None:
        people.saw_video(summary)
    for name in summary.get("unmatched", ()):
        note(path, f"--enroll {args.enroll}: {name} matched no face")
    if timeline is not None and summary["frames_with_face"]:
        timeline.draw(outputs["timeline"], path, "s" if fps else "frame")
    if not summary["frames_with_face"]:
        raise _NoFaceInVideo(path, summary["frames"], annotate=target is not None)
    if not args.json:
        del entry["frames"]
    return entry

"""Where `fer-tf predict` writes: the names of annotated copies and timelines, each output checked
before any input is processed (exists without --overwrite, is an input, shared by two outputs)."""

from __future__ import annotations

import os
import pathlib

from fer_tf.errors import ConfigError, OutputError
from fer_tf.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

PLOT_EXTENSIONS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")



def _base_name(path, root):
    """``photos__sub__face`` for photos/sub/face.png found in folder ``photos``; ``face`` for a
    path given directly. Suffixes this program does not know stay (``subject02.happy``)."""
    if root is not None:
        parts = list(path.relative_to(root).parts)
        if root.name:
            parts.insert(0, root.name)
    else:
        parts = [path.name]
    last = pathlib.PurePath(parts[-1])
    if last.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        parts[-1] = last.stem
    return "__".join(parts)


def unique_names(entries):
    """``[(base name, source path)]`` -> distinct names, in order. Inputs that share a name get
    their source's suffix when that tells them apart (``face_png``, ``face_jpg``), else a counter
    (``face``, ``face-2``)."""
    groups = {}
    for i, (name, source) in enumerate(entries):
        groups.setdefault(name, []).append(i)
    out = [name for name, _ in entries]
    for name, members in groups.items():
        if len(members) == 1:
            continue
        suffixes = [pathlib.PurePath(entries[i][1]).suffix.lower().lstrip(".") for i in members]
        if all(suffixes) and len(set(suffixes)) == len(suffixes):
            for i, suffix in zip(members, suffixes):
                out[i] = f"{name}_{suffix}"
        else:
            for k, i in enumerate(members[1:], 2):
                out[i] = f"{name}-{k}"
    taken, final = set(), []
    for name in out:  # a counter can meet a real name (an input called face-2): count on
        new, k = name, 2
        while new in taken:
            new, k = f"{name}-{k}", k + 1
        taken.add(new)
        final.append(new)
    return final


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def plan_outputs(items, args):
    """``{input path: {"annotate": Path, "timeline": Path}}``, after checking every output: an
    output that exists (without --overwrite), that is an input, or that two outputs share is
    refused with one :class:`OutputError` before anything is processed."""
    todo = [item for item in items if not isinstance(item, dict)]
    plan = {str(p): {} for p, _, _ in todo}
    targets = []  # (output path, what)
    names = unique_names([(_base_name(p, root), p) for p, _, root in todo])
    if args.annotate and todo:
        out = pathlib.Path(args.annotate)
        media = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
        if out.suffix.lower() in media and not out.is_dir():
            if len(todo) > 1:
                raise ConfigError(f"--annotate {out} names one file, but there are {len(todo)} "
                                  f"inputs; give a folder")
            path, kind, _ = todo[0]
            wanted = VIDEO_EXTENSIONS if kind == "video" else IMAGE_EXTENSIONS
            if out.suffix.lower() not in wanted:
                what = ("a video's annotated copy is a video: name it .mp4 or .webm"
                        if kind == "video" else
                        "an image's annotated copy is an image: name it .png or .jpg")
                raise ConfigError(f"--annotate {out}: {what} (or give a folder)")
            plan[str(path)]["annotate"] = out
            targets.append((out, "--annotate"))
        else:
            if out.exists() and not out.is_dir():
                raise OutputError(f"--annotate {out} exists and is not a folder")
            video_suffix = None
            for (path, kind, _), name in zip(todo, names):
                if kind == "video":
                    if video_suffix is None:
                        from fer_tf.deploy.video import browser_video_suffix  # deferred: numpy, OpenCV

                        video_suffix = browser_video_suffix()
                    target = out / f"{name}_annotated{video_suffix}"
                else:
                    target = out / f"{name}_annotated.png"
                plan[str(path)]["annotate"] = target
                targets.append((target, "--annotate"))
    if args.timeline and todo:
        videos = [(item, name) for item, name in zip(todo, names) if item[1] == "video"]
        if not videos:
            raise ConfigError("--timeline plots videos over time, and none of the inputs is a "
                              "video (.mp4, .webm, .avi, .mov, .mkv, .m4v)")
        out = pathlib.Path(args.timeline)
        if out.suffix.lower() in PLOT_EXTENSIONS and not out.is_dir():
            if len(videos) > 1:
                raise ConfigError(f"--timeline {out} names one file, but there are {len(videos)} "
                                  f"videos; give a folder")
            plan[str(videos[0][0][0])]["timeline"] = out
            targets.append((out, "--timeline"))
        else:
            if out.exists() and not out.is_dir():
                raise OutputError(f"--timeline {out} exists and is not a folder")
            for (path, _, _), name in videos:
                target = out / f"{name}_timeline.png"
                plan[str(path)]["timeline"] = target
                targets.append((target, "--timeline"))
    if args.csv and args.csv != "-":
        targets.append((pathlib.Path(args.csv), "--csv"))
    seen = {}
    for target, flag in targets:
        key = os.path.abspath(target)
        if key in seen:
            raise ConfigError(f"{seen[key]} and {flag} would both write {target}")
        seen[key] = flag
        if any(_same_file(target, p) for p, _, _ in todo):
            raise OutputError(f"{flag} {target} is one of the inputs; outputs never replace inputs")
    existing = [t for t, _ in targets if t.exists()]
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise OutputError(f"{existing[0]} exists{more}; pass --overwrite to replace")
    for target, flag in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{flag}: cannot create the folder {target.parent}: "
                              f"{exc.strerror or exc}") from None
    return plan

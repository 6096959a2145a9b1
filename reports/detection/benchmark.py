"""Face-detection recall on real faces pasted at several scales and in groups (issue 13, item 2).

Real faces of KDEF (240x240 loose face crops) and Yale (320x243 heads) are pasted, with feathered
edges, onto photo backgrounds of 0.3, 2, 12 and 48 megapixels: one face per photo at widths from 40
to 560 pixels, groups of 8 to 96 faces, and photos without a face (false alarms). A face counts as
found when a box of ``FaceAligner.detect`` overlaps it with IoU >= 0.3 (each box matches one face).
A face's width is that of the detector's box on the original crop, scaled by the paste.

The photos are generated in memory from a fixed seed and never written to disk: the datasets are
research-only, nothing derived from them is committed. Run from the repository root:

    .venv/bin/python reports/detection/benchmark.py [--baseline 0f5dc82] [--quick]

It writes ``reports/detection/results.json`` and ``reports/detection/README.md``. ``--baseline REV``
also measures ``fer_tf/preprocess/align.py`` as it was at git revision REV (default 0f5dc82, the
commit the issue was measured on), in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fer_tf.preprocess.boxes import iou  # noqa: E402

CANVASES = {  # name: (width, height)
    "0.3 MP (640x480)": (640, 480),
    "2 MP (1920x1080)": (1920, 1080),
    "12 MP (4032x3024)": (4032, 3024),
    "48 MP (8000x6000)": (8000, 6000),
}
WIDTHS = (40, 60, 90, 140, 220, 350, 560)
# name, canvas, columns, rows, face width (or (lo, hi) for mixed widths)
GROUPS = (
    ("4x2 of 70 px", "0.3 MP (640x480)", 4, 2, 70),
    ("5x4 of 190 px (the issue's group photo)", "2 MP (1920x1080)", 5, 4, 190),
    ("12x6 of 60 px", "2 MP (1920x1080)", 12, 6, 60),
    ("8x5 of 40-160 px", "12 MP (4032x3024)", 8, 5, (40, 160)),
    ("12x8 of 40-120 px", "48 MP (8000x6000)", 12, 8, (40, 120)),
)
BACKGROUNDS = ("coffee", "rocket", "chelsea", "brick", "grass", "gravel", "hubble_deep_field",
               "clock", "coins", "immunohistochemistry")
IOU_HIT = 0.3
NOTES = [
    "## Notes",
    "",
    "- `baseline` searches the whole image only (the short-range model on the image, the "
    "full-range model on the image padded by half its size) and keeps at most 8 faces: it finds "
    "faces wider than about a seventh of the photo. `mediapipe` adds levels of overlapping tiles "
    "from 40 px faces up (`min_face`), re-checks each face found in a tile at twice its size "
    "(`SECOND_LOOK_SCORE`) and keeps every face (see `fer_tf/preprocess/align.py`). `litert` runs "
    "the same networks directly in LiteRT (the default of `Recognizer` and `fer-tf predict`): the "
    "short-range one over the whole photo at its own scale (levels of 4x in face size, tiles of "
    "1024 px) instead of the whole-image passes and 128x128 tiles (the whole-image passes run "
    "only when the scan finds no face), and the same second look.",
    "- KDEF crops are tight (forehead to chin, hardly any hair or ears): at 40-60 px such a face "
    "has little around it to be recognised by, and most misses at the smallest widths are such "
    "crops; the Yale photos are whole heads.",
    "- A false alarm is a box that matches no pasted face: mostly textures of the background photos "
    "that the detector takes for a face somewhere in a large photo and that pass the second look.",
    "- Times are one `FaceAligner.detect` call (detection, second look, landmarks) in one process "
    "on a shared machine (see the load average): compare the columns, not other machines. The "
    "cost of the small-face search grows with the photo's area over `min_face` squared; "
    "`--min-face` trades it for the smallest faces.",
]


# -- sources -------------------------------------------------------------------------------------


def face_sources(datasets, limit):
    """``[(name, rgb uint8, ref box)]``: KDEF and Yale faces with the detector's box on the crop."""
    import mediapipe as mp
    from PIL import Image

    files = sorted((datasets / "kdef-subset").glob("*/*"))[::7]
    files += sorted(p for p in (datasets / "yalefaces").glob("subject*")
                    if p.suffix in (".happy", ".normal", ".sad", ".surprised"))[::3]
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                         min_detection_confidence=0.5)
    out, skipped = [], 0
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w = rgb.shape[:2]
        res = detector.process(rgb)
        if not res.detections:
            skipped += 1
            continue
        b = max(res.detections, key=lambda d: d.location_data.relative_bounding_box.width)
        b = b.location_data.relative_bounding_box
        out.append((f"{path.parent.name}/{path.name}", rgb,
                    (b.xmin * w, b.ymin * h, b.width * w, b.height * h)))
    detector.close()
    return out[:limit], skipped


def backgrounds():
    import skimage.data

    out = []
    for name in BACKGROUNDS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append((name, img[:, :, :3].astype(np.uint8)))
    return out


# -- scenes --------------------------------------------------------------------------------------


def canvas(bg, size, rng):
    import cv2

    w, h = size
    img = cv2.resize(bg, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-6, 7, size=(h, w, 1), dtype=np.int16)  # some grain
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(img, source, width, x, y):
    """Paste ``source`` so that its face box is ``width`` px wide with its top-left at (x, y);
    return the face's box in ``img``, or None when the pasted crop would leave the image."""
    import cv2

    _, face, (bx, by, bw, bh) = source
    s = width / bw
    fh, fw = face.shape[:2]
    cw, ch = max(1, round(fw * s)), max(1, round(fh * s))
    ox, oy = round(x - bx * s), round(y - by * s)
    H, W = img.shape[:2]
    if ox < 0 or oy < 0 or ox + cw > W or oy + ch > H:
        return None
    crop = cv2.resize(face, (cw, ch), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ramp = max(1, round(0.06 * min(cw, ch)))
    ax = np.minimum(np.arange(cw) + 1, np.arange(cw)[::-1] + 1) / ramp
    ay = np.minimum(np.arange(ch) + 1, np.arange(ch)[::-1] + 1) / ramp
    alpha = np.clip(np.minimum(ay[:, None], ax[None, :]), 0, 1)[:, :, None]
    region = img[oy:oy + ch, ox:ox + cw].astype(np.float32)
    img[oy:oy + ch, ox:ox + cw] = np.rint(alpha * crop + (1 - alpha) * region).astype(np.uint8)
    return (ox + bx * s, oy + by * s, bw * s, bh * s)


def scenes(sources, bgs, quick=False):
    """Yield ``(kind, canvas name, label, rgb, [true boxes])``."""
    rng = np.random.default_rng(0)
    per = 1 if quick else 2
    k = 0
    for cname, size in CANVASES.items():
        for width in WIDTHS:
            if width > 0.7 * min(size):
                continue
            for _ in range(per):
                img = canvas(bgs[k % len(bgs)][1], size, rng)
                src = sources[k % len(sources)]
                k += 1
                box = None
                while box is None:
                    x = rng.uniform(0, size[0] - width * 1.1)
                    y = rng.uniform(0, size[1] - width * 1.4)
                    box = paste(img, src, width, x, y)
                yield "single", cname, f"{width} px", img, [box], width
    for name, cname, cols, rows, width in GROUPS:
        if quick and cname.startswith("48"):
            continue
        size = CANVASES[cname]
        img = canvas(bgs[k % len(bgs)][1], size, rng)
        k += 1
        cell_w, cell_h = size[0] / cols, size[1] / rows
        boxes, widths = [], []
        for r in range(rows):
            for c in range(cols):
                wdt = width if isinstance(width, (int, float)) else \
                    float(np.exp(rng.uniform(np.log(width[0]), np.log(width[1]))))
                src = sources[k % len(sources)]
                k += 1
                box = None
                for _ in range(20):
                    x = c * cell_w + rng.uniform(0.05, 0.95) * max(1.0, cell_w - wdt * 1.2)
                    y = r * cell_h + rng.uniform(0.05, 0.95) * max(1.0, cell_h - wdt * 1.5)
                    box = paste(img, src, wdt, x + 0.1 * wdt, y + 0.2 * wdt)
                    if box is not None:
                        break
                if box is not None:
                    boxes.append(box)
                    widths.append(wdt)
        yield "group", cname, name, img, boxes, widths
    for cname, size in CANVASES.items():
        if quick and cname.startswith("48"):
            continue
        img = canvas(bgs[k % len(bgs)][1], size, rng)
        k += 1
        yield "empty", cname, "no face", img, [], []


# -- evaluation ----------------------------------------------------------------------------------


def match(truth, found):
    """Greedy one-to-one matching by IoU: ``(hit flags per true box, unmatched detections)``."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)),
                   reverse=True)
    hit, used = [False] * len(truth), set()
    for v, i, j in pairs:
        if v < IOU_HIT:
            break
        if not hit[i] and j not in used:
            hit[i] = True
            used.add(j)
    return hit, len(found) - len(used)


def load_baseline(rev):
    source = subprocess.run(["git", "show", f"{rev}:fer_tf/preprocess/align.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp()) / "align_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("align_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def evaluate(detectors, items, log):
    rows = []
    for kind, cname, label, img, truth, widths in items:
        for name, aligner in detectors.items():
            t0 = time.perf_counter()
            faces = aligner.detect(img)
            seconds = time.perf_counter() - t0
            hit, false = match(truth, [f.box for f in faces])
            if not isinstance(widths, list):
                widths = [widths]
            rows.append({"detector": name, "kind": kind, "canvas": cname, "scene": label,
                         "faces": len(truth), "found": int(sum(hit)), "false_alarms": false,
                         "widths": [round(float(v), 1) for v in widths],
                         "hits": [bool(v) for v in hit], "seconds": round(seconds, 3)})
            log(f"  {name:>8} {cname:<18} {label:<42} found {sum(hit)}/{len(truth)}"
                f"  false {false}  {seconds:.2f} s")
    return rows


def width_bin(width):
    edges = (40, 60, 90, 140, 220, 350, 560, 10 ** 9)
    for lo, hi in zip(edges, edges[1:]):
        if lo <= width + 0.5 < hi:
            return f"{lo}-{hi - 1} px" if hi < 10 ** 9 else f">= {lo} px"
    return "< 40 px"


def summarise(rows, names):
    summary = {}
    for name in names:
        mine = [r for r in rows if r["detector"] == name]
        by_width, by_canvas = {}, {}
        for r in mine:
            if r["kind"] == "empty":
                continue
            for wdt, h in zip(r["widths"], r["hits"]):
                by_width.setdefault(width_bin(wdt), []).append(h)
            if r["kind"] == "single":
                by_canvas.setdefault(r["canvas"], []).append(r["hits"][0])
        groups = {f"{r['canvas']}: {r['scene']}": f"{r['found']}/{r['faces']}"
                  for r in mine if r["kind"] == "group"}
        seconds = {}
        for r in mine:
            seconds.setdefault(r["canvas"], []).append(r["seconds"])
        all_hits = [h for r in mine for h in r["hits"]]
        summary[name] = {
            "recall": round(float(np.mean(all_hits)), 3),
            "faces": len(all_hits),
            "recall_by_width": {k: [int(sum(v)), len(v)] for k, v in sorted(
                by_width.items(), key=lambda kv: int(re.search(r"\d+", kv[0]).group()))},
            "single_face_recall_by_canvas": {k: [int(sum(v)), len(v)] for k, v in by_canvas.items()},
            "groups": groups,
            "false_alarms": int(sum(r["false_alarms"] for r in mine)),
            "false_alarms_on_photos_without_faces": int(
                sum(r["false_alarms"] for r in mine if r["kind"] == "empty")),
            "median_seconds_by_canvas": {k: round(statistics.median(v), 3) for k, v in seconds.items()},
        }
    return summary


def write_readme(out, results):
    names = list(results["summary"])
    s = results["summary"]
    run = results["run"]
    L = ["# Face detection in ordinary photos", ""]
    L += [f"- Command: `{run['command']}`",
          f"- Date: {run['date']}; commit `{run['git_commit']}`; wall time {run['wall_seconds']} s",
          f"- Machine: {run['cpu']} ({run['cores']} cores as seen by the OS), {run['platform']}, "
          f"Python {run['python']}, mediapipe {run['mediapipe']}, OpenCV {run['opencv']}; load "
          f"average at start {run['load_start']}, at end {run['load_end']} (the machine is shared: "
          "times are indicative).",
          f"- Faces: {results['settings']['sources']} real faces (KDEF and Yale; "
          f"{results['settings']['sources_without_detection']} source crops on which the detector "
          "finds no face are left out), pasted with feathered edges onto upscaled scikit-image "
          "photos; a face is found when a box of `FaceAligner.detect` has IoU >= 0.3 with it. "
          "The photos are generated in memory by `benchmark.py` (seed 0) and never written.",
          f"- Detectors: " + "; ".join(
              f"`{n}` = {results['settings']['detectors'][n]}" for n in names),
          ""]
    L += ["## Recall", "", "| | " + " | ".join(f"`{n}`" for n in names) + " |",
          "|---|" + "---|" * len(names)]
    L.append("| all faces | " + " | ".join(
        f"**{s[n]['recall']:.1%}** of {s[n]['faces']}" for n in names) + " |")
    for key in s[names[0]]["recall_by_width"]:
        cells = []
        for n in names:
            hit, tot = s[n]["recall_by_width"].get(key, [0, 0])
            cells.append(f"{hit}/{tot}" + (f" ({hit / tot:.0%})" if tot else ""))
        L.append(f"| faces {key} wide | " + " | ".join(cells) + " |")
    L += ["", "One face per photo, by photo size (all widths that fit):", "",
          "| photo | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for key in s[names[0]]["single_face_recall_by_canvas"]:
        L.append(f"| {key} | " + " | ".join(
            "{}/{}".format(*s[n]["single_face_recall_by_canvas"][key]) for n in names) + " |")
    L += ["", "Group photos (faces found / faces pasted):", "",
          "| photo | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for key in s[names[0]]["groups"]:
        L.append(f"| {key} | " + " | ".join(s[n]["groups"][key] for n in names) + " |")
    L += ["", "## False alarms and time", "",
          "| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    L.append("| boxes that match no face, all photos | " + " | ".join(
        str(s[n]["false_alarms"]) for n in names) + " |")
    L.append("| of which on photos without a face | " + " | ".join(
        str(s[n]["false_alarms_on_photos_without_faces"]) for n in names) + " |")
    for key in s[names[0]]["median_seconds_by_canvas"]:
        L.append(f"| median seconds per photo, {key} | " + " | ".join(
            f"{s[n]['median_seconds_by_canvas'][key]:.2f}" for n in names) + " |")
    L += ["", "Per-photo rows (which faces were found, their widths, seconds): `results.json`.", ""]
    L += NOTES
    (out / "README.md").write_text("\n".join(L).rstrip() + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--output", default=str(REPO / "reports" / "detection"))
    parser.add_argument("--baseline", default="0f5dc82",
                        help="also measure align.py of this git revision ('' to skip)")
    parser.add_argument("--engines", default="litert,mediapipe",
                        help="FaceAligner engines of this commit to measure, comma-separated")
    parser.add_argument("--sources", type=int, default=60, help="at most this many source faces")
    parser.add_argument("--quick", action="store_true", help="fewer photos, no 48 MP groups")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    import cv2
    import mediapipe as mp

    from fer_tf.preprocess.align import FaceAligner
    from fer_tf.research.reporting import cpu_model, git_commit

    started = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    sources, skipped = face_sources(pathlib.Path(args.datasets), args.sources)
    log(f"{len(sources)} source faces ({skipped} without a detection on the crop left out)")
    detectors, described = {}, {}
    for engine in [e for e in args.engines.split(",") if e]:
        detectors[engine] = FaceAligner(engine=engine)
        described[engine] = (f"`FaceAligner(engine=\"{engine}\")` of this commit ("
                             + ("a fully convolutional scan" if engine == "litert" else "tiled detection")
                             + ", min_face 40, no face cap)")
    if args.baseline:
        detectors["baseline"] = load_baseline(args.baseline).FaceAligner()
        described["baseline"] = (f"`FaceAligner()` of `{args.baseline}` (whole-image detection "
                                 "only, at most 8 faces)")
    items = scenes(sources, backgrounds(), quick=args.quick)
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = evaluate(detectors, items, log)
    for d in detectors.values():
        d.close()
    (out / "rows.partial.json").write_text(json.dumps(rows))  # kept should the summary fail
    results = {
        "run": {
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(REPO),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "mediapipe": mp.__version__,
            "opencv": cv2.__version__, "load_start": load_start,
            "load_end": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {"canvases": CANVASES, "widths": WIDTHS, "groups": GROUPS,
                     "backgrounds": BACKGROUNDS, "iou_hit": IOU_HIT, "quick": args.quick,
                     "sources": len(sources), "sources_without_detection": skipped,
                     "detectors": described},
        "summary": summarise(rows, list(detectors)),
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_readme(out, results)
    (out / "rows.partial.json").unlink()
    log(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

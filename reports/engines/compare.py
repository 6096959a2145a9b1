"""MediaPipe's face networks in their graphs (``engine="mediapipe"``) or directly in LiteRT
(``engine="litert"``, the Recognizer's default): the same faces, the same expressions, how much faster.

    python reports/engines/compare.py [--datasets ../shared/datasets] [--out reports/engines]

1. **Held-out subjects of the shipped model**: the subject-independent eighth of the identity sets
   that `make ship` holds out (``subject_kfold(k=8, seed=0)[0]``), from their original image files:
   each engine detects and aligns the largest face, the shipped ``.tflite`` classifies it. Image
   accuracy per engine (the shipped model's target: at least 88%), top-1 agreement between them.
2. **All KDEF and Yale photos**: the same, plus how far the aligned crops differ: the mean distance
   of the 468 landmarks both engines give, in pixels of the 60x60 crop, and the eye line's angle.
3. **Time per photo**: ``Recognizer.predict`` with each engine on the astronaut resized to 256,
   512 and 1024 pixels, alternating calls in one process, 1 classifier thread.

Writes ``results.json`` and ``README.md`` in ``--out``; never overwrites other files there.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ENGINES = ("mediapipe", "litert")
PHOTO_SIZES = (256, 512, 1024)


def _images(table):
    from PIL import Image

    for path in table.path:
        yield path, np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))


def compare(aligners, runner, table, ids, log):
    """Per engine: faces found, accuracy; between them: agreement and alignment differences."""
    found = {e: 0 for e in aligners}
    correct = {e: 0 for e in aligners}
    both = agree = 0
    lm_px, angle_deg = [], []
    for i, (path, rgb) in enumerate(_images(table)):
        out = {}
        for engine, aligner in aligners.items():
            faces = aligner.detect(rgb)
            if faces:
                found[engine] += 1
                out[engine] = aligner.align(rgb)
        if len(out) < len(aligners):
            continue
        both += 1
        probs = runner(np.stack([out[e].image for e in aligners]))
        top = np.argmax(probs, axis=1)
        agree += int(top[0] == top[1])
        for engine, t in zip(aligners, top):
            correct[engine] += int(t == ids[i])
        a, b = (out[e] for e in aligners)
        lm_px.append(float(np.linalg.norm(a.landmarks[:468] - b.landmarks[:468], axis=1).mean()))
        angle_deg.append(abs(a.angle - b.angle))
        if (i + 1) % 100 == 0:
            log(f"  {i + 1}/{len(table)} images")
    return {"images": int(len(table)), "found": found, "both_found": both,
            "accuracy": {e: correct[e] / max(both, 1) for e in aligners},
            "top1_agreement": agree / max(both, 1),
            "landmark_distance_px": _quantiles(lm_px), "angle_difference_deg": _quantiles(angle_deg)}


def _quantiles(values):
    if not values:
        return None
    v = np.asarray(values)
    return {"median": float(np.median(v)), "p90": float(np.percentile(v, 90)), "max": float(v.max())}


def timing(model_path, rounds=5, calls=10):
    """Median ms per ``Recognizer.predict`` per engine and photo size, alternating in rounds."""
    import cv2
    import skimage.data

    from fer_tf.deploy.recognizer import Recognizer

    astronaut = skimage.data.astronaut()
    recs = {e: Recognizer(model_path, num_threads=1, engine=e) for e in ENGINES}
    out = {}
    for size in PHOTO_SIZES:
        photo = np.ascontiguousarray(cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA
                                                if size < 512 else cv2.INTER_CUBIC))
        times = {e: [] for e in ENGINES}
        for rec in recs.values():
            rec.predict(photo)
        for _ in range(rounds):
            for engine, rec in recs.items():
                start = time.perf_counter()
                for _ in range(calls):
                    rec.predict(photo)
                times[engine].append((time.perf_counter() - start) / calls * 1e3)
        out[f"{size}x{size}"] = {e: float(np.median(t)) for e, t in times.items()}
    for rec in recs.values():
        rec.close()
    return out


def write_readme(out, results):
    run = results["run"]
    machine = run["machine"]
    lines = ["# Face networks in MediaPipe's graphs or directly in LiteRT", "",
             f"- Command: `{run['command']}`", f"- Date: {run['date']}; commit `{run['git_commit']}`",
             f"- Machine: {machine['cpu']} ({machine['cores']} cores); load average at start "
             f"{results['load_average'][0]:.1f} (the machine is shared: compare the columns, not other machines)",
             f"- Classifier: the shipped `{results['model']}`; each engine detects and aligns the largest face "
             "(`FaceAligner(engine=...)`), the same classifier labels both crops.", ""]
    for key, title in (("held_out", "Held-out subjects of the shipped model (`make ship`'s split)"),
                       ("kdef_yale", "All KDEF and Yale photos")):
        r = results[key]
        lines += [f"## {title}", "",
                  f"{r['images']} images; a face found by both engines on {r['both_found']}.", "",
                  "| | `mediapipe` | `litert` |", "|---|---|---|",
                  f"| faces found | {r['found']['mediapipe']} | {r['found']['litert']} |",
                  f"| image accuracy (where both found one) | {100 * r['accuracy']['mediapipe']:.1f}% | "
                  f"{100 * r['accuracy']['litert']:.1f}% |", "",
                  f"Top-1 agreement between the engines: **{100 * r['top1_agreement']:.1f}%**. "
                  f"Landmark distance in the 60x60 crop: median {r['landmark_distance_px']['median']:.2f} px "
                  f"(90th percentile {r['landmark_distance_px']['p90']:.2f}, largest "
                  f"{r['landmark_distance_px']['max']:.2f}); eye-line angle: median "
                  f"{r['angle_difference_deg']['median']:.1f} degrees (90th percentile "
                  f"{r['angle_difference_deg']['p90']:.1f}).", ""]
    lines += ["## Time per photo", "", "`Recognizer.predict` (detection, landmarks, alignment, classification on "
              "1 thread), median of alternating rounds:", "",
              "| photo | `mediapipe` ms | `litert` ms | litert / mediapipe |", "|---|---|---|---|"]
    for size, t in results["time_ms"].items():
        lines.append(f"| {size} | {t['mediapipe']:.1f} | {t['litert']:.1f} | {t['litert'] / t['mediapipe']:.2f} |")
    lines += ["", "## Why they differ", "",
              "- `litert` runs the plain 468-point face mesh: the refined 478-point one that the graphs run "
              "(`refine_landmarks=True`) needs a MediaPipe custom operation that LiteRT does not have. Its eye "
              "contours, which give the eye line, differ slightly, and so do the crops.",
              "- `litert` scans the photo with the short-range detector at the photo's own scale, at "
              "scales 4x apart (one run each for a 256x256 or 512x512 photo), instead of the whole-image "
              "passes and many 128x128 tiles; the whole-image passes run only when the scan finds no face "
              "(tight crops, faces cut by the border). A detection it scores at least 0.75 skips the "
              "second look: its own keypoints place the mesh.",
              "- The training caches keep `mediapipe`, so that the faces the models learned from do not change; "
              "the figures above say what serving photos with `litert` costs in accuracy."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent))
    parser.add_argument("--readme-only", action="store_true",
                        help="rebuild README.md from the results.json in --out, measuring nothing")
    args = parser.parse_args(argv)
    if args.readme_only:
        out = pathlib.Path(args.out)
        write_readme(out, json.loads((out / "results.json").read_text()))
        return
    from fer_tf.research import reporting
    from fer_tf.data.labels import BASIC7
    from fer_tf.data.splits import subject_kfold
    from fer_tf.research.experiments import identity_training_set
    from fer_tf.deploy.recognizer import shipped_model_path
    from fer_tf.deploy.runners import TFLiteRunner
    from fer_tf.preprocess.align import FaceAligner

    out = pathlib.Path(args.out)
    for name in ("results.json", "README.md"):
        if (out / name).exists() and not (out / "compare.py").exists():
            raise SystemExit(f"error: {out / name} exists and was not written by this script; choose another --out")
    load = list(os.getloadavg())
    identity, _ = identity_training_set(pathlib.Path(args.datasets), BASIC7)  # as `make ship` builds it
    _, held_rows = subject_kfold(identity, k=8, seed=0)[0]
    held = identity.take(held_rows)
    kdef_yale = identity.take(np.flatnonzero([not s.startswith("ckplus48") for s in identity.subject]))
    runner = TFLiteRunner(shipped_model_path(), num_threads=1)
    aligners = {e: FaceAligner(engine=e) for e in ENGINES}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    log(f"held-out subjects: {len(held)} images")
    results = {"held_out": compare(aligners, runner, held, held.expression_ids(BASIC7), log)}
    log(f"KDEF and Yale: {len(kdef_yale)} images")
    results["kdef_yale"] = compare(aligners, runner, kdef_yale, kdef_yale.expression_ids(BASIC7), log)
    for a in aligners.values():
        a.close()
    log("time per photo")
    results["time_ms"] = timing(shipped_model_path())
    results["model"] = str(shipped_model_path().relative_to(REPO))
    results["load_average"] = load
    results["run"] = reporting.run_info()
    reporting.write_json(out / "results.json", results)
    write_readme(out, results)
    print(f"written {out / 'README.md'}")


if __name__ == "__main__":
    main()

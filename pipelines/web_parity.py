"""Parity of the web page (web/, in Chromium) with Python's `fer-tf predict`, on real photos.

    python pipelines/web_parity.py [--datasets ../shared/datasets] [--out reports/web/parity.json]

Every KDEF-subset and Yale photo goes through `fer-tf predict --json` (one process) and through the
built page (web/dist, `make web`) in Debian's Chromium, which returns each face's landmarks, eye
line and aligned crop as well (window.ferTf.analyseUrl(url, {details: true})); Python's landmarks
come from the same FaceAligner (engine "litert") that `fer-tf predict` runs. Faces are paired by
box overlap. Writes the per-dataset and overall figures to --out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "web"))

from fer_tf.preprocess.boxes import iou  # noqa: E402  (the box overlap fer-tf predict uses)


def photos(datasets):
    kdef = sorted(p for p in (datasets / "kdef-subset").rglob("*") if p.suffix.lower() == ".jpg")
    yale = sorted(p for p in (datasets / "yalefaces").iterdir() if p.name.startswith("subject"))
    return [("kdef", p) for p in kdef] + [("yale", p) for p in yale]


def python_predict(paths):
    """`fer-tf predict --json` on every path, in one process: {path: entry}."""
    cmd = [sys.executable, "-m", "fer_tf.cli", "predict", *map(str, paths), "--json", "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    if run.returncode not in (0, 3):
        sys.exit(f"fer-tf predict failed ({run.returncode}):\n{run.stderr[-2000:]}")
    return {e["path"]: e for e in json.loads(run.stdout)}


def python_faces(paths):
    """{path: [(box, landmarks [468, 2], angle, crop [60, 60])]} from fer_tf's FaceAligner (litert)."""
    from fer_tf.data.images import as_uint8_image, load_image_rgb
    from fer_tf.errors import NoFaceError
    from fer_tf.preprocess.align import FaceAligner

    out = {}
    with FaceAligner(engine="litert") as aligner:
        for p in paths:
            rgb = load_image_rgb(p)
            try:
                faces = aligner.align_all(rgb, size=60)
            except NoFaceError:
                faces = []
            grey = as_uint8_image(rgb)[1]
            out[str(p)] = [(f.face.box, f.face.landmarks.astype(np.float64), f.angle, f.image, grey) for f in faces]
    return out


def python_crop_of(face, grey):
    """Python's crop (align_crop) of the page's landmarks: the crop's maths alone compared."""
    from fer_tf.preprocess.crop import Face, align_crop

    pts = np.asarray(face["landmarks"], np.float32)
    f = Face(box=tuple(face["box"]), score=1.0, landmarks=pts, left_eye=np.asarray(face["left_eye"]),
             right_eye=np.asarray(face["right_eye"]))
    return align_crop(grey, f, 60).image


def browser_results(items, datasets):
    from playwright.sync_api import sync_playwright

    import browser
    import serve

    server = serve.serve(0, mounts={"/data/": datasets})
    out, seconds = {}, []
    try:
        with sync_playwright() as pw:
            session = browser.PageSession(pw, f"http://127.0.0.1:{server.server_address[1]}/").open()
            for i, (_, path) in enumerate(items):
                url = "/data/" + str(path.relative_to(datasets))
                t0 = time.perf_counter()
                res = session.page.evaluate("u => window.ferTf.analyseUrl(u, {details: true})", url)
                seconds.append(time.perf_counter() - t0)
                out[str(path)] = res["faces"] if res else None
                if (i + 1) % 50 == 0:
                    print(f"  browser: {i + 1}/{len(items)}", flush=True)
            if session.outside or session.errors:
                sys.exit(f"the page requested {session.outside} / logged {session.errors}")
            session.close()
    finally:
        server.shutdown()
    return out, seconds


def summary(values):
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return None
    return {"mean": round(float(v.mean()), 3), "median": round(float(np.median(v)), 3),
            "p95": round(float(np.percentile(v, 95)), 3), "max": round(float(v.max()), 3)}


def compare(items, py_pred, py_faces, web):
    rows = []
    for dataset, path in items:
        key = str(path)
        pred = py_pred.get(key, {}).get("faces", [])
        geo = py_faces.get(key, [])
        faces = web.get(key) or []
        row = {"dataset": dataset, "path": str(path.relative_to(path.parents[2] if dataset == "kdef" else path.parents[1])),
               "python_faces": len(pred), "web_faces": len(faces), "pairs": []}
        for f in faces:
            match = max(pred, key=lambda p: iou(p["box"], f["box"]), default=None)
            if match is None or iou(match["box"], f["box"]) < 0.3:
                continue
            g = max(geo, key=lambda g: iou(g[0], f["box"]))
            lm = np.linalg.norm(np.asarray(f["landmarks"]) - g[1], axis=1)
            crop = np.asarray(f["crop"], np.float64).reshape(60, 60)
            probs_web = np.array([f["probabilities"][k] for k in match["probabilities"]])
            probs_py = np.array(list(match["probabilities"].values()))
            row["pairs"].append({
                "box_iou": round(iou(match["box"], f["box"]), 4),
                "landmarks_px_mean": round(float(lm.mean()), 3),
                "landmarks_px_mean_per_face_size": round(float(lm.mean() / max(g[0][2], g[0][3])), 5),
                "angle_diff_deg": round(abs(f["angle"] - g[2]), 3),
                "crop_grey_mean_abs": round(float(np.abs(crop - g[3]).mean()), 3),
                "crop_same_landmarks_grey_mean_abs": round(float(np.abs(crop - python_crop_of(f, g[4])).mean()), 3),
                "same_top1": f["expression"] == match["expression"],
                "python": match["expression"], "web": f["expression"],
                "prob_max_abs": round(float(np.abs(probs_web - probs_py).max()), 4)})
        rows.append(row)
    return rows


def aggregate(rows):
    pairs = [p for r in rows for p in r["pairs"]]
    return {
        "photos": len(rows),
        "same_face_count": sum(r["python_faces"] == r["web_faces"] for r in rows),
        "python_faces": sum(r["python_faces"] for r in rows), "web_faces": sum(r["web_faces"] for r in rows),
        "paired_faces": len(pairs),
        "top1_agreement": round(sum(p["same_top1"] for p in pairs) / max(1, len(pairs)), 4),
        "landmarks_px_mean": summary([p["landmarks_px_mean"] for p in pairs]),
        "landmarks_per_face_size": summary([p["landmarks_px_mean_per_face_size"] for p in pairs]),
        "angle_diff_deg": summary([p["angle_diff_deg"] for p in pairs]),
        "crop_grey_mean_abs": summary([p["crop_grey_mean_abs"] for p in pairs]),
        "crop_same_landmarks_grey_mean_abs": summary([p["crop_same_landmarks_grey_mean_abs"] for p in pairs]),
        "box_iou": summary([p["box_iou"] for p in pairs]),
        "prob_max_abs": summary([p["prob_max_abs"] for p in pairs]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=pathlib.Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "reports" / "web" / "parity.json")
    args = parser.parse_args(argv)
    datasets = args.datasets.resolve()
    items = photos(datasets)
    paths = [p for _, p in items]
    print(f"{len(items)} photos: fer-tf predict --json ...", flush=True)
    py_pred = python_predict(paths)
    print("Python landmarks (FaceAligner, litert) ...", flush=True)
    py_faces = python_faces(paths)
    print("the page in Chromium ...", flush=True)
    web, seconds = browser_results(items, datasets)
    rows = compare(items, py_pred, py_faces, web)
    report = {"command": "python pipelines/web_parity.py", "chromium": _chromium_version(),
              "overall": aggregate(rows),
              "by_dataset": {d: aggregate([r for r in rows if r["dataset"] == d]) for d in ("kdef", "yale")},
              "browser_seconds_per_photo": summary(seconds),
              "disagreements": [{"path": r["path"], **p} for r in rows for p in r["pairs"] if not p["same_top1"]],
              "face_count_differences": [{k: r[k] for k in ("path", "python_faces", "web_faces")}
                                         for r in rows if r["python_faces"] != r["web_faces"]],
              "photos": rows}
    from fer_tf.files import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["overall"], indent=1))
    print(f"wrote {args.out}")


def _chromium_version():
    import browser

    try:
        return subprocess.run([browser.CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


if __name__ == "__main__":
    main()

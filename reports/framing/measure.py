"""Framing of aligned photo faces against the FER2013 faces the backbone learns from (issue 11, item 3).

The network sees the normalised centre 48x48 crop of a 60x60 face. FER2013's 48x48 images become
such faces by a bilinear 48 -> 60 resize (``fer_tf.preprocess.normalize.resize_face``, as the
cache does), CK+48's too; photos (KDEF, Yale, a user's photo) go through
:class:`~fer_tf.preprocess.align.FaceAligner`. If the aligner frames faces differently (larger,
smaller, higher, lower), the network meets photo faces at a scale and position it never saw.

What this script does, all on CPU and offline:

1. **Measure.** Every 60x60 face (a FER2013 ``Training`` sample, CK+48, and KDEF and Yale aligned
   with the old and the new framing) is measured the same way: upscaled 4x (240 px, bicubic),
   padded by a quarter of its side (edge pixels replicated, so that MediaPipe's face mesh finds
   faces that fill the image), then the 478-point face mesh (the model bundled with mediapipe,
   ``refine_landmarks=True``) is run and its landmarks are mapped back to the 60x60 face. From them:
   inter-ocular distance (between the eye centres, each the mean of the 16 eye-contour landmarks,
   as in align.py), eye-centre height (y of the eyes' midpoint), mouth height (y of the mean of
   landmarks 0, 17, 61, 291: lips' top and bottom, mouth corners), eye-to-mouth distance, the face
   oval's width and height (extent of the mesh's 36 FACE_OVAL landmarks, forehead top to chin) and
   its horizontal and vertical centre, the eyes' horizontal midpoint and the roll of the eye line.
   All in pixels of the 60x60 face: the network sees x and y from 6 to 54.
2. **Fit.** From the old framing's medians, the crop scale and vertical offset that give KDEF and
   Yale FER2013's median face size (geometric mean of the ratios of inter-ocular distance,
   eye-to-mouth distance and oval width and height) and vertical position (the eyes and the mouth
   at FER2013's median heights, least squares) are computed. ``FaceAligner``'s defaults
   (``CROP_SCALE``, ``CROP_OFFSET``) are these values, rounded; the new framing is measured again.
3. **Effect without training.** FER2013 softmax checkpoints (``--checkpoint``, one or more; each
   copied before loading, since a training job replaces its file after every epoch) classify KDEF
   and Yale faces in the old and the new framing: accuracy over all 7 labels and restricted to the
   labels each set has (argmax over those), per-label recall and what each expression is called
   (Yale's neutral "normal" faces included), per checkpoint and averaged over them (one
   mid-training checkpoint alone moves by several points from epoch to epoch). Every KDEF and Yale
   subject is unseen by a FER2013 model; the numbers are also given for the subjects that
   ``make ship`` holds out (first of 8 subject folds, seed 0, of CK+48 + KDEF + Yale).

The new framing's KDEF and Yale faces are cached with ``fer_tf.preprocess.prepared.prepared_dataset``
(as the experiments read them) under ``--cache-root`` (default /tmp/fer_tf-framing-cache, never the project's runs/cache); the old
framing's faces are made in memory. Nothing derived from the datasets is written to the
repository: only statistics. Run from the repository root:

    .venv/bin/python reports/framing/measure.py [--fer-sample 1000] [--checkpoint PATH...]

It writes ``reports/framing/results.json`` and ``reports/framing/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fer_tf.files import quiet_native_stderr  # noqa: E402
from fer_tf.preprocess import align, crop  # noqa: E402

OLD = {"crop_scale": 1.25, "crop_offset": 0.0}  # FaceAligner before this change
NEW = {"crop_scale": crop.CROP_SCALE, "crop_offset": crop.CROP_OFFSET}
UPSCALE = 4
PAD = 0.25
MOUTH = (0, 17, 61, 291)
OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234,
        251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
QUANTITIES = {  # name: description (pixels of the 60x60 face; the network sees 6..54)
    "inter_ocular": "inter-ocular distance (eye centre to eye centre)",
    "eye_y": "eye-centre height (y of the eyes' midpoint; 0 = top)",
    "mouth_y": "mouth height (y of the mouth centre)",
    "eye_mouth": "eye-to-mouth distance (vertical)",
    "oval_width": "face-oval width",
    "oval_height": "face-oval height (forehead top to chin)",
    "eye_x": "horizontal centre: x of the eyes' midpoint",
    "oval_cx": "horizontal centre: x of the face oval's centre",
    "oval_cy": "vertical centre of the face oval",
    "roll": "roll of the eye line, degrees",
}
QUANTITY_NAMES = {"inter_ocular": "inter-ocular", "eye_y": "eye y", "mouth_y": "mouth y",
                  "eye_mouth": "eye-mouth", "oval_width": "oval width", "oval_height": "oval height",
                  "eye_x": "eyes x", "oval_cx": "oval centre x", "oval_cy": "oval centre y",
                  "roll": "roll"}
SIZE_KEYS = ("inter_ocular", "eye_mouth", "oval_width", "oval_height")
LABEL_SETS = {"kdef": ("anger", "happiness", "sadness"),
              "yale": ("happiness", "neutral", "sadness", "surprise")}


# -- measuring a face -------------------------------------------------------------------------


class Mesh:
    """MediaPipe's face mesh (bundled model, offline) on 60x60 faces, upscaled and padded."""

    def __init__(self):
        import mediapipe as mp

        with quiet_native_stderr():
            self.graph = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=0.3)

    def landmarks(self, face):
        """[478, 2] landmarks in the face's pixel coordinates, or None when the mesh finds none."""
        import cv2

        h, w = face.shape
        up = cv2.resize(face, (w * UPSCALE, h * UPSCALE), interpolation=cv2.INTER_CUBIC)
        p = int(round(PAD * w * UPSCALE))
        up = cv2.copyMakeBorder(up, p, p, p, p, cv2.BORDER_REPLICATE)
        rgb = np.ascontiguousarray(np.repeat(up[:, :, None], 3, axis=2))
        with quiet_native_stderr():
            res = self.graph.process(rgb)
        if not res.multi_face_landmarks:
            return None
        side = up.shape[0]
        pts = np.array([(q.x * side, q.y * side) for q in res.multi_face_landmarks[0].landmark])
        # continuous coordinates (0 = the left edge of the first pixel, 60 = the right edge of the
        # last): resizing scales them, so the face's are the padded image's, less the padding, / 4
        return (pts - p) / UPSCALE

    def close(self):
        self.graph.close()


def quantities(pts):
    left = pts[list(align._EYE_ON_IMAGE_LEFT)].mean(axis=0)
    right = pts[list(align._EYE_ON_IMAGE_RIGHT)].mean(axis=0)
    eyes = (left + right) / 2
    mouth = pts[list(MOUTH)].mean(axis=0)
    oval = pts[list(OVAL)]
    lo, hi = oval.min(axis=0), oval.max(axis=0)
    dx, dy = right - left
    return {
        "inter_ocular": float(np.hypot(dx, dy)),
        "eye_y": float(eyes[1]),
        "mouth_y": float(mouth[1]),
        "eye_mouth": float(mouth[1] - eyes[1]),
        "oval_width": float(hi[0] - lo[0]),
        "oval_height": float(hi[1] - lo[1]),
        "eye_x": float(eyes[0]),
        "oval_cx": float((lo[0] + hi[0]) / 2),
        "oval_cy": float((lo[1] + hi[1]) / 2),
        "roll": float(np.degrees(np.arctan2(dy, dx))),
    }


def measure(mesh, faces):
    """``{quantity: [values]}`` over the faces the mesh finds, and how many it found."""
    rows = []
    for face in faces:
        pts = mesh.landmarks(np.asarray(face, np.uint8))
        if pts is not None:
            rows.append(quantities(pts))
    values = {k: np.array([r[k] for r in rows]) for k in QUANTITIES}
    return values, len(rows)


def summary(values, n_faces, n_found):
    out = {"faces": int(n_faces), "meshed": int(n_found)}
    for k, v in values.items():
        q1, med, q3 = np.percentile(v, [25, 50, 75]) if len(v) else (np.nan,) * 3
        out[k] = {"q1": round(float(q1), 2), "median": round(float(med), 2), "q3": round(float(q3), 2)}
    return out


# -- faces ------------------------------------------------------------------------------------


def fer_sample(datasets, n, seed):
    from PIL import Image

    from fer_tf.data.readers import read_dataset
    from fer_tf.preprocess.normalize import resize_face

    table = read_dataset(datasets / "fer2013", "fer2013")
    rows = np.flatnonzero(table.split == "Training")
    rows = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))
    return np.stack([resize_face(np.asarray(Image.open(table.path[i]).convert("L")), 60)
                     for i in rows])


def aligned_faces(table, framing):
    """The cache's faces of ``table`` (every row aligned) with FaceAligner(**framing), in memory."""
    from fer_tf.preprocess.align import FaceAligner
    from fer_tf.preprocess.cache import prepare_faces

    with FaceAligner(**framing) as aligner:
        faces, kept, skipped = prepare_faces(table, progress=False, aligner=aligner)
    return faces, kept, skipped


def cached_faces(root, fmt, cache_root):
    """Faces of a dataset as the experiments read them (``prepared_dataset``: the on-disk cache,
    the default FaceAligner), in a cache folder of our own; and the cache folder's name."""
    from fer_tf.preprocess.prepared import prepared_dataset

    table, faces = prepared_dataset(root, fmt, cache_root=cache_root)
    prefix = f"{fmt}-{pathlib.Path(root).resolve().name}"
    folders = [p for p in pathlib.Path(cache_root).iterdir()
               if p.name.startswith(prefix) and (p / "manifest.json").is_file()]
    newest = max(folders, key=lambda p: (p / "manifest.json").stat().st_mtime, default=None)
    return faces, table, newest.name if newest else None


# -- fitting the framing ----------------------------------------------------------------------


def fit(fer, old, old_framing=OLD):
    """Crop scale and offset that move the old framing's medians onto FER2013's.

    With the old crop of side ``S0 = k0 * E`` (``E`` the larger side of the landmarks' box), a
    point at height ``q0`` of the 60-pixel face is at ``q = 30 + r (q0 - 30) + 60 o`` in a crop of
    side ``S = S0 / r`` whose centre lies ``o * S`` above the box's centre (FaceAligner's
    ``crop_offset``): ``r`` scales every size, ``o`` moves every height. ``r`` is the geometric
    mean of the ratios of FER2013's median sizes to the old framing's; ``o`` puts the eyes and the
    mouth at FER2013's median heights (least squares: the mean of the two offsets).
    """
    ratios = {k: fer[k]["median"] / old[k]["median"] for k in SIZE_KEYS}
    r = float(np.exp(np.mean(np.log(list(ratios.values())))))
    k0, o0 = old_framing["crop_scale"], old_framing["crop_offset"]
    # undo the old offset first (q0 - 60 o0 is the height in a crop centred on the box)
    heights = [(old[k]["median"] - 60 * o0, fer[k]["median"]) for k in ("eye_y", "mouth_y")]
    o = float(np.mean([(q - 30 - r * (q0 - 30)) / 60 for q0, q in heights]))
    return {"size_ratios": {k: round(v, 4) for k, v in ratios.items()}, "size_ratio": round(r, 4),
            "crop_scale": round(k0 / r, 4), "crop_offset": round(o, 4)}


# -- the effect on a FER2013 model ------------------------------------------------------------


def load_model(path):
    import fer_tf.preprocess.normalize  # noqa: F401  (registers FacePreprocessing)
    from fer_tf.training.loop import load_checkpoint

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="framing-ckpt-"))
    copy = tmp / "model.keras"
    shutil.copyfile(path, copy)  # the training job replaces the file after every epoch
    state = pathlib.Path(path).with_suffix(".json")  # a copy's own state (epochNN.keras/.json)
    if not state.is_file():
        state = pathlib.Path(path).with_name("state.json")  # a training run's folder
    info = {"path": str(path), "size_bytes": copy.stat().st_size}
    if state.is_file():
        try:
            s = json.loads(state.read_text())
            info["epoch"] = s.get("epoch") or s.get("epochs")
            last = (s.get("history") or [{}])[-1]
            info["val_accuracy"] = last.get("val_accuracy") or (s.get("accuracy") or {}).get(
                "public_test_accuracy")  # a published backbone's sidecar
        except (OSError, ValueError):
            pass
    model = load_checkpoint(copy, compile=False)
    shutil.rmtree(tmp, ignore_errors=True)
    ec = model.ec_model() if hasattr(model, "ec_model") else model
    return ec, list(getattr(model, "labels", [])), info


def probabilities(ec, faces):
    """The model's probabilities on the normalised centre 48x48 crops of 60x60 faces."""
    from fer_tf.preprocess.normalize import center_crop, normalize_faces

    x = np.asarray(center_crop(normalize_faces(np.asarray(faces, np.float32)[..., None])))
    return ec.predict(x, batch_size=128, verbose=0)


def scores(p, truth, labels, present):
    """Accuracy (7-way and restricted to ``present``), per-label recall and confusion rows."""
    ids = np.array([labels.index(t) for t in truth])
    pred = p.argmax(axis=1)
    cols = [labels.index(c) for c in present]
    restricted = np.array(cols)[p[:, cols].argmax(axis=1)]
    out = {"images": int(len(ids)),
           "accuracy": round(float(np.mean(pred == ids)), 4),
           "accuracy_restricted": round(float(np.mean(restricted == ids)), 4),
           "recall": {}, "recall_restricted": {}, "confusion": {}}
    for c in present:
        sel = ids == labels.index(c)
        out["recall"][c] = round(float(np.mean(pred[sel] == labels.index(c))), 4)
        out["recall_restricted"][c] = round(float(np.mean(restricted[sel] == labels.index(c))), 4)
        out["confusion"][c] = {labels[j]: int(np.sum(pred[sel] == j)) for j in range(len(labels))}
    out["predicted"] = {labels[j]: int(np.sum(pred == j)) for j in range(len(labels))}
    return out


# -- the report -------------------------------------------------------------------------------


def git(*args):
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO,
                               timeout=10).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(started):
    from fer_tf.research import reporting

    info = reporting.run_info(seed=None, started=started)
    # tracked files that differ from the commit (other work in progress in the same checkout):
    # the ones this measurement depends on are listed so that a reader can tell
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    info["modified_tracked_files"] = dirty
    used = ("fer_tf/preprocess/", "fer_tf/training/loop.py", "fer_tf/model/network.py", "fer_tf/metric/layers.py",
            "fer_tf/data/", "reports/framing/measure.py")
    info["modified_files_used_here"] = [d for d in dirty if d.startswith(used)]
    info["load_average"] = list(os.getloadavg())
    return info


def fmt_q(s, k):
    v = s[k]
    return f"{v['median']:.1f} ({v['q1']:.1f}-{v['q3']:.1f})"


def summary_lines(results):
    """The report's summary, written from the numbers."""
    m = results["measurements"]
    fer, old, new = m["fer2013"], m["photos_old"], m["photos_new"]
    eff = results["effect"]
    k = len(eff["checkpoints"])

    def diffs(s):
        return ", ".join(f"{QUANTITY_NAMES[q]} {s[q]['median'] - fer[q]['median']:+.1f}"
                         for q in ("inter_ocular", "eye_mouth", "oval_width", "oval_height",
                                   "eye_y", "mouth_y", "eye_x"))

    f = results["framing"]["fit"]
    ck = ", ".join(f"{QUANTITY_NAMES[q]} {m['ckplus48'][q]['median'] - fer[q]['median']:+.1f}"
                   for q in ("inter_ocular", "eye_y", "mouth_y"))
    out = [
        f"- **Framing.** With the old framing, FER2013's median face was {f['size_ratio']:.2f}x "
        f"the size of aligned KDEF and Yale faces. Their medians minus FER2013's, in pixels of the "
        f"60x60 face: "
        f"old framing {diffs(old)}; new framing {diffs(new)}. CK+48 (resized, never aligned) "
        f"is framed like FER2013 already: {ck}.",
    ]
    for key, name in (("kdef", "KDEF"), ("yale", "Yale")):
        a = eff["mean"][key]["all"]
        o, n = a["old"], a["new"]
        out.append(
            f"- **{name}, {o['images']} faces, mean of {k} FER2013 checkpoints.** 7 labels "
            f"{100 * o['accuracy']:.1f}% -> {100 * n['accuracy']:.1f}% "
            f"({100 * (n['accuracy'] - o['accuracy']):+.1f} points; per checkpoint "
            f"{a['right_only_new']:.1f} faces right only in the new framing, "
            f"{a['right_only_old']:.1f} only in the old); restricted to its labels "
            f"{100 * o['accuracy_restricted']:.1f}% -> {100 * n['accuracy_restricted']:.1f}% "
            f"({100 * (n['accuracy_restricted'] - o['accuracy_restricted']):+.1f}).")
    y = eff["mean"]["yale"]["all"]
    conf = eff["confusion"]
    kdef_neutral = {fr: sum(row["neutral"] for row in conf["kdef"][fr].values()) for fr in ("old", "new")}
    recall = (y["old"]["recall"]["neutral"], y["new"]["recall"]["neutral"])
    verdict = ("already call Yale's neutral faces neutral in both framings, so the shipped model's "
               "\"never neutral\" is not something a FER2013 model shows on these faces"
               if min(recall) >= 0.8 else "do not reliably call Yale's neutral faces neutral")
    out.append(
        f"- **Neutral.** These FER2013 checkpoints {verdict} (recall "
        f"{100 * recall[0]:.1f}% old, {100 * recall[1]:.1f}% new framing). Non-neutral faces "
        f"called neutral: KDEF {kdef_neutral['old']} -> {kdef_neutral['new']} of "
        f"{k} x {eff['mean']['kdef']['all']['old']['images']} predictions; Yale sadness called "
        f"neutral: {conf['yale']['old']['sadness']['neutral']} -> {conf['yale']['new']['sadness']['neutral']} "
        f"of {k} x 15.")
    return out


def write_readme(results, path):
    run = results["run"]
    g = results["framing"]
    order = [("fer2013", "FER2013 Training sample (48 -> 60 resize)"),
             ("ckplus48", "CK+48 (48 -> 60 resize, as the cache does)"),
             ("kdef_old", "KDEF aligned, old framing"), ("kdef_new", "KDEF aligned, new framing"),
             ("yale_old", "Yale aligned, old framing"), ("yale_new", "Yale aligned, new framing")]
    keys = ["inter_ocular", "eye_mouth", "oval_width", "oval_height", "eye_y", "mouth_y", "eye_x",
            "oval_cx", "roll"]
    heads = {"inter_ocular": "inter-ocular", "eye_mouth": "eye-mouth", "oval_width": "oval width",
             "oval_height": "oval height", "eye_y": "eye y", "mouth_y": "mouth y", "eye_x": "eyes x",
             "oval_cx": "oval centre x", "roll": "roll (deg)"}
    lines = [
        "# Framing of aligned photo faces against FER2013",
        "",
        f"- Command: `{run['command']}`",
        f"- Date: {run['date']}; commit `{run['git_commit']}`; wall time {run.get('wall_time_s')} s",
        f"- Modified tracked files at run time (others' work in progress): "
        f"{', '.join(run['modified_tracked_files']) or 'none'}; of those used by this measurement: "
        f"{', '.join(run['modified_files_used_here']) or 'none'}",
        f"- Machine: {run['machine']['cpu']} ({run['machine']['cores']} cores), load average at "
        f"start {[round(x, 2) for x in run['load_average']]} (shared with a training job)",
        f"- Framing: old `FaceAligner(crop_scale={OLD['crop_scale']}, crop_offset={OLD['crop_offset']})`, "
        f"new `FaceAligner()` = `crop_scale={g['new']['crop_scale']}, crop_offset={g['new']['crop_offset']}`",
        "",
        "Every face is the 60x60 face the pipeline makes (FER2013 and CK+48: 48 -> 60 bilinear resize; "
        "KDEF and Yale: FaceAligner), measured the same way: MediaPipe's face mesh on the face "
        f"upscaled {UPSCALE}x and padded by {PAD:g} of its side, landmarks mapped back. Pixels of the "
        "60x60 face (the network sees 6..54 of it, the centre 48x48). Median (quartiles).",
        "",
        "## Summary",
        "",
    ] + summary_lines(results) + [
        "",
        "## Framing",
        "",
        "| faces | meshed | " + " | ".join(heads[k] for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name, title in order:
        s = results["measurements"][name]
        lines.append(f"| {title} | {s['meshed']}/{s['faces']} | " +
                     " | ".join(fmt_q(s, k) for k in keys) + " |")
    f = g["fit"]
    lines += [
        "",
        "## The fix",
        "",
        f"FER2013's median face is {f['size_ratio']:.3f}x the size of the old aligned faces "
        f"(ratios of the medians: " + ", ".join(f"{k} {v:.3f}" for k, v in f["size_ratios"].items())
        + f"; KDEF and Yale pooled), and sits at a different height. The crop that moves the old "
        f"framing's medians onto FER2013's has `crop_scale = {f['crop_scale']}` (side of the "
        f"square over the larger side of the landmarks' box; was {OLD['crop_scale']}) and "
        f"`crop_offset = {f['crop_offset']}` (the landmarks' box centre lies that fraction of the "
        f"square's side below the square's centre; was {OLD['crop_offset']}). FaceAligner's defaults are now "
        f"`CROP_SCALE = {g['new']['crop_scale']}` and `CROP_OFFSET = {g['new']['crop_offset']}`; "
        "the rows \"new framing\" above are measured on faces aligned with them.",
        "",
        "## Effect on a FER2013 model, without training",
        "",
        "FER2013-only softmax models (the files named in the command; a training checkpoint or "
        "the published backbone): every KDEF and Yale subject is new to them. Accuracy over the 7 labels, and restricted to "
        "the labels each set has (argmax over those). PublicTest is the checkpoint's own FER2013 "
        "validation accuracy.",
        "",
        "| checkpoint | PublicTest | set | images | old: 7 labels | new: 7 labels | old: restricted | new: restricted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sets = (("kdef", "KDEF (anger, happiness, sadness)"),
            ("yale", "Yale (happiness, neutral, sadness, surprise)"))
    for c in results["effect"]["checkpoints"]:
        m = c["model"]
        val = m.get("val_accuracy")
        for key, title in sets:
            o, n = c[key]["all"]["old"], c[key]["all"]["new"]
            lines.append(f"| {pathlib.Path(m['path']).name} (epoch {m.get('epoch')}) | {'' if val is None else f'{100 * val:.1f}%'} | "
                         f"{title} | {o['images']} | {100 * o['accuracy']:.1f}% | "
                         f"{100 * n['accuracy']:.1f}% | {100 * o['accuracy_restricted']:.1f}% | "
                         f"{100 * n['accuracy_restricted']:.1f}% |")
    mean = results["effect"]["mean"]
    k = len(results["effect"]["checkpoints"])
    for part, ptitle in (("all", "all subjects"), ("held_out", "`make ship`'s held-out subjects")):
        for key, title in sets:
            o, n = mean[key][part]["old"], mean[key][part]["new"]
            lines.append(f"| **mean of {k}**, {ptitle} | | {title} | {o['images']} | "
                         f"**{100 * o['accuracy']:.1f}%** | **{100 * n['accuracy']:.1f}%** | "
                         f"**{100 * o['accuracy_restricted']:.1f}%** | "
                         f"**{100 * n['accuracy_restricted']:.1f}%** |")
    lines += ["", f"Per-label recall (7 labels), all subjects, mean of the {k} checkpoints:", "",
              "| set | expression | old | new |", "|---|---|---|---|"]
    for key, _ in sets:
        o, n = mean[key]["all"]["old"], mean[key]["all"]["new"]
        for c in o["recall"]:
            lines.append(f"| {key} | {c} | {100 * o['recall'][c]:.1f}% | {100 * n['recall'][c]:.1f}% |")
    labels = results["effect"]["labels"]
    lines += ["", f"What the models call each expression (7 labels, all subjects; counts summed over "
              f"the {k} checkpoints, so each row sums to {k} x the images):", "",
              "| set | framing | true | " + " | ".join(labels) + " |",
              "|---|---|---|" + "---|" * len(labels)]
    for key, _ in sets:
        for fr in ("old", "new"):
            for c, row in results["effect"]["confusion"][key][fr].items():
                lines.append(f"| {key} | {fr} | {c} | " + " | ".join(str(row[x]) for x in labels) + " |")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--fer-sample", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", nargs="+", default=["/work/pt/runs/pretrain/last.keras"],
                    help="FER2013 softmax checkpoints (.keras; each is copied before loading); "
                         "a copy's epoch is read from the .json beside it or state.json")
    ap.add_argument("--cache-root", default="/tmp/fer_tf-framing-cache")
    ap.add_argument("--output", default=str(REPO / "reports" / "framing"))
    args = ap.parse_args(argv)
    started = time.time()
    datasets = pathlib.Path(args.datasets)
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    run = provenance(started)
    print(f"command: {run['command']}\ncommit: {run['git_commit']}", flush=True)

    from fer_tf.data.readers import read_dataset
    from fer_tf.preprocess.cache import prepare_faces

    mesh = Mesh()
    meas, faces_of = {}, {}

    values = {}
    fer = fer_sample(datasets, args.fer_sample, args.seed)
    values["fer2013"], found = measure(mesh, fer)
    meas["fer2013"] = summary(values["fer2013"], len(fer), found)

    ck_table = read_dataset(datasets / "ckplus48", "ckplus48")
    ck_faces, ck_kept, _ = prepare_faces(ck_table, progress=False)  # resized, never aligned
    values["ckplus48"], found = measure(mesh, ck_faces)
    meas["ckplus48"] = summary(values["ckplus48"], len(ck_faces), found)

    tables = {}
    for key, folder, fmt in (("kdef", "kdef-subset", "kdef"), ("yale", "yalefaces", "yale")):
        table = read_dataset(datasets / folder, fmt)
        old_faces, old_kept, old_skipped = aligned_faces(table, OLD)
        new_faces, new_kept, cache_dir = cached_faces(datasets / folder, fmt, args.cache_root)
        if list(old_kept.path) != list(new_kept.path):
            raise SystemExit(f"{key}: the old and the new framing kept different images")
        faces_of[key] = {"old": old_faces, "new": new_faces}
        tables[key] = new_kept
        for fr, faces in (("old", old_faces), ("new", new_faces)):
            values[f"{key}_{fr}"], found = measure(mesh, faces)
            meas[f"{key}_{fr}"] = summary(values[f"{key}_{fr}"], len(faces), found)
        run.setdefault("caches", {})[key] = cache_dir
        print(f"{key}: {len(old_faces)} faces aligned ({len(old_skipped)} skipped)", flush=True)
    mesh.close()

    # KDEF and Yale pooled (every face once) for the fit
    for fr in ("old", "new"):
        pooled = {k: np.concatenate([values[f"kdef_{fr}"][k], values[f"yale_{fr}"][k]])
                  for k in QUANTITIES}
        meas[f"photos_{fr}"] = summary(pooled, meas[f"kdef_{fr}"]["faces"] + meas[f"yale_{fr}"]["faces"],
                                       meas[f"kdef_{fr}"]["meshed"] + meas[f"yale_{fr}"]["meshed"])
    framing = {"old": OLD, "new": NEW, "fit": fit(meas["fer2013"], meas["photos_old"])}

    for name, s in meas.items():
        print(f"{name:12s} meshed {s['meshed']}/{s['faces']}  " +
              "  ".join(f"{k} {s[k]['median']:.1f}" for k in QUANTITIES), flush=True)
    print(f"fit: {framing['fit']}", flush=True)

    # effect on the FER2013 model
    from fer_tf.data.splits import subject_kfold
    from fer_tf.data.table import FaceTable

    from fer_tf.data.labels import BASIC7

    labels = list(BASIC7)
    # `make ship`'s held-out subjects: first of 8 subject folds (seed 0) of CK+48 + KDEF + Yale
    ck = ck_kept
    ck.name = "ckplus48"
    parts = [ck.take(ck.expression_ids(labels) >= 0)]
    for key, fmt in (("kdef", "kdef"), ("yale", "yale")):
        t = tables[key]
        t.name = fmt
        parts.append(t.take(t.expression_ids(labels) >= 0))
    combined = FaceTable.concat(parts, name="identity")
    _, test_rows = subject_kfold(combined, k=8, seed=0)[0]
    held_subjects = set(combined.subject[test_rows])
    held = {key: np.array([f"{key}:{s}" in held_subjects for s in tables[key].subject])
            for key in ("kdef", "yale")}
    effect = {"labels": labels, "checkpoints": [],
              "held_out_subjects": {key: sorted({s for s, h in zip(tables[key].subject, held[key]) if h})
                                    for key in held}}
    for path in args.checkpoint:
        ec, model_labels, info = load_model(path)
        if model_labels and list(model_labels) != labels:
            raise SystemExit(f"{path}: labels {model_labels}, expected {labels}")
        entry = {"model": info}
        for key in ("kdef", "yale"):
            truth = list(tables[key].expression)
            h = held[key]
            entry[key] = {"all": {}, "held_out": {}}
            ids = np.array([labels.index(t) for t in truth])
            right = {}
            for fr in ("old", "new"):
                p = probabilities(ec, faces_of[key][fr])
                right[fr] = p.argmax(axis=1) == ids
                entry[key]["all"][fr] = scores(p, truth, labels, LABEL_SETS[key])
                entry[key]["held_out"][fr] = scores(p[h], [x for x, y in zip(truth, h) if y],
                                                    labels, LABEL_SETS[key])
                a = entry[key]["all"][fr]
                print(f"epoch {info.get('epoch')} {key} {fr}: accuracy {a['accuracy']:.3f} "
                      f"(restricted {a['accuracy_restricted']:.3f}) recall {a['recall']} "
                      f"predicted {a['predicted']}", flush=True)
            # paired: images only one framing gets right (7 labels)
            entry[key]["all"]["right_only_old"] = int(np.sum(right["old"] & ~right["new"]))
            entry[key]["all"]["right_only_new"] = int(np.sum(right["new"] & ~right["old"]))
        effect["checkpoints"].append(entry)
    # means over the checkpoints, and confusion counts summed over them
    checkpoints = effect["checkpoints"]
    effect["mean"], effect["confusion"] = {}, {}
    for key in ("kdef", "yale"):
        effect["mean"][key] = {}
        for part in ("all", "held_out"):
            effect["mean"][key][part] = {}
            for fr in ("old", "new"):
                runs = [c[key][part][fr] for c in checkpoints]
                effect["mean"][key][part][fr] = {
                    "images": runs[0]["images"],
                    "accuracy": round(float(np.mean([r["accuracy"] for r in runs])), 4),
                    "accuracy_restricted": round(float(np.mean([r["accuracy_restricted"] for r in runs])), 4),
                    "recall": {c: round(float(np.mean([r["recall"][c] for r in runs])), 4)
                               for c in runs[0]["recall"]},
                }
        effect["mean"][key]["all"]["right_only_old"] = round(float(np.mean(
            [c[key]["all"]["right_only_old"] for c in checkpoints])), 2)
        effect["mean"][key]["all"]["right_only_new"] = round(float(np.mean(
            [c[key]["all"]["right_only_new"] for c in checkpoints])), 2)
        effect["confusion"][key] = {
            fr: {c: {x: int(sum(r[key]["all"][fr]["confusion"][c][x] for r in checkpoints))
                     for x in labels} for c in LABEL_SETS[key]}
            for fr in ("old", "new")}
    for key in ("kdef", "yale"):
        o, n = effect["mean"][key]["all"]["old"], effect["mean"][key]["all"]["new"]
        print(f"mean {key}: old {o['accuracy']:.3f} / {o['accuracy_restricted']:.3f}, "
              f"new {n['accuracy']:.3f} / {n['accuracy_restricted']:.3f}", flush=True)

    notes = [
        "CK+48 is not aligned by the cache: `ckplus48` is a pre-cropped format "
        "(fer_tf.preprocess.cache.PRECROPPED), so its 48x48 crops are resized to 60x60 like FER2013's "
        "and the new framing does not change them.",
        "The fit uses the medians of KDEF and Yale pooled (old framing). The horizontal centre is "
        "not changed (the landmarks' box centre): FER2013's median eyes x is "
        f"{meas['fer2013']['eye_x']['median']:.1f} and its oval centre "
        f"{meas['fer2013']['oval_cx']['median']:.1f} (the middle is 30). FER2013's faces vary far "
        "more than aligned ones (quartiles above); only the medians are matched.",
        "`make ship`'s held-out subjects (first of 8 subject folds, seed 0): KDEF "
        f"{', '.join(effect['held_out_subjects']['kdef'])}; Yale "
        f"{', '.join(effect['held_out_subjects']['yale'])}. Yale's held-out part is "
        f"{effect['mean']['yale']['held_out']['old']['images']} images: one image is "
        f"{100 / max(1, effect['mean']['yale']['held_out']['old']['images']):.1f} points.",
        "Caches of aligned faces made before this change hold the old framing. "
        "`prepared_dataset` now names a cache of aligned faces after the framing "
        f"({' and '.join(f'`{n}`' for n in run['caches'].values())} with this one), and the "
        "cache's settings record it, so `make finetune` and `make ship` align KDEF and Yale "
        "again into new folders of runs/cache; the old-framing folders "
        "`runs/cache/kdef-kdef-subset` and `runs/cache/yale-yalefaces` are no longer read and "
        "can be deleted. CK+48 and FER2013 caches are resized, not aligned, and do not change.",
        "The mesh needs padding to find faces that fill the image; the padding does not move the "
        "landmarks (they are mapped back), and all sets are measured with the same padding.",
        f"The new framing's faces were cached under {args.cache_root} (not runs/cache); the "
        "project's runs/cache was neither read nor written.",
    ]
    results = {"run": {**run, "wall_time_s": round(time.time() - started, 1)},
               "settings": {"fer_sample": args.fer_sample, "seed": args.seed, "upscale": UPSCALE,
                            "pad": PAD, "mouth_landmarks": list(MOUTH),
                            "quantities": QUANTITIES},
               "framing": framing, "measurements": meas, "effect": effect,
               "notes": notes}
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    write_readme(results, out / "README.md")
    print(f"wrote {out / 'results.json'} and {out / 'README.md'}", flush=True)


if __name__ == "__main__":
    main()

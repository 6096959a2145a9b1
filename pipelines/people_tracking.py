"""Face tracking in videos, measured: reports/people/tracking.json and tracking.md.

    PYTHONPATH=. python pipelines/people_tracking.py [--datasets ../shared/datasets] [--dense crossing,occlusion]

1. Test videos from real faces: KDEF photos of different people (both sessions, three expressions,
   the photo changing every 30 frames) as sprites with soft oval edges moving over a textured
   background, 640x480 at 25 frames/s, written as MP4 to runs/people_tracking/ (never committed) and
   read back, so the detector sees compressed frames. Scenes: two people crossing (one passes
   behind the other), a board hiding one face for half a second, one person leaving and coming
   back 3 seconds later, four people (crossings, one leaving and returning), a small face (eyes
   about 17 px apart: above the identity cut-off ``MIN_EYE_DISTANCE`` of 12 px since it was measured,
   so it is tracked with an identity) beside a normal one, and one face alone (for speed).
2. Ground truth: each visible person's face box, placed from the detector's box on that photo
   alone (so that a good detection covers it at IoU >= 0.5); a face less than half visible (behind
   a face or the board, or cut by the border) is "don't care": neither a miss nor, when detected,
   a false positive.
3. The real detector (FaceAligner, litert engine, as Recognizer) on every frame, cached.
4. Trackers (fer_tf.people.tracking.Tracker): the default (embeddings where needed); IoU only
   (no embedder); on the --dense scenes, an embedding of every face on every frame. IDF1 and
   ID switches on person ids (a face without person counts by its track), IDF1 of the track ids,
   MOTA, embeddings per frame and the tracker's own time per frame.
5. Speed: the one-face video through the tracker with the real embedder (nothing cached):
   tracker + embedding time per frame, beside the detector's time per frame.

Embeddings are cached in runs/people_tracking/ for the accuracy runs (delete it to recompute).
"""

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import DATASETS, REPO, run  # noqa: E402

import numpy as np  # noqa: E402

OUT = REPO / "reports" / "people"
WORK = REPO / "runs" / "people_tracking"
W, H, FPS = 640, 480, 25
PHOTO_EVERY = 30  # frames between changes of a person's photo (expression, session)
REFERENCE_SIDE = 200  # sprite side at which each photo's face box is measured
VISIBLE = 0.5  # share of a true face box that must be visible for it to count
GENERATOR = 1  # bump when the scenes change (invalidates the caches)

# a person: KDEF subject, sprite side, keyframes (frame, centre x, centre y); drawn in list order
SCENES = {
    "crossing": {"frames": 90, "people": [
        ("F01", 170, [(0, 530, 250), (89, 110, 230)]),
        ("M01", 170, [(0, 110, 230), (89, 530, 250)])]},
    "occlusion": {"frames": 90, "people": [
        ("F02", 170, [(0, 150, 240), (89, 250, 240)]),
        ("M02", 170, [(0, 480, 240), (89, 450, 230)])],
        "boards": [(230, [(0, -200), (30, -200), (40, 195), (52, 205), (62, -200), (89, -200)])]},
    "leave_reenter": {"frames": 160, "people": [
        ("F03", 160, [(0, 150, 200), (30, -120, 200), (100, -120, 300), (130, 200, 300), (159, 260, 280)]),
        ("M03", 160, [(0, 400, 220), (159, 470, 250)]),
        ("F04", 150, [(0, 560, 360), (80, 540, 120), (159, 560, 360)])]},
    "four_people": {"frames": 200, "people": [
        ("M04", 150, [(0, 100, 150), (80, 540, 160), (199, 520, 170)]),
        ("F05", 150, [(0, 540, 170), (80, 100, 150), (199, 130, 150)]),
        ("M05", 140, [(0, 300, 360), (60, 560, 360), (80, 760, 360), (150, 760, 360), (175, 520, 360),
                      (199, 400, 350)]),
        ("F06", 140, [(0, 90, 370), (199, 200, 360)])]},
    "small_face": {"frames": 90, "people": [
        ("M06", 170, [(0, 200, 240), (89, 300, 250)]),
        ("F07", 52, [(0, 560, 90), (89, 440, 110)])]},
    "one_face": {"frames": 150, "people": [
        ("M07", 180, [(0, 280, 230), (75, 360, 250), (149, 300, 240)])]},
}
SPEED_SCENE = "one_face"


def photos(root, subject):
    """The subject's KDEF photos: session A then B, angry, happy, sad."""
    found = sorted(p for p in root.glob(f"*/[AB]{subject}*") if p.suffix.lower() == ".jpg")
    if len(found) < 2:
        from fer_tf.errors import DatasetError

        raise DatasetError(f"{root}: KDEF subject {subject} has {len(found)} photos; expected 6")
    return found


def background(seed):
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    base = 70 + 60 * (x / W) + 30 * (y / H)
    blobs = cv2.GaussianBlur(rng.normal(0, 40, (H, W)).astype(np.float32), (0, 0), 9)
    grey = np.clip(base + blobs, 0, 255)
    tint = np.array([1.0, 0.95, 0.85], np.float32)
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.float32)


def sprite(image, side):
    """(rgb float [side, side, 3], alpha [side, side]): the photo with soft oval edges."""
    import cv2

    rgb = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if side < image.shape[0]
                     else cv2.INTER_CUBIC).astype(np.float32)
    y, x = (np.mgrid[0:side, 0:side] + 0.5) / side - 0.5
    r = np.sqrt((x / 0.46) ** 2 + (y / 0.5) ** 2)
    alpha = np.clip((1.0 - r) / 0.08, 0, 1).astype(np.float32)
    return rgb, alpha


def at(keys, f):
    """Linear interpolation of keyframes ``[(frame, values...)]`` at frame ``f``."""
    frames = [k[0] for k in keys]
    return [float(np.interp(f, frames, [k[i] for k in keys])) for i in range(1, len(keys[0]))]


def paste(canvas, labels, rgb, alpha, x0, y0, label):
    """Blend a sprite with top-left (x0, y0) into canvas; mark its opaque pixels in labels."""
    h, w = alpha.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa >= xb or ya >= yb:
        return
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0, None]
    region = canvas[ya:yb, xa:xb]
    region[:] = region * (1 - a) + rgb[ya - y0:yb - y0, xa - x0:xb - x0] * a
    labels[ya:yb, xa:xb][a[..., 0] > 0.5] = label


def reference_boxes(aligner, images, back):
    """Each photo's face box relative to its sprite (fractions of the side), from the detector."""
    out = []
    for image in images:
        rgb, alpha = sprite(image, REFERENCE_SIDE)
        canvas, labels = back.copy(), np.zeros((H, W), np.int32)
        x0, y0 = (W - REFERENCE_SIDE) // 2, (H - REFERENCE_SIDE) // 2
        paste(canvas, labels, rgb, alpha, x0, y0, 1)
        faces = aligner.detect(canvas.astype(np.uint8))
        if not faces:
            raise RuntimeError("the detector finds no face on a sprite: pick another KDEF subject")
        x, y, w, h = faces[0].box
        out.append(((x - x0) / REFERENCE_SIDE, (y - y0) / REFERENCE_SIDE, w / REFERENCE_SIDE,
                    h / REFERENCE_SIDE))
    return out


def build_scene(name, spec, root, aligner):
    """Render the scene, write its MP4; returns (video path, truth per frame)."""
    import cv2

    from fer_tf.data.images import load_image_rgb

    back = background(sum(map(ord, name)))
    people = []
    for subject, side, keys in spec["people"]:
        images = [load_image_rgb(p) for p in photos(root, subject)]
        people.append((subject, side, keys, images, reference_boxes(aligner, images, back),
                       [sprite(im, side) for im in images]))
    path = WORK / f"{name}.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    rng = np.random.default_rng(1)
    truth = []
    for f in range(spec["frames"]):
        canvas, labels = back.copy(), np.full((H, W), -1, np.int32)
        boxes = []
        for k, (subject, side, keys, images, rel, sprites) in enumerate(people):
            cx, cy = at(keys, f)
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            photo = (f // PHOTO_EVERY) % len(images)
            paste(canvas, labels, *sprites[photo], x0, y0, k)
            rx, ry, rw, rh = rel[photo]
            boxes.append((subject, (x0 + rx * side, y0 + ry * side, rw * side, rh * side)))
        for width, keys in spec.get("boards", ()):
            (cx,) = at(keys, f)
            xa, xb = int(max(cx - width / 2, 0)), int(min(cx + width / 2, W))
            if xa < xb:
                canvas[:, xa:xb] = np.array([120, 90, 60], np.float32)
                labels[:, xa:xb] = -2
        frame_truth = []
        for k, (subject, (x, y, w, h)) in enumerate(boxes):
            xa, ya, xb, yb = int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))
            seen = (labels[max(ya, 0):max(min(yb, H), 0), max(xa, 0):max(min(xb, W), 0)] == k).sum()
            frame_truth.append({"id": subject, "box": [x, y, w, h],
                                "visible": float(seen / max((xb - xa) * (yb - ya), 1))})
        truth.append(frame_truth)
        noisy = np.clip(canvas + rng.normal(0, 2.0, canvas.shape), 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, truth


def frames_of(path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap.release()


def detect_video(path, aligner):
    """Per frame: the detector's faces, and its time per frame (ms)."""
    faces, ms = [], []
    for rgb in frames_of(path):
        t = time.perf_counter()
        faces.append(aligner.detect(rgb))
        ms.append(1000 * (time.perf_counter() - t))
    return faces, ms


def save_faces(path, faces, ms, key):
    from fer_tf.files import atomic_write

    rows = [(f, fc) for f, frame in enumerate(faces) for fc in frame]
    atomic_write(path, lambda fh: np.savez(
        fh, key=np.array(key), frame=np.array([f for f, _ in rows], np.int64), ms=np.array(ms),
        frames=np.array(len(faces)), box=np.array([fc.box for _, fc in rows], np.float64).reshape(-1, 4),
        score=np.array([fc.score for _, fc in rows]),
        landmarks=np.array([fc.landmarks for _, fc in rows], np.float32).reshape(-1, 468, 2),
        left=np.array([fc.left_eye for _, fc in rows]).reshape(-1, 2),
        right=np.array([fc.right_eye for _, fc in rows]).reshape(-1, 2)))


def load_faces(path, key):
    from fer_tf.preprocess.crop import Face

    if not path.is_file():
        return None
    z = np.load(path, allow_pickle=False)
    if str(z["key"]) != key:
        return None
    faces = [[] for _ in range(int(z["frames"]))]
    for i, f in enumerate(z["frame"]):
        faces[f].append(Face(tuple(z["box"][i]), float(z["score"][i]), z["landmarks"][i], z["left"][i],
                             z["right"][i]))
    return faces, list(z["ms"])


class Detection:
    """A detected face with its place in the video (for the embedding cache)."""

    def __init__(self, face, key):
        self.face, self.box, self.key = face, face.box, key


class CachedEmbedder:
    """IdentityEmbedder with results kept per (frame, face index); times the real calls."""

    def __init__(self, embedder, store):
        self.embedder, self.store, self.ms = embedder, store, []

    def embed(self, image, face):
        if face.key not in self.store:
            t = time.perf_counter()
            r = self.embedder.embed(image, face)
            self.ms.append(1000 * (time.perf_counter() - t))
            self.store[face.key] = r
        return self.store[face.key]

    @staticmethod
    def load(path):
        from fer_tf.people.embedding import IdentityResult

        if not path.is_file():
            return {}
        z = np.load(path, allow_pickle=False)
        return {(int(f), int(i)): IdentityResult(v if ok else None, None if ok else str(r), None, float(e), float(s))
                for f, i, ok, v, r, e, s in zip(z["frame"], z["index"], z["ok"], z["vector"], z["reason"],
                                                z["eyes"], z["sharp"])}

    @staticmethod
    def save(path, store):
        from fer_tf.files import atomic_write

        keys = sorted(store)
        rs = [store[k] for k in keys]
        atomic_write(path, lambda fh: np.savez(
            fh, frame=np.array([k[0] for k in keys], np.int64), index=np.array([k[1] for k in keys], np.int64),
            ok=np.array([r.ok for r in rs], bool),
            vector=np.array([r.vector if r.ok else np.zeros(128, np.float32) for r in rs], np.float32).reshape(-1, 128),
            reason=np.array([r.reason or "" for r in rs]), eyes=np.array([r.eye_distance for r in rs]),
            sharp=np.array([r.sharpness for r in rs])))


def evaluate(truth, faces, seen):
    """Metrics of one tracker run: person ids (a face without person by its track) and track ids."""
    from fer_tf.people.track_metrics import clear_mot, idf1
    from fer_tf.people.tracking import box_iou

    gt, pred_person, pred_track = [], [], []
    detected = 0
    for frame_truth, frame_faces, frame_seen in zip(truth, faces, seen):
        counted = [(t["id"], t["box"]) for t in frame_truth if t["visible"] >= VISIBLE]
        ignored = np.array([t["box"] for t in frame_truth if t["visible"] < VISIBLE]).reshape(-1, 4)
        boxes = np.array([fc.box for fc in frame_faces]).reshape(-1, 4)
        covers_counted = (box_iou(boxes, np.array([b for _, b in counted]).reshape(-1, 4)) >= 0.5).any(1)
        covers_ignored = (box_iou(boxes, ignored) >= 0.5).any(1)
        keep = [j for j in range(len(frame_faces)) if covers_counted[j] or not covers_ignored[j]]
        detected += int((box_iou(np.array([b for _, b in counted]).reshape(-1, 4), boxes) >= 0.5).any(1).sum())
        gt.append(counted)
        pred_person.append([(s.person if s.person is not None else f"track-{s.track}", frame_faces[j].box)
                            for j, s in ((j, frame_seen[j]) for j in keep)])
        pred_track.append([(frame_seen[j].track, frame_faces[j].box) for j in keep])
    person, track, mot = idf1(gt, pred_person), idf1(gt, pred_track), clear_mot(gt, pred_person)
    people = {p for frame in pred_person for p, _ in frame}
    return {"idf1": person["idf1"], "idp": person["idp"], "idr": person["idr"], "id_switches": mot["switches"],
            "mota": mot["mota"], "misses": mot["misses"], "false_positives": mot["false_positives"],
            "track_idf1": track["idf1"], "true_people": len({t for frame in gt for t, _ in frame}),
            "predicted_people": len(people), "tracks": len({t for frame in pred_track for t, _ in frame}),
            "detector_recall": detected / max(person["true"], 1), "true_boxes": person["true"],
            "switch_frames": [list(map(str, s)) for s in mot["switch_frames"]],
            "pairs": {str(k): str(v) for k, v in person["pairs"].items()}}


def pair_distances(truth, faces, store):
    """Distances between this scene's computed embeddings: (same person, different people)."""
    from fer_tf.people.embedding import distances
    from fer_tf.people.tracking import box_iou

    ids, vecs = [], []
    for (f, i), r in store.items():
        if not r.ok:
            continue
        boxes = np.array([t["box"] for t in truth[f]]).reshape(-1, 4)
        iou = box_iou(np.array([faces[f][i].box]), boxes)[0]
        if len(iou) and iou.max() >= 0.5:
            ids.append(truth[f][int(iou.argmax())]["id"])
            vecs.append(r.vector)
    if len(vecs) < 2:
        return [], []
    d = distances(np.stack(vecs))
    ids = np.array(ids)
    upper = np.triu(np.ones_like(d, bool), 1)
    same = ids[:, None] == ids[None, :]
    return d[upper & same].tolist(), d[upper & ~same].tolist()


def track_video(tracker, frames, faces, cached=None):
    """Run ``tracker``; returns (TrackedFace lists, tracker ms per frame without embedding time)."""
    seen, ms = [], []
    for f, (rgb, frame_faces) in enumerate(zip(frames, faces)):
        dets = [Detection(fc, (f, i)) for i, fc in enumerate(frame_faces)]
        before = len(cached.ms) if cached is not None else 0
        spent = sum(cached.ms) if cached is not None else 0.0
        t = time.perf_counter()
        seen.append(tracker.update(rgb, dets))
        elapsed = 1000 * (time.perf_counter() - t)
        if cached is not None and len(cached.ms) > before:
            elapsed -= sum(cached.ms) - spent
        ms.append(elapsed)
    return seen, ms


def stats(ms):
    ms = np.asarray(ms, np.float64)
    return {"mean": float(ms.mean()), "median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)),
            "max": float(ms.max())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=pathlib.Path, default=DATASETS)
    parser.add_argument("--dense", default="crossing,occlusion",
                        help="scenes that also run the every-face-every-frame tracker (comma-separated)")
    args = parser.parse_args()
    from fer_tf.people.embedding import IdentityEmbedder
    from fer_tf.people.tracking import Tracker
    from fer_tf.preprocess.align import FaceAligner

    root = args.datasets / "kdef-subset"
    WORK.mkdir(parents=True, exist_ok=True)
    embedder = IdentityEmbedder()
    dense = {s for s in args.dense.split(",") if s}
    results = {"scenes": {}, "settings": {}}
    genuine, impostor = [], []
    with FaceAligner(engine="litert") as aligner:
        for name, spec in SCENES.items():
            key = json.dumps({"generator": GENERATOR, "spec": spec}, sort_keys=True)
            print(f"{name}: building", file=sys.stderr, flush=True)
            path, truth = build_scene(name, spec, root, aligner)
            cached_faces = load_faces(WORK / f"{name}_faces.npz", key)
            if cached_faces is None:
                print(f"{name}: detecting", file=sys.stderr, flush=True)
                faces, det_ms = detect_video(path, aligner)
                save_faces(WORK / f"{name}_faces.npz", faces, det_ms, key)
            else:
                faces, det_ms = cached_faces
            frames = list(frames_of(path))
            store_path = WORK / f"{name}_embeddings.npz"
            store = CachedEmbedder.load(store_path) if cached_faces is not None else {}
            cached = CachedEmbedder(embedder, store)
            scene = {"frames": len(frames), "people": [p[0] for p in spec["people"]],
                     "faces_detected": sum(map(len, faces)), "detector_ms": stats(det_ms), "trackers": {}}
            variants = {"tracker": lambda: Tracker(cached), "iou_only": lambda: Tracker(None)}
            if name in dense:
                variants["every_frame"] = lambda: Tracker(cached, refresh_every=1, retry_every=1)
            for variant, make in variants.items():
                print(f"{name}: {variant}", file=sys.stderr, flush=True)
                tracker = make()
                seen, ms = track_video(tracker, frames, faces, cached)
                r = evaluate(truth, faces, seen)
                r.update({"embedding_attempts": tracker.counts["attempts"], "embeddings": tracker.counts["vectors"],
                          "embeddings_per_frame": tracker.counts["vectors"] / len(frames),
                          "tracker_ms_without_embedding": stats(ms)})
                scene["trackers"][variant] = r
            CachedEmbedder.save(store_path, cached.store)
            same, different = pair_distances(truth, faces, cached.store)
            genuine += same
            impostor += different
            results["scenes"][name] = scene
        # speed: the one-face video, real embedder, nothing cached
        print("speed", file=sys.stderr, flush=True)
        frames = list(frames_of(WORK / f"{SPEED_SCENE}.mp4"))
        faces, det_ms = load_faces(WORK / f"{SPEED_SCENE}_faces.npz",
                                   json.dumps({"generator": GENERATOR, "spec": SCENES[SPEED_SCENE]}, sort_keys=True))
        tracker = Tracker(embedder)
        ms = []
        for rgb, frame_faces in zip(frames, faces):
            t = time.perf_counter()
            tracker.update(rgb, frame_faces)
            ms.append(1000 * (time.perf_counter() - t))
        embed_ms = []
        for rgb, frame_faces in list(zip(frames, faces))[:10]:
            for fc in frame_faces:
                t = time.perf_counter()
                embedder.embed(rgb, fc)
                embed_ms.append(1000 * (time.perf_counter() - t))
    results["speed"] = {"scene": SPEED_SCENE, "frames": len(frames), "tracker_with_embedding_ms": stats(ms),
                        "embeddings": tracker.counts["vectors"], "embedding_ms": stats(embed_ms), "embedding_runs": len(embed_ms),
                        "detector_ms": stats(det_ms), "budget_ms_at_15fps": 1000 / 15}
    results["distances"] = {
        "same_person": {"pairs": len(genuine), **{f"p{q}": float(np.percentile(genuine, q)) for q in (50, 99, 100)}},
        "different_people": {"pairs": len(impostor), **{f"p{q}": float(np.percentile(impostor, q))
                                                        for q in (0, 0.1, 1, 50)}},
        "same_above_threshold": float(np.mean(np.array(genuine) > Tracker(None).same_person)),
        "different_below_threshold": float(np.mean(np.array(impostor) <= Tracker(None).same_person))}
    results["settings"] = {"size": [W, H], "fps": FPS, "visible": VISIBLE, "cover_iou": 0.5,
                           "tracker": {k: getattr(Tracker(None), k) for k in
                                       ("same_person", "different_person", "match_iou", "max_lost", "refresh_every", "retry_every",
                                        "gallery_size")},
                           "dense": sorted(dense)}
    results["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()
    results["machine"] = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs"
    write_reports(results)


def write_reports(results):
    from fer_tf.files import atomic_write_text

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "tracking.json", json.dumps(results, indent=1, sort_keys=True) + "\n")
    atomic_write_text(OUT / "tracking.md", report_md(results))
    print(f"wrote {OUT / 'tracking.md'}", file=sys.stderr)


def report_md(r):
    s = r["settings"]
    t = s["tracker"]
    lines = [
        "# Face tracking in videos",
        "",
        "`fer_tf.people.tracking.Tracker`: tracks by box overlap (IoU), people across tracks by dlib's identity "
        "embedding, computed only where the boxes are ambiguous (new or returning faces, crossings, a track taken "
        "back after a gap) and every `refresh_every` frames. Measured on test videos built from real faces.",
        "",
        f"Produced by `python pipelines/people_tracking.py` at commit `{r['commit']}` on {r['machine']} "
        "(shared with other jobs: times are indicative).",
        "",
        "## Videos",
        f"- {s['size'][0]}x{s['size'][1]} at {s['fps']} frames/s, MP4 (`mp4v`), written to `runs/people_tracking/` "
        "and read back. KDEF photos (sessions A and B, angry, happy, sad; the photo changes every "
        f"{PHOTO_EVERY} frames) as oval sprites on a textured background, slight noise.",
        "- Ground truth: each person's face box, placed from the detector's box on that photo alone. A face less "
        f"than {s['visible']:.0%} visible (behind another face or a board, cut by the border) is \"don't care\".",
        "- Detector: `FaceAligner(engine=\"litert\")` (as `Recognizer`) on every frame.",
        "",
        "| scene | frames | people (KDEF subjects) | what happens |",
        "|---|---|---|---|",
    ]
    what = {"crossing": "two people cross; one passes behind the other",
            "occlusion": "a board hides one face for about half a second",
            "leave_reenter": "one of three leaves on the left and comes back about 3 s later (other session's photos)",
            "four_people": "two cross, one leaves on the right and comes back 3 s later, one moves slowly",
            "small_face": "a small face (eyes about 17 px apart, above the identity cut-off of 12 px) beside a normal one",
            "one_face": "one face moving slowly (speed)"}
    for name, sc in r["scenes"].items():
        lines.append(f"| {name} | {sc['frames']} | {', '.join(sc['people'])} | {what.get(name, '')} |")
    lines += ["", "## Results",
              "IDF1 and ID switches on person ids (a face without a person counts by its track id); track IDF1: on track "
              "ids (a person who leaves and comes back is a new track, so it is lower by design). Embeddings: "
              "descriptor runs per frame. Tracker time: the tracker's own work per frame, embeddings excluded "
              "(they are in the speed section).", "",
              "| scene | tracker | IDF1 | ID switches | track IDF1 | MOTA | people found / true | tracks | embeddings per frame | tracker ms/frame (mean) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sc in r["scenes"].items():
        for variant, v in sc["trackers"].items():
            lines.append(f"| {name} | {variant} | {v['idf1']:.3f} | {v['id_switches']} | {v['track_idf1']:.3f} | "
                         f"{v['mota']:.3f} | {v['predicted_people']} / {v['true_people']} | {v['tracks']} | "
                         f"{v['embeddings_per_frame']:.3f} | {v['tracker_ms_without_embedding']['mean']:.2f} |")
    lines += ["", "Detector recall (true boxes covered at IoU >= 0.5 by a detection): " + ", ".join(
        f"{name} {sc['trackers']['tracker']['detector_recall']:.3f}" for name, sc in r["scenes"].items()) + ".", ""]
    sp = r["speed"]
    lines += ["## Speed (one face, 640x480)",
              f"The `{sp['scene']}` video ({sp['frames']} frames) through the default tracker with the real embedder "
              "(nothing cached):", "",
              "| part | mean ms/frame | median | p95 | max |", "|---|---|---|---|---|"]
    for label, key in (("tracker + embeddings", "tracker_with_embedding_ms"), ("detector (FaceAligner, litert; timed when the detections were cached)", "detector_ms")):
        m = sp[key]
        lines.append(f"| {label} | {m['mean']:.1f} | {m['median']:.1f} | {m['p95']:.1f} | {m['max']:.1f} |")
    m = sp["embedding_ms"]
    lines += ["", f"- Embeddings computed: {sp['embeddings']} in {sp['frames']} frames; one embedding costs "
              f"{m['median']:.0f} ms (median of {sp['embedding_runs']} runs; mean {m['mean']:.0f} ms).",
              f"- The budget for `--people` at 15 frames/s is {sp['budget_ms_at_15fps']:.1f} ms per frame for detector, "
              f"classifier and tracker together; the tracker with its embeddings takes "
              f"{sp['tracker_with_embedding_ms']['mean']:.1f} ms of it on average (an embedding on every frame would "
              f"take {m['median']:.0f} ms).", "",
              "## Embedding distances in these videos",
              "All pairs of the embeddings computed in a scene (the dense runs included), faces assigned to the true "
              "person whose box they cover:", "",
              f"- same person ({r['distances']['same_person']['pairs']} pairs): median "
              f"{r['distances']['same_person']['p50']:.3f}, 99th percentile {r['distances']['same_person']['p99']:.3f}, "
              f"largest {r['distances']['same_person']['p100']:.3f}; above the tracker's same_person "
              f"{t['same_person']}: {r['distances']['same_above_threshold']:.2%};",
              f"- different people ({r['distances']['different_people']['pairs']} pairs): smallest "
              f"{r['distances']['different_people']['p0']:.3f}, 0.1st percentile {r['distances']['different_people']['p0.1']:.3f}, "
              f"1st {r['distances']['different_people']['p1']:.3f}, median {r['distances']['different_people']['p50']:.3f}; "
              f"at or below same_person: {r['distances']['different_below_threshold']:.2%}.", "",
              "The tracker's thresholds were set after looking at these distances (and the KDEF/Yale false-match "
              "rates of reports/people/identity.json), so these videos are not an independent test of them.", "",
              "## Settings", "",
              f"Tracker defaults: same_person {t['same_person']}, different_person {t['different_person']}, match_iou {t['match_iou']}, max_lost {t['max_lost']} "
              f"frames, refresh_every {t['refresh_every']} frames, retry_every {t['retry_every']}, gallery_size "
              f"{t['gallery_size']}. Every-frame tracker (`every_frame`, refresh_every 1) on: {', '.join(s['dense']) or 'none'}.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)

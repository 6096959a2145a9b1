"""`make bench`, section ``people``: who-is-who costs.

- per face: the identity embedding (:class:`fer_tf.people.embedding.IdentityEmbedder`: the quality
  gate, the 150x150 chip and dlib's ResNet) beside the expression classifier (the shipped
  ``.tflite``), both on the same real face (a Yale photo), interleaved in one process;
- a 640x480 video with one face (a Yale photo drifting across a grey frame, 25 fps): frames per
  second of the recogniser with ``people`` (``fer-tf predict --people``: every face tracked, embedded
  only where the tracker needs it) and without, each over the whole video, alternating.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from benchmarks.common import summary
from benchmarks.inference_bench import interleaved_ms

PHOTO = "yalefaces/subject01.happy"
VIDEO_SIZE = (640, 480)
VIDEO_FPS = 25


def one_face_video(path, rgb, frames):
    """A ``frames``-frame 640x480 MJPG video of ``rgb`` drifting right and back on grey."""
    import cv2

    w, h = VIDEO_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (w, h))
    span = w - rgb.shape[1]
    for i in range(frames):
        frame = np.full((h, w, 3), 128, np.uint8)
        x = int(abs((2 * i) % (2 * span) - span))  # 2 px per frame, back and forth
        y = (h - rgb.shape[0]) // 2
        frame[y:y + rgb.shape[0], x:x + rgb.shape[1]] = rgb
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return pathlib.Path(path)


def _video_fps(recognizer, video, people):
    from fer_tf.deploy.people import VideoPeople

    tracker = VideoPeople() if people else None
    start = time.perf_counter()
    with recognizer.open_video(video, people=tracker) as stream:
        frames = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    out = {"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds}
    if people:
        out["embeddings"] = dict(tracker.tracker.counts)
    return out


def run(datasets, settings, workdir, log=print):
    from fer_tf.data.images import load_image_rgb
    from fer_tf.deploy.recognizer import Recognizer
    from fer_tf.people.embedding import IdentityEmbedder

    rgb = load_image_rgb(pathlib.Path(datasets) / PHOTO)
    results = {"photo": PHOTO, "photo_shape": list(rgb.shape)}
    with Recognizer(num_threads=1) as recognizer:
        (aligned,), _ = recognizer._align(rgb, PHOTO)
        embedder = IdentityEmbedder()
        chip = embedder.chip(rgb, aligned.face)
        fns = {"classifier": lambda crop: recognizer.probabilities(crop[None]),
               "embedding": lambda face: embedder.embed(rgb, face),
               "embedding_network_only": embedder.vector}
        items = {"classifier": [aligned.image], "embedding": [aligned.face],
                 "embedding_network_only": [chip]}
        calls = max(3, settings.latency_calls // 5)
        results["per_face_ms"] = interleaved_ms(fns, items, calls, settings.repeats)
        for name, value in results["per_face_ms"].items():
            log(f"  {name}: {value['median']:.2f} ms/face")
        frames = 20 if settings.quick else 150
        video = one_face_video(pathlib.Path(workdir) / "one_face.avi", rgb, frames)
        runs = {"plain": [], "people": []}
        for _ in range(settings.repeats):
            for mode in runs:
                runs[mode].append(_video_fps(recognizer, video, people=mode == "people"))
        results["video"] = {
            "size": list(VIDEO_SIZE), "fps": VIDEO_FPS, "frames": frames,
            "frames_per_s": {m: summary([r["frames_per_s"] for r in rs]) for m, rs in runs.items()},
            "embeddings": runs["people"][-1]["embeddings"]}
        fps = results["video"]["frames_per_s"]
        log(f"  640x480 one-face video: {fps['people']['median']:.1f} frames/s with people, "
            f"{fps['plain']['median']:.1f} without")
    return results


def target_row(r):
    """The Targets table's row of this section (``None`` without it)."""
    p = r.get("people")
    if not p:
        return None
    fps = p["video"]["frames_per_s"]["people"]["median"]
    return (f"| `--people` on a 640x480 one-face video >= 15 frames/s | {fps:.1f} frames/s (see 6) | "
            f"{'yes' if fps >= 15 else 'no'} |")


def readme_section(r, number):
    """Markdown lines of the section (``r``: the whole results dict)."""
    p = r.get("people")
    if not p:
        return []
    ms = p["per_face_ms"]
    v = p["video"]
    fps = v["frames_per_s"]
    e = v["embeddings"]
    return [
        f"## {number}. People: identity embedding and `--people` on a video\n",
        f"One face of `{p['photo']}` ({p['photo_shape'][1]}x{p['photo_shape'][0]}), the two "
        "interleaved in one process (the classifier in LiteRT with one thread):\n",
        "| per face | ms |", "|---|---|",
        f"| expression classifier (shipped `.tflite`, LiteRT) | {ms['classifier']['median']:.2f} |",
        f"| identity embedding (`IdentityEmbedder.embed`: quality gate, chip, dlib ResNet) | "
        f"{ms['embedding']['median']:.2f} |",
        f"| dlib's network alone, on the chip | {ms['embedding_network_only']['median']:.2f} |\n",
        f"A {v['size'][0]}x{v['size'][1]} video, one face drifting, {v['frames']} frames, "
        f"{fps['people']['repeats']} runs of each, alternating (`Recognizer.open_video`, what "
        "`fer-tf predict VIDEO [--people]` runs):\n",
        "| | frames/s (median) | min | max |", "|---|---|---|---|",
        *(f"| {'with `--people`' if m == 'people' else 'without'} | {fps[m]['median']:.1f} | "
          f"{fps[m]['min']:.1f} | {fps[m]['max']:.1f} |" for m in ("people", "plain")),
        f"\nWith people, {e['attempts']} of {e['frames']} frames' faces were embedded (a new "
        "track, then a refresh every 50 frames): the tracker follows the face by box overlap. "
        "Target: 15 frames/s or more with `--people` on this 2-core machine.\n"]

"""Section 5: preprocessing and alignment throughput (faces per second).

- ``normalize_faces`` (histogram equalisation, plane fit, z-norm) on batches of 60x60 faces, in a
  ``tf.function`` (as the pipelines run it), and eagerly;
- ``FaceAligner.align`` (MediaPipe detection + landmarks + similarity warp to 60x60) on KDEF and
  Yale photos read with ``load_image`` (decoding not timed), one photo per call.
The input-bound check (tf.data pipeline alone against a training step) is in the training section.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import summary


def normalize(faces, settings):
    import tensorflow as tf

    from fer_tf.preprocess.normalize import normalize_faces

    n = settings.normalize_batch
    batch = np.resize(faces, (n,) + faces.shape[1:]).astype(np.uint8)
    x = tf.constant(batch)
    fn = tf.function(normalize_faces)
    out = {}
    for name, f in (("tf_function", fn), ("eager", normalize_faces)):
        f(x).numpy()
        times = []
        for _ in range(settings.repeats):
            start = time.perf_counter()
            f(x).numpy()
            times.append(time.perf_counter() - start)
        out[name] = {"batch": n, "seconds_per_batch": summary(times),
                     "faces_per_s": n / float(np.median(times))}
    return out


def align(datasets, settings, log=print):
    from fer_tf.data.images import load_image
    from fer_tf.data.readers import read_dataset
    from fer_tf.errors import NoFaceError
    from fer_tf.preprocess.align import FaceAligner

    out = {}
    with FaceAligner() as aligner:
        for fmt, folder in (("kdef", "kdef-subset"), ("yale", "yalefaces")):
            root = datasets / folder
            if not root.is_dir():
                out[fmt] = {"skipped": f"{root} not found"}
                continue
            table = read_dataset(root, fmt)
            step = max(1, len(table) // settings.align_photos)
            paths = [str(p) for p in table.path[::step][:settings.align_photos]]
            images = [load_image(p) for p in paths]
            aligner.align(images[0]) if images else None  # warm up
            times, found = [], 0
            for _ in range(max(1, settings.repeats // 2)):
                for image in images:
                    start = time.perf_counter()
                    try:
                        aligner.align(image)
                        found += 1
                    except NoFaceError:
                        pass
                    times.append(time.perf_counter() - start)
            med = float(np.median(times))
            out[fmt] = {"photos": len(images), "photo_shape": list(images[0].shape) if images else None,
                        "ms_per_photo": summary(times, 1e3), "faces_per_s": 1.0 / med,
                        "face_found_fraction": found / max(1, len(times))}
            log(f"  align {fmt}: {med * 1e3:.1f} ms/photo ({1.0 / med:.1f} faces/s)")
    return out

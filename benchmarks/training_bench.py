"""Sections 1, 4 and 5c: training throughput per mode, time to a target accuracy, achieved FLOP/s
against this CPU's matmul peak, and whether training is input-bound.

Model: ``build_model("2B(N+M)", labels=CKPLUS7)`` (M = N = 6), Adam, on CK+48 faces from the
preprocess cache. Batches: ``identity_aware_dataset(mode=...)`` with the package defaults, i.e.
``in_batch``: 64 images per step, every image a query; ``tuple`` (the paper's sampling): 12 queries
per step, each with its own M-1 positives and N negatives = 144 images.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import flops
from benchmarks.common import summary

MODES = ("in_batch", "tuple")


def _model(learning_rate=1e-3, seed=0):
    import keras

    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.model.network import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("2B(N+M)", labels=CKPLUS7)
    loop.compile_model(model, TrainConfig(learning_rate=learning_rate, seed=seed))
    return model


def _dataset(table, faces, mode, seed=0):
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.feeding.feeders import identity_aware_dataset

    return identity_aware_dataset(table, faces, CKPLUS7, mode=mode, num_positives=6, num_negatives=6,
                                  seed=seed, augment=True, repeat=True, return_sampler=True)


def _step(model, batch):
    x, y = batch
    logs = model.train_on_batch(x, y, return_dict=True)
    return float(logs["loss"])


def matmul_peak(n, repeats):
    """Dense float32 matmul GFLOP/s (2 n^3 per product), median over repeats, in TF."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32, seed=1)
    b = tf.random.normal((n, n), dtype=tf.float32, seed=2)
    fn = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    float(fn(a, b))
    times = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        float(fn(a, b))
        times.append(time.perf_counter() - start)
    flop = 2.0 * n ** 3
    return {"n": n, "seconds": summary(times), "gflops": flop / float(np.median(times)) / 1e9,
            "gflops_best": flop / float(np.min(times)) / 1e9,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)"}


def throughput(table, faces, settings, log=print):
    """Per mode: step time on a cached batch, step time fed by the pipeline, pipeline alone."""
    model = _model()
    out = {}
    for mode in MODES:
        ds, sampler = _dataset(table, faces, mode)
        it = iter(ds)
        cached = next(it)
        queries = int(np.sum(cached[1]["expression"].numpy() >= 0))
        images = int(cached[0].shape[0])
        for _ in range(2):  # trace + warm up
            _step(model, cached)
        step_only, fed, pipeline = [], [], []
        for _ in range(settings.repeats):
            start = time.perf_counter()
            for _ in range(settings.train_steps):
                _step(model, cached)
            step_only.append((time.perf_counter() - start) / settings.train_steps)
            start = time.perf_counter()
            for _ in range(settings.train_steps):
                _step(model, next(it))
            fed.append((time.perf_counter() - start) / settings.train_steps)
            start = time.perf_counter()
            for _ in range(settings.train_steps):
                batch = next(it)
                batch[0].numpy()
            pipeline.append((time.perf_counter() - start) / settings.train_steps)
        t_fed = float(np.median(fed))
        out[mode] = {
            "images_per_step": images, "queries_per_step": queries,
            "steps_per_epoch": sampler.steps_per_epoch,
            "step_s": summary(step_only), "step_with_pipeline_s": summary(fed),
            "pipeline_only_s_per_batch": summary(pipeline),
            "queries_per_s": queries / t_fed, "images_per_s": images / t_fed,
            "images_per_s_compute_only": images / float(np.median(step_only)),
            "input_bound_ratio": float(np.median(pipeline)) / float(np.median(step_only)),
        }
        log(f"  {mode}: {images} images / {queries} queries per step, "
            f"{t_fed:.3f} s/step -> {queries / t_fed:.1f} queries/s, {images / t_fed:.1f} images/s; "
            f"pipeline alone {np.median(pipeline) * 1e3:.1f} ms/batch")
    out["in_batch_speedup"] = out["in_batch"]["queries_per_s"] / out["tuple"]["queries_per_s"]
    out["macs_per_image"], per_layer = flops.model_macs(model)
    out["training_flops_per_image"] = out["macs_per_image"] * 6
    out["largest_layers_macs"] = dict(sorted(per_layer.items(), key=lambda kv: -kv[1])[:8])
    return out


def _val_images(faces):
    import tensorflow as tf

    from fer_tf.data.crops import center_crop
    from fer_tf.preprocess.normalize import normalize_faces

    x = normalize_faces(tf.constant(faces))
    x = center_crop(x, size=48)
    return tf.reshape(tf.cast(x, tf.float32), [-1, 48, 48, 1])


def race(table, faces, settings, log=print):
    """Wall time of training (evaluation excluded) until validation accuracy >= target, per mode,
    on fold 0 of ``subject_kfold(table, 5, seed=0)``; each mode starts from the same weights."""
    import tensorflow as tf

    from fer_tf.data.labels import CKPLUS7
    from fer_tf.data.splits import subject_kfold

    train_idx, val_idx = subject_kfold(table, 5, seed=0)[0]
    train_table, train_faces = table.take(train_idx), faces[train_idx]
    val_x = _val_images(faces[val_idx])
    val_y = table.take(val_idx).expression_ids(CKPLUS7)
    result = {"fold": "subject_kfold(k=5, seed=0)[0]", "train_images": int(len(train_idx)),
              "val_images": int(len(val_idx)), "target_accuracy": settings.race_target,
              "budget_s": settings.race_budget_s, "learning_rate": 1e-3, "modes": {}}
    for mode in MODES:
        model = _model(seed=0)
        ec = model.ec_model()
        predict = tf.function(lambda x: ec(x, training=False))
        ds, sampler = _dataset(train_table, train_faces, mode)
        it = iter(ds)
        _step(model, next(it))  # trace (not timed; the first step of both modes is excluded)
        predict(val_x)
        train_time, steps, curve, reached = 0.0, 1, [], None
        since_eval = 0.0
        while train_time < settings.race_budget_s:
            start = time.perf_counter()
            _step(model, next(it))
            elapsed = time.perf_counter() - start
            train_time += elapsed
            since_eval += elapsed
            steps += 1
            if since_eval >= settings.race_eval_every_s or train_time >= settings.race_budget_s:
                since_eval = 0.0
                probs = predict(val_x).numpy()
                acc = float(np.mean(np.argmax(probs, axis=1) == val_y))
                curve.append({"train_s": round(train_time, 2), "steps": steps,
                              "epochs": round(steps / sampler.steps_per_epoch, 2), "val_accuracy": acc})
                if acc >= settings.race_target:
                    reached = curve[-1]
                    break
        best = max((c["val_accuracy"] for c in curve), default=None)
        result["modes"][mode] = {"reached": reached is not None,
                                 "time_to_target_s": reached["train_s"] if reached else None,
                                 "steps_to_target": reached["steps"] if reached else None,
                                 "epochs_to_target": reached["epochs"] if reached else None,
                                 "best_val_accuracy": best, "curve": curve}
        log(f"  race {mode}: " + (f"reached {settings.race_target:.2f} after {reached['train_s']:.1f} s "
                                   f"({reached['steps']} steps, {reached['epochs']} epochs)" if reached
                                   else f"did not reach {settings.race_target:.2f} in {train_time:.0f} s "
                                        f"(best {best:.3f})"))
    a, b = result["modes"]["in_batch"], result["modes"]["tuple"]
    if a["reached"] and b["reached"]:
        result["time_speedup"] = b["time_to_target_s"] / a["time_to_target_s"]
    elif a["reached"]:
        result["time_speedup_lower_bound"] = settings.race_budget_s / a["time_to_target_s"]
    return result

"""Section 2: cost of loss + mining per step as the batch grows (forward and backward).

On precomputed random embeddings ``[X, d]`` (L2-normalised, d = 256 as FC5) with random labels
(7 classes) and tuple indices ``[X, M + N]`` pointing at random images of the batch, one
``tf.function`` computes the loss and its gradient with respect to the embeddings. Timed after a
warm-up call, median over repeats. Section 3 of the paper counts distance computations per batch
of X queries: 2(N+M)X for the (N+M)-tuple clusters loss (each query's M positives and N
negatives against its cluster centre), (X+1)X^2 for the (N+1)-tuple loss built from every pair of
the batch, and X^3 triplets for batch-all triplet mining. Our (N+1)-tuple loss runs on the same
tuple-index structure as the (N+M) loss (N negatives gathered per query), so it is linear in X too;
batch-all triplet is the cubic baseline.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import log_slope, summary

EMBEDDING_DIM = 256
CLASSES = 7
M = N = 6


def _inputs(x, seed=0):
    rng = np.random.default_rng([seed, x])
    emb = rng.normal(size=(x, EMBEDDING_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = rng.integers(0, CLASSES, size=x).astype(np.int32)
    tuples = rng.integers(0, x, size=(x, M + N)).astype(np.int32)
    tuples[:, 0] = np.arange(x)
    return emb, labels, tuples


def _loss_fns():
    import tensorflow as tf

    from fer_tf.metric import losses
    from fer_tf.metric.layers import AdaptiveThreshold

    threshold = AdaptiveThreshold(name="bench_threshold")
    threshold.build((None, EMBEDDING_DIM))
    nm_fixed = losses.NMTupleClustersLoss(num_positives=M)
    nm_adaptive = losses.AdaptiveNMTupleClustersLoss(num_positives=M, threshold=threshold)
    n_plus_one = losses.NPlusOneTupleLoss(num_positives=M)

    def with_grad(loss_of):
        @tf.function(reduce_retracing=True)
        def step(emb, labels, tuples):
            with tf.GradientTape() as tape:
                tape.watch(emb)
                value = loss_of(emb, labels, tuples)
            return value, tape.gradient(value, emb)
        return step

    return {
        "nm_tuple_clusters": with_grad(lambda e, l, t: nm_fixed(t, e)),
        "nm_tuple_clusters_adaptive": with_grad(lambda e, l, t: nm_adaptive(t, e)),
        "n_plus_one_tuple": with_grad(lambda e, l, t: n_plus_one(t, e)),
        "batch_all_triplet": with_grad(lambda e, l, t: losses.batch_all_triplet_loss(e, l, 0.5)),
    }


def _available_bytes():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(settings, log=print):
    import tensorflow as tf

    fns = _loss_fns()
    results = {name: {} for name in fns}
    available = _available_bytes()
    for x in settings.loss_sizes:
        emb, labels, tuples = (tf.constant(a) for a in _inputs(x))
        for name, fn in fns.items():
            if name == "batch_all_triplet":
                # about 8 live float32 [X, X, X] tensors in forward + backward
                need = 8 * 4 * float(x) ** 3
                limit = settings.triplet_max_bytes
                if available is not None:
                    limit = min(limit, 0.5 * available)
                if need > limit:
                    results[name][str(x)] = {"skipped": f"needs about {need / 1e9:.1f} GB for its "
                                                        f"X^3 tensors (limit {limit / 1e9:.1f} GB)"}
                    continue
            fn(emb, labels, tuples)  # trace + warm up
            times = []
            for _ in range(settings.repeats):
                start = time.perf_counter()
                value, grad = fn(emb, labels, tuples)
                float(value)
                tf.convert_to_tensor(grad).numpy()
                times.append(time.perf_counter() - start)
            results[name][str(x)] = summary(times, 1e3)  # milliseconds
        log(f"  loss X={x}: " + ", ".join(
            f"{n} {r[str(x)]['median']:.2f} ms" if "median" in r[str(x)] else f"{n} skipped"
            for n, r in results.items()))
    counts = {
        "nm_tuple_clusters": "2(N+M)X distances (linear)",
        "nm_tuple_clusters_adaptive": "2(N+M)X threshold evaluations (linear)",
        "n_plus_one_tuple": "paper: (X+1)X^2 when tuples come from all batch pairs; here N+1 "
                            "distances per query on the tuple indices (linear)",
        "batch_all_triplet": "X^3 triplets (cubic)",
    }
    paper_exponent = {"nm_tuple_clusters": 1, "nm_tuple_clusters_adaptive": 1,
                      "n_plus_one_tuple": 3, "batch_all_triplet": 3}
    slopes = {}
    for name, rows in results.items():
        xs = [int(x) for x, r in rows.items() if "median" in r]
        ys = [rows[str(x)]["median"] for x in xs]
        upper = [(x, y) for x, y in zip(xs, ys) if x >= 128]
        slopes[name] = {
            "all_sizes": log_slope(xs, ys),
            "x_ge_128": log_slope(*zip(*upper)) if len(upper) >= 2 else None,
            "count": counts[name],
            "paper_exponent": paper_exponent[name],
        }
    return {"ms_per_step": results, "scaling_exponent": slopes, "embedding_dim": EMBEDDING_DIM,
            "M": M, "N": N, "sizes": list(settings.loss_sizes)}

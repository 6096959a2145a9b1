"""Paired timing of two commits' training steps, for differences smaller than this machine's noise.

    (used by benchmarks/compare_versions.py --pairs N)

Timing one commit for minutes and then the other (``--rounds``) lets the machine's load drift
between them: on a shared 2-core CPU the same code moves by 5-10% from one round to the next, as
much as the change being measured. Here both commits stay loaded at once, each in a worker process
of its own (this file run with ``--worker`` in that commit's clone, so that it imports that commit's
``fer_tf`` and ``benchmarks``), with the training bench's model built, traced and warmed up. The
parent then asks them in turn, in a random order per pair, to time a few training steps on the same
cached batch (and each loss step on the same embeddings); the two timings of a pair are seconds apart, so a drift in load hits both alike. The
result per figure is the geometric mean of the per-pair ratios after / before with a bootstrap 95%
confidence interval over the pairs: an interval that contains 1 is no measured change.

A worker uses only what older commits have too (``training_bench._model``, ``_dataset``, ``_step``;
``loss_bench._inputs``, ``_loss_fns``), and loads the faces as ``benchmarks/graph_ops.py`` does.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import random
import statistics
import subprocess
import sys
import time

WORKER_STEPS = 5  # training steps per timing
LOSS_CALLS = 40  # loss steps per timing


def worker(datasets, cache):
    """Serve ``<figure> <calls>`` requests on stdin with ``{"seconds": per call}`` lines on stdout.

    Figures: the training bench's step per mode (``in_batch``, ``tuple``) and each loss bench
    step (loss and gradient) at X = ``LOSS_X`` embeddings (``loss <name>``)."""
    import graph_ops  # this checkout's (the script's folder is first on sys.path)
    import tensorflow as tf

    from benchmarks import loss_bench, training_bench  # the clone's (on PYTHONPATH)

    os.environ["FER_TF_CACHE"] = str(cache)
    table, faces = graph_ops._prepared(datasets)
    calls = {}
    for mode in training_bench.MODES:
        model = training_bench._model()
        ds, _ = training_bench._dataset(table, faces, mode)
        batch = next(iter(ds))
        calls[mode] = (lambda model=model, batch=batch: training_bench._step(model, batch))
    inputs = [tf.constant(a) for a in loss_bench._inputs(graph_ops.LOSS_X)]
    for name, fn in loss_bench._loss_fns().items():
        calls[f"loss {name}"] = (lambda fn=fn: _loss_call(fn, inputs))
    for call in calls.values():
        for _ in range(3):  # trace and warm up
            call()
    print(json.dumps({"ready": list(calls)}), flush=True)
    for line in sys.stdin:
        figure, n = line.rsplit(" ", 1)
        start = time.perf_counter()
        for _ in range(int(n)):
            calls[figure]()
        print(json.dumps({"seconds": (time.perf_counter() - start) / int(n)}), flush=True)


def _loss_call(fn, inputs):
    """One loss step, its value and gradient brought to the host (as the loss bench does)."""
    import tensorflow as tf

    value, grad = fn(*inputs)
    float(value)
    tf.convert_to_tensor(grad).numpy()


class _Worker:
    def __init__(self, clone, python, datasets, cache):
        env = {**os.environ, "PYTHONPATH": str(clone)}  # the cache goes as --cache
        self.proc = subprocess.Popen(
            [str(python), str(pathlib.Path(__file__).resolve()), "--worker", "--datasets", str(datasets),
             "--cache", str(cache)], cwd=clone, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        self.modes = self._read()["ready"]

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with status {self.proc.wait()}")
        return json.loads(line)

    def time(self, figure, calls):
        self.proc.stdin.write(f"{figure} {calls}\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def ratio_summary(pairs, samples=10000, seed=0):
    """``{"ratio", "ci95", "pairs", "before_s", "after_s"}`` of ``[(before_s, after_s)]``: the
    geometric mean of after / before with a bootstrap interval over the pairs."""
    logs = [math.log(a / b) for b, a in pairs]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(logs, k=len(logs))) / len(logs) for _ in range(samples))
    lo, hi = means[int(0.025 * samples)], means[int(0.975 * samples) - 1]
    return {"ratio": math.exp(sum(logs) / len(logs)), "ci95": [math.exp(lo), math.exp(hi)],
            "pairs": len(pairs), "before_s": statistics.median(b for b, _ in pairs),
            "after_s": statistics.median(a for _, a in pairs)}


def paired(clones, python, datasets, caches, pairs, steps=WORKER_STEPS, seed=0, log=print):
    """``{figure: ratio_summary}`` from ``pairs`` alternations of the two commits' workers.

    ``clones`` and ``caches``: ``{"before": path, "after": path}``.
    """
    workers = {k: _Worker(clones[k], python, datasets, caches[k]) for k in ("before", "after")}
    rng = random.Random(seed)
    samples = {f: [] for f in workers["after"].modes if f in workers["before"].modes}
    try:
        for i in range(pairs):
            for figure in samples:
                order = ["before", "after"]
                rng.shuffle(order)
                t = {k: workers[k].time(figure, _calls(figure, steps)) for k in order}
                samples[figure].append((t["before"], t["after"]))
            log(f"pair {i + 1}/{pairs}: " + ", ".join(
                f"{f} {1000 * s[-1][0]:.1f} / {1000 * s[-1][1]:.1f} ms" for f, s in samples.items()))
    finally:
        for w in workers.values():
            w.close()
    return {f: {**ratio_summary(s), "calls_per_timing": _calls(f, steps), "raw": s}
            for f, s in samples.items()}


def _calls(figure, steps):
    """Calls per timing: ``steps`` training steps, or :data:`LOSS_CALLS` of a (much shorter) loss step."""
    return LOSS_CALLS if figure.startswith("loss ") else steps


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help="serve timings (run by the parent)")
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--cache", required=True)
    args = parser.parse_args()
    if not args.worker:
        raise SystemExit("run benchmarks/compare_versions.py --pairs N; this file is its worker")
    worker(args.datasets, args.cache)

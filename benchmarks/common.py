"""Timing helpers shared by the benchmark sections."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time

import numpy as np


def median(values):
    values = [float(v) for v in values]
    return statistics.median(values) if values else float("nan")


def timed_repeats(fn, repeats, warmup=1):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times; the wall times in seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(times, scale=1.0):
    """``{"median", "min", "max", "repeats"}`` of ``times`` multiplied by ``scale``."""
    arr = np.asarray(times, dtype=np.float64) * scale
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max()),
            "repeats": int(len(arr))}


@dataclasses.dataclass
class Settings:
    """How long each section runs; ``quick()`` is the tiny smoke-test version."""

    repeats: int = 5
    train_steps: int = 3  # steps per timed repeat of the training throughput
    race_budget_s: float = 150.0  # time-to-accuracy: training seconds allowed per mode
    race_eval_every_s: float = 8.0
    race_target: float = 0.55
    loss_sizes: tuple = (32, 64, 128, 256, 512, 1024)
    triplet_max_bytes: float = 2.5e9  # skip batch-all triplet sizes whose X^3 tensors exceed this
    matmul_n: int = 2048
    latency_calls: int = 50  # single-face calls per timed repeat
    align_photos: int = 24
    normalize_batch: int = 256
    quick: bool = False

    @classmethod
    def quick_settings(cls):
        return cls(repeats=2, train_steps=1, race_budget_s=6.0, race_eval_every_s=3.0,
                   race_target=0.3, loss_sizes=(16, 32, 64), matmul_n=256, latency_calls=5,
                   align_photos=2, normalize_batch=32, quick=True)


@contextlib.contextmanager
def stopwatch(record, key):
    start = time.perf_counter()
    try:
        yield
    finally:
        record[key] = round(time.perf_counter() - start, 2)


def log_slope(xs, ys):
    """Least-squares slope of log(y) over log(x) (the scaling exponent)."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    keep = (xs > 0) & (ys > 0) & np.isfinite(ys)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)[0])

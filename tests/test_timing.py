"""Epoch times that leave out the time the process was stopped (fer_tf.training.timing)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from fer_tf.training.timing import EpochTimer, PauseWatch


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_watch_books_only_long_gaps():
    clock = Clock()
    watch = PauseWatch(tick=1.0, threshold=15.0, clock=clock)
    for t in (0.0, 1.0, 2.0, 8.0, 9.0):  # woken 5 s late: a busy machine, not a pause
        clock.now = t
        watch.observe()
    assert watch.paused() == 0.0
    clock.now = 109.0  # asleep 1 s, but 100 s passed
    watch.observe()
    assert watch.paused() == pytest.approx(99.0)


def test_epoch_timer_leaves_pauses_out():
    clock = Clock()
    watch = PauseWatch(tick=1.0, threshold=15.0, clock=clock)
    timer = EpochTimer(watch=watch, clock=clock)

    def run_to(t):  # the watch's thread, waking every second
        while clock.now < t:
            clock.now = min(t, clock.now + 1.0)
            watch.observe()

    watch.observe()
    timer.on_epoch_begin(0)
    run_to(30.0)
    clock.now = 630.0  # stopped for 10 minutes; the thread wakes as soon as it can run
    watch.observe()
    run_to(650.0)
    logs = {}
    timer.on_epoch_end(0, logs)
    assert logs["paused_seconds"] == pytest.approx(599.0)
    assert logs["epoch_seconds"] == pytest.approx(51.0)
    timer.on_epoch_begin(1)
    run_to(700.0)
    logs = {}
    timer.on_epoch_end(1, logs)
    assert logs == {"epoch_seconds": 50.0}  # an epoch without a pause logs none


CHILD = """
import sys, time
from fer_tf.training.timing import PauseWatch
watch = PauseWatch(tick=0.05, threshold=0.5).start()
print("ready", flush=True)
sys.stdin.readline()
watch.observe()
print(f"{watch.paused():.3f}", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job control")
def test_watch_sees_a_real_sigstop():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")})
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(child.pid, signal.SIGCONT)
        time.sleep(0.3)
        out, _ = child.communicate("\n", timeout=60)
    finally:
        child.kill()
    assert 1.5 < float(out) < 2.5

"""Each epoch's time, without the time the process was stopped.

A long run on a shared machine gets paused (``kill -STOP``, then ``-CONT``; Ctrl-Z then ``fg``)
while something else needs the cores. Wall time alone would count every pause as training: one
epoch of a campaign read 1856 s instead of about 170 s. :class:`PauseWatch` notices pauses from a
daemon thread that wakes every ``tick`` seconds: the thread cannot run while its process is
stopped, so on waking it finds that far more time has passed than it slept, and books the excess
as paused. Gaps shorter than ``threshold`` are never booked, so a busy machine that wakes the
thread late is not mistaken for a pause.

:class:`EpochTimer` logs ``epoch_seconds`` (the epoch's time less its pauses) and, for an epoch
that was paused, ``paused_seconds``.
"""

from __future__ import annotations

import threading
import time

import keras

#: History keys that measure the run rather than the model; they differ between identical runs.
TIMING_KEYS = frozenset({"epoch_seconds", "paused_seconds"})


class PauseWatch:
    """Seconds for which this process was stopped, booked by a daemon thread (see the module).

    ``clock`` is for tests; :meth:`observe` books one wake-up by hand.
    """

    def __init__(self, tick=1.0, threshold=15.0, clock=time.monotonic):
        self.tick, self.threshold, self.clock = float(tick), float(threshold), clock
        self._lock = threading.Lock()
        self._paused = 0.0
        self._last = None
        self._stop = threading.Event()
        self._thread = None

    def observe(self, now=None):
        """Book the time since the last wake-up beyond ``tick`` as paused, if it passes ``threshold``."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._last is not None:
                late = now - self._last - self.tick
                if late >= self.threshold:
                    self._paused += late
            self._last = now

    def paused(self):
        """Seconds booked as paused so far."""
        with self._lock:
            return self._paused

    def start(self):
        if self._thread is None:
            self._stop.clear()
            self.observe()
            self._thread = threading.Thread(target=self._run, name="fer_tf-pause-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.tick + 1)
            self._thread = None

    def _run(self):
        while not self._stop.wait(self.tick):
            self.observe()


class EpochTimer(keras.callbacks.Callback):
    """Log each epoch's time as ``epoch_seconds`` (kept in the checkpointed history), less the time
    the process was stopped, which an epoch that was paused logs as ``paused_seconds``."""

    def __init__(self, watch=None, clock=time.monotonic):
        super().__init__()
        self.watch, self.clock = watch, clock
        self._own = watch is None

    def on_train_begin(self, logs=None):
        if self.watch is None:
            self.watch = PauseWatch(clock=self.clock).start()

    def on_train_end(self, logs=None):
        if self._own and self.watch is not None:
            self.watch.stop()
            self.watch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.watch is None:
            self.on_train_begin()
        self.started, self.paused_before = self.clock(), self.watch.paused()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        self.watch.observe()
        paused = self.watch.paused() - self.paused_before
        logs["epoch_seconds"] = round(max(0.0, self.clock() - self.started - paused), 2)
        if paused > 0:
            logs["paused_seconds"] = round(paused, 2)

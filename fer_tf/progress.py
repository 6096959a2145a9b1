"""A one-line progress bar on stderr, for long command-line runs (folders, videos).

It draws only when enabled and stderr is a terminal: piped or redirected output never receives
carriage returns. Lines that must be printed while the bar is shown go through :meth:`Bar.message`
(stderr) or are preceded by :meth:`Bar.clear` (stdout), so that the bar never splits them.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds):
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Bar:
    """``[#####.....] 12/340 inputs  clip.mp4 frame 120/3000  0:42 left``, redrawn at most
    ``rate`` times a second.

    ``total`` inputs are counted with :meth:`advance`; :meth:`detail` sets the text after the
    count (for example the video's frame position) together with its own fraction, which moves
    the bar within the current input.
    """

    def __init__(self, total, unit="inputs", stream=None, enabled=True, rate=8.0, width=24):
        self.stream = stream if stream is not None else sys.stderr
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.enabled = bool(enabled) and tty
        self.total = max(0, int(total))
        self.unit = unit
        self.done = 0
        self.width = width
        self.interval = 1.0 / rate
        self.start = time.monotonic()
        self._last = 0.0
        self._text = ""
        self._sub = 0.0
        self._shown = False

    def advance(self, n=1):
        self.done += n
        self._text, self._sub = "", 0.0
        self.draw()

    def detail(self, text, fraction=0.0):
        self._text = text
        self._sub = min(max(float(fraction), 0.0), 1.0)
        self.draw()

    def draw(self, force=False):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        total = max(self.total, 1)
        fraction = min(1.0, (self.done + self._sub) / total)
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {self.unit}"
        if self._text:
            line += f"  {self._text}"
        elapsed = now - self.start
        if fraction > 0.01 and elapsed > 2:
            line += f"  {_clock(elapsed * (1 - fraction) / fraction)} left"
        self._write("\r\033[K" + line)
        self._shown = True

    def clear(self):
        """Erase the bar (before something else is printed on the terminal)."""
        if self.enabled and self._shown:
            self._write("\r\033[K")
            self._shown = False
            self._last = 0.0

    def message(self, line):
        """Print ``line`` on the bar's stream, above the bar."""
        self.clear()
        print(line, file=self.stream, flush=True)

    def close(self):
        self.clear()

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal: stop drawing
            self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

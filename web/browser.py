"""Drive the built page in Debian's Chromium (Playwright, no downloaded browser): used by
tests/test_web.py, pipelines/web_parity.py and pipelines/web_speed.py.

:class:`PageSession` opens the page in a fresh Chromium, records every request and fails on any
that leaves localhost (they are aborted), and collects console errors and uncaught exceptions.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import urllib.parse

import numpy as np

#: Debian's chromium (installed by .ci/run, version pinned in web/chromium.version).
CHROMIUM = os.environ.get("FER_TF_CHROMIUM", "/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
#: Console messages that are not errors of the page: headless Chromium has no GPU, which LiteRT.js
#: reports as a warning when it looks for WebGPU (it then runs on WASM, as asked).
WEBGPU_ABSENT = ("No available adapters", "Failed to create default WebGPU device")


def chromium_available():
    return bool(shutil.which(CHROMIUM) or pathlib.Path(CHROMIUM).is_file())


def write_y4m(path, frames, fps=10):
    """A ``.y4m`` (YUV 4:2:0) video of RGB uint8 frames (all one size, even sides), as Chromium's
    ``--use-file-for-fake-video-capture`` reads it (it plays the file in a loop)."""
    import cv2  # deferred: OpenCV

    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def camera_frame(face_rgb, size=(640, 480), face_height=300, background=(96, 104, 112)):
    """A ``size`` camera frame: ``face_rgb`` (a photo) resized to ``face_height`` pixels high, in the
    middle of a plain background."""
    import cv2  # deferred: OpenCV

    w, h = size
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = background
    fh, fw = face_rgb.shape[:2]
    nw = round(fw * face_height / fh)
    face = cv2.resize(face_rgb, (nw, face_height), interpolation=cv2.INTER_AREA)
    y0, x0 = (h - face_height) // 2, (w - nw) // 2
    frame[y0:y0 + face_height, x0:x0 + nw] = face
    return frame


class PageSession:
    """One Chromium with one page of the built site at ``base_url``.

    ``camera``: None (no camera), ``"none"`` (permission granted, no camera), ``"denied"`` (a fake
    camera whose permission prompt is refused), or the path of a ``.y4m`` to play as the camera."""

    def __init__(self, playwright, base_url, camera=None, extra_args=()):
        args = ["--no-sandbox", "--disable-gpu", *extra_args]
        if camera == "denied":
            args += ["--use-fake-device-for-media-stream", "--deny-permission-prompts"]
        elif camera is not None:
            args.append("--use-fake-ui-for-media-stream")
            if camera != "none":
                args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"]
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 820})
        self.base_url = base_url.rstrip("/") + "/"
        self.requests, self.outside, self.errors, self.console = [], [], [], []
        self.page.route("**/*", self._route)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def _console(self, message):
        self.console.append((message.type, message.text))
        if message.type == "error" and not any(s in message.text for s in WEBGPU_ABSENT):
            self.errors.append(f"console.error: {message.text}")

    def open(self, query="", timeout=60_000):
        """Load index.html (``query`` e.g. "?camera") and wait until the networks are loaded."""
        self.page.goto(self.base_url + "index.html" + query)
        self.wait_state(("ready", "done", "camera", "error"), timeout)
        return self

    def state(self):
        return self.page.get_attribute("#status", "data-state")

    def wait_state(self, states, timeout=60_000):
        self.page.wait_for_function(
            "states => states.includes(document.getElementById('status').dataset.state)",
            arg=list(states), timeout=timeout)
        return self.state()

    def results(self):
        import json

        return json.loads(self.page.get_attribute("#results", "data-json"))

    def message(self):
        box = self.page.locator("#message")
        return "" if box.is_hidden() else box.text_content()

    def close(self):
        with contextlib.suppress(Exception):
            self.browser.close()

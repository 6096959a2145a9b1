"""Videos: recognised frame by frame (:class:`VideoStream`), annotated copies, and their codecs.

Videos are decoded, recognised and (optionally) written back annotated one frame at a time, so
memory stays bounded whatever the video's length. The largest face of each frame is tracked (it
keeps its track while consecutive boxes overlap with IoU >= :data:`TRACK_IOU`) and its
probabilities are averaged over a window of frames; with ``people`` (a
:class:`fer_tf.deploy.people.VideoPeople`) every face is tracked, named and averaged per track
instead. Annotated videos are H.264 ``.mp4`` where the
installed OpenCV can encode it and VP8 ``.webm`` otherwise (both play in web browsers); see
:func:`video_codec`. OpenCV is imported only when a video is opened or written.
"""

from __future__ import annotations

import collections
import functools
import os
import pathlib
import tempfile

import numpy as np

from fer_tf.deploy.annotate import annotate
from fer_tf.errors import ConfigError, ImageError
from fer_tf.files import fsync_dir, quiet_native_stderr, temporary_name
from fer_tf.preprocess.boxes import iou

#: A tracked face keeps its smoothing window while consecutive boxes overlap at least this much.
TRACK_IOU = 0.3


class VideoStream:
    """One video, recognised frame by frame: iterate for ``{"frame", "time_s", "faces"}`` dicts
    (``time_s``: the frame's time in seconds, ``None`` when the file has no frame rate).

    Attributes: ``path``, ``fps`` (0.0 when the file does not say), ``frame_count`` (the
    container's estimate, 0 when unknown), ``expected`` (frames this stream will yield, estimated),
    ``codec`` and ``note`` of the annotated copy (see :func:`video_codec`), and after the
    iteration ``summary`` (``{"frames", "frames_with_face", "expressions"}``, plus ``"truncated"``
    when decoding stopped before the frames the container announces: see :meth:`stopped`),
    ``capped_frames`` (frames where ``max_faces`` left faces out) and ``annotated`` (the path of
    the annotated copy, or ``None``). Raises :class:`ImageError` when the file cannot be opened, or
    when no frame at all could be decoded.

    The annotated copy plays as long as the video: with ``every`` K its frame rate is the video's
    divided by K. It is written to a temporary file beside ``annotate_to`` and renamed when the
    video has been read to its end (or to ``max_frames``) and a face was found in at least one
    frame: a video without any face, an error or an interruption leave no annotated copy (and an
    existing file as it was).
    """

    def __init__(self, recognizer, path, window=None, every=1, max_frames=None, annotate_to=None,
                 people=None):
        import cv2  # deferred: OpenCV, only where images are warped or videos read

        self.recognizer = recognizer
        self.window = recognizer.window if window is None else int(window)
        if self.window < 1:
            raise ConfigError(f"window must be at least 1 frame, got {window}")
        self.every = max(1, int(every))
        self.max_frames = max_frames
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise ImageError(self.path, "file not found")
        if not self.path.is_file():
            raise ImageError(self.path, "not a file")
        self.annotate_to = None if annotate_to is None else pathlib.Path(annotate_to)
        self.codec, self.note = (None, None) if annotate_to is None else video_codec(annotate_to)
        with quiet_native_stderr():
            self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            self._capture.release()
            if _mp4_without_index(self.path):
                raise ImageError(self.path, "an MP4 without its index (no 'moov' box): the file is "
                                            "truncated, or its recording was never finished")
            raise ImageError(self.path, "cannot open as a video (not a video, or a codec OpenCV lacks)")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and fps > 0 else 0.0
        count = float(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.frame_count = int(count) if np.isfinite(count) and count > 0 else 0
        expected = -(-self.frame_count // self.every) if self.frame_count else 0
        self.expected = min(expected, max_frames) if max_frames is not None else expected
        if people is True:
            from fer_tf.deploy.people import VideoPeople  # deferred: dlib, only with people

            people = VideoPeople()
        self.people = people or None
        self.summary = None
        self.capped_frames = 0
        self.annotated = None
        self._writer = None
        self._partial = None  # the annotated copy's temporary file while it is written

    def __iter__(self):
        import cv2  # deferred: OpenCV, only where images are warped or videos read

        history = collections.deque(maxlen=self.window)
        histories = {}  # track -> window, with people
        last_box = None
        counts = collections.Counter()
        yielded = with_face = 0
        index = -1
        rec = self.recognizer
        ended = False  # decoding stopped (end of file, or damage), not max_frames
        try:
            while self.max_frames is None or yielded < self.max_frames:
                with quiet_native_stderr():  # FFmpeg's own words on damaged data; see stopped()
                    ok, bgr = self._capture.read()
                if not ok or bgr is None:
                    ended = True
                    break
                index += 1
                if index % self.every:
                    continue
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else \
                    cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
                aligned, found = rec._align(rgb, f"{self.path} frame {index}")
                faces = rec._classify(aligned, rgb.shape)
                if found > len(aligned):
                    self.capped_frames += 1
                if faces:
                    with_face += 1
                if self.people is not None:
                    self.people.label(rgb, aligned, faces)
                    histories = {f["track"]: histories.get(f["track"]) or collections.deque(
                        maxlen=self.window) for f in faces}  # tracks not in this frame are dropped
                    faces[:] = [self._smooth(histories[f["track"]], f) for f in faces]
                    self.people.observe(faces)
                    counts.update(f["expression"] for f in faces)
                elif faces:
                    tracked = faces[0]  # largest first
                    if last_box is None or iou(last_box, tracked["box"]) < TRACK_IOU:
                        history.clear()
                    last_box = tracked["box"]
                    faces[0] = self._smooth(history, {**tracked, "track": 0})
                    counts[faces[0]["expression"]] += 1
                else:
                    history.clear()
                    last_box = None
                frame = {"frame": index, "time_s": self._time(index), "faces": faces}
                if self.annotate_to is not None:
                    drawn = annotate(rgb, frame)
                    if self._writer is None:
                        self._partial = temporary_name(self.annotate_to)
                        self._writer = _video_writer(self._partial, self.codec,
                                                     (self.fps or 25.0) / self.every, drawn.shape)
                    self._writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                yielded += 1
                yield frame
            if self._writer is not None and with_face:
                self._writer.release()
                self._writer = None
                os.replace(self._partial, self.annotate_to)
                self._partial = None
                fsync_dir(self.annotate_to.parent)
                self.annotated = self.annotate_to
        finally:
            self.close()
        if not yielded:
            raise ImageError(self.path, "no frames could be decoded (not a video, or a codec OpenCV lacks)")
        self.summary = {"frames": yielded, "frames_with_face": with_face,
                        "expressions": dict(counts.most_common())}
        last = index if ended else None
        if last is not None and self.frame_count and self.frame_count - (last + 1) > \
                max(1, self.frame_count // 100):  # (a container's estimate may be a frame off)
            self.summary["truncated"] = {"last_frame": last, "time_s": self._time(last),
                                         "frame_count": self.frame_count}
        if self.people is not None:
            seconds = self.every / self.fps if self.fps else None
            self.summary.update(self.people.summary(rec.labels, seconds))

    def _time(self, index):
        return round(index / self.fps, 4) if self.fps else None

    def stopped(self):
        """One sentence saying where decoding stopped when the video ended before the frames its
        container announces (a truncated or damaged file), else ``None``. Call after iterating."""
        cut = (self.summary or {}).get("truncated")
        if cut is None:
            return None
        last, time_s = cut["last_frame"], cut["time_s"]
        where = f"frame {last}" if last >= 0 else "its first frame"
        if last >= 0 and time_s is not None:
            where += f" ({time_s:.2f} s)"
        total = f"{cut['frame_count']} frames"
        if self.fps:
            total += f", {cut['frame_count'] / self.fps:.2f} s"
        return (f"decoding stopped after {where} of the {total} its header announces: the file is "
                f"truncated or damaged, and the rest was not processed")

    def _smooth(self, history, face):
        """``face`` with its probabilities averaged over ``history`` (its track's last frames,
        this one appended); ``frame_probabilities`` keeps the frame's own, other keys stay."""
        rec = self.recognizer
        history.append(np.array([face["probabilities"][n] for n in rec.labels]))
        smooth = rec._entry(np.mean(history, axis=0), face["box"])
        smooth["frame_probabilities"] = face["probabilities"]
        extra = {k: v for k, v in face.items() if k not in smooth and k != "expression"}
        return {**smooth, **extra}

    def close(self):
        if self._capture is not None:
            self._capture.release()
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._partial is not None:  # not finished, or no face: no annotated copy
            try:
                os.unlink(self._partial)
            except OSError:
                pass
            self._partial = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


_BROWSER_NOTE = ("web browsers do not play it; name it .webm for a browser-playable VP8 video")


def video_codec(path):
    """``(fourcc, note)`` for an annotated video written to ``path``, chosen by its suffix.

    ``.mp4``/``.m4v``/``.mov``: H.264 ('avc1') when the installed OpenCV can encode it, else
    MPEG-4 part 2 ('mp4v') with a ``note`` that says browsers do not play it. ``.webm``: VP8
    ('VP80'), which browsers play. ``.mkv``: VP8; ``.avi``: Motion JPEG ('MJPG'). ``note`` is
    ``None`` when the result plays in a browser, else one sentence saying why not.
    """
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        if can_encode("avc1"):
            return "avc1", None
        return "mp4v", (f"this OpenCV build has no H.264 encoder, so {pathlib.Path(path).name} is "
                        f"MPEG-4 part 2 (mp4v): {_BROWSER_NOTE}")
    if suffix == ".webm":
        return "VP80", None
    if suffix == ".mkv":
        return "VP80", f"{pathlib.Path(path).name} is VP8 in Matroska: {_BROWSER_NOTE}"
    if suffix == ".avi":
        return "MJPG", f"{pathlib.Path(path).name} is Motion JPEG in AVI: {_BROWSER_NOTE}"
    raise ConfigError(f"{path}: unknown video suffix; name the annotated video .mp4 or .webm")


def browser_video_suffix():
    """".mp4" when the installed OpenCV encodes H.264, else ".webm" (VP8): both play in browsers."""
    return ".mp4" if can_encode("avc1") else ".webm"


@functools.lru_cache(maxsize=None)
def can_encode(fourcc):
    """Whether the installed OpenCV writes video with ``fourcc`` (probed once, on a tiny file)."""
    import cv2  # deferred: OpenCV, only where images are warped or videos read

    suffix = ".webm" if fourcc.upper().startswith("VP") else ".mp4"
    with tempfile.TemporaryDirectory() as tmp:
        target = os.path.join(tmp, f"probe{suffix}")
        with quiet_native_stderr():
            writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 64))
            ok = writer.isOpened()
            if ok:
                writer.write(np.zeros((64, 64, 3), np.uint8))
            writer.release()
        return bool(ok and os.path.isfile(target) and os.path.getsize(target) > 0)


def _mp4_without_index(path):
    """Whether ``path`` is an MP4/MOV (ISO media file: an ``ftyp`` box first) whose top-level boxes
    end without the ``moov`` box that indexes its frames, as a truncated recording does."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset, first = 0, True
            while offset + 8 <= size:
                fh.seek(offset)
                head = fh.read(16)
                length, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if first and kind != b"ftyp":
                    return False
                first = False
                if kind == b"moov":
                    return False
                if length == 1 and len(head) >= 16:
                    length = int.from_bytes(head[8:16], "big")
                elif length == 0:  # the last box, to the end of the file
                    break
                if length < 8:
                    break
                offset += length
            return not first
    except OSError:
        return False


def _video_writer(path, fourcc, fps, shape):
    import cv2  # deferred: OpenCV, only where images are warped or videos read

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_native_stderr():  # FFmpeg's notes on tag fallbacks go to fd 2
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                 (int(shape[1]), int(shape[0])))
    if not writer.isOpened():
        raise ImageError(path, f"cannot write the annotated video here (codec {fourcc})")
    return writer

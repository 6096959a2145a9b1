"""Atomic files, and a silencer for what native code writes to file descriptor 2.

Atomic files: a file holds either its previous content or its complete new content, never a part.

Every writer in fer_tf goes through :func:`atomic_path`: the new content is written to a temporary
file beside the target (``.tmp-<pid>-<name>``: the same folder, so the rename never crosses
filesystems; the same suffix, because Keras checks that names end in ``.keras`` or
``.weights.h5``), flushed to disk, and renamed over the target with :func:`os.replace` (atomic on
POSIX and Windows); the folder is then synced so that the rename survives a power cut. An
exception, a Ctrl-C included, removes the temporary and leaves the target as it was; what a SIGKILL
leaves behind is removed by :func:`remove_stale_temporaries`.

:func:`quiet_native_stderr` silences the logs that native libraries (LiteRT, MediaPipe's absl,
FFmpeg inside OpenCV) write straight to file descriptor 2, which no Python setting reaches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import sys

from fer_tf.errors import OutputError

#: Temporary files start with this prefix (see :func:`remove_stale_temporaries`).
TEMPORARY_PREFIX = ".tmp-"


def temporary_name(path):
    """The temporary file that :func:`atomic_path` writes ``path``'s new content to."""
    path = pathlib.Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{os.getpid()}-{path.name}")


def fsync_file(path):
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


#: Errors of writing (rather than of reading an input): a full disk, a file-size limit, a quota.
_WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def _write_failed(exc, path, tmp):
    """Whether ``exc`` is the failure to write ``path``'s new content (not, say, a missing input)."""
    return isinstance(exc, OSError) and (
        exc.errno in _WRITE_ERRORS or exc.filename in (None, str(tmp), str(path)))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path; write ``path``'s new content there (with anything that takes a path,
    e.g. ``model.save``). When the block ends normally, the temporary replaces ``path``.

    Writing that fails (a full disk, a file-size limit: ``OSError`` ENOSPC, EFBIG, ...) raises
    :class:`~fer_tf.errors.OutputError` naming ``path``; ``path`` keeps its previous content (or
    stays absent) and no temporary is left behind."""
    path = pathlib.Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if not _write_failed(exc, path, tmp):
            raise
        state = "keeps its previous content" if path.exists() else "was not written"
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc}); it {state}. "
                          "Free some disk space (or raise the file-size limit) and run again") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


def atomic_write(path, write):
    """Call ``write(binary file object)`` for the new content of ``path`` (e.g.
    ``lambda f: np.savez(f, faces=faces)``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)


def atomic_write_bytes(path, data):
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path, text, encoding="utf-8"):
    atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temporaries(folder):
    """Delete the temporaries that killed writers left in ``folder``."""
    for tmp in pathlib.Path(folder).glob(TEMPORARY_PREFIX + "*"):
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def quiet_native_stderr(enabled=True):
    """Send file descriptor 2 to /dev/null inside the block (``enabled=False``: do nothing).

    Native code logs there directly: LiteRT's "Created TensorFlow Lite XNNPACK delegate", MediaPipe's
    absl INFO/WARNING lines before logging is initialised, FFmpeg's codec notes. Python's
    ``sys.stderr`` object is untouched. Does nothing when fd 2 cannot be duplicated (embedded
    interpreters).
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

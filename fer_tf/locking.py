"""One writer per folder: a training run's work folder is held by the process that trains in it.

Two processes resuming one checkpoint folder would each delete the other's half-written files
(:func:`fer_tf.files.remove_stale_temporaries`) and overwrite each other's checkpoints epoch by
epoch, so that neither run's work survives intact. :func:`holding` takes an exclusive lock on
``FOLDER/.fer_tf.lock`` for the length of a block (``flock``: the operating system releases it when
the process ends, however it ends, so a killed run never leaves its folder locked); a second
process gets a :class:`~fer_tf.errors.FolderInUse` error naming the process that holds it.
:func:`holder` says, without taking the lock, who holds a folder now.

The lock is re-entrant within a process (a pipeline that holds its output folder can call
:func:`fer_tf.training.loop.fit` on it). On systems without ``fcntl`` (Windows) nothing is locked.
The lock file stays in the folder after the run; its content (the holder's pid, start time and
command) is emptied when the lock is released.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import sys

from fer_tf.errors import FolderInUse

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".fer_tf.lock"

_HELD = {}  # resolved folder -> how many blocks of this process hold it


def _describe(info, command=True):
    if not info:
        return "a process that has not said which"
    since = f" since {info['since']}" if info.get("since") else ""
    command = f": {info['command']}" if command and info.get("command") else ""
    return f"process {info.get('pid', '?')}{since}{command}"


def _read(handle):
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except ValueError:
        return {}


def _refusal(folder, what, info):
    return FolderInUse(
        f"{what} {folder} is in use by {_describe(info)}. Two runs writing one folder would "
        "overwrite each other's checkpoints: wait for that run to finish (or stop it; its last "
        "completed epoch is kept), then run again to resume, or give another folder")


def ensure_free(folder, what="this folder"):
    """Raise :class:`FolderInUse` if another process holds ``folder`` now (without taking it: for
    a command that checks, or clears, its output before the work that holds it starts)."""
    info = holder(folder)
    if info is not None and info.get("pid") != os.getpid():
        raise _refusal(folder, what, info)


@contextlib.contextmanager
def holding(folder, what="this folder"):
    """Hold ``folder`` (created if missing) for this process inside the block; raise
    :class:`FolderInUse` at once if another process holds it. ``what`` names the folder in the
    message (e.g. "the checkpoint folder")."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if fcntl is None or _HELD.get(key):
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(folder, what, _read(handle)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(),
                                 "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                                 "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]])
                                 if sys.argv and sys.argv[0] else ""}))
        handle.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            handle.seek(0)
            handle.truncate()
            handle.flush()
    finally:
        handle.close()  # releases the lock


def holder(folder):
    """``{"pid", "since", "command"}`` of the process holding ``folder`` now (``{}`` when it has
    not written them yet), or ``None`` when no process holds it (or ``fcntl`` is missing)."""
    path = pathlib.Path(folder) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        if _HELD.get(pathlib.Path(folder).resolve()):  # this process: a second lock would be refused
            return _read(handle) or {"pid": os.getpid()}
        try:  # a shared lock is refused only while a writer holds the exclusive one
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(handle)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def described(folder, command=True):
    """The holder of ``folder`` in words ("" when nobody holds it); ``command=False`` leaves out
    its command line."""
    info = holder(folder)
    return "" if info is None else _describe(info, command)

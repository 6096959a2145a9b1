"""fer_tf.locking: one writer per folder. A second process is refused with the holder named; a killed
holder frees its folder; the lock nests within a process; training refuses a held checkpoint folder
before it touches anything in it."""

import contextlib
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from fer_tf import locking
from fer_tf.errors import FolderInUse, OutputError

REPO = pathlib.Path(__file__).resolve().parents[1]

HOLD = """
import sys
from fer_tf import locking
with locking.holding(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def another_process_holding(folder):
    """``folder`` held by another process, which lets go when its stdin closes (at the latest when
    the block ends)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        if child.poll() is None:
            child.stdin.close()
            child.wait(timeout=30)


@pytest.fixture
def held(tmp_path):
    with another_process_holding(tmp_path / "work") as child:
        yield tmp_path / "work", child


def test_a_second_process_is_refused_with_the_holder_named(held):
    folder, child = held
    assert locking.holder(folder)["pid"] == child.pid
    assert f"process {child.pid} since " in locking.described(folder)
    with pytest.raises(FolderInUse, match=rf"the checkpoint folder {folder} is in use by process "
                                          rf"{child.pid} since .*wait for that run to finish") as caught:
        with locking.holding(folder, "the checkpoint folder"):
            pytest.fail("the block ran although another process holds the folder")
    assert isinstance(caught.value, OutputError)  # the CLI prints it as one line
    child.stdin.close()
    child.wait(timeout=30)
    assert locking.holder(folder) is None  # let go: emptied, and free
    with locking.holding(folder):
        pass


def test_a_killed_holder_leaves_the_folder_free(held):
    folder, child = held
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert locking.holder(folder) is None
    with locking.holding(folder):
        assert locking.holder(folder)["pid"] == os.getpid()


def test_the_lock_nests_within_a_process(tmp_path):
    folder = tmp_path / "new" / "work"
    assert locking.holder(folder) is None and locking.described(folder) == ""
    with locking.holding(folder):
        assert folder.is_dir()
        with locking.holding(folder):  # e.g. pretrain holds its output folder, and fit holds it again
            assert locking.holder(folder)["pid"] == os.getpid()
        assert locking.holder(folder)["pid"] == os.getpid()
    assert locking.holder(folder) is None


def test_training_refuses_a_held_checkpoint_folder_and_leaves_it_as_it_was(held):
    """fit would delete the other run's half-written temporaries and overwrite its checkpoints."""
    from fer_tf.config import TrainConfig
    from fer_tf.training import loop

    folder, _ = held
    half_written = folder / ".tmp-1-last.keras"
    half_written.write_bytes(b"the other run's checkpoint, being written")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(FolderInUse, match="the checkpoint folder"):
        loop.fit(None, None, TrainConfig(epochs=1), 1, workdir=folder)
    assert sorted(p.name for p in folder.iterdir()) == before and half_written.is_file()


def test_fer_tf_train_neither_resumes_nor_clears_a_run_that_is_training(tmp_path, capsys):
    from fer_tf.cli import main

    out = tmp_path / "out"
    with another_process_holding(out / "checkpoint") as child:
        (out / "checkpoint" / "last.keras").write_text("the other run's checkpoint")
        for extra in ([], ["--overwrite"]):
            assert main(["train", str(tmp_path), "-o", str(out), *extra]) == 2
            err = capsys.readouterr().err
            assert f"the checkpoint folder {out / 'checkpoint'} is in use by process {child.pid}" in err
            assert (out / "checkpoint" / "last.keras").read_text() == "the other run's checkpoint"

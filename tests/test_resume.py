"""Resume: an interrupted run continues exactly where it stopped (in process, and after kill -9)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from fixtures_training import synthetic_data, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = ("anger", "happiness", "surprise")


def _run(workdir, epochs, seed=0, constant_validation=False, **train):
    """A fresh tiny 2B(N+M) model trained (or resumed) in ``workdir`` up to ``epochs``.

    ``constant_validation``: validation images without labels, so val_accuracy stays 0 and the
    schedule's best epoch stays the first one."""
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.preprocess.normalize import normalize_faces
    from fer_tf.feeding.feeders import identity_aware_dataset

    loop.set_seed(seed)
    table, faces = synthetic_data(subjects=4, seed=seed)
    faces = np.asarray(normalize_faces(faces), np.float32)
    model = tiny_model(labels=LABELS)  # a new object; ignored when a checkpoint exists
    config = TrainConfig(**{"optimizer": "adam", "learning_rate": 3e-3, "epochs": epochs, "seed": seed, **train})

    def make_train(epoch):
        return identity_aware_dataset(table, faces, LABELS, num_positives=3, num_negatives=3,
                                      queries_per_batch=12, seed=seed, start_epoch=epoch)

    validation = None
    if constant_validation:
        import tensorflow as tf

        from fer_tf.feeding.feeders import eval_dataset

        validation = tf.data.Dataset.zip((eval_dataset(faces[:4], batch_size=4),
                                          tf.data.Dataset.from_tensors({"expression": np.full(4, -1, np.int32)})))
    # 2 steps per fit epoch while the sampler's epoch has 3: epochs must stay aligned anyway
    return loop.fit(model, make_train, config, steps_per_epoch=2, workdir=workdir, verbose=0,
                        validation_data=validation)


def _same(a, b, atol=1e-6):
    return all(np.allclose(x, y, rtol=0, atol=atol) for x, y in zip(a, b))


def test_resume_matches_an_uninterrupted_run(tmp_path):
    from fer_tf.training import loop

    clean, history = _run(tmp_path / "clean", epochs=2)
    _, first = _run(tmp_path / "resumed", epochs=1)
    assert len(first) == 1
    ckpt = loop.load_checkpoint(tmp_path / "resumed" / loop.CHECKPOINT)
    # Keras 3 stores the optimizer state in .keras files: iterations and Adam moments are back
    assert int(ckpt.optimizer.iterations.numpy()) == 2
    assert any(np.abs(v.numpy()).sum() > 0 for v in ckpt.optimizer.variables if "momentum" in v.path)
    resumed, resumed_history = _run(tmp_path / "resumed", epochs=2)
    assert resumed is not ckpt
    assert [r["epoch"] for r in resumed_history] == [1, 2]
    for a, b in zip(loop.metrics_only(history), loop.metrics_only(resumed_history)):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
    assert _same(clean.get_weights(), resumed.get_weights())
    assert int(resumed.optimizer.iterations.numpy()) == 4


def test_schedule_state_and_best_weights_survive_a_resume(tmp_path):
    """loss_rise < 0 makes every epoch after the first halve the rate and reload the best
    weights: with a lost schedule state or best weights the resumed run would diverge."""
    kwargs = dict(loss_rise=-0.5, constant_validation=True)
    clean, history = _run(tmp_path / "clean", epochs=3, **kwargs)
    _run(tmp_path / "resumed", epochs=1, **kwargs)
    resumed, resumed_history = _run(tmp_path / "resumed", epochs=3, **kwargs)
    rates = [r["learning_rate"] for r in history]
    assert rates == pytest.approx([3e-3, 1.5e-3, 7.5e-4])
    assert [r["learning_rate"] for r in resumed_history] == pytest.approx(rates)
    for a, b in zip(history, resumed_history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert [r["val_accuracy"] for r in history] == [0, 0, 0]  # best epoch: the first
    assert _same(clean.get_weights(), resumed.get_weights())


def test_finished_run_resumes_to_the_same_model(tmp_path):
    from fer_tf.training import loop

    model, history = _run(tmp_path, epochs=1)
    again, history_again = _run(tmp_path, epochs=1)  # nothing left to train
    assert history_again == history
    assert _same(model.get_weights(), again.get_weights(), atol=0)
    assert not list(tmp_path.glob(".tmp-*"))
    assert loop.read_state(tmp_path)["epoch"] == 1


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_result(tmp_path):
    """A real SIGKILL of a training process after its first checkpoint, then a resume."""
    cmd = [sys.executable, str(REPO / "pipelines" / "kill_resume.py"), "--tiny", "--epochs", "4",
           "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--kill-after", "0.3"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    kill = results["kill"]
    assert 1 <= kill["checkpoints_completed_at_kill"] < 4
    assert kill["resumed_from_epoch"] == kill["checkpoints_completed_at_kill"]
    assert kill["checkpoint_loaded_after_kill"]
    diff = results["difference"]
    assert diff["same_epoch_count"]
    assert diff["history_max_abs_diff"] <= 1e-6
    assert diff["weights_max_abs_diff"] <= 1e-6
    assert (tmp_path / "report" / "README.md").read_text().startswith("# Reliability")


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    """A resume continues the run its checkpoint belongs to, or refuses and says what differs."""
    from fer_tf.training import loop

    _run(tmp_path, epochs=1)
    with pytest.raises(loop.CheckpointMismatch, match=r"train\.learning_rate: 0\.003 in the checkpoint, 0\.01 now"):
        _run(tmp_path, epochs=2, learning_rate=1e-2)
    with pytest.raises(loop.CheckpointMismatch, match="train.flip"):
        _run(tmp_path, epochs=2, flip=False)
    # only how the run is carried out changes: resumed
    _, history = _run(tmp_path, epochs=2, time_limit_minutes=60, checkpoint_every=1)
    assert [r["epoch"] for r in history] == [1, 2]
    assert loop.read_state(tmp_path)["settings"]["train"]["learning_rate"] == 3e-3


def test_another_network_or_schedule_length_is_not_resumed(tmp_path):
    from fer_tf.config import TrainConfig
    from fer_tf.training import loop

    def fit(model, workdir, **train):
        config = TrainConfig(optimizer="adam", learning_rate=3e-3, **train)
        return loop.fit(model, _batches, config, steps_per_epoch=1, workdir=workdir, verbose=0)

    fit(tiny_model("softmax", labels=LABELS), tmp_path / "a", epochs=1)
    with pytest.raises(loop.CheckpointMismatch, match="the network"):
        fit(tiny_model("softmax", labels=LABELS + ("sadness",)), tmp_path / "a", epochs=1)
    # under a schedule that depends on the run's length, more epochs are another run
    fit(tiny_model("softmax", labels=LABELS), tmp_path / "b", epochs=1, schedule="cosine")
    with pytest.raises(loop.CheckpointMismatch, match=r"train\.epochs: 1 in the checkpoint, 2 now"):
        fit(tiny_model("softmax", labels=LABELS), tmp_path / "b", epochs=2, schedule="cosine")
    # the caller's own settings (e.g. its data) are compared too
    config = TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=1)
    loop.fit(tiny_model("softmax", labels=LABELS), _batches, config, 1, workdir=tmp_path / "c", verbose=0,
             settings={"data": "one"})
    with pytest.raises(loop.CheckpointMismatch, match='extra.data: "one" in the checkpoint, "two" now'):
        loop.fit(tiny_model("softmax", labels=LABELS), _batches, config, 1, workdir=tmp_path / "c", verbose=0,
                 settings={"data": "two"})


def test_an_option_added_or_removed_since_the_checkpoint_at_its_default_is_the_same_run(tmp_path):
    from fer_tf.config import TrainConfig
    from fer_tf.training import loop

    config = TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=1)
    model = tiny_model("softmax", labels=LABELS)
    ours = loop.run_settings(model, config, 2)
    older = json.loads(json.dumps(ours))
    del older["train"]["mixing"]  # written before the option existed
    older["train"]["retired_option"] = 1  # an option this version no longer has
    loop.check_resume_settings(tmp_path, {"settings": older}, ours, config)
    mixed = loop.run_settings(model, TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=1,
                                                 mixing="mixup"), 2)
    with pytest.raises(loop.CheckpointMismatch, match='train.mixing: null in the checkpoint, "mixup" now'):
        loop.check_resume_settings(tmp_path, {"settings": older}, mixed, config)


def test_a_checkpoint_without_stored_settings_is_resumed_with_a_note(tmp_path, capfd):
    """Checkpoints of older versions carry no settings: they resume as before, and say so."""
    import zipfile

    from fer_tf.training import loop

    _run(tmp_path, epochs=1)
    path = tmp_path / loop.CHECKPOINT
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    state = json.loads(members[loop.EMBEDDED_STATE])
    del state["settings"]
    members[loop.EMBEDDED_STATE] = json.dumps(state).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    capfd.readouterr()
    _, history = _run(tmp_path, epochs=2, learning_rate=1e-2)
    assert [r["epoch"] for r in history] == [1, 2]
    assert "did not store its settings" in capfd.readouterr().err
    assert loop.read_state(tmp_path)["settings"]["train"]["learning_rate"] == 1e-2


def _batches(epoch):
    """Two batches of a tiny classification set (for runs whose only point is their settings)."""
    from fer_tf.feeding.feeders import classification_dataset

    rng = np.random.default_rng(epoch)
    faces = rng.normal(size=(8, 60, 60, 1)).astype(np.float32)
    return classification_dataset(faces, rng.integers(0, len(LABELS), 8), 4, seed=0, start_epoch=epoch)

"""Training reliability: determinism, the NaN guard, safe and atomic checkpoint files, the schedule."""

import json
import pathlib
import zipfile

import numpy as np
import pytest
from fixtures_training import synthetic_data, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[1]

LABELS = ("anger", "happiness", "surprise")


def _setup(seed=0, epochs=2):
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.preprocess.normalize import normalize_faces
    from fer_tf.feeding.feeders import identity_aware_dataset

    loop.set_seed(seed)
    table, faces = synthetic_data(subjects=4, seed=seed)
    faces = np.asarray(normalize_faces(faces), np.float32)
    model = tiny_model(labels=LABELS)
    config = TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=epochs, seed=seed)

    def make_train(epoch):
        return identity_aware_dataset(table, faces, LABELS, num_positives=3, num_negatives=3,
                                      queries_per_batch=12, seed=seed, start_epoch=epoch)

    return model, make_train, config


def test_two_identical_runs_give_identical_history():
    from fer_tf.training import loop

    runs = []
    for _ in range(2):
        model, make_train, config = _setup()
        model, history = loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0)
        runs.append((history, model.get_weights()))
    (h1, w1), (h2, w2) = runs
    assert [r["epoch"] for r in h1] == [1, 2]
    assert loop.metrics_only(h1) == loop.metrics_only(h2)
    assert all(r["epoch_seconds"] > 0 for r in h1)
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    import tensorflow as tf

    from fer_tf.training import loop
    from fer_tf.errors import TrainingError

    model, make_train, config = _setup(epochs=3)
    steps, bad_from = 2, 3  # global steps 0, 1 (epoch 1) and 2 (epoch 2, step 1) are fine

    def poisoned(epoch):
        def poison(i, batch):
            images, targets = batch
            broken = tf.cast(epoch * steps + i, tf.int32) >= bad_from
            return tf.where(broken, images * np.nan, images), targets

        return make_train(epoch).take(steps).enumerate().map(poison)

    with pytest.raises(TrainingError) as info:
        loop.fit(model, poisoned, config, steps_per_epoch=steps, workdir=tmp_path, verbose=0)
    message = str(info.value)
    assert "epoch 2, step 2" in message and "nan" in message.lower()
    assert "after epoch 1" in message and str(tmp_path) in message
    state = loop.read_state(tmp_path)
    assert state["epoch"] == 1
    restored = loop.load_checkpoint(tmp_path / loop.CHECKPOINT)
    assert all(np.isfinite(w).all() for w in restored.get_weights())


def test_inf_loss_is_caught_too():
    from fer_tf.errors import TrainingError
    from fer_tf.training.loop import NanGuard

    guard = NanGuard()

    class Stub:
        stop_training = False

    guard.set_model(Stub())
    guard.on_epoch_begin(4)
    guard.on_train_batch_end(0, {"loss": 1.0})
    with pytest.raises(TrainingError, match=r"became inf at epoch 5, step 8"):
        guard.on_train_batch_end(7, {"loss": float("inf")})
    assert guard.model.stop_training


def test_epoch_random_state_resets_dropout_seed_generators():
    from fer_tf.training import loop

    model = tiny_model(labels=LABELS)
    generators = loop.seed_generators(model)
    assert len(generators) == 2  # fc1_dropout, fc2_dropout
    loop.reset_random_state(model, seed=3, epoch=5)
    first = [np.asarray(g.state.numpy()) for g in generators]
    for g in generators:  # as if some dropout masks were drawn
        g.next()
    loop.reset_random_state(model, seed=3, epoch=5)
    assert all(np.array_equal(a, g.state.numpy()) for a, g in zip(first, generators))
    loop.reset_random_state(model, seed=3, epoch=6)
    assert not np.array_equal(first[0], generators[0].state.numpy())


# -- checkpoint files -----------------------------------------------------------------------------


def _checkpoint(tmp_path):
    from fer_tf.model import saving
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig

    model = tiny_model(labels=LABELS)
    loop.compile_model(model, TrainConfig())
    path = tmp_path / "model.keras"
    saving.save_model(model, path, extra={"note.txt": b"hello"})
    return model, path


def test_atomic_save_leaves_no_temporary_and_keeps_extra_members(tmp_path):
    from fer_tf.training import loop

    _, path = _checkpoint(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    with zipfile.ZipFile(path) as archive:
        assert archive.read("note.txt") == b"hello"
    loop.load_checkpoint(path)  # extra members do not disturb Keras


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    from fer_tf.model import saving
    from fer_tf.training import loop

    model, path = _checkpoint(tmp_path)
    before = path.read_bytes()

    class Broken:
        def save(self, filepath):
            pathlib.Path(filepath).write_bytes(b"half a file")
            raise KeyboardInterrupt("killed while saving")

    with pytest.raises(KeyboardInterrupt):
        saving.save_model(Broken(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_truncated_checkpoint_is_a_model_file_error(tmp_path):
    from fer_tf.training import loop
    from fer_tf.errors import ModelFileError

    _, path = _checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"truncated"):
        loop.load_checkpoint(path)


def test_text_file_named_keras_is_a_model_file_error(tmp_path):
    from fer_tf.training import loop
    from fer_tf.errors import ModelFileError

    path = tmp_path / "notes.keras"
    path.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match=r"notes.keras: not a Keras model file"):
        loop.load_checkpoint(path)
    with pytest.raises(ModelFileError, match=r"not found"):
        loop.load_checkpoint(tmp_path / "missing.keras")
    (tmp_path / "empty.keras").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty"):
        loop.load_checkpoint(tmp_path / "empty.keras")


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    import keras

    from fer_tf.training import loop
    from fer_tf.errors import ModelFileError

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match=r"refused to load.*Lambda"):
        loop.load_checkpoint(path)


def test_the_shipped_model_loads_through_the_one_loader():
    """loop.load_checkpoint is model_io.load_model: it registers FacePreprocessing too (a fresh
    process, so that no other test has imported fer_tf.preprocess.normalize before)."""
    import subprocess
    import sys

    shipped = REPO / "saved_models" / "fer_tf_basic7.keras"
    if not shipped.is_file():
        pytest.skip("no shipped model in this checkout")
    script = ("import sys; from fer_tf.training import loop; "
              "assert 'fer_tf.preprocess.normalize' not in sys.modules; "
              f"model = loop.load_checkpoint({str(shipped)!r}, compile=False); "
              "print(model.input_shape, model.output_shape, model.get_layer('face_preprocessing').name)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[0] == "(None, 60, 60, 1) (None, 7) face_preprocessing"


def test_cosine_schedule_checkpoint_resumes_with_its_optimizer(tmp_path):
    """A checkpoint compiled with WarmupCosine loads with its optimizer (the schedule is registered
    by the loader, wherever it lives)."""
    from fer_tf.model import saving
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.training.schedules import WarmupCosine

    model = tiny_model(labels=LABELS)
    loop.compile_model(model, TrainConfig(schedule="cosine", epochs=4, warmup_epochs=1), steps_per_epoch=5)
    path = tmp_path / "cosine.keras"
    saving.save_model(model, path)
    loaded = loop.load_checkpoint(path)
    assert isinstance(loaded.optimizer._learning_rate, WarmupCosine)
    assert loaded.optimizer._learning_rate.get_config() == model.optimizer._learning_rate.get_config()


def test_resume_reads_the_embedded_state_not_a_stale_state_json(tmp_path):
    """The state committed inside last.keras wins over state.json (a kill between the two writes)."""
    from fer_tf.training import loop

    model, make_train, config = _setup(epochs=1)
    loop.fit(model, make_train, config, steps_per_epoch=1, workdir=tmp_path, verbose=0)
    (tmp_path / loop.STATE).write_text(json.dumps({"epoch": 99, "history": [], "schedule": {}}))
    state = loop.read_state(tmp_path)
    assert state["epoch"] == 1 and state["version"] == loop.STATE_VERSION
    assert loop.read_best_weights(tmp_path) is not None


def test_halve_and_reload_halves_and_restores_best_weights():
    import keras

    from fer_tf.training.loop import HalveAndReload

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    schedule = HalveAndReload(loss_rise=0.25, patience=10, monitor="loss")
    schedule.set_model(model)
    schedule.on_epoch_end(0, {"loss": 1.0})
    best = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in best])
    logs = {"loss": 2.0}
    schedule.on_epoch_end(1, logs)
    assert logs["learning_rate"] == pytest.approx(5e-3)
    assert all(np.array_equal(a, b) for a, b in zip(best, model.get_weights()))
    assert schedule.state["halvings"] == 1 and schedule.state["best_epoch"] == 0


def test_halve_and_reload_treats_a_lower_loss_as_better():
    from fer_tf.training.loop import HalveAndReload

    schedule = HalveAndReload(monitor="loss")
    assert schedule._score({"loss": 1.0}) > schedule._score({"loss": 2.0})
    schedule = HalveAndReload(monitor="val_accuracy")
    assert schedule._score({"val_accuracy": 0.9, "loss": 1.0}) > schedule._score({"val_accuracy": 0.5})


def test_a_callback_can_stop_training_early():
    import keras

    from fer_tf.training import loop

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    model, make_train, config = _setup(epochs=3)
    _, history = loop.fit(model, make_train, config, steps_per_epoch=1, verbose=0,
                              callbacks=[StopAfterFirst()])
    assert [r["epoch"] for r in history] == [1]


def test_sigterm_mid_epoch_keeps_the_epoch_checkpoint_and_saves_the_interrupted_model(tmp_path):
    import os
    import signal

    import keras

    from fer_tf.training import loop

    class Terminate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    model, make_train, config = _setup(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(model, make_train, config, steps_per_epoch=2, workdir=tmp_path, verbose=0,
                     callbacks=[Terminate()])
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored
    assert loop.read_state(tmp_path)["epoch"] == 1
    assert (tmp_path / loop.INTERRUPTED).is_file()
    loop.load_checkpoint(tmp_path / loop.INTERRUPTED)


def test_frozen_batch_norm_keeps_its_statistics_and_a_scaled_backbone_learns_slower(tmp_path):
    """freeze_batch_norm: the backbone's BN statistics and affine weights do not move; with
    backbone_lr_scale 0 no backbone weight moves while the heads learn; the optimizer survives a
    checkpoint round trip."""
    import keras

    from fer_tf.training import optimizers
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig

    model, make_train, _ = _setup(epochs=1)
    assert any(isinstance(l, keras.layers.BatchNormalization) for l in model.backbone.layers)
    config = TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=1, freeze_batch_norm=True,
                         backbone_lr_scale=0.0)
    backbone_before = [w.copy() for w in model.backbone.get_weights()]
    heads_before = [v.numpy().copy() for v in model.trainable_variables
                    if v.path not in loop.backbone_variable_paths(model)]
    loop.fit(model, make_train, config, steps_per_epoch=3, workdir=tmp_path, verbose=0)
    assert isinstance(model.optimizer, optimizers.ScaledAdam)
    for before, after in zip(backbone_before, model.backbone.get_weights()):
        np.testing.assert_array_equal(before, after)
    heads_after = [v.numpy() for v in model.trainable_variables
                   if v.path not in loop.backbone_variable_paths(model)]
    assert any(np.any(a != b) for a, b in zip(heads_after, heads_before))
    loaded = loop.load_checkpoint(tmp_path / loop.CHECKPOINT)
    assert isinstance(loaded.optimizer, optimizers.ScaledAdam) and loaded.optimizer.lr_scale == 0.0
    assert not any(l.trainable for l in loaded.backbone.layers if isinstance(l, keras.layers.BatchNormalization))


def test_batch_norm_statistics_move_when_not_frozen():
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig

    model, make_train, _ = _setup(epochs=1)
    bn = [l for l in model.backbone.layers if l.__class__.__name__ == "BatchNormalization"][0]
    before = bn.moving_mean.numpy().copy()
    loop.fit(model, make_train, TrainConfig(optimizer="adam", epochs=1), steps_per_epoch=2, verbose=0)
    assert np.any(bn.moving_mean.numpy() != before)


def test_select_epoch_last_ends_with_the_final_epochs_weights():
    """The callback reports a rising loss, so "best" (lowest training loss) would end with epoch 1's
    weights: "last" must not, "best" must."""
    import dataclasses

    import keras

    from fer_tf.training import loop
    from fer_tf.errors import ConfigError

    class Record(keras.callbacks.Callback):  # runs before the schedule reads the logs
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = float(epoch)
            self.weights.append([np.array(w) for w in self.model.get_weights()])

    for select, epoch in (("last", -1), ("best", 0)):
        model, make_train, config = _setup(epochs=3)
        record = Record()
        config = dataclasses.replace(config, schedule="cosine", select_epoch=select)
        model, history = loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0, callbacks=[record])
        assert len(history) == 3
        for got, want in zip(model.get_weights(), record.weights[epoch]):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ConfigError, match="select_epoch"):
        dataclasses.replace(config, select_epoch="first")

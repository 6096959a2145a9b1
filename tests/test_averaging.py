"""Weight averaging (TrainConfig.swa_epochs): the running mean, its checkpointed state, the
recomputed batch-norm statistics, the constant-rate tail of the schedule and starting weights."""

import numpy as np
import pytest
from fixtures_training import synthetic_data, tiny_model

LABELS = ("anger", "happiness", "surprise")


def _setup(epochs, swa_epochs, seed=0, **train):
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.preprocess.normalize import normalize_faces
    from fer_tf.feeding.feeders import identity_aware_dataset

    loop.set_seed(seed)
    table, faces = synthetic_data(subjects=4, seed=seed)
    faces = np.asarray(normalize_faces(faces), np.float32)
    config = TrainConfig(optimizer="sgd", learning_rate=0.05, schedule="cosine", epochs=epochs,
                         swa_epochs=swa_epochs, swa_learning_rate=0.02, seed=seed, **train)

    def make_train(epoch):
        return identity_aware_dataset(table, faces, LABELS, num_positives=3, num_negatives=3,
                                      queries_per_batch=12, seed=seed, start_epoch=epoch)

    return tiny_model(labels=LABELS), make_train, config


class _Recorder:
    """Weights at the end of every epoch, taken independently of WeightAverage."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.weights = []

            def on_epoch_end(self, epoch, logs=None):
                self.weights.append([np.array(w, np.float64) for w in self.model.get_weights()])

        return Recorder()


def test_the_run_ends_with_the_mean_of_the_tail_epochs_weights(tmp_path):
    from fer_tf.training import loop
    from fer_tf.training.averaging import batch_norm_layers

    model, make_train, config = _setup(epochs=3, swa_epochs=2)
    recorder = _Recorder()
    model, _ = loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0, callbacks=[recorder])
    tail = recorder.weights[1:]  # epochs 2 and 3
    statistics = {id(v) for bn in batch_norm_layers(model) for v in (bn.moving_mean, bn.moving_variance)}
    assert statistics, "the tiny model has batch norm, so the statistics are recomputed"
    for variable, value in zip(model.weights, model.get_weights()):
        if id(variable) in statistics:
            continue
        i = [id(v) for v in model.weights].index(id(variable))
        expected = (tail[0][i] + tail[1][i]) / 2
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(recorder.weights[0][0], recorder.weights[2][0]), "the weights moved"


def test_recomputed_batch_norm_statistics_are_the_mean_of_the_batch_statistics():
    import keras

    from fer_tf.training.averaging import recompute_batch_norm

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(keras.layers.Dense(2)(inputs)))
    rng = np.random.default_rng(0)
    batches = [(rng.normal(3.0, 2.0, (8, 3)).astype("float32"), None) for _ in range(4)]
    used = recompute_batch_norm(model, batches, steps=3)
    dense, bn = model.layers[1], model.layers[2]
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    outputs = [x.astype(np.float64) @ kernel + bias for x, _ in batches[:3]]
    assert used == 3 and bn.momentum == 0.99
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([o.mean(0) for o in outputs], 0), rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([o.var(0) for o in outputs], 0), rtol=1e-3)


def test_a_resumed_run_averages_the_same_epochs(tmp_path):
    from fer_tf.training import loop

    model, make_train, config = _setup(epochs=3, swa_epochs=2)
    straight, _ = loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0,
                               workdir=tmp_path / "straight")
    # the same run, interrupted after epoch 2 (one averaged epoch, checkpointed), then resumed
    import keras

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    model, make_train, config = _setup(epochs=3, swa_epochs=2)

    with pytest.raises(KeyboardInterrupt):
        loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0, workdir=tmp_path / "split",
                     callbacks=[StopAfterTwo()])
    model, make_train, config = _setup(epochs=3, swa_epochs=2)
    resumed, _ = loop.fit(model, make_train, config, steps_per_epoch=2, verbose=0, workdir=tmp_path / "split")
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_schedule_turns_constant_for_the_tail():
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.training.schedules import WarmupCosine

    schedule = loop.learning_rate_for(TrainConfig(schedule="cosine", learning_rate=0.1, epochs=10,
                                                      swa_epochs=4, swa_learning_rate=0.01), steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 30, 59, 60, 99)]
    assert rates[0] == pytest.approx(0.1) and rates[0] > rates[1] > rates[2] > 0  # cosine to step 60
    assert rates[3] == rates[4] == pytest.approx(0.01)
    plain = WarmupCosine(0.1, total_steps=60)
    assert "tail_rate" not in plain.get_config() and float(plain(99)) == 0.0
    assert WarmupCosine.from_config(schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("change, message", [({"swa_epochs": 5}, "swa_epochs must be in"),
                                             ({"swa_epochs": 2, "schedule": "halve_reload"}, "schedule: cosine"),
                                             ({"swa_epochs": 2, "swa_learning_rate": 0.0}, "swa_learning_rate")])
def test_bad_averaging_settings_say_what_to_change(change, message):
    from fer_tf.config import TrainConfig
    from fer_tf.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"schedule": "cosine", "epochs": 4, **change})


def test_init_from_copies_a_networks_weights_and_refuses_another_shape(tmp_path):
    from fer_tf.training import loop
    from fer_tf.errors import TrainingError

    source = tiny_model(labels=LABELS)
    path = tmp_path / "start.keras"
    source.save(path)
    model = tiny_model(labels=LABELS)
    loop.initialise_from(model, path)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), source.get_weights()))
    other = tiny_model(labels=LABELS + ("fear",))
    with pytest.raises(TrainingError, match="do not fit this network"):
        loop.initialise_from(other, path)

"""The five variants: build, train step, .keras round trip, the EC-only model, weight transfer."""

import pathlib

import numpy as np
import pytest
from fixtures_training import synthetic_data, tiny_model

from fer_tf.config import VARIANTS

REPO = pathlib.Path(__file__).resolve().parents[1]
LABELS = ("anger", "happiness", "surprise")


@pytest.fixture(scope="module")
def batch():
    """One identity-aware batch (12 images, M = N = 3) of synthetic faces."""
    from fer_tf.feeding.feeders import identity_aware_dataset

    table, faces = synthetic_data(subjects=4)
    ds = identity_aware_dataset(table, faces, LABELS, num_positives=3, num_negatives=3,
                                queries_per_batch=12, seed=0, repeat=False)
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}


def _trained_tiny(variant, batch):
    import keras

    keras.utils.set_random_seed(1)
    model = tiny_model(variant, labels=LABELS)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    images, targets = batch
    logs = model.train_on_batch(images, targets, return_dict=True)
    assert np.isfinite(logs["loss"])
    return model, logs


def test_full_size_variants_build_with_the_expected_parameter_counts():
    from fer_tf.model.network import build_model

    from fer_tf.config import ModelConfig

    params = {v: build_model(v).count_params() for v in VARIANTS}
    c = ModelConfig()
    fc2, fc3, fc4, emb = c.ec_units[1], c.ml_units, c.connect_units, c.embedding_dim
    threshold = lambda d: 2 * d * d + d + 1  # noqa: E731  (L_A, L_B, c, b)
    assert params["softmax"] == params["1B(N+1)"]  # same network, different loss
    assert params["1B(N+M)"] == params["1B(N+1)"] + threshold(fc2)  # threshold on FC2
    assert params["2B(N+M)"] == params["2B(N+1)"] + threshold(emb)  # threshold on FC5
    backbone_out = 512
    ml_branch = ((backbone_out * fc3 + fc3 + fc3)  # FC3 + PReLU
                 + (fc2 * fc4 + fc3 * fc4 + fc4 + fc4)  # FC4 (P1, P2, bias) + PReLU
                 + (fc4 * emb + emb))  # FC5
    assert params["2B(N+1)"] == params["1B(N+1)"] + ml_branch
    assert params["softmax"] > 1_000_000


@pytest.mark.parametrize("variant", VARIANTS)
def test_tiny_variant_trains_one_step(variant, batch):
    model, logs = _trained_tiny(variant, batch)
    if variant == "softmax":
        assert logs.get("metric_loss", 0.0) == 0.0 and logs["loss"] == pytest.approx(logs["ce_loss"])
    else:
        assert logs["metric_loss"] > 0
    assert (model.threshold is not None) == variant.endswith("(N+M)")


@pytest.mark.parametrize("variant", VARIANTS)
def test_keras_round_trip(variant, batch, tmp_path):
    from fer_tf.training.loop import load_checkpoint

    model, _ = _trained_tiny(variant, batch)
    images = batch[0]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_checkpoint(path)
    assert type(loaded).__name__ == "JointModel" and loaded.variant == variant
    a, b = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for key in ("expression", "embedding"):
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6)
    if model.threshold is not None:
        saved = model.threshold.get_weights()
        assert not np.isclose(saved[3], 2.0)  # b moved away from its initial value in the step
        for x, y in zip(saved, loaded.threshold.get_weights()):
            np.testing.assert_array_equal(x, y)
        assert loaded.metric_loss.threshold is loaded.threshold
    else:
        assert loaded.threshold is None


@pytest.mark.parametrize("variant", ["2B(N+M)", "1B(N+M)"])
def test_ec_model_has_no_metric_branch_and_matches_the_expression_output(variant, batch):
    model, _ = _trained_tiny(variant, batch)
    ec = model.ec_model()
    names = [w.path for w in ec.weights]
    for part in ("fc3", "fc4", "fc5", "threshold", "L_A", "L_B"):
        assert not any(part in n for n in names), (part, names)
    assert ec.count_params() < model.count_params()
    images = batch[0]
    np.testing.assert_allclose(ec.predict(images, verbose=0), model.predict(images, verbose=0)["expression"],
                               rtol=0, atol=1e-6)


def test_transfer_weights_from_softmax_basic7_to_2bnm_ckplus7(batch):
    import keras

    from fer_tf.data.labels import BASIC7, CKPLUS7
    from fer_tf.model.network import transfer_weights

    keras.utils.set_random_seed(2)
    source = tiny_model("softmax", labels=BASIC7)
    target = tiny_model("2B(N+M)", labels=CKPLUS7)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in target.layers}
    old_kernel, old_bias = target.get_layer("expression").get_weights()
    copied = transfer_weights(source, target)
    assert {"tiny_conv", "tiny_bn", "tiny_prelu", "fc1", "fc1_prelu", "fc2", "fc2_prelu", "expression"} <= set(copied)
    assert not {"fc3", "fc4_connecting", "fc5_embedding"} & set(copied)
    for name in ("fc1", "fc2"):
        for x, y in zip(source.get_layer(name).get_weights(), target.get_layer(name).get_weights()):
            np.testing.assert_array_equal(x, y)
    src_backbone, dst_backbone = source.get_layer("backbone"), target.get_layer("backbone")
    for x, y in zip(src_backbone.get_weights(), dst_backbone.get_weights()):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(before["fc3"], target.get_layer("fc3").get_weights()):
        np.testing.assert_array_equal(x, y)  # not in the source: untouched
    src_kernel, src_bias = source.get_layer("expression").get_weights()
    kernel, bias = target.get_layer("expression").get_weights()
    for d, name in enumerate(CKPLUS7):
        if name in BASIC7:
            s = BASIC7.index(name)
            np.testing.assert_array_equal(kernel[:, d], src_kernel[:, s])
            assert bias[d] == src_bias[s]
        else:  # contempt: not in BASIC7, keeps its fresh initialisation
            np.testing.assert_array_equal(kernel[:, d], old_kernel[:, d])
            assert bias[d] == old_bias[d]
    assert sum(name in BASIC7 for name in CKPLUS7) == 6


@pytest.mark.parametrize("path", ["saved_models/fer_tf_basic7.keras", "pretrained/fer2013_backbone.keras"])
def test_committed_keras_files_still_load(path):
    """The shipped model and the published backbone were saved before the blocks moved to
    fer_tf.model.blocks and before ModelConfig named the loss's parts: their registered names load,
    and the backbone (a JointModel) reads its config with the paper's parts."""
    from fer_tf.model.saving import load_model

    model = load_model(REPO / path, check=False)
    outputs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    assert [o.shape[-1] for o in outputs][-1] == 7
    if type(model).__name__ == "JointModel":
        assert model.variant == "softmax" and model.metric_loss is None
        config = model.config
        assert (config.miner, config.distance, config.reducer) == (
            "OnlinePositiveMiner", "SquaredEuclidean", "MeanOverValid")


@pytest.mark.parametrize("variant, overrides", [
    ("2B(N+M)", dict(miner="KeepAllPositives")),
    ("1B(N+M)", dict(miner="KeepAllPositives", adaptive=False, distance="fer_tf_tests>HalvedSquaredEuclidean")),
    ("2B(N+1)", dict(distance="fer_tf_tests>HalvedSquaredEuclidean")),
], ids=["adaptive", "fixed", "n_plus_one"])
def test_swapped_parts_survive_save_and_load(variant, overrides, batch, tmp_path):
    """ModelConfig's miner/distance/reducer build the loss and are saved with the model: after
    model.save and keras.saving.load_model the loss has the same parts and gives the same value."""
    import keras

    from fer_tf.metric import distances, mining

    @keras.saving.register_keras_serializable(package="fer_tf_tests")
    class HalvedSquaredEuclidean(distances.SquaredEuclidean):
        def __call__(self, a, b):
            return 0.5 * super().__call__(a, b)

    keras.utils.set_random_seed(3)
    model = tiny_model(variant, labels=LABELS, **overrides)
    default = tiny_model(variant, labels=LABELS)
    loss = model.metric_loss
    if "miner" in overrides:
        assert isinstance(loss.miner, mining.KeepAllPositives)
        assert isinstance(default.metric_loss.miner, mining.OnlinePositiveMiner)
    if "distance" in overrides:
        assert isinstance(loss.distance, HalvedSquaredEuclidean)
    model.save(tmp_path / "swapped.keras")
    loaded = keras.saving.load_model(tmp_path / "swapped.keras")
    def loss_config(m):  # Keras numbers the names of losses built in one process
        return {k: v for k, v in m.metric_loss.get_config().items() if k != "name"}

    assert loss_config(loaded) == loss_config(model) != loss_config(default)
    assert type(loaded.metric_loss.miner if "miner" in overrides else loaded.metric_loss.distance) is type(
        loss.miner if "miner" in overrides else loss.distance)
    images, targets = batch
    values = [m.compute_loss(y=targets, y_pred=m(images, training=False), training=False)
              for m in (model, loaded)]
    np.testing.assert_allclose(float(values[0]), float(values[1]), rtol=1e-6)


def test_unknown_part_names_are_refused_with_the_choices():
    from fer_tf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model option miner: unknown PositiveMiner 'Hardest'.*KeepAllPositives"):
        tiny_model("2B(N+M)", labels=LABELS, miner="Hardest")
    with pytest.raises(ConfigError, match=r"model option distance: unknown Distance 'Cosine'.*SquaredEuclidean"):
        tiny_model("2B(N+1)", labels=LABELS, distance="Cosine")
    with pytest.raises(ConfigError, match="reducer must be the name"):
        tiny_model("2B(N+1)", labels=LABELS, reducer=None)

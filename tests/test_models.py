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
    from fer_tf.data.feeders import identity_aware_dataset

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

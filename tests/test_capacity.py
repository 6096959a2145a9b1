"""The capacity options (``ModelConfig.width``, ``extra_blocks``; not in the paper): off by default
they build the paper's network, on they build what they say, save and load, and refuse bad values."""

import numpy as np
import pytest

from fer_tf.config import ModelConfig, TrainConfig
from fer_tf.errors import ConfigError

LABELS = ("anger", "happiness", "surprise")


def _conv_filters(model):
    import keras

    return {layer.name: layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


def test_defaults_build_the_papers_backbone():
    from fer_tf.model.network import build_backbone

    base = build_backbone()
    assert base.count_params() == build_backbone(width=1.0, extra_blocks=0).count_params()
    filters = _conv_filters(base)
    assert filters["conv1_conv"] == 64 and filters["conv2b_conv"] == 192
    assert filters["inception4a_3x3_conv"] == 208
    assert not any(name.startswith("inception4b") for name in filters)
    assert base.output.shape[-1] == 512


def test_width_multiplies_every_convolution_in_multiples_of_eight():
    from fer_tf.model.network import build_backbone

    base, wide = _conv_filters(build_backbone()), _conv_filters(build_backbone(width=1.25))
    assert base.keys() == wide.keys()
    for name, filters in base.items():
        assert wide[name] % 8 == 0
        assert abs(wide[name] - 1.25 * filters) <= 4, name


@pytest.mark.parametrize("extra", [1, 2, 3, 4])
def test_extra_blocks_append_googlenets_4b_to_4e_after_4a(extra):
    import keras

    from fer_tf.model.network import EXTRA_BLOCKS, build_backbone

    model = build_backbone(extra_blocks=extra)
    names = [layer.name for layer in model.layers if layer.name.endswith("_concat")]
    assert names == ["inception3a_concat", "inception3b_concat", "inception4a_concat"] + [
        f"{name}_concat" for name, _ in EXTRA_BLOCKS[:extra]]
    last = EXTRA_BLOCKS[extra - 1][1]
    assert model.output.shape[-1] == last[0] + last[2] + last[4] + last[5]
    # the extra blocks run on the 3x3 maps of inception 4a
    concat = model.get_layer(f"{EXTRA_BLOCKS[extra - 1][0]}_concat")
    assert tuple(concat.output.shape[1:3]) == (3, 3)
    assert isinstance(model.get_layer("gap"), keras.layers.GlobalAveragePooling2D)


@pytest.mark.parametrize("values", [{"extra_blocks": 5}, {"extra_blocks": -1}, {"width": 0.1},
                                    {"width": 8}])
def test_out_of_range_values_are_refused_with_the_range(values):
    from fer_tf.model.network import build_model

    with pytest.raises(ConfigError, match="use"):
        build_model("softmax", labels=LABELS, **values)


def test_a_larger_network_saves_loads_and_predicts_the_same(tmp_path):
    import keras

    import fer_tf  # noqa: F401  (registers the classes for loading)
    from fer_tf.model.network import build_model

    model = build_model("2B(N+M)", labels=LABELS, width=0.5, extra_blocks=2)
    faces = np.random.default_rng(0).normal(size=(4, 48, 48, 1)).astype("float32")
    before = model.predict(faces, verbose=0)
    path = tmp_path / "wide.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.config.width, loaded.config.extra_blocks) == (0.5, 2)
    assert loaded.count_params() == model.count_params()
    after = loaded.predict(faces, verbose=0)
    np.testing.assert_allclose(after["expression"], before["expression"], atol=1e-6)


def test_capacity_options_enter_the_protocol_digest_only_off_their_defaults():
    from fer_tf.research import crossval

    data = {"format": "ckplus48", "folds": 8}
    base = crossval.protocol_digest(ModelConfig(), TrainConfig(), "abc", data)
    assert base == crossval.protocol_digest(ModelConfig(width=1.0, extra_blocks=0), TrainConfig(), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(extra_blocks=3), TrainConfig(), "abc", data)
    assert base != crossval.protocol_digest(ModelConfig(width=1.25), TrainConfig(), "abc", data)


def test_a_starting_network_of_other_capacity_is_refused_or_followed():
    """Fine-tuning from a network of another width or depth would copy almost nothing and silently
    train from scratch: transfer_weights refuses and names the options; fer-tf train builds its
    network like the one it starts from."""
    from fer_tf.config import ModelConfig
    from fer_tf.data.labels import BASIC7
    from fer_tf.errors import ConfigError
    from fer_tf.model import network
    from fer_tf.research.own_data import with_start_capacity

    narrow = network.build_model("softmax", labels=BASIC7, width=0.5)
    with pytest.raises(ConfigError, match=r"width 0\.5 there, 1\.0 here.*model\.width=0\.5"):
        network.transfer_weights(narrow, network.build_model("2B(N+M)", labels=BASIC7))
    config = with_start_capacity(ModelConfig(labels=BASIC7), narrow)
    assert (config.width, config.extra_blocks) == (0.5, 0)
    assert with_start_capacity(config, None) is config
    target = network.build_model("2B(N+M)", labels=BASIC7, width=config.width, extra_blocks=config.extra_blocks)
    copied = network.transfer_weights(narrow, target)
    assert len(copied) == sum(1 for layer in network._all_layers(narrow) if layer.weights)

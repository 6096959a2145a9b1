"""The network of Section 4 (Fig. 4) and its five variants.

- :func:`build_backbone`: the convolutional groups of the inception FER network (Mollahosseini et
  al., WACV 2016) with per-channel PReLU, 48x48x1 -> a feature vector.
- :class:`JointModel`: backbone + expression-classification (EC) branch (FC1, FC2, softmax) and, for
  the two-branch variants, the metric-learning (ML) branch (FC3, the connecting layer
  FC4 = P1^T FC2 + P2^T FC3, FC5 = the embedding). Its ``compute_loss`` is the joint loss:
  softmax cross-entropy on the query images plus ``alpha`` times the metric loss, so every variant
  trains with plain ``model.fit`` on the identity-aware ``tf.data`` pipelines.
- ``model.ec_model()``: the inference-only network (image -> class probabilities through the EC
  branch, no ML weights).

Variants: ``softmax`` (EC only), ``1B(N+1)`` / ``1B(N+M)`` (metric loss on the EC branch's FC2),
``2B(N+1)`` / ``2B(N+M)`` (metric loss on the ML branch's FC5).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from fer_tf.errors import ConfigError
from fer_tf.metric import distances, mining, reducers
from fer_tf.metric import losses as fer_losses
from fer_tf.config import CAPACITY_OPTIONS, ModelConfig, to_dict
from fer_tf.metric.layers import AdaptiveThreshold, ConnectingLayer
from fer_tf.model.blocks import conv_prelu, inception_block

PACKAGE = "fer_tf"


#: The inception blocks of the paper's network: (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool
#: projection), GoogLeNet's sizes (Szegedy et al. 2015, Table 1).
BLOCKS = {"inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
          "inception4a": (192, 96, 208, 16, 48, 64)}
#: Blocks the ``extra_blocks`` option appends after inception 4a, at the same 3x3 resolution and
#: in this order (GoogLeNet's 4b to 4e). Not in the paper.
EXTRA_BLOCKS = (("inception4b", (160, 112, 224, 24, 64, 64)),
                ("inception4c", (128, 128, 256, 24, 64, 64)),
                ("inception4d", (112, 144, 288, 32, 64, 64)),
                ("inception4e", (256, 160, 320, 32, 128, 128)))


def build_backbone(input_size=48, batch_norm=True, name="backbone", width=1.0, extra_blocks=0):
    """Convolutional groups: conv 7x7/2, pool, conv 1x1, conv 3x3, pool, inception 3a, 3b, pool,
    inception 4a, global average pool. 48x48 input -> 512 features (about 50 MMAC per image).

    Two named deviations, off by default (``ModelConfig.width`` / ``extra_blocks``): ``width``
    multiplies every convolution's filter count (rounded to a multiple of 8), and ``extra_blocks``
    (0-4) appends GoogLeNet's inception 4b, 4c, 4d, 4e after 4a (3x3 maps: few multiply-accumulates
    per parameter)."""
    if not 0 <= int(extra_blocks) <= len(EXTRA_BLOCKS):
        raise ConfigError(f"model option extra_blocks={extra_blocks}: use 0 to {len(EXTRA_BLOCKS)}")
    if not 0.25 <= float(width) <= 4.0:
        raise ConfigError(f"model option width={width}: use a multiplier between 0.25 and 4")

    def w(filters):
        return filters if width == 1.0 else max(8, int(round(filters * width / 8.0)) * 8)

    def block(x, block_name, sizes):
        return inception_block(x, *(w(f) for f in sizes), batch_norm, name=block_name)

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = conv_prelu(inputs, w(64), 7, strides=2, batch_norm=batch_norm, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = conv_prelu(x, w(64), 1, batch_norm=batch_norm, name="conv2a")
    x = conv_prelu(x, w(192), 3, batch_norm=batch_norm, name="conv2b")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = block(x, "inception3a", BLOCKS["inception3a"])
    x = block(x, "inception3b", BLOCKS["inception3b"])
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    x = block(x, "inception4a", BLOCKS["inception4a"])
    for block_name, sizes in EXTRA_BLOCKS[:int(extra_blocks)]:
        x = block(x, block_name, sizes)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, x, name=name)


def _dense_prelu(x, units, name):
    x = layers.Dense(units, name=name)(x)
    return layers.PReLU(name=f"{name}_prelu")(x)


def _metric_loss(config: ModelConfig, threshold):
    """The variant's metric loss with the parts ``config`` names (None for softmax)."""
    if config.variant == "softmax":
        return None
    m = config.num_positives
    distance = _part("distance", config.distance, distances.get)
    parts = dict(distance=distance, reducer=_part("reducer", config.reducer, reducers.get))
    if config.variant.endswith("(N+1)"):
        return fer_losses.NPlusOneTupleLoss(num_positives=m, margin=config.margin, **parts)
    parts["miner"] = _part("miner", config.miner, lambda name: mining.get(name, distance))
    if config.adaptive:
        return fer_losses.AdaptiveNMTupleClustersLoss(num_positives=m, threshold=threshold, **parts)
    return fer_losses.NMTupleClustersLoss(
        num_positives=m, reference_distance=config.reference_distance, margin=config.margin, **parts
    )


def _part(option, name, get):
    try:
        return get(name)
    except ConfigError as exc:
        raise ConfigError(f"model option {option}: {exc}") from None


def query_cross_entropy(labels, probabilities, label_smoothing=0.0, targets=None):
    """Mean cross-entropy over the query rows (``labels >= 0``; -1 marks non-queries), with
    targets ``(1 - s) * one_hot + s / C`` for label smoothing ``s``, or the given soft ``targets``
    ``[B, C]`` (e.g. :func:`fer_tf.training.distillation.soft_targets`; ``s`` is then not applied again).
    A row of ``targets`` with a negative entry (the fill of :func:`fer_tf.feeding.feed.join` for rows
    of a source without soft targets) keeps the smoothed one-hot target. 0.0 when no row is a query."""
    num_classes = probabilities.shape[-1]
    valid = ops.cast(labels >= 0, "float32")
    target = ops.one_hot(ops.maximum(labels, 0), num_classes, dtype="float32")
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    if targets is not None:
        given = ops.cast(targets, "float32")
        has = ops.cast(ops.min(given, axis=-1, keepdims=True) >= 0, "float32")
        target = has * given + (1.0 - has) * target
    p = ops.cast(probabilities, "float32")
    p = p / ops.sum(p, axis=-1, keepdims=True)
    per_row = -ops.sum(target * ops.log(ops.clip(p, 1e-7, 1.0 - 1e-7)), axis=-1)
    return ops.sum(per_row * valid) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class JointModel(keras.Model):
    """Backbone + EC branch (+ ML branch) with the paper's joint loss.

    Outputs a dict: ``expression`` [B, C] probabilities and ``embedding`` [B, d] (FC5 for 2B,
    FC2 for 1B and softmax), L2-normalised when ``config.l2_normalize``.

    Targets (see docs/architecture.md): ``{"expression": [B] int (-1 = not a query),
    "tuples": [B, M + N] int}``; ``tuples`` may be absent (softmax training). An optional
    ``"expression_target"`` [B, C] replaces the (smoothed) one-hot cross-entropy targets
    (distillation).
    """

    def __init__(self, backbone=None, config=None, **kwargs):
        if isinstance(config, dict):
            config = ModelConfig(**config)
        config = config or ModelConfig()
        backbone = backbone or build_backbone(config.input_size, config.batch_norm,
                                               width=config.width, extra_blocks=config.extra_blocks)
        two_branch = config.variant.startswith("2B")
        adaptive = config.variant == "2B(N+M)" or config.variant == "1B(N+M)"
        adaptive = adaptive and config.adaptive

        # === Layers ===
        self.backbone = backbone
        inputs = keras.Input((config.input_size, config.input_size, 1), name="face")
        features = backbone(inputs)
        fc1 = _dense_prelu(features, config.ec_units[0], "fc1")
        fc1 = layers.Dropout(config.dropout, name="fc1_dropout")(fc1)
        fc2 = _dense_prelu(fc1, config.ec_units[1], "fc2")
        fc2_dropped = layers.Dropout(config.dropout, name="fc2_dropout")(fc2)
        # float32 outputs even under a mixed-precision policy (the loss takes logs of them)
        probabilities = layers.Dense(len(config.labels), activation="softmax", name="expression",
                                     dtype="float32")(fc2_dropped)
        if two_branch:
            fc3 = _dense_prelu(features, config.ml_units, "fc3")
            fc4 = ConnectingLayer(config.connect_units, name="fc4_connecting")([fc2, fc3])
            fc4 = layers.PReLU(name="fc4_prelu")(fc4)
            embedding = layers.Dense(config.embedding_dim, name="fc5_embedding")(fc4)
        else:
            embedding = fc2
        if config.l2_normalize:
            embedding = layers.UnitNormalization(name="embedding", dtype="float32")(embedding)
        else:
            embedding = layers.Identity(name="embedding", dtype="float32")(embedding)
        outputs = {"expression": probabilities, "embedding": embedding}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Loss state ===
        self.config = config
        self.labels = tuple(config.labels)
        self.threshold = (
            AdaptiveThreshold(
                initial_threshold=config.threshold_init,
                initial_scale=config.threshold_scale,
                name="adaptive_threshold",
            )
            if adaptive
            else None
        )
        if self.threshold is not None:
            dim = config.embedding_dim if two_branch else config.ec_units[1]
            self.threshold.build((None, dim))
        self.metric_loss = _metric_loss(config, self.threshold)
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.metric_tracker = keras.metrics.Mean(name="metric_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def variant(self):
        return self.config.variant

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Joint loss: cross-entropy on the queries + alpha x metric loss (+ regularisers)."""
        labels = ops.cast(y["expression"], "int32")
        probabilities = y_pred["expression"]
        # Under a tf.distribute strategy Keras' losses come back divided by the replica count (so
        # that summed gradients average); the cross-entropy is divided the same way, and the
        # logged components are scaled back.
        replicas = float(reducers.replicas_in_sync())
        ce = query_cross_entropy(labels, probabilities, self.config.label_smoothing,
                                 targets=y.get("expression_target")) / replicas
        total = ce
        self.ce_tracker.update_state(ce * replicas)
        if self.metric_loss is not None and "tuples" in y:
            metric = self.metric_loss(ops.cast(y["tuples"], "int32"), y_pred["embedding"])
            total = total + self.config.alpha * metric
            self.metric_tracker.update_state(metric * replicas)
        query = ops.cast(labels >= 0, "float32")
        self.accuracy_tracker.update_state(ops.maximum(labels, 0), probabilities, sample_weight=query)
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return total

    @property
    def metrics(self):
        base = [m for m in super().metrics if m is not None]
        own = [self.ce_tracker, self.accuracy_tracker]
        if self.metric_loss is not None:
            own.insert(1, self.metric_tracker)
        return base + own

    def ec_model(self, name="ec_model"):
        """The inference-only network: face [B, 48, 48, 1] -> probabilities through the EC branch."""
        return keras.Model(self.input, self.get_layer("expression").output, name=name)

    def feature_model(self, name="ec_features"):
        """Face -> the EC branch's FC2 features (for identity probes and embeddings plots)."""
        return keras.Model(self.input, self.get_layer("fc2_prelu").output, name=name)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "config": to_dict(self.config),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_model(variant="2B(N+M)", labels=None, **overrides) -> JointModel:
    """Build one of the five variants: ``softmax``, ``1B(N+1)``, ``2B(N+1)``, ``1B(N+M)``, ``2B(N+M)``.

    ``labels`` is the class order (canonical names); other keyword arguments override
    :class:`fer_tf.config.ModelConfig` fields.
    """
    values = dict(overrides, variant=variant)
    if labels is not None:
        values["labels"] = tuple(labels)
    return JointModel(config=ModelConfig(**values), name=f"fer_tf_{_slug(variant)}")


def _slug(variant):
    return variant.lower().replace("(", "_").replace(")", "").replace("+", "p")


def capacity_of(model):
    """``{"width", "extra_blocks"}`` of a :class:`JointModel` (``None`` for other models)."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        return None
    return {name: getattr(config, name) for name in CAPACITY_OPTIONS}


def transfer_weights(source: keras.Model, target: keras.Model) -> list:
    """Copy weights layer by layer (matched by name and shape) from a pretrained model.

    The classifier is matched class by class when the label sets differ (e.g. FER2013's seven
    basic expressions -> CK+'s seven, which share six): rows for shared classes are copied, new
    classes keep their fresh initialisation. Returns the names of the layers that were copied.
    A source of other capacity options (:data:`CAPACITY_OPTIONS`) is refused with a
    :class:`ConfigError`: most of its layers would not fit, and the target would silently train
    from scratch.
    """
    ours, theirs = capacity_of(target), capacity_of(source)
    if ours is not None and theirs is not None and ours != theirs:
        differ = [f"{k} {theirs[k]} there, {ours[k]} here" for k in CAPACITY_OPTIONS if ours[k] != theirs[k]]
        setting = ", ".join(f"model.{k}={theirs[k]}" for k in CAPACITY_OPTIONS if ours[k] != theirs[k])
        raise ConfigError(
            f"the starting network has another architecture ({'; '.join(differ)}); build the same "
            f"one: set {setting} (a pipeline's --set, or under model: in a config file)")
    copied = []
    source_layers = {layer.name: layer for layer in _all_layers(source)}
    for layer in _all_layers(target):
        other = source_layers.get(layer.name)
        if other is None or not layer.weights:
            continue
        if layer.name == "expression":
            if _copy_classifier(other, layer, getattr(source, "labels", ()), getattr(target, "labels", ())):
                copied.append(layer.name)
            continue
        src, dst = other.get_weights(), layer.get_weights()
        if len(src) == len(dst) and all(a.shape == b.shape for a, b in zip(src, dst)):
            layer.set_weights(src)
            copied.append(layer.name)
    return copied


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def _copy_classifier(src_layer, dst_layer, src_labels, dst_labels):
    (src_kernel, src_bias), (kernel, bias) = src_layer.get_weights(), dst_layer.get_weights()
    if src_kernel.shape[0] != kernel.shape[0]:
        return False
    shared = [(src_labels.index(name), i) for i, name in enumerate(dst_labels) if name in src_labels]
    if not shared:
        return False
    for s, d in shared:
        kernel[:, d], bias[d] = src_kernel[:, s], src_bias[s]
    dst_layer.set_weights([kernel, bias])
    return True

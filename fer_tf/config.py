"""Configuration as plain dataclasses, with the paper's values as defaults, readable from YAML.

YAML files in ``configs/`` override fields by name; unknown keys are an error that names the key,
so a typo never silently falls back to a default. Loading uses ``yaml.safe_load`` (no code runs).
"""

from __future__ import annotations

import dataclasses
import pathlib

import yaml

from fer_tf.errors import ConfigError

VARIANTS = ("softmax", "1B(N+1)", "2B(N+1)", "1B(N+M)", "2B(N+M)")


def variant_slug(variant):
    """A file-name form of a variant name: ``2B(N+M)`` -> ``2b_npm``."""
    return variant.lower().replace("(", "_").replace(")", "").replace("+", "p")


#: The model options that change the backbone's layers and so its work per face (not in the
#: paper, off by default): :class:`ModelConfig` ``width`` and ``extra_blocks``.
CAPACITY_OPTIONS = ("width", "extra_blocks")

#: ``TrainConfig.mixing``: the mixing augmentations of :mod:`fer_tf.feeding.mixing`.
MIXING_KINDS = ("none", "mixup", "cutmix")


def check_mixing(kind, alpha, probability):
    """Raise :class:`ConfigError` unless ``kind``, ``alpha`` and ``probability`` make a valid mixing."""
    if kind not in MIXING_KINDS:
        raise ConfigError(f"unknown mixing {kind!r}; use one of {', '.join(MIXING_KINDS)}")
    if not alpha > 0.0:
        raise ConfigError(f"mixing_alpha must be > 0, got {alpha}")
    if not 0.0 <= probability <= 1.0:
        raise ConfigError(f"mixing_probability must be in [0, 1], got {probability}")


@dataclasses.dataclass
class ModelConfig:
    """Network shape (Section 4, Fig. 4) and the metric loss of each variant."""

    variant: str = "2B(N+M)"
    labels: tuple = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
    input_size: int = 48
    batch_norm: bool = True  # not in the paper: lets short CPU schedules converge; folded at export
    # Capacity (not in the paper; fer_tf.model.network.build_backbone): a multiplier of every
    # convolution's filters, and 0-4 extra inception blocks (GoogLeNet's 4b-4e) after 4a.
    width: float = 1.0
    extra_blocks: int = 0
    # FC sizes: the paper does not fix them; these keep the shipped .keras + .tflite under 10 MB.
    ec_units: tuple = (512, 256)  # FC1, FC2 of the expression-classification branch
    ml_units: int = 256  # FC3, the metric branch's first layer
    connect_units: int = 256  # FC4, the connecting layer (Eq. 13)
    embedding_dim: int = 128  # FC5, the metric embedding
    dropout: float = 0.5
    l2_normalize: bool = True  # metric loss on unit-length embeddings, so T lives in [0, 4]
    num_positives: int = 6  # M
    num_negatives: int = 6  # N
    reference_distance: float = 1.0  # T of the fixed-threshold (N+M) loss
    margin: float = 0.5  # tau of the fixed-threshold (N+M) loss (Eq. 3) and of the (N+1) loss (Eq. 1)
    adaptive: bool = True  # (N+M) with the learned threshold (Eq. 10); False: fixed T (Eq. 3)
    threshold_init: float = 2.0  # b of AdaptiveThreshold at step 0
    threshold_scale: float = 2.0  # L_A = L_B = scale * I at step 0
    alpha: float = 1.0  # weight of the metric loss in the joint loss
    # The metric loss's swappable parts (fer_tf.metric), by registered class name, saved with the
    # model; the defaults are the paper's. miner: "OnlinePositiveMiner" (Algorithm 1) or
    # "KeepAllPositives" (mining off; the (N+M) losses only); distance: "SquaredEuclidean" (D, for
    # the miner and the fixed-threshold and (N+1) losses); reducer: "MeanOverValid". A class of your
    # own registered with keras.saving.register_keras_serializable(package="fer_tf") works too.
    miner: str = "OnlinePositiveMiner"
    distance: str = "SquaredEuclidean"
    reducer: str = "MeanOverValid"
    label_smoothing: float = 0.0  # not in the paper: smoothed targets for the cross-entropy term

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        self.labels = tuple(self.labels)
        self.ec_units = tuple(self.ec_units)
        for option in ("miner", "distance", "reducer"):
            if not isinstance(getattr(self, option), str) or not getattr(self, option):
                raise ConfigError(f"model option {option} must be the name of a registered class, "
                                  f"got {getattr(self, option)!r}")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation (Section 5.2). Defaults are the fine-tuning stage: Adam, M = N = 6."""

    optimizer: str = "adam"  # "adam", "adamw" (decoupled weight decay) or "sgd"
    learning_rate: float = 1e-4
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 1e-4  # decoupled (SGD, AdamW); plain Adam has none
    # "halve_reload": the paper's schedule (halve the LR and reload the best weights, below);
    # "cosine": linear warm-up for warmup_epochs, then cosine decay to 0 at the last epoch.
    schedule: str = "halve_reload"
    warmup_epochs: float = 0.0
    batch_size: int = 128  # images per step in classification mode
    queries_per_batch: int = 64  # in_batch mode; 12 in tuple mode
    # Joint training (the shipped model): images of a classification set (FER2013) appended to
    # every identity-aware batch; they count in the cross-entropy, not in the metric loss.
    classification_per_batch: int = 0
    mode: str = "in_batch"  # "in_batch" or "tuple"
    epochs: int = 30
    steps_per_epoch: int | None = None
    loss_rise: float = 0.25  # halve the LR and reload the best weights when the loss rises > 25%
    patience: int = 10  # ... or when validation accuracy has not improved for this many epochs
    min_learning_rate: float = 1e-6
    seed: int = 0
    # Augmentation (fer_tf.feeding.augment): the paper's random 48x48 crop of the 60x60 face and flip,
    # plus (not in the paper) rotation in degrees, zoom +-scale, extra shift in pixels and the
    # probability of random erasing.
    flip: bool = True
    rotation: float = 0.0
    scale: float = 0.0
    translation: float = 0.0
    random_erasing: float = 0.0
    mixed_precision: bool = False  # train under keras' "mixed_bfloat16" policy (weights stay float32)
    # Stop after the epoch in which this many minutes of training have passed (None: no limit);
    # the run then ends as if that epoch had been the last one (best weights, report).
    time_limit_minutes: float | None = None
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always written)
    # Fine-tuning (not in the paper): batch norm of the pretrained backbone in inference mode with
    # its FER2013 statistics, and a learning rate for the backbone's weights that is this fraction
    # of the rest's (1.0: one learning rate, as in the paper).
    freeze_batch_norm: bool = False
    backbone_lr_scale: float = 1.0
    # Model selection in cross-validation: this fraction of the training subjects is held out as
    # an inner validation split and the epoch with the best accuracy on it is evaluated on the test
    # fold (0: no inner split; the epoch with the lowest training loss is evaluated).
    inner_validation: float = 0.0
    # Which epoch's weights training ends with: "best" (the best validation accuracy or, without
    # validation, the lowest training loss; the paper's schedule relies on it) or "last" (a fixed
    # epoch count, e.g. one chosen on an inner split beforehand, then trained on every subject).
    select_epoch: str = "best"
    # Distillation (not in the paper; fer_tf.training.distillation): a ``.keras`` teacher network, e.g. the
    # published backbone ("born-again" training). Each training face's target becomes
    # (1 - distill_weight) x its (smoothed) one-hot label + distill_weight x the teacher's
    # flip-averaged probabilities on its centre crop at distill_temperature (>1 softens them).
    # Several networks (a list, or paths separated by commas) make an ensemble teacher: their
    # probabilities are averaged.
    distill_from: str | list | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    # Weight averaging (not in the paper; SWA, Izmailov et al., UAI 2018): the last swa_epochs
    # epochs train at the constant rate swa_learning_rate (the cosine schedule then covers the
    # epochs before them), and the run ends with the mean of the weights at the end of each of
    # those epochs, its batch-norm statistics recomputed on the training batches. 0: off.
    swa_epochs: int = 0
    swa_learning_rate: float = 0.01
    # Start from the weights of this .keras network of the same shape (e.g. a finished run, so
    # that swa_epochs = epochs adds a weight-averaged tail to it) instead of random ones.
    init_from: str | None = None
    # Mixing augmentation (not in the paper; fer_tf.feeding.mixing): "mixup" or "CutMix" of the
    # classification batches of FER2013 pretraining, lam ~ Beta(mixing_alpha, mixing_alpha), each
    # row mixed with probability mixing_probability. "none": off.
    mixing: str = "none"
    mixing_alpha: float = 1.0
    mixing_probability: float = 1.0

    def __post_init__(self):
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use 'adam', 'adamw' or 'sgd'")
        if self.schedule not in ("halve_reload", "cosine"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; use 'halve_reload' or 'cosine'")
        if not 0.0 <= self.inner_validation < 0.5:
            raise ConfigError(f"inner_validation must be a fraction in [0, 0.5), got {self.inner_validation}")
        if self.select_epoch not in ("best", "last"):
            raise ConfigError(f"unknown select_epoch {self.select_epoch!r}; use 'best' or 'last'")
        if not 0.0 <= self.backbone_lr_scale <= 1.0:
            raise ConfigError(f"backbone_lr_scale must be in [0, 1], got {self.backbone_lr_scale}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ConfigError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if not self.distill_temperature > 0.0:
            raise ConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0 <= self.swa_epochs <= self.epochs:
            raise ConfigError(f"swa_epochs must be in [0, epochs = {self.epochs}], got {self.swa_epochs}")
        if self.swa_epochs and self.schedule != "cosine":
            raise ConfigError("swa_epochs needs schedule: cosine (halve_reload reloads earlier weights, "
                              "which would undo the averaging)")
        if self.swa_epochs and not self.swa_learning_rate > 0.0:
            raise ConfigError(f"swa_learning_rate must be > 0, got {self.swa_learning_rate}")
        check_mixing(self.mixing, self.mixing_alpha, self.mixing_probability)

    def refuse_mixing(self, where):
        """Raise :class:`ConfigError` when mixing is on: ``where`` trains on batches it cannot mix."""
        if self.mixing != "none":
            raise ConfigError(f"mixing: {self.mixing} applies to classification batches only (FER2013 "
                              f"pretraining, `make pretrain`); {where} trains on identity-aware "
                              "batches, whose tuples need unmixed faces: set train.mixing to none")


def _build(cls, values, where):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys are {', '.join(sorted(names))}"
        )
    return cls(**values)


def load_yaml(path):
    """Read a YAML config file into a dict (safe loader)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def model_config(values=None, where="config", **overrides):
    return _build(ModelConfig, {**(values or {}), **overrides}, where)


def train_config(values=None, where="config", **overrides):
    return _build(TrainConfig, {**(values or {}), **overrides}, where)


def to_dict(config):
    return dataclasses.asdict(config)


def defaults(config_class):
    """``{option: default}`` of a config dataclass (options without a default left out)."""
    return {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}

"""Training: optimisers, the paper's learning-rate schedule, atomic checkpoints and resume, a NaN guard.

:func:`fit` wraps ``model.fit`` so that a run survives being killed at any moment.

Checkpoints
    After every epoch one file, ``<workdir>/last.keras``, is written to a temporary name and
    renamed into place (``os.replace``, atomic on POSIX). It holds the model, its optimizer state
    (Keras 3 stores the optimizer variables, the iteration count and the learning rate in
    ``.keras`` files) and, as two extra zip members, the run state (``fer_tf_state.json``: epoch,
    history, schedule state, learning rate, seed) and the schedule's best weights
    (``fer_tf_best_weights.npz``). One file is the single commit point, so the model, the state and
    the best weights can never disagree after a kill. ``state.json`` beside it is a human-readable
    copy (older checkpoints without the embedded state are still read through it).
    An interrupt (Ctrl-C or SIGTERM) additionally saves the mid-epoch model as
    ``interrupted.keras`` for inspection; resuming always restarts from the last completed epoch.

Exact resume
    Epoch ``e`` of :func:`fit` is, by contract, the first ``steps_per_epoch`` batches of
    ``make_train_dataset(e)``: :func:`fit` runs ``model.fit`` one epoch at a time on a fresh
    ``make_train_dataset(e)``, so epochs stay aligned with the sampler's epochs even when
    ``steps_per_epoch`` differs from the sampler's own epoch length. At the start of every epoch
    the global seeds (Python, NumPy, TF, Keras) and the state of every ``SeedGenerator`` in the
    model (dropout) are set from ``(seed, epoch)``: Keras does not save seed-generator states in
    ``.keras`` files, so this is what makes dropout after a resume draw the same masks. The
    samplers derive their batches and crop/flip seeds from ``(seed, epoch, step)``. Hence
    a resumed run reproduces the uninterrupted run (bit for bit on one CPU with op determinism).

Determinism
    :func:`set_seed` calls ``tf.config.experimental.enable_op_determinism()``. The ``tf.data``
    pipelines of :mod:`fer_tf.data.sampling` keep working under it (their random crops use stateless
    seeds, and parallel maps are then run in deterministic order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import pathlib
import signal
import sys
import threading
import time
import zipfile

import keras
import numpy as np

from fer_tf import locking
from fer_tf.model import saving
from fer_tf.training import optimizers
from fer_tf.training.averaging import WeightAverage, recompute_batch_norm
from fer_tf.config import TrainConfig
from fer_tf.errors import TrainingError
from fer_tf.files import atomic_write_text, remove_stale_temporaries
from fer_tf.training.schedules import WarmupCosine
from fer_tf.training.timing import TIMING_KEYS, EpochTimer

CHECKPOINT = "last.keras"
INTERRUPTED = "interrupted.keras"
BEST_WEIGHTS = "best.weights.h5"  # written by older versions; still read on resume
STATE = "state.json"
EMBEDDED_STATE = "fer_tf_state.json"
EMBEDDED_BEST = "fer_tf_best_weights.npz"
EMBEDDED_AVERAGE = "fer_tf_weight_average.npz"
STATE_VERSION = 2


def set_seed(seed, deterministic=True):
    """Seed Python, NumPy, TensorFlow and Keras; make TF ops deterministic where available."""
    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only under the TensorFlow backend

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # pragma: no cover - older TF
            pass


def epoch_seed(seed, epoch, *keys):
    """A 31-bit seed derived from ``(seed, epoch, *keys)`` (no collisions between epochs)."""
    state = np.random.SeedSequence([int(seed), int(epoch), *(int(k) for k in keys)]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def seed_generators(model):
    """Every ``keras.random.SeedGenerator`` of ``model`` (dropout layers), in a stable order."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for sg in getattr(layer, "_seed_generators", ()):
            if id(sg) not in seen:
                seen.add(id(sg))
                found.append(sg)
    return found


def reset_random_state(model, seed, epoch):
    """Set global seeds and the model's seed-generator states from ``(seed, epoch)``."""
    keras.utils.set_random_seed(epoch_seed(seed, epoch))
    for i, sg in enumerate(seed_generators(model)):
        value = np.array([epoch_seed(seed, epoch, i + 1), 0])
        sg.state.assign(value.astype(keras.backend.standardize_dtype(sg.state.dtype)))


def learning_rate_for(config: TrainConfig, steps_per_epoch=None):
    """The optimizer's learning rate: a float (halve-and-reload adjusts it) or a :class:`WarmupCosine`."""
    if config.schedule == "cosine":
        if not steps_per_epoch:
            raise TrainingError("the cosine schedule needs steps_per_epoch to know where it ends")
        return WarmupCosine(config.learning_rate,
                            total_steps=(config.epochs - config.swa_epochs) * int(steps_per_epoch),
                            warmup_steps=round(config.warmup_epochs * int(steps_per_epoch)),
                            tail_rate=config.swa_learning_rate if config.swa_epochs else None)
    return config.learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch=None, backbone_paths=()):
    """SGD (momentum, optional Nesterov), Adam or AdamW with decoupled weight decay (Adam: none).

    With ``config.backbone_lr_scale`` below 1, the variables named in ``backbone_paths`` learn at
    that fraction of the learning rate (:mod:`fer_tf.training.optimizers`)."""
    if config.optimizer not in ("adam", "adamw", "sgd"):
        raise TrainingError(f"unknown optimizer {config.optimizer!r}; use 'adam', 'adamw' or 'sgd'")
    kwargs = {"learning_rate": learning_rate_for(config, steps_per_epoch)}
    if config.optimizer == "sgd":
        kwargs.update(momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay or None)
    elif config.optimizer == "adam":
        kwargs.update(weight_decay=None)
    else:
        kwargs.update(weight_decay=config.weight_decay)
    scaled = config.backbone_lr_scale != 1.0 and len(backbone_paths) > 0
    if scaled:
        kwargs.update(scaled_paths=tuple(backbone_paths), lr_scale=config.backbone_lr_scale)
    return optimizers.optimizer_class(config.optimizer, scaled)(**kwargs)


def freeze_batch_norm(model):
    """Put every batch-norm layer of ``model`` in inference mode (its moving statistics, gamma and
    beta stay as they are); returns how many. Saved with the model (``trainable`` is in its config)."""
    frozen = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def backbone_variable_paths(model):
    """Paths of the trainable variables of ``model.backbone`` (empty for models without one)."""
    backbone = getattr(model, "backbone", None)
    return tuple(v.path for v in backbone.trainable_variables) if backbone is not None else ()


# ----------------------------------------------------------------------------------------------
# Checkpoint contents (written atomically by fer_tf.model.saving.save_model, fer_tf.files)
# ----------------------------------------------------------------------------------------------


def _weights_to_bytes(weights):
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    return buffer.getvalue()


def _weights_from_bytes(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


# ----------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------


class HalveAndReload(keras.callbacks.Callback):
    """Section 5.2: halve the learning rate and reload the best weights when the training loss
    rises by more than ``loss_rise`` (25%) or validation accuracy has not improved for
    ``patience`` (10) epochs. Best = highest validation accuracy (lowest loss without validation).

    ``state`` (JSON-able) and ``best_weights`` are saved in every checkpoint and restored on resume.
    """

    def __init__(self, loss_rise=0.25, patience=10, min_learning_rate=1e-6, monitor="val_accuracy",
                 adjust=True, prefer_later=None):
        super().__init__()
        self.adjust = adjust  # False: only keep the best weights (another schedule sets the LR)
        # on a tie, keep the later epoch: the default when another schedule decays the LR, so
        # that a small validation set's ties go to the more settled weights
        self.prefer_later = (not adjust) if prefer_later is None else prefer_later
        self.loss_rise, self.patience = loss_rise, patience
        self.min_learning_rate, self.monitor = min_learning_rate, monitor
        self.state = {"best": None, "best_epoch": -1, "wait": 0, "previous_loss": None, "halvings": 0}
        self.best_weights = None

    def _score(self, logs):
        """Higher is better: the monitored accuracy, or minus a monitored loss (or the training
        loss when the monitored value is absent)."""
        if self.monitor in logs:
            value = float(logs[self.monitor])
            return -value if self.monitor.endswith("loss") else value
        return -float(logs.get("loss", math.inf))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        s = self.state
        score = self._score(logs)
        if s["best"] is None or score > s["best"] or (self.prefer_later and score == s["best"]):
            s.update(best=score, best_epoch=epoch, wait=0)
            self.best_weights = self.model.get_weights()
        else:
            s["wait"] += 1
        loss = float(logs.get("loss", math.nan))
        rose = s["previous_loss"] is not None and loss > s["previous_loss"] * (1 + self.loss_rise)
        stalled = s["wait"] >= self.patience
        s["previous_loss"] = loss
        lr = current_learning_rate(self.model)
        if self.adjust and (rose or stalled) and lr > self.min_learning_rate:
            self.model.optimizer.learning_rate = max(lr / 2, self.min_learning_rate)
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            s["wait"] = 0
            s["halvings"] += 1
            why = "training loss rose" if rose else f"no improvement for {self.patience} epochs"
            print(f"epoch {epoch + 1}: {why}; learning rate -> {lr / 2:.2e}, best weights reloaded",
                  file=sys.stderr)
        logs["learning_rate"] = current_learning_rate(self.model)


def current_learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class NanGuard(keras.callbacks.Callback):
    """Stop at the first NaN or Inf loss with a :class:`TrainingError` naming the epoch and step.

    Raised before the epoch ends, so no checkpoint of the broken state is written: the last good
    checkpoint (of the previous epoch) stays in ``checkpoint_dir``. Under TensorFlow every batch's
    loss is checked; under JAX, where reading a loss each step would stall the
    asynchronous dispatch to an accelerator, the epoch's mean loss is checked at its end (still
    before the checkpoint), unless ``every_batch=True``.
    """

    def __init__(self, checkpoint_dir=None, every_batch=None):
        super().__init__()
        self.epoch = 0
        self.checkpoint_dir = checkpoint_dir
        self.every_batch = keras.backend.backend() == "tensorflow" if every_batch is None else every_batch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every_batch:
            self._check((logs or {}).get("loss"), f"step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_batch:
            self._check((logs or {}).get("loss"), "its end")

    def _check(self, loss, where_in_epoch):
        if loss is None:
            return
        loss = float(keras.ops.convert_to_numpy(loss))
        if not np.isfinite(loss):
            self.model.stop_training = True
            if self.checkpoint_dir is not None:
                state = read_state(self.checkpoint_dir)
                where = (f"; the last good checkpoint (after epoch {state['epoch']}) is kept in "
                         f"{pathlib.Path(self.checkpoint_dir) / CHECKPOINT}" if state else
                         "; no epoch had completed, so there is no checkpoint")
            else:
                where = ""
            raise TrainingError(
                f"the training loss became {loss} at epoch {self.epoch + 1}, {where_in_epoch}{where}. "
                "Lower the learning rate or check the input data for broken images."
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """Write the model, the run state and the best weights atomically (one file) after every epoch."""

    def __init__(self, workdir, schedule: HalveAndReload, seed, history=None, extra_state=None,
                 every=1, last_epoch=None, average: WeightAverage | None = None):
        super().__init__()
        self.average = average
        self.every, self.last_epoch = max(int(every), 1), last_epoch
        self.workdir = pathlib.Path(workdir)
        self.schedule, self.seed = schedule, seed
        self.history = history if history is not None else []
        self.extra_state = dict(extra_state or {})

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(keras.ops.convert_to_numpy(v)) for k, v in (logs or {}).items()}
        row["epoch"] = epoch + 1
        self.history.append(row)
        if (epoch + 1) % self.every and epoch + 1 != self.last_epoch:
            return
        state = {"version": STATE_VERSION, "epoch": epoch + 1, "seed": self.seed,
                 "history": self.history, "schedule": self.schedule.state,
                 "learning_rate": current_learning_rate(self.model), "time": time.time(),
                 **self.extra_state}
        extra = {EMBEDDED_STATE: json.dumps(state)}
        if self.schedule.best_weights is not None:
            extra[EMBEDDED_BEST] = _weights_to_bytes(self.schedule.best_weights)
        if self.average is not None:
            extra[EMBEDDED_AVERAGE] = self.average.to_bytes()
        saving.save_model(self.model, self.workdir / CHECKPOINT, extra)  # the commit point
        atomic_write_text(self.workdir / STATE, json.dumps(state, indent=1))  # human-readable copy


# ----------------------------------------------------------------------------------------------
# The settings a checkpoint was written with (checked on resume)
# ----------------------------------------------------------------------------------------------

#: TrainConfig fields that only say how a run is carried out, not what it computes: a resumed run
#: may change them.
RESUMABLE_FIELDS = frozenset({"time_limit_minutes", "checkpoint_every"})


def run_settings(model, config: TrainConfig, steps_per_epoch, extra=None):
    """What a checkpoint must have been trained with for a resume to continue the same run: the
    training options (all but :data:`RESUMABLE_FIELDS`), the shapes of the network's weights (its
    architecture, widths and labels), the steps per epoch, and the caller's ``extra`` (JSON-able:
    e.g. the data it trains on). Stored in the run state as ``settings``."""
    train = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_FIELDS}
    settings = {"train": json.loads(json.dumps(train, default=str)),
                "weights": [list(map(int, w.shape)) for w in model.weights],
                "steps_per_epoch": int(steps_per_epoch)}
    if extra:
        settings["extra"] = json.loads(json.dumps(extra, default=str))
    return settings


def _differences(before, now, prefix=""):
    """``[(key, before, now)]`` for every leaf where two settings mappings differ."""
    found = []
    for key in sorted(set(before) | set(now), key=str):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found


class CheckpointMismatch(TrainingError):
    """A checkpoint was written with other settings than the run that would resume it."""


def check_resume_settings(workdir, state, settings, config: TrainConfig):
    """Refuse to resume the checkpoint in ``workdir`` when it was written with other settings than
    ``settings`` (:func:`run_settings`): a resume would silently continue another run. Under the
    paper's schedule without weight averaging, ``epochs`` may grow (train a finished run further).
    Checkpoints written before settings were stored are resumed with a note."""
    before = state.get("settings")
    if before is None:
        print(f"note: {workdir / CHECKPOINT} was written by an older fer_tf that did not store its "
              "settings, so they cannot be checked; resuming it as it is", file=sys.stderr)
        return
    changed = _differences(before, settings)
    if config.schedule == "halve_reload" and not config.swa_epochs:
        changed = [c for c in changed if c[0] != "train.epochs"]
    # an option that a later version added, at its default, or one that it removed: the same run
    defaults = {f"train.{f.name}": f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    stored = {f"train.{k}" for k in before.get("train", {})}
    current = {f"train.{k}" for k in settings.get("train", {})}
    changed = [c for c in changed if not (c[0].startswith("train.") and (
        (c[0] not in stored and c[0] in defaults and c[2] == defaults[c[0]]) or c[0] not in current))]
    if not changed:
        return
    shown = []
    for key, a, b in changed[:6]:
        if key == "weights":
            shown.append("the network (its weights have other shapes: another variant, width, "
                         "number of blocks or labels)")
        else:
            shown.append(f"{key}: {_short(a)} in the checkpoint, {_short(b)} now")
    more = f"; and {len(changed) - 6} more" if len(changed) > 6 else ""
    raise CheckpointMismatch(
        f"{workdir / CHECKPOINT} is the checkpoint of a run with other settings ({'; '.join(shown)}"
        f"{more}). Resume it with the settings it was started with, start afresh (--no-resume, or "
        "fit(resume=False)), or pass another work folder.")


def _short(value, limit=60):
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _read_member(path, name):
    try:
        with zipfile.ZipFile(path) as archive:
            if name not in archive.namelist():
                return None
            return archive.read(name)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return None


def read_state(workdir):
    """The run state of the checkpoint in ``workdir`` (``None`` when there is none).

    The state embedded in ``last.keras`` wins (it is committed with the model in one rename);
    ``state.json`` is only used for checkpoints written before the state was embedded.
    """
    workdir = pathlib.Path(workdir)
    data = _read_member(workdir / CHECKPOINT, EMBEDDED_STATE) if (workdir / CHECKPOINT).is_file() else None
    if data is None:
        path = workdir / STATE
        if not path.is_file():
            return None
        data = path.read_bytes()
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_best_weights(workdir):
    """The schedule's best weights stored with the checkpoint in ``workdir``, or ``None``."""
    data = _read_member(pathlib.Path(workdir) / CHECKPOINT, EMBEDDED_BEST)
    return None if data is None else _weights_from_bytes(data)


#: What to do with a checkpoint that cannot be loaded (ends every such error message).
_WHAT_TO_DO = "delete it to start the run afresh, or pass a .keras checkpoint written by fer_tf"


def load_checkpoint(path, compile=True):
    """Load a training checkpoint (``.keras``) with :func:`fer_tf.model.saving.load_model`: safe mode
    (a ``Lambda`` layer is refused), the optimizer state restored with ``compile``, and a
    :class:`~fer_tf.errors.ModelFileError` for missing, empty, truncated and non-Keras files."""
    return saving.load_model(path, check=False, compile=compile, advice=_WHAT_TO_DO)


def initialise_from(model, path):
    """Copy the weights of the ``.keras`` network at ``path`` (``TrainConfig.init_from``) into
    ``model``, which must have the same layers; ``None`` leaves ``model`` as it is."""
    if not path:
        return
    source = saving.load_model(path, check=False, compile=False,
                                 advice="pass a .keras network of the same shape to init_from")
    ours, theirs = model.get_weights(), source.get_weights()
    shapes = [tuple(w.shape) for w in ours], [tuple(w.shape) for w in theirs]
    if shapes[0] != shapes[1]:
        raise TrainingError(f"init_from {path}: its weights do not fit this network ({len(theirs)} arrays "
                            f"against {len(ours)}, or of other shapes); start from a network of the same "
                            "variant, labels and widths")
    model.set_weights(theirs)
    print(f"starting from the weights of {path}", file=sys.stderr)


def compile_model(model, config: TrainConfig, steps_per_epoch=None):
    # TensorFlow: graph mode without XLA (XLA is slower on CPU here); JAX: jit (else it runs op by op)
    if config.freeze_batch_norm:
        freeze_batch_norm(model)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch, backbone_variable_paths(model)),
                  jit_compile=False if keras.backend.backend() == "tensorflow" else True)
    return model


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------


class _EpochSeed(keras.callbacks.Callback):
    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        reset_random_state(self.model, self.seed, epoch)


def metrics_only(history):
    """The history without :data:`~fer_tf.training.timing.TIMING_KEYS`: what must match between
    identical runs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


class _OneEpoch(keras.callbacks.Callback):
    """Ends ``model.fit`` after one epoch (so the progress bar still says "Epoch e/epochs");
    remembers whether another callback asked to stop (it must come last)."""

    def __init__(self):
        super().__init__()
        self.stop_requested = False

    def on_epoch_end(self, epoch, logs=None):
        self.stop_requested = bool(self.model.stop_training)
        self.model.stop_training = True


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fit(model, make_train_dataset, config: TrainConfig, steps_per_epoch, validation_data=None,
        workdir=None, resume=True, verbose=2, callbacks=(), settings=None):
    """Train ``model`` with the joint loss; returns ``(model, history)``.

    Epoch ``e`` trains on the first ``steps_per_epoch`` batches of ``make_train_dataset(e)`` (a
    fresh dataset per epoch, so the callable must give epoch ``e``'s batches, depending only on
    ``(seed, e)``, first). With ``workdir``, a checkpoint is written there after every epoch and a
    re-run resumes from the last completed epoch (``resume=True``; ``resume=False`` starts afresh
    and overwrites it); the returned model then is the one loaded from the checkpoint. The
    learning rate, optimizer state, schedule state and best weights, and the random state continue
    as in an uninterrupted run. The best weights (by validation accuracy, or training loss without
    validation) are loaded at the end, unless ``config.select_epoch`` is ``"last"``. A NaN/Inf loss
    raises :class:`TrainingError`. A checkpoint written with other settings (:func:`run_settings`
    of ``model``, ``config``, ``steps_per_epoch`` and the caller's JSON-able ``settings``, e.g. its
    data) is not resumed: a :class:`TrainingError` says which differ.

    While it trains, ``workdir`` is held by this process (:mod:`fer_tf.locking`): a second run on
    the same folder raises :class:`~fer_tf.errors.FolderInUse` instead of overwriting its checkpoints.

    Under a ``tf.distribute`` strategy, call :func:`fer_tf.training.distribute.fit` instead.
    """
    if workdir is None:
        return _fit(model, make_train_dataset, config, steps_per_epoch, validation_data, None, resume,
                    verbose, callbacks, settings)
    with locking.holding(workdir, "the checkpoint folder"):
        return _fit(model, make_train_dataset, config, steps_per_epoch, validation_data, workdir, resume,
                    verbose, callbacks, settings)


def _fit(model, make_train_dataset, config, steps_per_epoch, validation_data, workdir, resume, verbose,
         callbacks, settings):
    set_seed(config.seed)
    schedule = HalveAndReload(config.loss_rise, config.patience, config.min_learning_rate,
                              monitor="val_accuracy" if validation_data is not None else "loss",
                              adjust=config.schedule == "halve_reload")
    history, start_epoch = [], 0
    average = WeightAverage(config.epochs - config.swa_epochs) if config.swa_epochs else None
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(workdir)
        state = read_state(workdir) if resume and (workdir / CHECKPOINT).is_file() else None
        ours = run_settings(model, config, steps_per_epoch, settings)
        if state:
            check_resume_settings(workdir, state, ours, config)
            model = load_checkpoint(workdir / CHECKPOINT, compile=True)
            start_epoch, history = int(state["epoch"]), list(state["history"])
            schedule.state = dict(state["schedule"])
            if "learning_rate" in state and config.schedule == "halve_reload":
                model.optimizer.learning_rate = float(state["learning_rate"])
            best = read_best_weights(workdir)
            if best is None and (workdir / BEST_WEIGHTS).is_file():  # older checkpoints
                current = model.get_weights()
                model.load_weights(workdir / BEST_WEIGHTS)
                best = model.get_weights()
                model.set_weights(current)
            schedule.best_weights = best
            if average is not None:
                average.restore(_read_member(workdir / CHECKPOINT, EMBEDDED_AVERAGE))
            print(f"resuming from {workdir / CHECKPOINT} after epoch {start_epoch}", file=sys.stderr)
        else:
            initialise_from(model, config.init_from)
            compile_model(model, config, steps_per_epoch)
    else:
        initialise_from(model, config.init_from)
        compile_model(model, config, steps_per_epoch)
    # The caller's callbacks run before the schedule and the checkpoint, so that what they add to
    # the epoch's logs (e.g. a held-out accuracy) is in the checkpointed history.
    cbs = [_EpochSeed(config.seed), EpochTimer(), *callbacks, schedule, NanGuard(workdir)]
    if average is not None:
        cbs.append(average)
    if workdir is not None:
        cbs.append(EpochCheckpoint(workdir, schedule, config.seed, history,
                                   extra_state={"steps_per_epoch": int(steps_per_epoch),
                                                "settings": ours},
                                   every=config.checkpoint_every, last_epoch=config.epochs,
                                   average=average))
    one_epoch = _OneEpoch()
    cbs.append(one_epoch)
    epoch = start_epoch
    started = time.time()
    try:
        with _sigterm_as_interrupt():
            for epoch in range(start_epoch, config.epochs):
                result = model.fit(
                    make_train_dataset(epoch), epochs=config.epochs, initial_epoch=epoch,
                    steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                    callbacks=cbs, verbose=verbose, shuffle=False,
                )
                if workdir is None and result.history.get("loss"):
                    history.append({**{k: float(v[-1]) for k, v in result.history.items()},
                                    "learning_rate": current_learning_rate(model), "epoch": epoch + 1})
                if one_epoch.stop_requested:  # e.g. EarlyStopping
                    break
                if config.time_limit_minutes is not None and time.time() - started > 60 * config.time_limit_minutes:
                    print(f"stopping after epoch {epoch + 1} of {config.epochs}: the time limit of "
                          f"{config.time_limit_minutes:g} minutes has passed", file=sys.stderr)
                    break
    except KeyboardInterrupt:
        if workdir is not None:
            with contextlib.suppress(Exception):
                saving.save_model(model, workdir / INTERRUPTED)
            print(f"interrupted in epoch {epoch + 1}: the last completed epoch is checkpointed in "
                  f"{workdir / CHECKPOINT} (the mid-epoch model is in {workdir / INTERRUPTED}); run "
                  "again with the same work directory to resume", file=sys.stderr)
        raise
    if average is not None and average.count:
        # weight averaging replaces the epoch selection: the run ends with the tail's mean
        average.set_model(model)
        model.set_weights(average.averaged_weights())
        used = recompute_batch_norm(model, make_train_dataset(config.epochs), steps_per_epoch)
        print(f"weight averaging: the mean of {average.count} epochs' weights, batch-norm statistics "
              f"recomputed on {used} training batches", file=sys.stderr)
    elif schedule.best_weights is not None and config.select_epoch == "best":
        model.set_weights(schedule.best_weights)
    return model, history

"""Training: optimisers, the paper's learning-rate schedule, atomic checkpoints and resume, a NaN guard.

:func:`fit` wraps ``model.fit`` so that a run survives being killed: after every epoch the model
(with its optimizer state) and a small JSON state (epoch, history, schedule state, seed) are written
to temporary files and renamed into place, so a kill at any moment leaves the last good checkpoint
intact. Re-running with the same work directory continues from it: the sampler restarts at the
next epoch with the random state that epoch would have had, so the result matches an uninterrupted
run. The interrupted epoch itself is re-run from its start.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

import keras
import numpy as np

from fer_tf.config import TrainConfig, to_dict
from fer_tf.errors import ModelFileError, TrainingError

CHECKPOINT = "last.keras"
BEST_WEIGHTS = "best.weights.h5"
STATE = "state.json"


def set_seed(seed, deterministic=True):
    """Seed Python, NumPy, TensorFlow and Keras; make TF ops deterministic where available."""
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        import tensorflow as tf

        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # pragma: no cover - older TF
            pass


def make_optimizer(config: TrainConfig):
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=config.learning_rate, momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=config.learning_rate, weight_decay=None)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}; use 'adam' or 'sgd'")


def atomic_write_text(path, text):
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_save_model(model, path):
    path = pathlib.Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    model.save(tmp)
    os.replace(tmp, path)


def atomic_save_weights(model, path):
    path = pathlib.Path(path)
    tmp = path.with_name(f"tmp-{path.name}")
    model.save_weights(tmp)
    os.replace(tmp, path)


class HalveAndReload(keras.callbacks.Callback):
    """Section 5.2: halve the learning rate and reload the best weights when the training loss
    rises by more than ``loss_rise`` (25%) or validation accuracy has not improved for
    ``patience`` (10) epochs. Best = highest validation accuracy (lowest loss without validation)."""

    def __init__(self, loss_rise=0.25, patience=10, min_learning_rate=1e-6, monitor="val_accuracy"):
        super().__init__()
        self.loss_rise, self.patience = loss_rise, patience
        self.min_learning_rate, self.monitor = min_learning_rate, monitor
        self.state = {"best": None, "best_epoch": -1, "wait": 0, "previous_loss": None, "halvings": 0}
        self.best_weights = None

    def _score(self, logs):
        if self.monitor in logs:
            return float(logs[self.monitor])
        return -float(logs.get("loss", math.inf))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        s = self.state
        score = self._score(logs)
        if s["best"] is None or score > s["best"]:
            s.update(best=score, best_epoch=epoch, wait=0)
            self.best_weights = self.model.get_weights()
        else:
            s["wait"] += 1
        loss = float(logs.get("loss", math.nan))
        rose = s["previous_loss"] is not None and loss > s["previous_loss"] * (1 + self.loss_rise)
        stalled = s["wait"] >= self.patience
        s["previous_loss"] = loss
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if (rose or stalled) and lr > self.min_learning_rate:
            self.model.optimizer.learning_rate = max(lr / 2, self.min_learning_rate)
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)
            s["wait"] = 0
            s["halvings"] += 1
            why = "training loss rose" if rose else f"no improvement for {self.patience} epochs"
            print(f"epoch {epoch + 1}: {why}; learning rate -> {lr / 2:.2e}, best weights reloaded",
                  file=sys.stderr)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class NanGuard(keras.callbacks.Callback):
    """Stop at the first NaN or Inf loss with a message naming the epoch and step."""

    def __init__(self, checkpoint_dir=None):
        super().__init__()
        self.epoch = 0
        self.checkpoint_dir = checkpoint_dir

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.model.stop_training = True
            where = (f"; the last good checkpoint is kept in {self.checkpoint_dir}"
                     if self.checkpoint_dir else "")
            raise TrainingError(
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}{where}. "
                "Lower the learning rate or check the input data for broken images."
            )


class EpochCheckpoint(keras.callbacks.Callback):
    """Write the model, the best weights and the run state atomically after every epoch."""

    def __init__(self, workdir, schedule: HalveAndReload, seed, history=None):
        super().__init__()
        self.workdir = pathlib.Path(workdir)
        self.schedule, self.seed = schedule, seed
        self.history = history if history is not None else []

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(v) for k, v in (logs or {}).items()}
        row["epoch"] = epoch + 1
        self.history.append(row)
        if self.schedule.best_weights is not None and self.schedule.state["best_epoch"] == epoch:
            atomic_save_weights(self.model, self.workdir / BEST_WEIGHTS)
        atomic_save_model(self.model, self.workdir / CHECKPOINT)
        state = {"epoch": epoch + 1, "seed": self.seed, "history": self.history,
                 "schedule": self.schedule.state, "time": time.time()}
        atomic_write_text(self.workdir / STATE, json.dumps(state, indent=1))


class EpochSeed(keras.callbacks.Callback):
    """Re-seed at each epoch start from (seed, epoch), so a resumed run draws the same numbers."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        keras.utils.set_random_seed(int(self.seed) * 1000 + int(epoch))


def read_state(workdir):
    path = pathlib.Path(workdir) / STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def load_checkpoint(path, compile=True):
    """Load a training checkpoint (.keras, safe mode) with a clear error for bad files."""
    from fer_tf import losses, models  # noqa: F401  (register custom objects)

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as exc:  # zip errors, missing layers, wrong file type
        raise ModelFileError(
            f"{path}: not a readable fer_tf checkpoint ({type(exc).__name__}: {exc}). "
            "Delete it to start the run afresh."
        ) from None
    if isinstance(model, models.JointModel) and model.threshold is not None:
        model.metric_loss.threshold = model.threshold
    return model


def compile_model(model, config: TrainConfig):
    model.compile(optimizer=make_optimizer(config), jit_compile=False)
    return model


def fit(model, make_train_dataset, config: TrainConfig, steps_per_epoch, validation_data=None,
        workdir=None, resume=True, verbose=2, callbacks=()):
    """Train ``model`` with the joint loss; returns ``(model, history)``.

    ``make_train_dataset(start_epoch)`` builds the (repeating) training ``tf.data.Dataset`` whose
    first batch belongs to ``start_epoch``. With ``workdir``, checkpoints go there and a re-run
    resumes from the last completed epoch (``resume=True``); the returned model then is the one
    loaded from the checkpoint. The best weights (by validation accuracy) are loaded at the end.
    """
    set_seed(config.seed)
    schedule = HalveAndReload(config.loss_rise, config.patience, config.min_learning_rate,
                              monitor="val_accuracy" if validation_data is not None else "loss")
    history, start_epoch = [], 0
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        state = read_state(workdir) if resume else None
        if state and (workdir / CHECKPOINT).is_file():
            model = load_checkpoint(workdir / CHECKPOINT, compile=True)
            start_epoch, history = int(state["epoch"]), list(state["history"])
            schedule.state = dict(state["schedule"])
            if (workdir / BEST_WEIGHTS).is_file():
                current = model.get_weights()
                model.load_weights(workdir / BEST_WEIGHTS)
                schedule.best_weights = model.get_weights()
                model.set_weights(current)
            print(f"resuming from {workdir / CHECKPOINT} after epoch {start_epoch}", file=sys.stderr)
        else:
            compile_model(model, config)
    else:
        compile_model(model, config)
    cbs = [EpochSeed(config.seed), schedule, NanGuard(workdir)]
    if workdir is not None:
        cbs.append(EpochCheckpoint(workdir, schedule, config.seed, history))
    cbs.extend(callbacks)
    if start_epoch < config.epochs:
        keras.utils.set_random_seed(int(config.seed) * 1000 + start_epoch)
        result = model.fit(
            make_train_dataset(start_epoch), epochs=config.epochs, initial_epoch=start_epoch,
            steps_per_epoch=steps_per_epoch, validation_data=validation_data,
            callbacks=cbs, verbose=verbose,
        )
        if workdir is None:
            history = [
                {**{k: float(v[i]) for k, v in result.history.items()}, "epoch": i + 1}
                for i in range(len(result.history.get("loss", [])))
            ]
    if schedule.best_weights is not None:
        model.set_weights(schedule.best_weights)
    return model, history


def config_dict(config):
    return to_dict(config)

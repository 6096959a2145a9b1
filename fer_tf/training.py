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
    pipelines of :mod:`fer_tf.sampling` keep working under it (their random crops use stateless
    seeds, and parallel maps are then run in deterministic order).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
import signal
import sys
import threading
import time
import zipfile

import keras
import numpy as np

from fer_tf.config import TrainConfig
from fer_tf.errors import ModelFileError, TrainingError

CHECKPOINT = "last.keras"
INTERRUPTED = "interrupted.keras"
BEST_WEIGHTS = "best.weights.h5"  # written by older versions; still read on resume
STATE = "state.json"
EMBEDDED_STATE = "fer_tf_state.json"
EMBEDDED_BEST = "fer_tf_best_weights.npz"
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


@keras.saving.register_keras_serializable(package="fer_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to
    ``peak * final_fraction`` at ``total_steps`` (and constant after). A function of the optimizer's
    step count only, so a resumed run continues the same curve."""

    def __init__(self, peak, total_steps, warmup_steps=0, final_fraction=0.0):
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.warmup_steps, self.final_fraction = int(warmup_steps), float(final_fraction)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        decay = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + ops.cos(math.pi * progress))
        warmup = ops.minimum((step + 1) / warm, 1.0)
        return self.peak * ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "final_fraction": self.final_fraction}


def learning_rate_for(config: TrainConfig, steps_per_epoch=None):
    """The optimizer's learning rate: a float (halve-and-reload adjusts it) or a :class:`WarmupCosine`."""
    if config.schedule == "cosine":
        if not steps_per_epoch:
            raise TrainingError("the cosine schedule needs steps_per_epoch to know where it ends")
        return WarmupCosine(config.learning_rate, total_steps=config.epochs * int(steps_per_epoch),
                            warmup_steps=round(config.warmup_epochs * int(steps_per_epoch)))
    return config.learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch=None):
    """SGD (momentum, optional Nesterov), Adam or AdamW with decoupled weight decay (Adam: none)."""
    lr = learning_rate_for(config, steps_per_epoch)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum, nesterov=config.nesterov,
                                    weight_decay=config.weight_decay or None)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, weight_decay=None)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay)
    raise TrainingError(f"unknown optimizer {config.optimizer!r}; use 'adam', 'adamw' or 'sgd'")


# ----------------------------------------------------------------------------------------------
# Atomic files
# ----------------------------------------------------------------------------------------------


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path):
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _tmp_name(path):
    # keep the suffix: Keras checks that names end in .keras / .weights.h5
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def atomic_write_text(path, text):
    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_save_model(model, path, extra=None):
    """``model.save(path)`` through a temporary file and a rename; ``extra`` = {zip member: bytes}."""
    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    try:
        model.save(tmp)
        if extra:
            with zipfile.ZipFile(tmp, "a") as archive:
                for name, data in extra.items():
                    archive.writestr(name, data)
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_save_weights(model, path):
    path = pathlib.Path(path)
    tmp = _tmp_name(path)
    model.save_weights(tmp)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _weights_to_bytes(weights):
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    return buffer.getvalue()


def _weights_from_bytes(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def _remove_stale_temporaries(workdir):
    for tmp in pathlib.Path(workdir).glob(".tmp-*"):
        with contextlib.suppress(OSError):
            tmp.unlink()


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
                 adjust=True):
        super().__init__()
        self.adjust = adjust  # False: only keep the best weights (another schedule sets the LR)
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
        if s["best"] is None or score > s["best"]:
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
    loss is checked; under JAX and PyTorch, where reading a loss each step would stall the
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
                 every=1, last_epoch=None):
        super().__init__()
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
        atomic_save_model(self.model, self.workdir / CHECKPOINT, extra)  # the commit point
        atomic_write_text(self.workdir / STATE, json.dumps(state, indent=1))  # human-readable copy


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


_WHAT_TO_DO = "delete it to start the run afresh, or pass a .keras checkpoint written by fer_tf"


def check_keras_file(path):
    """Raise :class:`ModelFileError` unless ``path`` looks like an intact ``.keras`` archive."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: the checkpoint file is empty; {_WHAT_TO_DO}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a Keras checkpoint: a .keras file is a zip archive and this one is not "
            f"(it is truncated or a different kind of file); {_WHAT_TO_DO}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated Keras checkpoint ({exc}); {_WHAT_TO_DO}") from None
    if bad is not None:
        raise ModelFileError(f"{path}: corrupt Keras checkpoint ({bad!r} fails its checksum); {_WHAT_TO_DO}")
    if not {"config.json", "model.weights.h5"} <= names:
        raise ModelFileError(
            f"{path}: a zip archive but not a Keras checkpoint (config.json or model.weights.h5 is "
            f"missing); {_WHAT_TO_DO}")


def load_checkpoint(path, compile=True):
    """Load a training checkpoint (``.keras``) in safe mode, with a clear error for bad files.

    Safe mode never runs code from the file: a checkpoint holding a ``Lambda`` layer (pickled
    Python bytecode) is refused with :class:`ModelFileError`, as are missing, empty, truncated and
    non-Keras files.
    """
    from fer_tf import layers, losses, models  # noqa: F401  (register custom objects)

    path = pathlib.Path(path)
    check_keras_file(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as exc:  # zip errors, missing layers, unsafe content
        text = str(exc)
        if "safe_mode" in text or "Lambda" in text or "unsafe" in text.lower():
            raise ModelFileError(
                f"{path}: refused to load: the file contains Python code (a Lambda layer or a "
                "pickled function) that would run on loading, and fer_tf only loads models in "
                "safe mode. Rebuild the model from fer_tf's layers, without Lambda layers.") from None
        reason = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: not a readable fer_tf checkpoint ({type(exc).__name__}: {reason[:300]}); "
            f"{_WHAT_TO_DO}") from None
    return model


def compile_model(model, config: TrainConfig, steps_per_epoch=None):
    # TensorFlow: graph mode without XLA (XLA is slower on CPU here); JAX: jit (else it runs op by op)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch),
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


#: History keys that measure the run rather than the model; they differ between identical runs.
TIMING_KEYS = frozenset({"epoch_seconds"})


def metrics_only(history):
    """The history without :data:`TIMING_KEYS`: what must match between identical runs."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


class _EpochTimer(keras.callbacks.Callback):
    """Log each epoch's wall time as ``epoch_seconds`` (kept in the checkpointed history)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = round(time.time() - self.started, 2)


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
        workdir=None, resume=True, verbose=2, callbacks=(), strategy=None):
    """Train ``model`` with the joint loss; returns ``(model, history)``.

    Epoch ``e`` trains on the first ``steps_per_epoch`` batches of ``make_train_dataset(e)`` (a
    fresh dataset per epoch, so the callable must give epoch ``e``'s batches, depending only on
    ``(seed, e)``, first). With ``workdir``, a checkpoint is written there after every epoch and a
    re-run resumes from the last completed epoch (``resume=True``; ``resume=False`` starts afresh
    and overwrites it); the returned model then is the one loaded from the checkpoint. The
    learning rate, optimizer state, schedule state and best weights, and the random state continue
    as in an uninterrupted run. The best weights (by validation accuracy, or training loss without
    validation) are loaded at the end. A NaN/Inf loss raises :class:`TrainingError`.

    With a ``tf.distribute`` ``strategy`` (see :mod:`fer_tf.distribute`; the model must have been
    built inside ``strategy.scope()``), training runs under it and only the chief worker writes
    checkpoints into ``workdir``.
    """
    if strategy is not None:
        from fer_tf import distribute

        with distribute.scope(strategy), distribute.keras_multi_worker_fix(strategy):
            return fit(model, make_train_dataset, config, steps_per_epoch, validation_data,
                       distribute.worker_workdir(workdir, strategy), resume, verbose, callbacks)
    set_seed(config.seed)
    schedule = HalveAndReload(config.loss_rise, config.patience, config.min_learning_rate,
                              monitor="val_accuracy" if validation_data is not None else "loss",
                              adjust=config.schedule == "halve_reload")
    history, start_epoch = [], 0
    if workdir is not None:
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(workdir)
        state = read_state(workdir) if resume and (workdir / CHECKPOINT).is_file() else None
        if state:
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
            print(f"resuming from {workdir / CHECKPOINT} after epoch {start_epoch}", file=sys.stderr)
        else:
            compile_model(model, config, steps_per_epoch)
    else:
        compile_model(model, config, steps_per_epoch)
    # The caller's callbacks run before the schedule and the checkpoint, so that what they add to
    # the epoch's logs (e.g. a held-out accuracy) is in the checkpointed history.
    cbs = [_EpochSeed(config.seed), _EpochTimer(), *callbacks, schedule, NanGuard(workdir)]
    if workdir is not None:
        cbs.append(EpochCheckpoint(workdir, schedule, config.seed, history,
                                   extra_state={"steps_per_epoch": int(steps_per_epoch)},
                                   every=config.checkpoint_every, last_epoch=config.epochs))
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
                atomic_save_model(model, workdir / INTERRUPTED)
            print(f"interrupted in epoch {epoch + 1}: the last completed epoch is checkpointed in "
                  f"{workdir / CHECKPOINT} (the mid-epoch model is in {workdir / INTERRUPTED}); run "
                  "again with the same work directory to resume", file=sys.stderr)
        raise
    if schedule.best_weights is not None:
        model.set_weights(schedule.best_weights)
    return model, history

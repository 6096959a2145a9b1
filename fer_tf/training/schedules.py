"""Learning-rate schedules that are saved with a model (registered for ``.keras`` files)."""

from __future__ import annotations

import math

import keras


@keras.saving.register_keras_serializable(package="fer_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to
    ``peak * final_fraction`` at ``total_steps`` (and constant after, at ``tail_rate`` when it is
    given: the constant-rate tail of weight averaging). A function of the optimizer's step count
    only, so a resumed run continues the same curve."""

    def __init__(self, peak, total_steps, warmup_steps=0, final_fraction=0.0, tail_rate=None):
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.warmup_steps, self.final_fraction = int(warmup_steps), float(final_fraction)
        self.tail_rate = None if tail_rate is None else float(tail_rate)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = float(max(self.warmup_steps, 1))
        decay = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + ops.cos(math.pi * progress))
        warmup = ops.minimum((step + 1) / warm, 1.0)
        rate = self.peak * ops.where(step < self.warmup_steps, warmup, cosine)
        if self.tail_rate is not None:
            rate = ops.where(step >= self.total_steps, self.tail_rate, rate)
        return rate

    def get_config(self):
        config = {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                  "final_fraction": self.final_fraction}
        if self.tail_rate is not None:  # files written before the option stay byte-identical
            config["tail_rate"] = self.tail_rate
        return config

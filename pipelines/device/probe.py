"""Time the JAX training step on this machine before the runs start (pipelines/device/run.sh).

    python pipelines/device/probe.py FER2013_DIR [STEPS]

Builds the 60x60 face cache (once, before the runs read it side by side), prints the devices JAX
sees, then the seconds to compile the softmax network's train step and the seconds per step over
STEPS more steps of batch 128, so that a call cut short still tells how fast this machine trains.
"""

import sys
import time

import keras
import numpy as np


def main(root, steps):
    import jax

    from fer_tf.model import network
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.preprocess.prepared import prepared_dataset
    from fer_tf.feeding.feeders import classification_dataset

    print("jax", jax.__version__, "devices:", jax.devices(), flush=True)
    started = time.time()
    table, faces = prepared_dataset(root, "fer2013")
    print(f"face cache: {len(table)} faces in {time.time() - started:.0f} s", flush=True)
    ds = classification_dataset(faces[:4096], np.arange(4096) % 7, 128)
    model = network.build_model("softmax", labels=list("abcdefg"))
    loop.compile_model(model, TrainConfig(optimizer="sgd", learning_rate=0.01))
    x, y = ds[0]
    t = time.time()
    model.train_on_batch(x, y)
    compiled = time.time() - t
    t = time.time()
    for i in range(steps):
        loss = model.train_on_batch(*ds[1 + i % (len(ds) - 1)])
    float(np.asarray(loss if np.ndim(loss) == 0 else loss[0]))
    per_step = (time.time() - t) / max(steps, 1)
    print(f"probe: compile + first step {compiled:.1f} s, then {1000 * per_step:.1f} ms per step of "
          f"batch 128 ({128 / per_step:.0f} images/s)", flush=True)


if __name__ == "__main__":
    keras.utils.set_random_seed(0)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)

"""Pretraining speed: images/s of the softmax network's training step, float32 against mixed bfloat16.

    python benchmarks/pretrain_speed.py [--steps 40] [--output reports/fer2013/speed.json]

Each policy trains a fresh network through ``model.fit`` on the recipe's input pipeline
(``classification_dataset`` with the augmentation of configs/pretrain.yaml, batch 128) over 4,096
FER2013 faces; the first 10 steps (tracing, warm-up) are not timed. Run it on an otherwise idle
machine: two heavy jobs on two cores halve each other. fer_tf/research/pretrain_report.py puts the
result in reports/fer2013/README.md.
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(policy, faces, labels, train_config, steps, warmup=10):
    import keras

    from fer_tf.model import network
    from fer_tf.training import loop
    from fer_tf.feeding.augment import Augmentation
    from fer_tf.feeding.feeders import classification_dataset

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = network.build_model("softmax", labels=list("abcdefg"))
        loop.compile_model(model, train_config, steps_per_epoch=steps + warmup)
        dataset = classification_dataset(faces, labels, train_config.batch_size,
                                         augment=Augmentation.from_config(train_config))
        marks = {}

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch + 1 in (warmup, warmup + steps):
                    marks[batch + 1] = time.perf_counter()

        model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Clock()])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    seconds = marks[warmup + steps] - marks[warmup]
    return {"images_per_s": steps * train_config.batch_size / seconds, "seconds_per_step": seconds / steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data", default=REPO.parent / "shared" / "datasets" / "fer2013")
    parser.add_argument("--config", default=REPO / "configs" / "pretrain.yaml")
    parser.add_argument("--output", default=REPO / "reports" / "fer2013" / "speed.json")
    args = parser.parse_args()
    import numpy as np

    from fer_tf.research import reporting
    from fer_tf.config import load_yaml, to_dict, train_config
    from fer_tf.preprocess.prepared import prepared_dataset

    started = time.time()
    config = train_config(load_yaml(args.config).get("train", {}))
    table, faces = prepared_dataset(args.data, "fer2013")
    rows = np.flatnonzero(table.split == "Training")[:4096]
    labels = table.expression_ids(("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"))
    result = {"batch_size": config.batch_size, "steps": args.steps, "policies": {},
              "command": "python benchmarks/pretrain_speed.py"}
    for policy in ("float32", "mixed_bfloat16"):
        result["policies"][policy] = measure(policy, faces[rows], labels[rows], config, args.steps)
        print(f"{policy}: {result['policies'][policy]['images_per_s']:.0f} images/s", flush=True)
    result["run"] = reporting.run_info({"train": to_dict(config)}, seed=config.seed, started=started)
    reporting.write_json(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""The experiments behind `make pretrain` and `make finetune`, as functions the pipelines call.

- :func:`prepared_dataset`: a dataset's aligned 60x60 faces from the resumable preprocess cache.
- :func:`pretrain`: Section 5.2's first stage: convolutional groups + EC branch on FER2013
  ``Training`` with softmax (SGD, momentum 0.9, batch 128, weight decay 1e-4, halve-and-reload),
  validated on ``PublicTest``, tested on ``PrivateTest``.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

from fer_tf.config import ModelConfig, TrainConfig, to_dict

DEFAULT_CACHE = pathlib.Path("runs") / "cache"


def prepared_dataset(root, fmt, cache_root=DEFAULT_CACHE, align=None):
    """``(table, faces uint8 [n, 60, 60])`` of dataset ``root``, through the on-disk face cache.

    The first call aligns (or resizes pre-cropped faces) and caches; later calls read the cache.
    """
    from fer_tf.preprocess.cache import build_cache, read_cache

    output = pathlib.Path(cache_root) / f"{fmt}-{pathlib.Path(root).resolve().name}"
    result = build_cache(root, fmt, output, align=align, progress=sys.stderr.isatty())
    if result.get("skipped"):
        print(f"{fmt}: {len(result['skipped'])} file(s) skipped (see {output}/manifest.json)",
              file=sys.stderr)
    table = read_cache(output)
    return table, table.pixels


def predict_probabilities(model, faces, batch_size=256):
    """Class probabilities of the EC branch on centre-cropped faces (batched, not per image)."""
    from fer_tf.sampling import eval_dataset

    ec = model.ec_model() if hasattr(model, "ec_model") else model
    return ec.predict(eval_dataset(faces, batch_size=batch_size), verbose=0)


def accuracy(probabilities, label_ids):
    label_ids = np.asarray(label_ids)
    keep = label_ids >= 0
    return float(np.mean(np.argmax(probabilities[keep], axis=1) == label_ids[keep]))


def pretrain(data_root, model_config: ModelConfig, train_config: TrainConfig, output="runs/pretrain",
             report_dir="reports/fer2013", resume=True, verbose=2, max_train_images=None):
    """Softmax pretraining on FER2013; writes ``output/pretrained.keras`` and the report."""
    from fer_tf import models, plots, reporting, training
    from fer_tf.preprocess.normalize import normalize_faces
    from fer_tf.sampling import classification_dataset, eval_dataset, steps_per_epoch

    started = time.time()
    training.set_seed(train_config.seed)
    table, faces = prepared_dataset(data_root, "fer2013")
    labels = model_config.labels
    ids = table.expression_ids(labels)
    faces = np.concatenate([np.asarray(normalize_faces(faces[i:i + 4096]), np.float32)
                            for i in range(0, len(faces), 4096)])
    split = {name: np.flatnonzero((table.split == name) & (ids >= 0))
             for name in ("Training", "PublicTest", "PrivateTest")}
    train_rows = split["Training"]
    if max_train_images:
        train_rows = np.random.default_rng(train_config.seed).permutation(train_rows)[:max_train_images]
    print(f"FER2013: {len(train_rows)} training, {len(split['PublicTest'])} validation, "
          f"{len(split['PrivateTest'])} test faces", file=sys.stderr)

    def make_train(start_epoch):
        return classification_dataset(faces[train_rows], ids[train_rows], train_config.batch_size,
                                      augment=True, seed=train_config.seed, start_epoch=start_epoch)

    val = split["PublicTest"]
    import tensorflow as tf

    val_ds = tf.data.Dataset.zip((eval_dataset(faces[val], batch_size=512),
                                  tf.data.Dataset.from_tensor_slices({"expression": ids[val]}).batch(512)))
    model = models.build_model(model_config.variant, **{k: v for k, v in to_dict(model_config).items()
                                                        if k != "variant"})
    steps = train_config.steps_per_epoch or steps_per_epoch(len(train_rows), train_config.batch_size)
    model, history = training.fit(model, make_train, train_config, steps, validation_data=val_ds,
                                  workdir=output, resume=resume, verbose=verbose)
    out = pathlib.Path(output)
    model.save(out / "pretrained.keras")
    results = {
        "public_test_accuracy": accuracy(predict_probabilities(model, faces[val]), ids[val]),
        "private_test_accuracy": accuracy(predict_probabilities(model, faces[split["PrivateTest"]]),
                                          ids[split["PrivateTest"]]),
        "train_images": int(len(train_rows)),
        "labels": list(labels),
        "history": history,
        "run": reporting.run_info({"model": to_dict(model_config), "train": to_dict(train_config),
                                   "data": str(data_root)}, seed=train_config.seed, started=started),
    }
    report = pathlib.Path(report_dir)
    reporting.write_json(report / "results.json", results)
    plots.training_curves({"softmax (FER2013)": history}, report / "curves.png")
    print(f"FER2013 PublicTest {results['public_test_accuracy']:.4f}, "
          f"PrivateTest {results['private_test_accuracy']:.4f}; saved {out / 'pretrained.keras'}",
          file=sys.stderr)
    return results

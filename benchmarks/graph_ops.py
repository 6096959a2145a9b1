"""Operations in the traced TensorFlow graphs of a training step and of each loss step.

    PYTHONPATH=<checkout> .venv/bin/python benchmarks/graph_ops.py --output ops.json

A count of graph operations does not depend on the machine's load, so it separates a real change in
the work TensorFlow does per step from the noise of timing on a shared CPU. It runs against whatever
``fer_tf`` and ``benchmarks`` come first on ``PYTHONPATH`` (``benchmarks/compare_versions.py`` points
it at each commit's clone in turn), so it only uses what older commits have too: the training
bench's model, dataset and step, and the loss bench's losses on X = 64 random embeddings.

Every ``tf.function`` reachable from ``model.train_function`` is counted with the functions its
graphs call (gradients included), each distinct graph once.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys

LOSS_X = 64


def _tf_functions(fn, depth=0):
    """The ``tf.function`` objects wrapped by ``fn`` (directly or in its closures)."""
    if hasattr(fn, "_list_all_concrete_functions"):
        return [fn]
    found = []
    for cell in getattr(fn, "__closure__", None) or []:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value) and depth < 4:
            found += _tf_functions(value, depth + 1)
    return found


def _graph_ops(functions):
    """``Counter`` of operation types over the functions' concrete graphs and the graphs they call."""
    counts, seen = collections.Counter(), set()

    def walk(graph):
        for op in graph.get_operations():
            counts[op.type] += 1
        for inner in getattr(graph, "_functions", {}).values():
            inner_graph = getattr(inner, "graph", None)
            if inner_graph is not None and id(inner_graph) not in seen:
                seen.add(id(inner_graph))
                walk(inner_graph)

    for fn in functions:
        for concrete in fn._list_all_concrete_functions():
            if id(concrete.graph) not in seen:
                seen.add(id(concrete.graph))
                walk(concrete.graph)
    return counts


def _prepared(datasets):
    try:  # older commits
        from fer_tf.preprocess.prepared import prepared_dataset
    except ImportError:
        from fer_tf.preprocess.prepared import prepared_dataset
    return prepared_dataset(pathlib.Path(datasets) / "ckplus48", "ckplus48",
                            cache_root=os.environ.get("FER_TF_CACHE", "runs/cache"))


def training_ops(datasets):
    """``{mode: operations}`` of the traced training step of the training bench's model."""
    from benchmarks import training_bench

    table, faces = _prepared(datasets)
    out = {}
    for mode in training_bench.MODES:
        model = training_bench._model()
        ds, _ = training_bench._dataset(table, faces, mode)
        training_bench._step(model, next(iter(ds)))
        counts = _graph_ops(_tf_functions(model.train_function))
        out[mode] = {"operations": sum(counts.values()), "by_type": dict(counts.most_common())}
    return out


def loss_ops():
    """``{loss: operations}`` of each loss bench step (loss and gradient) at X = 64."""
    import tensorflow as tf

    from benchmarks import loss_bench

    inputs = [tf.constant(a) for a in loss_bench._inputs(LOSS_X)]
    out = {}
    for name, fn in loss_bench._loss_fns().items():
        fn(*inputs)
        counts = _graph_ops([fn])
        out[name] = {"operations": sum(counts.values()), "by_type": dict(counts.most_common())}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--datasets", default=os.environ.get("FER_TF_DATASETS", "../shared/datasets"))
    args = parser.parse_args(argv)
    result = {"loss_x": LOSS_X, "training": training_ops(args.datasets), "loss": loss_ops()}
    pathlib.Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Kill -9 / resume demonstration: an interrupted and resumed run ends where an uninterrupted one does.

    python pipelines/kill_resume.py            # 2B(N+M) on one CK+48 fold -> reports/reliability/
    python pipelines/kill_resume.py --tiny     # synthetic data and a tiny network (the slow test)

The parent process runs the same training twice in child processes (same seed):

1. uninterrupted, in ``<workdir>/uninterrupted``;
2. in ``<workdir>/killed``: as soon as the first epoch checkpoint appears (plus ``--kill-after``
   seconds, so the kill lands inside the next epoch) the child gets SIGKILL; the parent checks that
   the checkpoint loads (safe mode) and starts the child again, which resumes from it.

It then compares the per-epoch metrics, the final metrics and the final weights of both runs and
writes ``results.json`` and ``README.md`` to ``--out``.

``--child`` runs one training (resuming when the work directory holds a checkpoint) and writes
``result.json`` and ``final_weights.npz`` there; the parent uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import DATASETS, REPO, run  # noqa: E402

import numpy as np  # noqa: E402

RESULT = "result.json"
FINAL_WEIGHTS = "final_weights.npz"


# ----------------------------------------------------------------------------------------------
# Training setups: one CK+48 fold, or (--tiny) the tests' tiny network on synthetic faces
# ----------------------------------------------------------------------------------------------


def tiny_setup():
    """The tests' fixtures (tests/fixtures_training.py): ``(tiny_model, synthetic_data)``."""
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures_training import synthetic_data, tiny_model

    return tiny_model, synthetic_data


def ckplus48_fold(seed=0, k=10, fold=0):
    """(train_table, train_faces, test_table, test_faces, labels) of one subject fold of CK+48."""
    from fer_tf.data.labels import CKPLUS7
    from fer_tf.data.splits import subject_kfold
    from fer_tf.preprocess.prepared import prepared_dataset

    table, faces = prepared_dataset(DATASETS / "ckplus48", "ckplus48",
                                    cache_root=REPO / "runs" / "cache")
    train_idx, test_idx = subject_kfold(table, k=k, seed=seed)[fold]
    return table.take(train_idx), faces[train_idx], table.take(test_idx), faces[test_idx], CKPLUS7


def train_once(workdir, tiny=True, epochs=3, seed=0, steps=None, queries=None, verbose=0):
    """One training run in ``workdir`` (resumes from its checkpoint); writes result.json and
    final_weights.npz there and returns the result dict."""
    from fer_tf.training import loop
    from fer_tf.config import TrainConfig
    from fer_tf.model.predict import accuracy, predict_probabilities
    from fer_tf.preprocess.normalize import normalize_faces
    from fer_tf.feeding.feeders import identity_aware_dataset

    started = time.time()
    workdir = pathlib.Path(workdir)
    loop.set_seed(seed)
    if tiny:
        tiny_model, synthetic_data = tiny_setup()
        table, faces = synthetic_data(seed=seed)
        test_table, test_faces = synthetic_data(subjects=2, seed=seed + 1)
        labels = ("anger", "happiness", "surprise")
        model = tiny_model(labels=labels)
        queries = queries or 18
        config = TrainConfig(optimizer="adam", learning_rate=3e-3, epochs=epochs, seed=seed, mode="in_batch",
                             queries_per_batch=queries)
    else:
        from fer_tf.model import network

        table, faces, test_table, test_faces, labels = ckplus48_fold(seed=seed)
        model = network.build_model("2B(N+M)", labels=labels)
        queries = queries or 32
        config = TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=epochs, seed=seed, mode="in_batch",
                             queries_per_batch=queries)
    # normalise once; the per-epoch datasets then take the float faces as they are
    faces = np.asarray(normalize_faces(faces), np.float32)
    m = model.config.num_positives

    def make_train(epoch):
        return identity_aware_dataset(table, faces, labels, mode="in_batch", num_positives=m,
                                      num_negatives=model.config.num_negatives, queries_per_batch=queries,
                                      seed=seed, start_epoch=epoch)

    _, sampler = identity_aware_dataset(table, faces, labels, mode="in_batch", num_positives=m,
                                        num_negatives=model.config.num_negatives, queries_per_batch=queries,
                                        seed=seed, repeat=False, return_sampler=True)
    steps = steps or sampler.steps_per_epoch
    state = loop.read_state(workdir)
    resumed_from = int(state["epoch"]) if state else 0
    model, history = loop.fit(model, make_train, config, steps, workdir=workdir, verbose=verbose)
    test_ids = test_table.expression_ids(labels)
    probabilities = predict_probabilities(model, test_faces)
    result = {
        "resumed_from_epoch": resumed_from,
        "history": history,
        "final": {"test_accuracy": accuracy(probabilities, test_ids),
                  "train_loss": history[-1]["loss"] if history else None,
                  "train_accuracy": history[-1].get("accuracy") if history else None},
        "test_probability_checksum": float(np.sum(probabilities * np.arange(1, probabilities.shape[1] + 1))),
        "train_images": int(len(table)), "test_images": int(len(test_table)),
        "steps_per_epoch": int(steps), "queries_per_batch": int(queries),
        "parameters": int(model.count_params()), "epochs": epochs, "seed": seed,
        "wall_time_s": round(time.time() - started, 1),
    }
    np.savez(workdir / FINAL_WEIGHTS, *model.get_weights())
    (workdir / RESULT).write_text(json.dumps(result, indent=1))
    return result


# ----------------------------------------------------------------------------------------------
# Parent: run, kill, resume, compare
# ----------------------------------------------------------------------------------------------


def _child_command(args, workdir):
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", "--workdir", str(workdir),
           "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.tiny:
        cmd.append("--tiny")
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    if args.queries:
        cmd += ["--queries", str(args.queries)]
    return cmd


def _run_child(cmd, log):
    with open(log, "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")


def _completed_epoch(workdir):
    from fer_tf.training.loop import read_state

    state = read_state(workdir)
    return int(state["epoch"]) if state else 0


def _load_weights(path):
    with np.load(path, allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def compare(a, b, weights_a, weights_b):
    """Max abs differences between two runs: per-epoch metrics, final metrics, final weights."""
    keys = sorted(set(a["history"][0]) & set(b["history"][0]) - {"epoch", "epoch_seconds"})
    per_epoch = max((abs(ra[k] - rb[k]) for ra, rb in zip(a["history"], b["history"]) for k in keys),
                    default=0.0)
    final = max(abs((a["final"][k] or 0) - (b["final"][k] or 0)) for k in a["final"])
    weights = max(float(np.max(np.abs(x - y))) for x, y in zip(weights_a, weights_b))
    return {"history_max_abs_diff": per_epoch, "final_metrics_max_abs_diff": final,
            "weights_max_abs_diff": weights,
            "same_epoch_count": len(a["history"]) == len(b["history"])}


def kill_and_resume(args):
    from fer_tf.research import reporting
    from fer_tf.training.loop import CHECKPOINT, load_checkpoint

    started = time.time()
    root = pathlib.Path(args.workdir)
    if root.exists():
        shutil.rmtree(root)
    clean, killed = root / "uninterrupted", root / "killed"
    clean.mkdir(parents=True)
    killed.mkdir(parents=True)
    log = root / "children.log"

    t0 = time.time()
    _run_child(_child_command(args, clean), log)
    uninterrupted_s = time.time() - t0

    t0 = time.time()
    with open(log, "a") as fh:
        proc = subprocess.Popen(_child_command(args, killed), stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.time() + args.timeout
    while _completed_epoch(killed) < 1:
        if proc.poll() is not None:
            raise RuntimeError(f"the child ended (exit {proc.returncode}) before its first checkpoint; see {log}")
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"no checkpoint after {args.timeout} s; see {log}")
        time.sleep(0.05)
    time.sleep(args.kill_after)
    if proc.poll() is not None:
        raise RuntimeError("the child finished before it could be killed; lower --kill-after or add epochs")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch_at_kill = _completed_epoch(killed)
    leftovers = sorted(p.name for p in killed.iterdir() if p.name.startswith(".tmp-"))
    load_checkpoint(killed / CHECKPOINT)  # must load (safe mode) after the kill
    _run_child(_child_command(args, killed), log)
    killed_s = time.time() - t0

    a = json.loads((clean / RESULT).read_text())
    b = json.loads((killed / RESULT).read_text())
    diff = compare(a, b, _load_weights(clean / FINAL_WEIGHTS), _load_weights(killed / FINAL_WEIGHTS))
    results = {
        "setup": ("tiny network on synthetic faces" if args.tiny else
                  "2B(N+M) (full size) on CK+48, subject fold 1 of 10 (train: 9 folds), in_batch sampling"),
        "kill": {"signal": "SIGKILL", "checkpoints_completed_at_kill": epoch_at_kill,
                 "kill_after_first_checkpoint_s": args.kill_after,
                 "temporary_files_left_by_the_kill": leftovers, "checkpoint_loaded_after_kill": True,
                 "resumed_from_epoch": b["resumed_from_epoch"]},
        "uninterrupted": a, "killed_and_resumed": b, "difference": diff,
        "wall_time_s": {"uninterrupted": round(uninterrupted_s, 1), "killed_and_resumed": round(killed_s, 1)},
        "run": reporting.run_info({"epochs": args.epochs, "steps": args.steps, "queries": args.queries,
                                   "tiny": args.tiny}, seed=args.seed, started=started),
    }
    if args.out:
        out = pathlib.Path(args.out)
        reporting.write_json(out / "results.json", results)
        (out / "README.md").write_text(_readme(results))
    print(json.dumps(diff), file=sys.stderr)
    return results


def _readme(r):
    a, b, d = r["uninterrupted"], r["killed_and_resumed"], r["difference"]
    keys = [k for k in ("loss", "ce_loss", "metric_loss", "accuracy", "learning_rate") if k in a["history"][0]]
    lines = [
        "# Reliability: kill -9 and resume",
        "",
        f"Setup: {r['setup']}; {a['epochs']} epochs x {a['steps_per_epoch']} steps of "
        f"{a['queries_per_batch']} images, seed {a['seed']}, {a['parameters']:,} parameters; "
        f"{a['train_images']} training and {a['test_images']} test images.",
        "",
        f"The second run was killed with SIGKILL {r['kill']['kill_after_first_checkpoint_s']} s after "
        f"its first checkpoint appeared ({r['kill']['checkpoints_completed_at_kill']} epoch(s) "
        f"checkpointed), the checkpoint loaded in safe mode, and a new process resumed from epoch "
        f"{r['kill']['resumed_from_epoch'] + 1}.",
        "",
        "| epoch | run | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for ra, rb in zip(a["history"], b["history"]):
        for name, row in (("uninterrupted", ra), ("killed + resumed", rb)):
            lines.append(f"| {row['epoch']} | {name} | " + " | ".join(f"{row[k]:.6g}" for k in keys) + " |")
    lines += [
        "",
        "| final | uninterrupted | killed + resumed |",
        "|---|---|---|",
        *(f"| {k} | {a['final'][k]:.6g} | {b['final'][k]:.6g} |" for k in a["final"] if a["final"][k] is not None),
        "",
        f"Max abs difference: per-epoch metrics {d['history_max_abs_diff']:.3g}, final metrics "
        f"{d['final_metrics_max_abs_diff']:.3g}, final weights {d['weights_max_abs_diff']:.3g}.",
        "",
        "How: `fer_tf.training.loop.fit` writes `last.keras` after every epoch through a temporary file and "
        "a rename; the file holds the model, the optimizer state (Keras 3 saves it in `.keras` "
        "files), the run state (epoch, history, learning-rate schedule) and the schedule's best "
        "weights, so one rename commits all of them. Epoch e trains on the first steps of a fresh "
        "`make_train_dataset(e)` (batches and crop/flip seeds depend only on (seed, epoch, step)), "
        "and at every epoch start the global seeds and the dropout seed generators (which Keras "
        "does not save) are set from (seed, epoch). With TF op determinism on, the resumed run is "
        "bit-identical on the same CPU.",
        "",
        f"Wall time: uninterrupted {r['wall_time_s']['uninterrupted']} s, killed + resumed "
        f"{r['wall_time_s']['killed_and_resumed']} s (each includes process start-up).",
        f"Command: `{r['run']['command']}`; commit {r['run']['git_commit']}; {r['run']['date']}; "
        f"{r['run']['machine']['cpu']} ({r['run']['machine']['cores']} cores), TensorFlow "
        f"{r['run']['machine']['tensorflow']}, Keras {r['run']['machine']['keras']}.",
        "",
    ]
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="synthetic data and a tiny network")
    p.add_argument("--child", action="store_true", help="run one training in --workdir (internal)")
    p.add_argument("--workdir", default=str(REPO / "runs" / "kill_resume"))
    p.add_argument("--out", default=None, help="report folder (default reports/reliability, none with --tiny)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the full epoch)")
    p.add_argument("--queries", type=int, default=None, help="images per in_batch batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-after", type=float, default=1.0,
                   help="seconds after the first checkpoint before SIGKILL")
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    if args.out is None and not args.tiny and not args.child:
        args.out = str(REPO / "reports" / "reliability")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        train_once(args.workdir, tiny=args.tiny, epochs=args.epochs, seed=args.seed, steps=args.steps,
                   queries=args.queries, verbose=2)
        return 0
    kill_and_resume(args)
    return 0


if __name__ == "__main__":
    run(main)

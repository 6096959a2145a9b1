"""The "Accuracy III" campaign (issue 27, configs/accuracy3.yaml): its full FER2013 runs, one at a
time, resumable.

    python pipelines/accuracy3.py [--work /work/acc3] [--list] [--run NAME | --all]
    python pipelines/accuracy3.py --ensemble [--work /work/acc3]
    python pipelines/accuracy3.py --ckplus [NAME] [--work /work/acc3]

Each run is ``configs/pretrain.yaml`` (75 epochs) plus the options configs/accuracy3.yaml names
for it. Without ``--run``
the first run whose result is not committed yet (``reports/fer2013/runs/NAME.json``) is started,
or resumed from ``WORK/NAME-work`` (its checkpoint: rerun the same command after an interruption).
While a run trains, its process holds that folder (fer_tf.locking): ``--list`` says "training now"
with the process, and a second command refuses to start the run again.
A finished run leaves, to commit:

- ``reports/fer2013/runs/NAME.json`` (its results, history and provenance), then rebuild
  ``reports/fer2013/README.md`` with ``python pipelines/report_fer2013.py`` at a clean commit;
- ``reports/fer2013/teachers/NAME.npz``, for a run that another run distils from: what the network
  predicts on the training faces (0.5 MB; the ensemble run distils from these, so the 6-12 MB
  networks stay out of the repository, whose tracked files must leave room for the GPU pack's
  40 MiB of images; ``--teacher NAME KERAS`` writes one for any network). The network itself stays
  in ``WORK/NAME-publish``.

A run better than the committed backbone on both splits, PublicTest and PrivateTest (the report's
rule: choosing by PrivateTest alone would tune on the test split), leads to the rest of issue 27:
the shipped model remade from its network (``python pipelines/ship.py --pretrained WORK/NAME-publish/
fer2013_backbone.keras`` with the run's ``model.*`` options as ``--set``: a starting network of
other capacity options is refused otherwise) and the CK+ study from it (``pipelines/finetune.py
--pretrained ... --runs reports/ckplus48/backbones/NAME --variants softmax,2B(N+M)``, the
same ``--set``; reports/ckplus48/backbones/README.md shows the commands of the earlier studies).

``--ckplus [NAME]`` runs (or resumes) that CK+48 study from run NAME's network in ``WORK/NAME-publish``
(default: the finished run better than the committed backbone on both splits, best PublicTest
first), writing ``reports/ckplus48/backbones/NAME/backbone.json`` (what the study starts from) and
the run files beside it; ``--all`` goes on to it once no run is left to train.

``--ensemble`` measures the networks the ensemble run distils from, each alone and as an ensemble
(the mean of their class probabilities), on PublicTest and PrivateTest: ``reports/fer2013/
ensemble.json``, shown in the report. It reads the networks from ``WORK/NAME-publish`` (those not
there yet are listed as missing) and the committed backbone; a minute or two.

On a CPU without native bfloat16 the runs train in float32 (``train.mixed_precision=false``; the
committed recipe's bfloat16 is several times slower there: fer_tf/training/precision.py). A run
that needs other runs' networks (the ensemble) waits until their teacher files are there: committed,
or written by a run that finished in this checkout. ``--all`` goes on from one run to the next
until none can start, so an unattended machine trains the whole plan.
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

from _common import DATASETS, REPO, run

TEACHERS = REPO / "reports" / "fer2013" / "teachers"
RESULTS = REPO / "reports" / "fer2013" / "runs"
ENSEMBLE = REPO / "reports" / "fer2013" / "ensemble.json"
STUDIES = REPO / "reports" / "ckplus48" / "backbones"
COMMITTED = REPO / "reports" / "fer2013" / "results.json"

BACKBONE = "pretrained/fer2013_backbone.keras"

PLAN = REPO / "configs" / "accuracy3.yaml"


def _runs():
    """name -> the options it adds to configs/pretrain.yaml (configs/accuracy3.yaml), in order."""
    from fer_tf.config import load_yaml

    return {name: list(run["set"]) for name, run in load_yaml(PLAN)["runs"].items()}


RUNS = _runs()


def _teachers(name):
    """The teacher files run ``name``'s ``train.distill_from`` names, as relative paths ([] when it
    distils from none)."""
    from fer_tf.training.distillation import teacher_paths  # deferred: keras (its one reading of them)

    values = [item.partition("=")[2] for item in RUNS[name] if item.partition("=")[0] == "train.distill_from"]
    return teacher_paths(values[0]) if values else []


def distilled_by(name):
    """The planned runs that distil from run ``name``'s network (through its teacher file)."""
    return [other for other in RUNS if any(t.stem == name and t.suffix == ".npz" for t in _teachers(other))]


def needs(name, root=None):
    """The committed files a run's options name (distillation teachers), in ``root`` (default: this
    checkout)."""
    root = REPO if root is None else pathlib.Path(root)
    return [root / p for p in _teachers(name)]


def _in(root, path):
    """``path``, a file of this checkout, in the checkout ``root`` instead (itself when ``root`` is None)."""
    return path if root is None else pathlib.Path(root) / path.relative_to(REPO)


def status(name, root=None):
    """"done" (its result is committed in ``root``, default this checkout), "waits for ..." (a
    network it needs is not), or "to run"."""
    if (_in(root, RESULTS) / f"{name}.json").is_file():
        return "done"
    missing = [p for p in needs(name, root) if not p.is_file()]
    return f"waits for {', '.join(p.name for p in missing)}" if missing else "to run"


def runnable(root=None):
    """The runs that can start now, in the plan's order: not committed yet, and every network they
    need committed (what the GPU pack, pipelines/device/run.sh MODE=accuracy3, runs)."""
    return [name for name in RUNS if status(name, root) == "to run"]


def settings_in(name, root):
    """Run ``name``'s options with the files they name as absolute paths in ``root``: for a run
    started from elsewhere, such as the code snapshot of the GPU pack, whose working tree holds
    the committed teachers (pipelines/device/run.sh)."""
    teachers = ",".join(str(p) for p in needs(name, pathlib.Path(root).resolve()))
    return [f"train.distill_from={teachers}" if item.startswith("train.distill_from=") else item
            for item in RUNS[name]]


def progress(name, work):
    """Where an unfinished run's checkpoint in ``work`` stands ("" when it has none)."""
    import json

    folder = pathlib.Path(work) / f"{name}-work"
    try:  # the human-readable copy of the checkpoint's state (fer_tf.training.loop.STATE)
        state = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return ""
    history = state.get("history") or [{}]
    last = history[-1].get("val_accuracy")
    shown = f", PublicTest {100 * last:.2f}% after it" if last is not None else ""
    epochs = ((state.get("settings") or {}).get("train") or {}).get("epochs")
    recent = sorted(e["epoch_seconds"] for e in history[-10:] if e.get("epoch_seconds"))
    if epochs and recent and state.get("epoch") is not None:
        median = recent[len(recent) // 2]
        left = (epochs - state["epoch"]) * median / 3600
        shown += f"; {epochs - state['epoch']} epochs left, about {left:.1f} h at {median:.0f} s an epoch"
    of = f" of {epochs}" if epochs else ""
    return f" (checkpoint after epoch {state.get('epoch')}{of} in {folder}{shown}: the same command resumes it)"


def training_now(name, work):
    """The process training run ``name`` in ``work`` now, in words ("" when none: the checkpoint
    folder's lock, fer_tf.locking, is free)."""
    from fer_tf import locking

    return locking.described(pathlib.Path(work) / f"{name}-work", command=False)


def store_teacher(name, network):
    """``reports/fer2013/teachers/NAME.npz``: the network's predictions on the training faces."""
    from fer_tf.data.labels import BASIC7
    from fer_tf.research.experiments import face_keys, fer2013_splits
    from fer_tf.training.distillation import save_teacher_probabilities

    labels = json.loads(pathlib.Path(network).with_suffix(".json").read_text()).get("labels") or BASIC7
    table, faces, _, split = fer2013_splits(DATASETS / "fer2013", labels)
    rows = split["Training"]
    keys = face_keys(table, DATASETS / "fer2013", rows)
    out = save_teacher_probabilities(network, faces[rows], keys, labels, TEACHERS / f"{name}.npz")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def ensemble_members(work):
    """The first planned run that distils from several networks, ``{member: network file}`` for
    those on this machine (a teacher file ``NAME.npz`` stands for the network of run NAME, in
    ``work/NAME-publish``), and the members whose network is not there."""
    from fer_tf.research.pretrain_report import BACKBONE_NAME

    name = next((n for n in RUNS if len(_teachers(n)) >= 2), None)
    if name is None:
        raise SystemExit(f"error: no run of {PLAN.relative_to(REPO)} distils from several networks")
    teachers = _teachers(name)
    members, missing = {}, []
    for teacher in teachers:
        if teacher.suffix == ".keras":
            members[teacher.as_posix()] = REPO / teacher
            continue
        network = pathlib.Path(work) / f"{teacher.stem}-publish" / BACKBONE_NAME
        if network.is_file():
            members[teacher.stem] = network
        else:
            missing.append(teacher.stem)
    return name, members, missing


def measure_ensemble(work):
    """Write ENSEMBLE: each member of the ensemble run's teachers, and their ensemble, on the test
    splits (:func:`fer_tf.research.ensembles.ensemble_results`)."""
    from fer_tf.data.labels import BASIC7
    from fer_tf.model import saving
    from fer_tf.research import ensembles, reporting
    from fer_tf.research.experiments import fer2013_splits

    name, members, missing = ensemble_members(work)
    if len(members) < 2:
        raise SystemExit(f"error: {len(members)} of the networks {name} distils from are on this machine "
                         f"(missing: {', '.join(missing)}); finish their runs first (--list)")
    commit = reporting.git_commit()
    _, faces, ids, split = fer2013_splits(DATASETS / "fer2013", BASIC7)
    probabilities = {}
    for member, network in members.items():
        print(f"predicting with {member} ({network})", flush=True)
        probabilities[member] = ensembles.split_probabilities(saving.load_model(network), faces, split)
    result = {"what": f"the networks {name} distils from, alone and as an ensemble (the mean of their "
                      "class probabilities)",
              "distilled_by": name, "missing": missing,
              **ensembles.ensemble_results(probabilities, ids, split),
              "run": reporting.run_info(commit=commit)}
    reporting.write_json(ENSEMBLE, result)
    print(f"wrote {ENSEMBLE}: PrivateTest {100 * result['ensemble']['private_test_accuracy']:.2f}% "
          f"({len(members)} networks" + (f"; missing {', '.join(missing)})" if missing else ")"))
    return 0


def leaders(root=None):
    """The finished runs better than the committed backbone on both splits (PublicTest and
    PrivateTest, centre crop), best PublicTest first: the candidates for a new backbone."""
    from fer_tf.research.pretrain_report import against  # the report's rule, in one place

    results = _in(root, RESULTS)
    base = json.loads(_in(root, COMMITTED).read_text())
    better = {}
    for name in RUNS:
        path = results / f"{name}.json"
        if path.is_file():
            mine = json.loads(path.read_text())
            if against(mine, base) == "better":
                better[name] = mine["public_test_accuracy"]
    return sorted(better, key=better.get, reverse=True)


def _shown(path):
    """A path as a message shows it: relative to the checkout where it is inside it."""
    path = pathlib.Path(path)
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def ckplus_start(name, work):
    """Check that run ``name`` is finished and its network is in ``work``, and write (or check)
    ``reports/ckplus48/backbones/NAME/backbone.json``, which says what the study starts from.
    Returns the network's path and the study's folder."""
    from fer_tf.research.crossval import file_digest
    from fer_tf.research.pretrain_report import BACKBONE_NAME

    result = RESULTS / f"{name}.json"
    network = pathlib.Path(work) / f"{name}-publish" / BACKBONE_NAME
    if not result.is_file():
        raise SystemExit(f"error: {name} has no result ({_shown(result)}): "
                         f"finish its run first (python pipelines/accuracy3.py --run {name})")
    if not network.is_file():
        raise SystemExit(f"error: the network of {name} is not at {network}: the networks stay on the "
                         "machine that trained them; pass the --work folder it trained in, or retrain it")
    from fer_tf.config import load_yaml

    accuracy = json.loads(result.read_text())
    info = {"what": f"Accuracy III run `{name}`: {load_yaml(PLAN)['runs'][name]['what']}",
            "fer2013_private_test_accuracy": accuracy["private_test_accuracy"],
            "fer2013_public_test_accuracy": accuracy["public_test_accuracy"],
            "sha256_12": file_digest(network),
            "made_by": f"python pipelines/accuracy3.py --run {name} (configs/accuracy3.yaml; its result: "
                       f"reports/fer2013/runs/{name}.json)"}
    folder = STUDIES / name
    path = folder / "backbone.json"
    if path.is_file():
        before = json.loads(path.read_text()).get("sha256_12")
        if before != info["sha256_12"]:
            raise SystemExit(f"error: {_shown(path)} says its runs started from network "
                             f"{before}, but {network} is {info['sha256_12']}: the runs of one study "
                             "start from one network; move that folder aside to start the study over")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=1) + "\n")
    return network, folder


def ckplus_commands(name, network, folder):
    """The finetune.py commands of the CK+48 study from run ``name``'s network: 2B(N+M) and
    softmax on the config's folds, one seed at a time (both variants of a seed before the next
    seed, so that a study cut short holds whole seeds, each a paired comparison), with the run's
    ``model.*`` options (the network's shape)."""
    from fer_tf.config import load_yaml

    seeds = load_yaml(REPO / "configs" / "finetune" / "ckplus48.yaml")["evaluation"]["seeds"]
    sets = [arg for item in RUNS[name] if item.startswith("model.") for arg in ("--set", item)]
    return [[sys.executable, "pipelines/finetune.py", "--dataset", "ckplus48", "--parts", "main",
             "--variants", variant, "--seeds", str(seed), "--no-probe", "--pretrained", str(network),
             "--runs", str(folder), *sets]
            for seed in seeds for variant in ("2B(N+M)", "softmax")]


def ckplus_study(name, work):
    """Run (or resume) the CK+48 study from run ``name``'s network."""
    network, folder = ckplus_start(name, work)
    for cmd in ckplus_commands(name, network, folder):
        print("running:", " ".join(cmd[1:]), flush=True)
        code = subprocess.call(cmd, cwd=REPO)
        if code:
            return code
    print(f"finished the CK+48 study from {name}: commit {_shown(folder)}, then rebuild the "
          "CK+48 report with make evaluate DATASET=ckplus48 at that clean commit", flush=True)
    return 0


def command(name, work):
    """The pretrain command of run ``name`` (float32 where the CPU lacks native bfloat16)."""
    from fer_tf.training.precision import bfloat16_warning

    sets = list(RUNS[name])
    if bfloat16_warning(True) is not None:
        sets.append("train.mixed_precision=false")
    folder = pathlib.Path(work)
    return [sys.executable, "pipelines/pretrain.py", "--config", "configs/pretrain.yaml",
            *[arg for item in sets for arg in ("--set", item)],
            "--output", str(folder / f"{name}-work"), "--report", str(folder / f"{name}-report"),
            "--publish", str(folder / f"{name}-publish")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/accuracy3", help="folder of the runs' checkpoints")
    parser.add_argument("--list", action="store_true", help="say where each run stands, run nothing")
    parser.add_argument("--run", choices=sorted(RUNS), help="this run (default: the first not done)")
    parser.add_argument("--all", action="store_true",
                        help="after a run, go on with the next one that can start (its teachers are "
                             "in place once the runs they come from have finished), until none can")
    parser.add_argument("--teacher", nargs=2, metavar=("NAME", "KERAS"),
                        help="only write reports/fer2013/teachers/NAME.npz from the network KERAS")
    parser.add_argument("--runnable", action="store_true",
                        help="only print each run that can start, one a line: its name and options, "
                             "files as absolute paths in --repo (for pipelines/device/run.sh)")
    parser.add_argument("--repo", default=REPO, type=pathlib.Path,
                        help="the checkout whose committed results and teachers count (default: this one)")
    parser.add_argument("--ensemble", action="store_true",
                        help="only measure the ensemble run's networks, alone and together "
                             "(reports/fer2013/ensemble.json)")
    parser.add_argument("--ckplus", nargs="?", const="", metavar="NAME",
                        help="only run (or resume) the CK+48 study from a finished run's network "
                             "(default: the run better than the committed backbone on both splits, "
                             "best PublicTest first): reports/ckplus48/backbones/NAME")
    args = parser.parse_args()
    if args.ckplus is not None:
        name = args.ckplus or next(iter(leaders()), None)
        if name is None:
            raise SystemExit("error: no finished run is better than the committed backbone on both "
                             "PublicTest and PrivateTest; name one with --ckplus NAME to study it anyway")
        if name not in RUNS:
            parser.error(f"--ckplus {name}: not a run of {PLAN.relative_to(REPO)} ({', '.join(RUNS)})")
        return ckplus_study(name, args.work)
    if args.runnable:
        for name in runnable(args.repo):
            print(name, *settings_in(name, args.repo))
        return 0
    if args.ensemble:
        return measure_ensemble(args.work)
    if args.teacher:
        store_teacher(*args.teacher)
        return 0
    for name in RUNS:
        now = status(name)
        busy = training_now(name, args.work) if now == "to run" else ""
        print(f"{name}: " + (f"training now, in {busy}" if busy else now)
              + (progress(name, args.work) if now == "to run" else ""))
    if args.list:
        return 0
    if args.all and args.run:
        parser.error("--all runs every run that can start, one after another; --run names one")
    name = args.run or next(iter(runnable()), None)
    if name is None:
        print("nothing to run: every run is done or waits for a network that is not committed")
        return then_the_study(args.all, args.work)
    if status(name) != "to run":
        print(f"{name}: {status(name)}", file=sys.stderr)
        return 2
    busy = training_now(name, args.work)
    if busy:
        print(f"error: {name} is training now, in {busy}; --list says how "
              "far it is (a second run would overwrite its checkpoints)", file=sys.stderr)
        return 2
    while name is not None:
        code = train(name, args.work)
        if code or not args.all:
            return code
        # a finished run's files are in place now: the next run may be one that needed them
        name = next(iter(runnable()), None)
    print("nothing more to run: every run is done or waits for a network that is not there")
    return then_the_study(args.all, args.work)


def then_the_study(go_on, work):
    """With ``--all``, once no run can train: the CK+48 study from the leading run, if one is better
    than the committed backbone on both splits (its network must be in ``work``: else it stops, saying so)."""
    lead = next(iter(leaders()), None) if go_on else None
    if lead is None:
        return 0
    print(f"{lead} is better than the committed backbone on both splits: its CK+48 study", flush=True)
    return ckplus_study(lead, work)


def train(name, work):
    """Train (or resume) one run, then put its results and teacher file in place."""
    cmd = command(name, work)
    print("running:", " ".join(cmd[1:]), flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code:
        return code
    work = pathlib.Path(work)
    report, publish = work / f"{name}-report", work / f"{name}-publish"
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report / "results.json", RESULTS / f"{name}.json")
    students = distilled_by(name)
    if students:  # only a teacher's predictions are kept: each file uses up the GPU pack's room
        store_teacher(name, publish / "fer2013_backbone.keras")
    print(f"finished {name}: commit reports/fer2013/runs/{name}.json"
          + (f" and reports/fer2013/teachers/{name}.npz ({', '.join(students)} distil from it); at that "
             "clean commit, python pipelines/accuracy3.py --ensemble (commit its JSON)" if students else "")
          + "; then python pipelines/report_fer2013.py at a clean commit, and commit the report", flush=True)
    return 0


if __name__ == "__main__":
    run(main)

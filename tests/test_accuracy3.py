"""pipelines/accuracy3.py, the Accuracy III campaign driver: every run's options make a valid
config, the ensemble waits for its teachers, and finished runs are not started again."""

import json
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pipelines"))

import accuracy3  # noqa: E402
from _common import load_configs, parse_settings  # noqa: E402


@pytest.mark.parametrize("name", list(accuracy3.RUNS))
def test_every_run_is_a_valid_config_off_the_recipe_only_where_named(name):
    base_model, base_train, _ = load_configs(REPO / "configs" / "pretrain.yaml")
    model, train, _ = load_configs(REPO / "configs" / "pretrain.yaml", parse_settings(accuracy3.RUNS[name]))
    changed = {f"model.{k}" for k, v in vars(model).items() if v != getattr(base_model, k)}
    changed |= {f"train.{k}" for k, v in vars(train).items() if v != getattr(base_train, k)}
    assert changed == {item.partition("=")[0] for item in accuracy3.RUNS[name]}
    assert train.epochs == 75


def test_the_ensemble_has_three_teachers_and_waits_for_the_two_runs(tmp_path):
    teachers = accuracy3.needs("ensemble-distilled-75-epochs")
    assert len(teachers) == 3 and teachers[0] == REPO / accuracy3.BACKBONE
    assert accuracy3.needs("width-0.5-distilled-75-epochs") == teachers  # the same ensemble
    assert {p.stem for p in teachers[1:]} == {"extra-blocks-3-75-epochs", "mixup-0.2-75-epochs"}
    # a stand-in checkout, whatever this one has committed: the backbone and no run finished yet
    root = tmp_path / "checkout"
    (root / accuracy3.BACKBONE).parent.mkdir(parents=True)
    (root / accuracy3.BACKBONE).write_bytes(b"")
    assert accuracy3.status("ensemble-distilled-75-epochs", root) == (
        "waits for extra-blocks-3-75-epochs.npz, mixup-0.2-75-epochs.npz")
    assert accuracy3.status("mixup-0.2-75-epochs", root) == "to run"
    assert accuracy3.runnable(root) == ["extra-blocks-3-75-epochs", "mixup-0.2-75-epochs"]
    results = root / accuracy3.RESULTS.relative_to(REPO)
    results.mkdir(parents=True)
    (results / "mixup-0.2-75-epochs.json").write_text("{}")  # finished, its result committed
    assert accuracy3.status("mixup-0.2-75-epochs", root) == "done"
    assert accuracy3.runnable(root) == ["extra-blocks-3-75-epochs"]


def test_command_trains_in_float32_where_the_cpu_lacks_bfloat16(monkeypatch):
    from fer_tf.training import precision

    monkeypatch.setattr(precision, "bfloat16_warning", lambda *a, **k: "slow")
    cmd = accuracy3.command("extra-blocks-3-75-epochs", "/w")
    assert cmd[cmd.index("--output") + 1] == "/w/extra-blocks-3-75-epochs-work"
    assert "train.mixed_precision=false" in cmd and "model.extra_blocks=3" in cmd
    monkeypatch.setattr(precision, "bfloat16_warning", lambda *a, **k: None)
    assert "train.mixed_precision=false" not in accuracy3.command("extra-blocks-3-75-epochs", "/w")


def test_list_says_where_an_unfinished_run_stands(tmp_path):
    assert accuracy3.progress("mixup-0.2-75-epochs", tmp_path) == ""
    folder = tmp_path / "mixup-0.2-75-epochs-work"
    folder.mkdir()
    (folder / "state.json").write_text('{"epoch": 24, "history": [{"val_accuracy": 0.5815}]}')
    assert accuracy3.progress("mixup-0.2-75-epochs", tmp_path) == (
        f" (checkpoint after epoch 24 in {folder}, PublicTest 58.15% after it: the same command resumes it)")
    # with the run's epochs and times: what is left, at the median of the last ten epochs
    history = [{"val_accuracy": 0.5, "epoch_seconds": s} for s in [100] * 5 + [130, 140, 150, 160, 1000, 135]]
    (folder / "state.json").write_text(json.dumps({"epoch": 11, "history": history,
                                                    "settings": {"train": {"epochs": 75}}}))
    assert accuracy3.progress("mixup-0.2-75-epochs", tmp_path) == (
        f" (checkpoint after epoch 11 of 75 in {folder}, PublicTest 50.00% after it; 64 epochs left, "
        "about 2.4 h at 135 s an epoch: the same command resumes it)")


def test_all_goes_on_to_the_runs_whose_teachers_a_finished_run_wrote(monkeypatch, tmp_path):
    results, teachers = tmp_path / "runs", tmp_path / "teachers"
    results.mkdir()
    teachers.mkdir()
    real_needs = accuracy3.needs
    monkeypatch.setattr(accuracy3, "RESULTS", results)
    monkeypatch.setattr(accuracy3, "needs", lambda name, root=None: [
        p if p.name.endswith(".keras") else teachers / p.name for p in real_needs(name)])
    trained = []

    def train(name, work):  # what a finished run leaves: its results and its teacher file
        trained.append(name)
        (results / f"{name}.json").write_text("{}")
        (teachers / f"{name}.npz").write_text("")
        return 0

    monkeypatch.setattr(accuracy3, "train", train)
    monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path), "--all"])
    assert accuracy3.main() == 0
    assert trained == list(accuracy3.RUNS)  # the ensemble and the half width after their teachers
    trained.clear()
    for f in results.iterdir():
        f.unlink()
    monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path)])
    assert accuracy3.main() == 0 and trained == ["extra-blocks-3-75-epochs"]  # without --all: one run


def test_a_run_that_is_training_is_listed_so_and_not_started_twice(monkeypatch, tmp_path, capsys):
    """The checkpoint folder's lock (fer_tf.locking) says a run is training: --list says so, and a
    second campaign refuses to start it, rather than overwrite its checkpoints."""
    from fer_tf import locking

    monkeypatch.setattr(accuracy3, "RESULTS", tmp_path / "runs")
    monkeypatch.setattr(accuracy3, "train", lambda name, work: pytest.fail(f"{name} started twice"))
    name = "ensemble-distilled-75-epochs"
    monkeypatch.setattr(accuracy3, "runnable", lambda root=None: [name])
    monkeypatch.setattr(accuracy3, "status", lambda n, root=None: "to run")
    assert accuracy3.training_now(name, tmp_path) == ""
    with locking.holding(tmp_path / f"{name}-work"):
        assert accuracy3.training_now(name, tmp_path).startswith(f"process {os.getpid()} since ")
        monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path), "--list"])
        assert accuracy3.main() == 0
        assert f"{name}: training now, in process " in capsys.readouterr().out
        monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path), "--all"])
        assert accuracy3.main() == 2
        assert f"error: {name} is training now, in process " in capsys.readouterr().err


def test_pipelines_run_their_own_checkout_s_fer_tf(tmp_path):
    """A second checkout that shares the virtual environment (whose editable install, if any,
    points at this one) must import its own fer_tf: the campaign trains in a clone."""
    import shutil
    import subprocess

    clone = tmp_path / "clone"
    (clone / "pipelines").mkdir(parents=True)
    (clone / "fer_tf").mkdir()
    shutil.copy(REPO / "pipelines" / "_common.py", clone / "pipelines" / "_common.py")
    (clone / "fer_tf" / "__init__.py").write_text("")
    out = subprocess.run([sys.executable, "-c", "import _common, fer_tf; print(fer_tf.__file__)"],
                         cwd=clone / "pipelines", capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(clone / "pipelines")})
    assert pathlib.Path(out.stdout.strip()).resolve() == (clone / "fer_tf" / "__init__.py").resolve()


def test_runnable_reads_another_checkout_and_names_its_teachers_by_absolute_paths(tmp_path):
    """The GPU pack runs its code from a snapshot without reports/ or pretrained/: what can run,
    and the teachers a run reads, come from the working tree that travelled (--repo)."""
    import subprocess

    assert accuracy3.runnable(tmp_path)[:2] == ["extra-blocks-3-75-epochs", "mixup-0.2-75-epochs"]
    runs = tmp_path / "reports" / "fer2013" / "runs"
    runs.mkdir(parents=True)
    for name in ("extra-blocks-3-75-epochs", "mixup-0.2-75-epochs"):
        (runs / f"{name}.json").write_text("{}")
    assert accuracy3.runnable(tmp_path) == []  # their teachers are not in tmp_path
    for path in accuracy3.needs("ensemble-distilled-75-epochs", tmp_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert accuracy3.runnable(tmp_path) == ["ensemble-distilled-75-epochs", "width-0.5-distilled-75-epochs"]
    done = subprocess.run([sys.executable, str(REPO / "pipelines" / "accuracy3.py"), "--runnable",
                           "--repo", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["ensemble-distilled-75-epochs", "width-0.5-distilled-75-epochs"]
    teachers = lines[0].split()[1].partition("=")[2].split(",")
    assert teachers == [str(p) for p in accuracy3.needs("ensemble-distilled-75-epochs", tmp_path)]
    assert all(pathlib.Path(t).is_absolute() and pathlib.Path(t).is_file() for t in teachers)
    assert lines[1].split()[1:] == ["model.width=0.5", lines[0].split()[1]]


def _result(folder, name, public, private):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"public_test_accuracy": public,
                                                     "private_test_accuracy": private}))


def test_a_new_backbone_must_be_better_on_both_splits_and_the_best_on_publictest_leads(tmp_path):
    results = tmp_path / accuracy3.RESULTS.relative_to(REPO)
    _result(results.parent, "results", 0.65, 0.66)  # the committed backbone
    assert accuracy3.leaders(tmp_path) == []
    _result(results, "extra-blocks-3-75-epochs", 0.67, 0.655)  # better on PublicTest only
    _result(results, "mixup-0.2-75-epochs", 0.66, 0.67)
    _result(results, "ensemble-distilled-75-epochs", 0.68, 0.665)
    assert accuracy3.leaders(tmp_path) == ["ensemble-distilled-75-epochs", "mixup-0.2-75-epochs"]


def test_the_ckplus_study_starts_from_a_finished_run_s_network_and_keeps_to_it(monkeypatch, tmp_path):
    monkeypatch.setattr(accuracy3, "RESULTS", tmp_path / "runs")
    monkeypatch.setattr(accuracy3, "STUDIES", tmp_path / "backbones")
    name, work = "width-0.5-distilled-75-epochs", tmp_path / "work"
    with pytest.raises(SystemExit, match="no result.*--run width-0.5-distilled-75-epochs"):
        accuracy3.ckplus_start(name, work)
    _result(tmp_path / "runs", name, 0.66, 0.67)
    with pytest.raises(SystemExit, match="network of width-0.5-distilled-75-epochs is not at"):
        accuracy3.ckplus_start(name, work)
    network = work / f"{name}-publish" / "fer2013_backbone.keras"
    network.parent.mkdir(parents=True)
    network.write_bytes(b"one network")
    assert accuracy3.ckplus_start(name, work) == (network, tmp_path / "backbones" / name)
    info = json.loads((tmp_path / "backbones" / name / "backbone.json").read_text())
    assert info["fer2013_private_test_accuracy"] == 0.67 and info["what"].startswith(f"Accuracy III run `{name}`")
    assert accuracy3.ckplus_start(name, work)[0] == network  # resuming: the same network
    network.write_bytes(b"another network")
    with pytest.raises(SystemExit, match="move that folder aside"):
        accuracy3.ckplus_start(name, work)
    commands = accuracy3.ckplus_commands(name, network, tmp_path / "backbones" / name)
    # seed by seed, both variants of each: a study cut short holds whole paired seeds
    assert [(c[c.index("--seeds") + 1], c[c.index("--variants") + 1]) for c in commands] == [
        ("0", "2B(N+M)"), ("0", "softmax"), ("1", "2B(N+M)"), ("1", "softmax"), ("2", "2B(N+M)"), ("2", "softmax")]
    for c in commands:  # the network's shape, not its distillation, goes to fine-tuning
        assert c[c.index("--set") + 1:] == ["model.width=0.5"] and c[c.index("--pretrained") + 1] == str(network)


def test_all_goes_on_to_the_study_of_the_leading_run_once_nothing_is_left_to_train(monkeypatch, tmp_path):
    studied = []
    monkeypatch.setattr(accuracy3, "runnable", lambda root=None: [])
    monkeypatch.setattr(accuracy3, "leaders", lambda root=None: ["mixup-0.2-75-epochs"])
    monkeypatch.setattr(accuracy3, "ckplus_study", lambda name, work: studied.append((name, work)) or 0)
    monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path)])
    assert accuracy3.main() == 0 and studied == []  # without --all: nothing to train, nothing else
    monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--work", str(tmp_path), "--all"])
    assert accuracy3.main() == 0 and studied == [("mixup-0.2-75-epochs", str(tmp_path))]
    monkeypatch.setattr(accuracy3, "leaders", lambda root=None: [])
    monkeypatch.setattr(sys, "argv", ["accuracy3.py", "--ckplus"])
    with pytest.raises(SystemExit, match="better than the committed backbone on both"):
        accuracy3.main()


def test_only_the_runs_another_run_distils_from_keep_a_teacher_file(monkeypatch, tmp_path):
    """Each teacher file uses up room in the GPU pack: the distilled runs' predictions are not kept."""
    assert accuracy3.distilled_by("extra-blocks-3-75-epochs") == [
        "ensemble-distilled-75-epochs", "width-0.5-distilled-75-epochs"]
    assert accuracy3.distilled_by("ensemble-distilled-75-epochs") == []
    stored = []
    monkeypatch.setattr(accuracy3, "RESULTS", tmp_path / "runs")
    monkeypatch.setattr(accuracy3, "subprocess", type("S", (), {"call": staticmethod(lambda cmd, cwd: 0)}))
    monkeypatch.setattr(accuracy3, "store_teacher", lambda name, network: stored.append(name))
    for name in ("mixup-0.2-75-epochs", "ensemble-distilled-75-epochs"):
        (tmp_path / f"{name}-report").mkdir()
        (tmp_path / f"{name}-report" / "results.json").write_text("{}")
        assert accuracy3.train(name, tmp_path) == 0 and (tmp_path / "runs" / f"{name}.json").is_file()
    assert stored == ["mixup-0.2-75-epochs"]

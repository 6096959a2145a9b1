"""``reports/shipped/trials/README.md``: other recipes of `make ship`, each a full run, beside the
shipped model and the committed recipe rerun on the same machine.

A trial is ``pipelines/ship.py`` with ``--set`` options, its report written to
``reports/shipped/trials/NAME/`` (``results.json``) and its model kept out of ``saved_models/``.
The committed recipe rerun beside them (a trial named ``baseline``, no options) is what each is
measured against: the shipped model itself may have been made on another machine, where the same
seed does not give the same network.
"""

from __future__ import annotations

import json
import pathlib

from fer_tf.files import atomic_write_text
from fer_tf.research.pretrain_report import COMMITTED_BACKBONE, _pct, config_changes

BASELINE = "baseline"


def _start(r):
    """How a trial's start differs from the committed backbone's (``""`` when it does not): the
    network's folder and file, digest and FER2013 PrivateTest (``results["pretrained"]``)."""
    start = r.get("pretrained") or {}
    if not start.get("file") or start["file"] == COMMITTED_BACKBONE:
        return ""
    path = pathlib.PurePosixPath(start["file"])
    score = (f", FER2013 PrivateTest {_pct(start['private_test_accuracy'])}"
             if start.get("private_test_accuracy") is not None else "")
    return f"starts from `{path.parent.name}/{path.name}` ({start.get('sha256_12', '?')}{score})"


def _row(name, r, base_cfg):
    h, fer = r["held_out_subjects"], r["fer2013"]
    changes = config_changes(base_cfg, r["run"].get("config", {}))
    start = _start(r)
    changes = start if start and changes == "-" else f"{changes}; {start}" if start else changes
    return (f"| {name} | {changes} | {_pct(h['image_accuracy'])} | "
            f"{_pct(h.get('sequence_accuracy'))} | {_pct(fer.get('PublicTest_accuracy'))} | "
            f"{_pct(fer.get('PrivateTest_accuracy'))} | {_pct(fer.get('PrivateTest_accuracy_flip'))} | "
            f"`{str(r['run'].get('git_commit', '?'))[:7]}` |")


def _against(name, r, base):
    """A trial against the baseline, in points and, for the held-out subjects, in images."""
    h, b = r["held_out_subjects"], base["held_out_subjects"]
    images = round((h["image_accuracy"] - b["image_accuracy"]) * h["images"])
    parts = [f"held-out subjects {100 * (h['image_accuracy'] - b['image_accuracy']):+.2f} points "
             f"({images:+d} of {h['images']} images)"]
    for split in ("PublicTest", "PrivateTest"):
        parts.append(f"{split} {100 * (r['fer2013'][f'{split}_accuracy'] - base['fer2013'][f'{split}_accuracy']):+.2f} points")
    here, there = (x["run"].get("machine", {}).get("platform") for x in (r, base))
    other = (f" It ran on another machine than `{BASELINE}` ({here}, against {there}); the recipe "
             "trains in float32."
             if here and there and here != there else "")
    return f"`{name}` against `{BASELINE}`: " + ", ".join(parts) + "." + other


def write_trials_readme(folder, shipped="reports/shipped/results.json"):
    """Write ``folder/README.md`` from ``folder/NAME/results.json`` and the shipped model's results."""
    folder = pathlib.Path(folder)
    trials = {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/results.json"))}
    if not trials:
        raise FileNotFoundError(f"no trial in {folder} (NAME/results.json): run pipelines/ship.py --report "
                                f"{folder}/NAME first")
    shipped = json.loads(pathlib.Path(shipped).read_text())
    base_cfg = shipped["run"].get("config", {})
    lines = ["# Other recipes of `make ship`", "",
             "Each row is one full run of `pipelines/ship.py` (`configs/ship.yaml`, seed 0) with the options "
             "named, its report in `NAME/results.json` and its command there; the shipped model's own run "
             "is the first row. Held-out subjects: one eighth of the identity-labelled subjects, never seen "
             "in training (image and sequence level); FER2013: the test splits, centre crop.", "",
             "| run | config changes | held-out subjects | held-out, sequences | FER2013 PublicTest | "
             "FER2013 PrivateTest | PrivateTest, flip-averaged | commit |",
             "|---|---|---|---|---|---|---|---|",
             _row("the shipped model (`../results.json`)", shipped, base_cfg)]
    lines += [_row(f"`{name}`", r, base_cfg) for name, r in trials.items()]
    base = trials.get(BASELINE)
    if base is None:
        lines += ["", f"No `{BASELINE}` run yet: the committed recipe rerun on this machine, which the "
                  "trials are measured against (`pipelines/ship.py --report "
                  f"{folder}/{BASELINE}` with its other outputs elsewhere)."]
    else:
        machine = base["run"].get("machine", {})
        lines += ["", f"`{BASELINE}` is the committed recipe rerun on the trials' machine "
                  f"({machine.get('cpu', '?')}, {machine.get('cores', '?')} cores); one seed each, so a "
                  "difference of one or two held-out images, or a few tenths of a point on FER2013, is "
                  "within run-to-run noise.", ""]
        lines += [_against(name, r, base) for name, r in trials.items() if name != BASELINE]
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path

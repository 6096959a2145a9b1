"""Gather what the runs of pipelines/device/run.sh left in WORK into OUT (at most 8 files come back).

    python pipelines/device/collect.py WORK OUT

OUT/results.json: {run name: its results.json (or ablation row file)}; OUT/<run>.keras for each
full run (the paper's schedule, the CPU recipe, or the Accuracy III runs); a table of the finished
runs on stdout.
"""

import json
import pathlib
import shutil
import sys


def main(work, out):
    work, out = pathlib.Path(work), pathlib.Path(out)
    merged = {}
    for path in sorted((work / "reports").glob("*/results.json")):
        merged[path.parent.name] = json.loads(path.read_text())
    for path in sorted((work / "ablation").glob("*.json")):
        merged[f"ablation_{path.stem}"] = json.loads(path.read_text())
    (out / "results.json").write_text(json.dumps(merged, indent=1) + "\n")
    for model in sorted((work / "runs").glob("*/pretrained.keras"))[:6]:  # not the ablation's
        shutil.copyfile(model, out / f"{model.parent.name}.keras")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}"

    print(f"{'run':20} {'epochs':>6} {'s/epoch':>8} {'PublicTest':>10} {'PrivateTest':>11} {'Private+flip':>12}")
    for name, r in merged.items():
        h = r.get("history", [])
        secs = [e.get("epoch_seconds", 0) for e in h]
        print(f"{name:20} {len(h):6d} {sum(secs) / max(len(secs), 1):8.2f} {pct(r.get('public_test_accuracy')):>10} "
              f"{pct(r.get('private_test_accuracy')):>11} {pct(r.get('private_test_accuracy_flip')):>12}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

"""The reference ``r`` of the enrolled-neutral correction for one person, written to
web/src/neutral_reference.json (the page, web/src/baseline.js) and into the model's JSON sidecar
as ``neutral_reference`` (``fer-tf predict --baseline DIR`` and ``Recognizer.predict_people``
use it when fewer than two people of a run have a neutral photo).

    python pipelines/web_reference.py [--model saved_models/fer_tf_basic7.tflite]

``fer-tf predict --baseline DIR`` takes the reference from the run (``reference="run"``: the mean
offset of the people enrolled together, fer_tf/people/baseline.py). The page enrols one person,
and a run of one person would never be corrected (its offset is the reference). So one person is
corrected against the reference that the measured setting had (reports/people/: every Yale subject's
``normal`` photo enrolled at once): the mean, over the 15 Yale subjects, of the offset of their
``normal`` photo scored by the shipped classifier (the .tflite the page runs, through fer_tf's
LiteRT runner) -- what ``reference="run"`` gives a person enrolled with them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

from _common import DATASETS, REPO

sys.path.insert(0, str(REPO))
OUT = REPO / "web" / "src" / "neutral_reference.json"


def reference_report(model, datasets):
    """The reference of ``model`` (a .tflite) from the Yale ``normal`` photos under ``datasets``,
    with its provenance."""
    import numpy as np

    from fer_tf.deploy.recognizer import Recognizer
    from fer_tf.people import baseline
    from fer_tf.research.reporting import git_commit

    model = pathlib.Path(model)
    photos = sorted((pathlib.Path(datasets) / "yalefaces").glob("subject*.normal"))
    if not photos:
        sys.exit(f"no yalefaces/subject*.normal photos under {datasets}")
    probs, used = [], []
    with Recognizer(model=str(model), backend="litert") as rec:
        labels = list(rec.labels)
        for path in photos:
            faces = rec.predict(str(path))["faces"]
            if faces:  # largest first
                probs.append([faces[0]["probabilities"][n] for n in labels])
                used.append(path.name)
    probs = np.asarray(probs, np.float64)
    space = baseline.NEUTRAL_DEFAULTS["space"]
    # reference="run" of these people, each enrolled with their one photo
    reference = baseline.people_reference(probs, used, space=space)
    return {
        "command": "python pipelines/web_reference.py",
        "commit": git_commit(REPO),
        "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "photos": used, "photos_without_face": sorted(set(p.name for p in photos) - set(used)),
        "space": space, "labels": labels,
        "reference": [round(float(v), 8) for v in reference],
    }


def store_in_sidecar(model, report):
    """Put the reference into the model's JSON sidecar (``neutral_reference``), where
    ``fer-tf predict --baseline DIR`` finds it for a run with one person."""
    from fer_tf.deploy.people import NEUTRAL_REFERENCE
    from fer_tf.files import atomic_write_text
    from fer_tf.model import saving

    sidecar = saving.metadata_path(model)
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    meta[NEUTRAL_REFERENCE] = {
        **{k: report[k] for k in ("space", "labels", "reference", "model_sha256", "command", "commit")},
        "description": f"the mean offset of {len(report['photos'])} Yale subjects' normal photos",
    }
    atomic_write_text(sidecar, json.dumps(meta, indent=2) + "\n")
    return sidecar


def write_reference(model, datasets, out=OUT):
    """Make ``model``'s reference and write it to ``out`` (the page's copy) and into the model's
    sidecar; returns ``(report, sidecar path)``."""
    from fer_tf.files import atomic_write_text

    report = reference_report(model, datasets)
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    return report, store_in_sidecar(model, report)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=pathlib.Path, default=DATASETS)
    parser.add_argument("--model", type=pathlib.Path, default=REPO / "saved_models" / "fer_tf_basic7.tflite")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    report, sidecar = write_reference(args.model, args.datasets, args.out)
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out} and the neutral_reference of {sidecar}")


if __name__ == "__main__":
    main()

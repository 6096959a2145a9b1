"""The reference ``r`` of the page's enrolled-neutral correction (web/src/baseline.js), written to
web/src/neutral_reference.json.

    python pipelines/web_reference.py [--model saved_models/fer_tf_basic7.tflite]

``fer-tf predict --baseline DIR`` takes the reference from the run (``reference="run"``: the mean
offset of the people enrolled together, fer_tf/people/baseline.py). The page enrols one person,
and a run of one person is never corrected (its offset is the reference). So the page uses, as
its reference, the one that the measured setting had (reports/people/: every Yale subject's
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=pathlib.Path, default=DATASETS)
    parser.add_argument("--model", type=pathlib.Path, default=REPO / "saved_models" / "fer_tf_basic7.tflite")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    import numpy as np

    from fer_tf.deploy.recognizer import Recognizer
    from fer_tf.files import atomic_write_text
    from fer_tf.people import baseline
    from fer_tf.research.reporting import git_commit

    photos = sorted((args.datasets / "yalefaces").glob("subject*.normal"))
    if not photos:
        sys.exit(f"no yalefaces/subject*.normal photos under {args.datasets}")
    probs, used = [], []
    with Recognizer(model=str(args.model), backend="litert") as rec:
        labels = list(rec.labels)
        for path in photos:
            faces = rec.predict(str(path))["faces"]
            if faces:  # largest first
                probs.append([faces[0]["probabilities"][n] for n in labels])
                used.append(path.name)
    probs = np.asarray(probs, np.float64)
    space = baseline.NEUTRAL_DEFAULTS["space"]
    # reference="run" of these people, each enrolled with their one photo
    offsets = np.stack([baseline.offset(p[None], space=space) for p in probs])
    reference = offsets.mean(axis=0)
    report = {
        "command": "python pipelines/web_reference.py",
        "commit": git_commit(REPO),
        "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
        "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "photos": used, "photos_without_face": sorted(set(p.name for p in photos) - set(used)),
        "space": space, "labels": labels,
        "reference": [round(float(v), 8) for v in reference],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

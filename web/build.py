"""Build the static page into web/dist: the page's own files, LiteRT.js (from web/node_modules, pinned
by web/package-lock.json: run `npm ci` in web/ first) and the networks (MediaPipe's face networks
from the installed ``mediapipe`` wheel, the classifier and its sidecar from saved_models/).

    python web/build.py [--dist web/dist] [--model saved_models/fer_tf_basic7.tflite]

``make web`` runs both steps. dist/manifest.json lists every file with its size and SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import pathlib
import shutil
import sys

WEB = pathlib.Path(__file__).resolve().parent
REPO = WEB.parent
#: MediaPipe's networks, relative to the wheel's mediapipe/modules folder (fer_tf.preprocess.face_networks).
FACE_NETWORKS = ("face_detection/face_detection_short_range.tflite",
                 "face_detection/face_detection_full_range_sparse.tflite",
                 "face_landmark/face_landmark.tflite")
LITERT = WEB / "node_modules" / "@litertjs" / "core"


def mediapipe_modules():
    spec = importlib.util.find_spec("mediapipe")  # the wheel's folder, without importing it
    if spec is None or not spec.submodule_search_locations:
        sys.exit("web/build.py: the mediapipe package is not installed (make install)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "modules"


def fixed_batch(model: bytes) -> bytes:
    """The .tflite ``model`` with its batch dimension fixed to 1: LiteRT.js (2.5) runs inputs of the
    shape a model was saved with only, and the classifier is saved with a free batch dimension
    (``fer-tf export``; the Python runner resizes it). Every tensor whose shape signature starts
    with -1 gets 1 there; nothing else changes (tests/test_web.py checks the outputs are equal)."""
    import flatbuffers  # deferred: only the classifier needs it
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    for graph in tree.subgraphs:
        for tensor in graph.tensors:
            sig = tensor.shapeSignature
            if sig is not None and len(sig) and sig[0] == -1:
                tensor.shapeSignature = [1, *[int(v) for v in sig[1:]]]
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def build(dist: pathlib.Path, model: pathlib.Path):
    if not (LITERT / "dist" / "index.js").is_file():
        sys.exit("web/build.py: web/node_modules/@litertjs/core is missing: run `npm ci` in web/ (make web)")
    sidecar = model.with_suffix(".json")
    for path in (model, sidecar):
        if not path.is_file():
            sys.exit(f"web/build.py: {path} is missing (the shipped model: make ship, or pass --model)")
    tmp = dist.with_name(dist.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(WEB / "src", tmp)
    vendor = tmp / "vendor" / "litert"
    vendor.mkdir(parents=True)
    shutil.copy2(LITERT / "dist" / "index.js", vendor / "index.js")
    shutil.copytree(LITERT / "wasm", vendor / "wasm")
    shutil.copy2(LITERT / "package.json", vendor / "package.json")
    utils = tmp / "vendor" / "litert-wasm-utils"  # index.html's import map names it
    utils.mkdir()
    shutil.copy2(LITERT.parent / "wasm-utils" / "dist" / "index.js", utils / "index.js")
    shutil.copy2(LITERT.parent / "wasm-utils" / "package.json", utils / "package.json")
    models = tmp / "models"
    models.mkdir()
    modules = mediapipe_modules()
    for rel in FACE_NETWORKS:
        shutil.copy2(modules / rel, models / pathlib.Path(rel).name)
    (models / "fer_tf_basic7.tflite").write_bytes(fixed_batch(model.read_bytes()))
    shutil.copy2(sidecar, models / "fer_tf_basic7.json")
    manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size,
                                          "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                for p in sorted(tmp.rglob("*")) if p.is_file()}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(dist, ignore_errors=True)
    tmp.rename(dist)
    total = sum(v["bytes"] for v in manifest.values())
    print(f"web/build.py: {dist} ({len(manifest)} files, {total / 1e6:.1f} MB)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=pathlib.Path, default=WEB / "dist")
    parser.add_argument("--model", type=pathlib.Path, default=REPO / "saved_models" / "fer_tf_basic7.tflite")
    args = parser.parse_args(argv)
    build(args.dist.resolve(), args.model.resolve())


if __name__ == "__main__":
    main()

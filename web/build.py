"""Build the static page into web/dist: the page's own files, LiteRT.js (from web/node_modules, pinned
by web/package-lock.json: run `npm ci` in web/ first) and the networks (MediaPipe's face networks
from the installed ``mediapipe`` wheel with the short-range detector's scan template, the classifier and its sidecar from saved_models/).

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
#: The detector that the page's scan runs at an image's own size (scan_template).
SCAN_NETWORK = FACE_NETWORKS[0]
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


#: The scan's input sides are multiples of this (fer_tf.preprocess.face_networks._Detector.scan).
SCAN_UNIT = 16
#: Input shapes, in SCAN_UNIT steps (rows, columns), that the scan template is fitted on (the first
#: four) and checked against (the rest).
_FIT = ((8, 8), (9, 8), (8, 9), (9, 9))
_CHECK = ((1, 1), (3, 17), (20, 6), (64, 64))


def _tensor_shapes(model: bytes, rows: int, cols: int):
    """Every tensor's shape (by index) after LiteRT's Python interpreter resizes ``model``'s input
    to ``rows`` x ``cols`` x 3 pixels."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [1, rows, cols, 3])
    it.allocate_tensors()
    return {d["index"]: [int(v) for v in d["shape"]] for d in it.get_tensor_details()}


def scan_template(model: bytes) -> dict:
    """Where ``model``'s tensor shapes change with its input size, for the page's scan.

    The short-range detector is fully convolutional: fer_tf's scan runs it at an image's own size
    (rounded up to SCAN_UNIT pixels), but LiteRT.js runs a network at the shapes its flatbuffer
    holds only. Every size-dependent dimension of this network is ``c0 + ch * R + cw * C + chw * R
    * C`` with ``(R, C)`` the input's side over SCAN_UNIT (feature maps of side R / 2**i, anchor
    counts of R * C); this returns each such dimension's byte offset in ``model`` (little-endian
    int32 in the tensor's shape vector) and its four coefficients, fitted on four input sizes as
    LiteRT's interpreter computes the shapes after a resize and checked on four more. The page
    writes the dimensions of the size it needs into a copy of the model's bytes (facenet.js,
    ``Scanner``): the same network, at the same shapes as the Python interpreter's."""
    from ai_edge_litert import schema_py_generated as schema

    fb = schema.Model.GetRootAsModel(model, 0)
    graph = fb.Subgraphs(0)
    fits = {rc: _tensor_shapes(model, rc[0] * SCAN_UNIT, rc[1] * SCAN_UNIT) for rc in _FIT + _CHECK}
    dims, seen = [], {}
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if tensor.ShapeSignatureLength():
            raise ValueError(f"tensor {i} has a shape signature: the template does not patch those")
        field = tensor._tab.Offset(4)  # Tensor.shape, the table's first field
        if not field:
            continue
        start = tensor._tab.Vector(field)
        for j in range(tensor.ShapeLength()):
            d = {rc: shapes[i][j] for rc, shapes in fits.items()}
            if len(set(d.values())) == 1:
                if d[_FIT[0]] != tensor.Shape(j):
                    raise ValueError(f"tensor {i} dimension {j}: {tensor.Shape(j)} in the file, {d[_FIT[0]]} in LiteRT")
                continue
            chw = d[(9, 9)] - d[(9, 8)] - d[(8, 9)] + d[(8, 8)]
            ch = d[(9, 8)] - d[(8, 8)] - 8 * chw
            cw = d[(8, 9)] - d[(8, 8)] - 8 * chw
            c0 = d[(8, 8)] - 8 * ch - 8 * cw - 64 * chw
            for (r, c), v in d.items():
                if c0 + ch * r + cw * c + chw * r * c != v:
                    raise ValueError(f"tensor {i} dimension {j} is not bilinear in the input's size: {d}")
            offset = start + 4 * j
            if seen.setdefault(offset, (c0, ch, cw, chw)) != (c0, ch, cw, chw):
                raise ValueError(f"byte {offset} holds two different dimensions (a shared shape vector)")
            dims.append([offset, c0, ch, cw, chw])
    base = dims and _FIT[0]
    if not dims or any(int.from_bytes(model[o:o + 4], "little", signed=True) !=
                       c0 + ch * base[0] + cw * base[1] + chw * base[0] * base[1]
                       for o, c0, ch, cw, chw in dims):
        raise ValueError("the template does not describe the model's own 128x128 shapes")
    return {"unit": SCAN_UNIT, "dims": sorted({tuple(d): d for d in dims}.values())}


def patched(model: bytes, template: dict, rows: int, cols: int) -> bytes:
    """``model`` at an input of ``rows`` x ``cols`` pixels (multiples of the template's unit), as
    the page makes it (facenet.js, ``Scanner``): used by the tests."""
    r, c = rows // template["unit"], cols // template["unit"]
    out = bytearray(model)
    for offset, c0, ch, cw, chw in template["dims"]:
        out[offset:offset + 4] = int(c0 + ch * r + cw * c + chw * r * c).to_bytes(4, "little", signed=True)
    return bytes(out)


def _is_build(folder: pathlib.Path):
    """Whether ``folder`` is empty or an earlier output of :func:`build` (its manifest.json)."""
    if folder.is_dir() and not any(folder.iterdir()):
        return True
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "index.html" in manifest


def build(dist: pathlib.Path, model: pathlib.Path):
    if not (LITERT / "dist" / "index.js").is_file():
        sys.exit("web/build.py: web/node_modules/@litertjs/core is missing: run `npm ci` in web/ (make web)")
    sidecar = model.with_suffix(".json")
    for path in (model, sidecar):
        if not path.is_file():
            sys.exit(f"web/build.py: {path} is missing (the shipped model: make ship, or pass --model)")
    if dist.exists() and not _is_build(dist):
        sys.exit(f"web/build.py: {dist} exists and is not a page this script built (no manifest.json "
                 "in it): nothing was replaced; pass --dist with a new folder, or remove it yourself")
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
    scan = (models / pathlib.Path(SCAN_NETWORK).name).read_bytes()
    (models / (pathlib.Path(SCAN_NETWORK).stem + ".scan.json")).write_text(json.dumps(scan_template(scan)) + "\n")
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

"""The on-device page (web/) in a real browser: Debian's Chromium driven by Playwright, the page
served from web/dist (``make web``) on localhost. Every test fails when the page requests
anything outside localhost or logs an error.

Needs web/dist and /usr/bin/chromium (.ci/run installs and builds both): without them these tests
skip locally and fail in CI.
"""

import json
import os
import pathlib
import sys

import numpy as np
import pytest

from fer_tf.preprocess.boxes import iou  # the box overlap fer-tf predict tracks faces with

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "web"))

import browser  # noqa: E402  (web/browser.py)
import build  # noqa: E402  (web/build.py)

DIST = REPO / "web" / "dist"
SCREENS = REPO / "runs" / "web"  # screenshots of the tests (gitignored; reports/web keeps chosen ones)


def _need(condition, what):
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(what)
        pytest.skip(what)


@pytest.fixture(scope="module")
def site(datasets_dir, tmp_path_factory):
    _need((DIST / "index.html").is_file(), "web/dist is not built: run `make web`")
    _need(browser.chromium_available(), f"{browser.CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    pytest.importorskip("playwright")
    import serve  # web/serve.py

    files = tmp_path_factory.mktemp("web_files")
    server = serve.serve(0, mounts={"/data/": datasets_dir, "/files/": files})
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/", "files": files, "datasets": datasets_dir}
    server.shutdown()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def session(playwright, site):
    """A page with no camera flags; checked for outside requests and errors at the end."""
    opened = []

    def make(camera=None):
        s = browser.PageSession(playwright, site["url"], camera=camera)
        opened.append(s)
        return s

    yield make
    for s in opened:
        try:
            assert not s.outside, f"requests outside localhost: {s.outside}"
            assert not s.errors, "\n".join(s.errors)
            assert all(u.startswith(site["url"]) or u.startswith(("data:", "blob:")) for u in s.requests)
        finally:
            s.close()


def _shot(s, name):
    SCREENS.mkdir(parents=True, exist_ok=True)
    s.page.screenshot(path=str(SCREENS / f"{name}.png"))


@pytest.fixture(scope="module")
def python_recognizer():
    from fer_tf.deploy.recognizer import Recognizer

    with Recognizer() as r:
        yield r


def test_fixed_batch_classifier_gives_the_same_outputs():
    """The page's classifier is the shipped one with its batch dimension fixed to 1 (LiteRT.js
    runs the saved shape only): the same outputs on the same crops."""
    from ai_edge_litert.interpreter import Interpreter

    shipped = (REPO / "saved_models" / "fer_tf_basic7.tflite").read_bytes()
    fixed = build.fixed_batch(shipped)
    crops = np.random.default_rng(0).integers(0, 256, (4, 60, 60, 1)).astype(np.float32)
    outs = []
    for model in (shipped, fixed):
        it = Interpreter(model_content=model)
        it.allocate_tensors()
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        assert list(inp["shape"]) == [1, 60, 60, 1]
        rows = []
        for crop in crops:
            it.set_tensor(inp["index"], crop[None])
            it.invoke()
            rows.append(it.get_tensor(out["index"])[0].copy())
        outs.append(np.stack(rows))
    assert list(Interpreter(model_content=fixed).get_input_details()[0]["shape_signature"]) == [1, 60, 60, 1]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_scan_template_gives_the_resized_network():
    """The page's scan runs the short-range detector at an image's own size by rewriting the
    dimensions that the build's scan template lists: the same outputs as LiteRT's interpreter
    resized to that size (what fer_tf's scan runs), at a few sizes, square and not."""
    from ai_edge_litert.interpreter import Interpreter

    from fer_tf.preprocess import face_networks

    model = (face_networks._modules_folder() / face_networks.SHORT_RANGE).read_bytes()
    template = build.scan_template(model)
    assert build.patched(model, template, 128, 128) == model
    rng = np.random.default_rng(0)
    for rows, cols in ((208, 256), (48, 32), (480, 640)):
        x = rng.uniform(-1, 1, (1, rows, cols, 3)).astype(np.float32)
        outs = []
        for content, resize in ((model, True), (build.patched(model, template, rows, cols), False)):
            it = Interpreter(model_content=content)
            if resize:
                it.resize_tensor_input(it.get_input_details()[0]["index"], [1, rows, cols, 3])
            it.allocate_tensors()
            assert list(it.get_input_details()[0]["shape"]) == [1, rows, cols, 3]
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            outs.append(sorted((it.get_tensor(d["index"]) for d in it.get_output_details()), key=lambda a: a.shape[-1]))
        assert outs[0][0].shape == (1, (rows // 8) * (cols // 8) * 2 + (rows // 16) * (cols // 16) * 6, 1)
        for a, b in zip(*outs):
            np.testing.assert_array_equal(a, b)


_IMAGEOPS_JS = """
import * as ops from '%s';
import fs from 'fs';
const [out, src, fn, args] = process.argv.slice(-4);
const [w, h, c, ...rest] = JSON.parse(args);
const img = ops.makeImage(w, h, c);
img.data.set(fs.readFileSync(src));
fs.writeFileSync(out, ops[fn](img, ...rest).data);
"""

_ROTATE = [[0.93, -0.31, 21.5], [0.31, 0.93, -17.25]]  # a turn by 18 degrees, a little shrinking


@pytest.mark.parametrize("fn,src_shape,args,exact", [
    ("resizeCubic", (48, 40, 3), (160, 192), False), ("resizeCubic", (120, 150, 1), (160, 200), False),
    ("resizeArea", (480, 640, 3), (160, 120), True), ("resizeArea", (762, 562, 3), (112, 152), True),
    ("resizeArea", (243, 320, 3), (64, 49), False), ("resizeLinear", (762, 562, 3), (450, 610), True),
    ("resizeLinear", (243, 320, 3), (256, 194), True), ("resizeLinear", (100, 90, 3), (160, 178), True),
    ("resizeLinear", (256, 256, 3), (128, 128), True),
    ("warpAffine", (200, 300, 3), (_ROTATE, 192, 160), True), ("warpAffine", (243, 320, 1), (_ROTATE, 60, 60, True), True)])
def test_js_pixels_are_opencvs(tmp_path, fn, src_shape, args, exact):
    """imageops.js resamples as the Python code's OpenCV calls do (INTER_LINEAR, INTER_AREA for
    the scan's levels and crops, INTER_CUBIC for small images, warpAffine for the mesh's input and
    the aligned crop): the same bytes, or (float32 sums in OpenCV, float64 here) but for a few
    pixels in 10,000 that are one grey level off."""
    import shutil
    import subprocess

    import cv2

    node = shutil.which("node")
    _need(node, "node is missing (make web installs it)")
    src = np.random.default_rng(sum(src_shape)).integers(0, 256, src_shape, dtype=np.uint8)
    src.tofile(tmp_path / "src.bin")
    script = tmp_path / "ops.mjs"
    script.write_text(_IMAGEOPS_JS % (REPO / "web" / "src" / "imageops.js").as_uri())
    h, w, c = src_shape
    subprocess.run([node, "--no-warnings", str(script), str(tmp_path / "out.bin"), str(tmp_path / "src.bin"), fn,
                    json.dumps([w, h, c, *args])], check=True)
    got = np.fromfile(tmp_path / "out.bin", np.uint8).astype(int)
    if fn == "warpAffine":
        m, ow, oh, *inverse = args
        flags = cv2.INTER_LINEAR | (cv2.WARP_INVERSE_MAP if inverse else 0)
        want = cv2.warpAffine(src, np.array(m), (ow, oh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    else:
        interp = {"resizeCubic": cv2.INTER_CUBIC, "resizeArea": cv2.INTER_AREA, "resizeLinear": cv2.INTER_LINEAR}[fn]
        want = cv2.resize(src, tuple(args), interpolation=interp)
    diff = np.abs(got - want.reshape(-1))
    assert diff.max() <= (0 if exact else 1) and (diff > 0).mean() < 5e-4, ((diff > 0).mean(), diff.max())


_BASELINE_JS = """
import {correctNeutral} from '%s';
import fs from 'fs';
const cases = JSON.parse(fs.readFileSync(process.argv.at(-2)));
const out = cases.map((c) => correctNeutral(c.probs, c.persons, c.neutral, c.neutral_persons, c.options).probabilities);
fs.writeFileSync(process.argv.at(-1), JSON.stringify(out));
"""


def test_js_neutral_correction_is_pythons(tmp_path):
    """web/src/baseline.js's correctNeutral gives fer_tf.people.baseline.correct_neutral's
    probabilities on the same inputs: its defaults, every space and reference (none, run, an
    array), shrinkage, people without a neutral photo, unknown faces, probabilities of 0."""
    import shutil
    import subprocess

    from fer_tf.people import baseline

    node = shutil.which("node")
    _need(node, "node is missing (make web installs it)")
    rng = np.random.default_rng(3)
    cases = []
    options = [{}, {"space": "probabilities"}, {"shrinkage": 0.0, "reference": "none"}, {"shrinkage": 2.5},
               {"reference": list(rng.normal(-2, 1, 7))}, {"space": "probabilities", "reference": "run", "shrinkage": 0.3}]
    for i, opts in enumerate(options):
        probs = rng.dirichlet(np.full(7, 0.5), size=6)
        probs[0, 2] = 0.0  # an underflowed softmax: the floor under the log
        neutral = rng.dirichlet(np.full(7, 0.5), size=4)
        persons = ["a", "b", None, "c", "a", "b"]  # c has no neutral photo, None is unknown
        neutral_persons = ["a", "a", "b", None] if i % 2 else ["a", "b", "a", "b"]
        cases.append({"probs": probs.tolist(), "persons": persons, "neutral": neutral.tolist(),
                      "neutral_persons": neutral_persons, "options": opts})
    # the page's case: one face on camera, one enrolled person, the shipped reference
    ref = json.loads((REPO / "web" / "src" / "neutral_reference.json").read_text())["reference"]
    cases.append({"probs": rng.dirichlet(np.ones(7), 1).tolist(), "persons": ["enrolled"],
                  "neutral": rng.dirichlet(np.ones(7), 2).tolist(), "neutral_persons": ["enrolled"] * 2,
                  "options": {"reference": ref}})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "baseline.mjs"
    script.write_text(_BASELINE_JS % (REPO / "web" / "src" / "baseline.js").as_uri())
    subprocess.run([node, "--no-warnings", str(script), str(tmp_path / "cases.json"), str(tmp_path / "out.json")], check=True)
    got = json.loads((tmp_path / "out.json").read_text())
    moved = 0
    for c, js in zip(cases, got):
        opts = dict(c["options"])
        if isinstance(opts.get("reference"), list):
            opts["reference"] = np.array(opts["reference"])
        want = baseline.correct_neutral(c["probs"], c["persons"], c["neutral"], c["neutral_persons"], **opts)
        np.testing.assert_allclose(np.array(js), want.probabilities, rtol=0, atol=1e-12)
        moved += int(np.abs(want.probabilities - want.raw_probabilities).max() > 1e-3)
    assert moved >= len(cases) - 1  # the cases do correct something (not a pair of identities)


def test_build_serves_everything_from_dist():
    """Every file the page loads is in dist/manifest.json: scripts, WASM and the four networks."""
    _need((DIST / "manifest.json").is_file(), "web/dist is not built: run `make web`")
    manifest = json.loads((DIST / "manifest.json").read_text())
    for name in ("index.html", "app.js", "aligner.js", "vendor/litert/index.js",
                 "vendor/litert/wasm/litert_wasm_internal.wasm", "models/face_landmark.tflite",
                 "models/face_detection_short_range.tflite", "models/face_detection_full_range_sparse.tflite",
                 "models/face_detection_short_range.scan.json",
                 "models/fer_tf_basic7.tflite", "models/fer_tf_basic7.json", "baseline.js",
                 "neutral_reference.json"):
        assert name in manifest, name
    html = (DIST / "index.html").read_text()
    assert "http://" not in html.replace("http://localhost", "") and "https://" not in html


def test_build_never_replaces_a_folder_it_did_not_build(tmp_path, monkeypatch):
    """--dist pointing at a user's folder: refused, nothing removed; an earlier build or an empty
    folder is replaced."""
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not ours")
    assert not build._is_build(mine)
    (tmp_path / "empty").mkdir()
    assert build._is_build(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "manifest.json").write_text(json.dumps({"index.html": {"bytes": 1}}))
    assert build._is_build(earlier)
    monkeypatch.setattr(build, "LITERT", tmp_path / "litert")  # past the npm check
    (tmp_path / "litert" / "dist").mkdir(parents=True)
    (tmp_path / "litert" / "dist" / "index.js").write_text("")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    model.with_suffix(".json").write_text("{}")
    with pytest.raises(SystemExit, match="not a page this script built"):
        build.build(mine, model)
    assert (mine / "holiday.jpg").read_bytes() == b"not ours"


@pytest.mark.integration
def test_image_hook_matches_python(session, site, python_recognizer):
    """?image=URL analyses the photo; #results holds fer-tf predict's fields, and the page finds
    the face and the expression that Python finds (and nearly the same box)."""
    s = session().open()
    for rel in ("kdef-subset/Happy/AF01HAS.JPG", "yalefaces/subject02.surprised", "kdef-subset/Sad/BM10SAS.JPG"):
        s.page.goto(s.base_url + f"index.html?image=/data/{rel}")
        assert s.wait_state(("done",)) == "done"
        faces = s.results()
        expected = python_recognizer.predict(str(site["datasets"] / rel))["faces"]
        assert len(faces) == len(expected) == 1, rel
        assert set(faces[0]) == {"box", "expression", "probabilities"}
        assert faces[0]["expression"] == expected[0]["expression"], rel
        assert list(faces[0]["probabilities"]) == list(expected[0]["probabilities"])
        assert abs(sum(faces[0]["probabilities"].values()) - 1) < 1e-3
        # the detectors run at other scales than Python's scan (web/README.md): boxes differ a little
        assert iou(faces[0]["box"], expected[0]["box"]) > 0.7, (faces[0]["box"], expected[0]["box"])
    _shot(s, "image_hook")


@pytest.mark.integration
def test_camera_from_a_y4m_of_real_faces(session, site, tmp_path, python_recognizer):
    """?camera starts Chromium's fake camera, fed a .y4m made from a KDEF photo: every analysed
    frame shows the one face with the expression Python gives the same frame."""
    from PIL import Image

    photo = np.asarray(Image.open(site["datasets"] / "kdef-subset" / "Happy" / "AM08HAS.JPG").convert("RGB"))
    frame = browser.camera_frame(photo)
    expected = python_recognizer.predict(frame)["faces"]
    assert len(expected) == 1
    y4m = browser.write_y4m(tmp_path / "camera.y4m", [frame] * 5)
    s = session(camera=str(y4m))
    s.open("?camera")
    s.page.wait_for_function("Number(document.getElementById('status').dataset.frames || 0) >= 8", timeout=60_000)
    assert s.state() == "camera"
    faces = s.results()
    assert len(faces) == 1 and faces[0]["expression"] == expected[0]["expression"] == "happiness"
    assert iou(faces[0]["box"], expected[0]["box"]) > 0.7
    timing = json.loads(s.page.get_attribute("#timing", "data-json"))
    assert len(timing["frame"]) >= 5 and all(t > 0 for t in timing["detection"])
    _shot(s, "camera")
    s.page.click("#camera-stop")
    assert s.wait_state(("ready",)) == "ready"


def test_camera_permission_denied(session):
    """A camera whose permission prompt is refused: a clear message, and the page still analyses a
    photo afterwards."""
    s = session(camera="denied").open("?camera")
    s.wait_state(("ready",))
    assert "permission was denied" in s.message()
    _shot(s, "camera_denied")
    _still_works(s)


def test_no_camera(session):
    s = session(camera="none").open()
    s.page.click("#camera-start")
    s.wait_state(("ready",))
    assert "No camera was found" in s.message()
    _still_works(s)


def _still_works(s):
    """After a failure: a photo upload still finds a face, and the message goes away."""
    from conftest import DATASETS

    s.page.set_input_files("#photo", str(DATASETS / "kdef-subset" / "Happy" / "AF02HAS.JPG"))
    s.wait_state(("done",))
    assert len(s.results()) == 1
    assert s.message() == ""


def test_no_face_and_not_an_image(session, tmp_path):
    from PIL import Image

    s = session().open()
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    Image.fromarray(ramp).save(tmp_path / "wall.png")
    s.page.set_input_files("#photo", str(tmp_path / "wall.png"))
    s.wait_state(("done",))
    assert s.results() == [] and "No face found in wall.png" in s.message()
    (tmp_path / "notes.jpg").write_text("these are not pixels\n")
    s.page.set_input_files("#photo", str(tmp_path / "notes.jpg"))
    s.wait_state(("ready",))
    assert "notes.jpg is not an image" in s.message()
    _shot(s, "not_an_image")
    _still_works(s)


@pytest.mark.slow
@pytest.mark.integration
def test_fifty_megapixel_photo(session, site, tmp_path):
    """A 50 MP photo is analysed at 16 MP with a note saying so; the box is in the photo's pixels."""
    import cv2

    photo = cv2.imread(str(site["datasets"] / "kdef-subset" / "Happy" / "AF01HAS.JPG"))
    big = cv2.resize(photo, (8660, 5774), interpolation=cv2.INTER_LINEAR)
    path = site["files"] / "big.jpg"
    cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    s = session().open()
    s.page.set_input_files("#photo", str(path))
    s.wait_state(("done",), timeout=90_000)
    faces = s.results()
    assert "50.0 megapixels" in s.message() and "analysed at" in s.message()
    assert len(faces) == 1 and faces[0]["expression"] == "happiness"
    x, y, w, h = faces[0]["box"]
    assert w > 4000 and x + w <= 8660 and y + h <= 5774
    _still_works(s)


@pytest.mark.integration
def test_video_file(session, site, tmp_path):
    """A video file plays through the pipeline frame by frame until it ends."""
    import cv2
    from PIL import Image

    photo = np.asarray(Image.open(site["datasets"] / "kdef-subset" / "Happy" / "AF01HAS.JPG").convert("RGB"))
    frame = browser.camera_frame(photo)
    path = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 10, (640, 480))
    assert writer.isOpened()
    for _ in range(10):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    s = session().open()
    s.page.set_input_files("#video-file", str(path))
    s.wait_state(("done",))
    assert int(s.page.get_attribute("#status", "data-frames")) >= 3
    faces = s.results()
    assert len(faces) == 1 and faces[0]["expression"] == "happiness"


@pytest.mark.integration
def test_camera_enrolled_neutral_face(session, site, tmp_path):
    """?camera&enroll=1 enrols the first face on the fake camera (a Yale subject's normal photo) as the
    person's neutral face; then the camera shows the same person happy: #results holds the
    corrected expression and probabilities beside raw_expression and raw_probabilities (the fields
    of fer-tf predict --baseline), the corrected ones being correct_neutral's on the raw ones. The
    button and window.ferTf.enrollNeutral() enrol more frames; two faces in view: not corrected,
    and enrolment refused with a message."""
    from PIL import Image

    from fer_tf.people import baseline

    def frame(rel):
        return browser.camera_frame(np.asarray(Image.open(site["datasets"] / "yalefaces" / rel).convert("RGB")))

    neutral_frame, happy = frame("subject02.normal"), frame("subject02.happy")
    # 3 s of the neutral face, then the happy one (Chromium plays the file in a loop)
    y4m = browser.write_y4m(tmp_path / "camera.y4m", [neutral_frame] * 30 + [happy] * 30)
    s = session(camera=str(y4m))
    s.open("?camera&enroll=1")
    s.page.wait_for_function("window.ferTf && window.ferTf.neutral.photos.length === 1", timeout=60_000)
    enrolled = s.page.evaluate("window.ferTf.neutral.photos.slice()")
    s.page.wait_for_function(
        "(() => { const f = JSON.parse(document.getElementById('results').dataset.json);"
        " return f.length === 1 && f[0].raw_expression === 'happiness'; })()", timeout=60_000)
    faces = s.results()
    assert set(faces[0]) == {"box", "expression", "probabilities", "raw_expression", "raw_probabilities"}
    labels = list(faces[0]["probabilities"])
    raw = [[faces[0]["raw_probabilities"][n] for n in labels]]
    ref = json.loads((DIST / "neutral_reference.json").read_text())["reference"]
    want = baseline.correct_neutral(raw, ["me"], enrolled, ["me"], reference=np.array(ref)).probabilities[0]
    np.testing.assert_allclose([faces[0]["probabilities"][n] for n in labels], want, atol=2e-6)
    assert faces[0]["expression"] == labels[int(np.argmax(want))]
    assert "corrected and raw" in s.page.inner_text("#enrolment")
    assert s.page.locator("#results .column h3").all_inner_texts() == ["corrected", "raw"]
    _shot(s, "camera_enrolled")
    s.page.click("#enroll")  # more frames (whatever the camera shows now: a test of the hooks only)
    assert s.page.evaluate("window.ferTf.enrollNeutral().frames") == 3
    s.page.click("#enroll-clear")
    s.page.wait_for_function("JSON.parse(document.getElementById('results').dataset.json)"
                             ".every((f) => !('raw_probabilities' in f))", timeout=30_000)
    s.page.click("#camera-stop")
    s.wait_state(("ready",))
    # two faces in view: enrolment is refused, and an enrolled face is not applied to either
    two = np.concatenate([browser.camera_frame(np.asarray(Image.open(site["datasets"] / "kdef-subset" / r).convert("RGB")),
                                               size=(320, 480), face_height=200)
                          for r in ("Happy/AF01HAS.JPG", "Happy/AM08HAS.JPG")], axis=1)
    s2 = session(camera=str(browser.write_y4m(tmp_path / "two.y4m", [two] * 5)))
    s2.open("?camera")
    s2.page.wait_for_function("JSON.parse(document.getElementById('results').dataset.json).length === 2", timeout=60_000)
    assert s2.page.evaluate("window.ferTf.enrollNeutral()") is None
    assert "exactly one face" in s2.message()
    s2.page.evaluate("window.ferTf.neutral.photos.push([.1, .1, .1, .1, .4, .1, .1])")
    s2.page.wait_for_function("document.getElementById('enrolment').dataset.faces === '2'", timeout=30_000)
    faces = s2.results()
    assert all(f["probabilities"] == f["raw_probabilities"] for f in faces)
    assert "not corrected" in s2.page.inner_text("#enrolment")


def test_the_page_and_python_use_the_same_stored_reference():
    """web/src/neutral_reference.json and the shipped model's sidecar hold the same reference (both
    written by pipelines/web_reference.py for the same .tflite)."""
    page = json.loads((REPO / "web" / "src" / "neutral_reference.json").read_text())
    sidecar = json.loads((REPO / "saved_models" / "fer_tf_basic7.json").read_text())["neutral_reference"]
    assert page["reference"] == sidecar["reference"] and page["labels"] == sidecar["labels"]
    assert page["model_sha256"] == sidecar["model_sha256"]
    import hashlib

    shipped = (REPO / "saved_models" / "fer_tf_basic7.tflite").read_bytes()
    assert sidecar["model_sha256"] == hashlib.sha256(shipped).hexdigest()

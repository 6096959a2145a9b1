"""Speed of the web page in Chromium (WASM, this CPU): ms per camera frame for detection (the
detector and the face mesh), alignment and classification, at 640x480 with one face.

    python pipelines/web_speed.py [--frames 150] [--out reports/web/speed.json] [--dist web/dist]

The camera is Chromium's fake capture device playing a .y4m (written to a temporary folder) made
from a real face: scikit-image's public-domain astronaut photo (as `make demo`), cut around her
face, or --photo, a file under --datasets. The first --warmup frames are left out (XNNPACK prepares its kernels then).
Also writes reports/web/page.png, a screenshot of the page while it runs. --dist serves another
build of the page (an earlier commit's, built with `web/build.py --dist`), to compare at the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "web"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=pathlib.Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--photo", default=None, help="a photo under --datasets (default: the astronaut)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "reports" / "web" / "speed.json")
    parser.add_argument("--screenshot", type=pathlib.Path, default=REPO / "reports" / "web" / "page.png",
                        help="where to save a screenshot ('' for none)")
    parser.add_argument("--dist", type=pathlib.Path, default=None, help="the build to serve (default web/dist)")
    args = parser.parse_args(argv)
    from PIL import Image
    from playwright.sync_api import sync_playwright

    import browser
    import serve
    from fer_tf.research.reporting import cpu_model

    if args.photo:
        photo = np.asarray(Image.open(args.datasets / args.photo).convert("RGB"))
    else:
        import skimage.data

        photo = skimage.data.astronaut()[0:240, 120:330]  # her face and hair: no dataset image
    server = serve.serve(0, **({"root": args.dist.resolve()} if args.dist else {}))
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        y4m = browser.write_y4m(pathlib.Path(tmp) / "camera.y4m", [browser.camera_frame(photo)] * 5)
        s = browser.PageSession(pw, f"http://127.0.0.1:{server.server_address[1]}/", camera=str(y4m))
        s.open("?camera")
        s.page.wait_for_function(f"window.ferTf && window.ferTf.log.length >= {args.frames + args.warmup}",
                                 timeout=600_000, polling=500)
        log = s.page.evaluate("window.ferTf.log.slice()")
        if str(args.screenshot) not in ("", "."):
            s.page.screenshot(path=str(args.screenshot), clip={"x": 80, "y": 0, "width": 1120, "height": 640})
            shot = Image.open(args.screenshot).convert("RGB")  # 128 colours: a small PNG for the README
            shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.screenshot, optimize=True)
        if s.outside or s.errors:
            sys.exit(f"the page requested {s.outside} / logged {s.errors}")
        s.close()
    server.shutdown()
    frames = log[args.warmup:args.warmup + args.frames]
    stages = {k: [f[k] for f in frames] for k in ("detection", "alignment", "classification", "frame")}
    stats = {k: {"median_ms": round(float(np.median(v)), 2), "mean_ms": round(float(np.mean(v)), 2),
                 "p90_ms": round(float(np.percentile(v, 90)), 2)} for k, v in stages.items()}
    report = {
        "command": "python pipelines/web_speed.py" + (f" --frames {args.frames}" if args.frames != 150 else "")
                   + (f" --dist {args.dist}" if args.dist else ""),
        "chromium": subprocess.run([browser.CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "runtime": "LiteRT.js 2.5.3, WASM (XNNPACK), one thread; no GPU",
        "input": "640x480 camera frames (Chromium fake capture, .y4m), one face about 300 px high",
        "frames": len(frames), "faces_per_frame": sorted({f["faces"] for f in frames}),
        "stages": stats,
        "frames_per_second_from_median": round(1000.0 / stats["frame"]["median_ms"], 1),
        "frames_per_second_from_mean": round(1000.0 / stats["frame"]["mean_ms"], 1),
    }
    from fer_tf.files import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

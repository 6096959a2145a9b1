"""Serve the built page (web/dist) on localhost: ``python web/serve.py [--port 8000]``.

Only static files; nothing runs on the server. Tests and pipelines/web_parity.py use
:func:`serve` to run it in a thread, optionally with extra read-only folders under URL prefixes
(``/data/`` for dataset images).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import pathlib
import threading
import urllib.parse

DIST = pathlib.Path(__file__).resolve().parent / "dist"


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".tflite": "application/octet-stream"}
    mounts: dict = {}

    def translate_path(self, path):
        clean = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        for prefix, folder in self.mounts.items():
            if clean.startswith(prefix):
                target = (folder / clean[len(prefix):]).resolve()
                if folder in target.parents or target == folder:
                    return str(target)
                return str(folder / "__outside__")
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):  # quiet: tests and pipelines print what matters
        pass


def serve(port=0, root=DIST, mounts=None):
    """Start a server in a daemon thread; returns it (``server.server_address[1]`` is the port;
    ``server.shutdown()`` stops it). ``mounts``: {"/data/": folder} served read-only."""
    if not (pathlib.Path(root) / "index.html").is_file():
        raise FileNotFoundError(f"{root}/index.html is missing: build the page with `make web`")
    handler = type("MountedHandler", (Handler,), {
        "mounts": {k: pathlib.Path(v).resolve() for k, v in (mounts or {}).items()}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description="serve web/dist on localhost")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = serve(args.port)
    print(f"fer_tf web page: http://localhost:{server.server_address[1]}/  (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()

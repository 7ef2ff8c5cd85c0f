"""A real ComfyUI server on 127.0.0.1 with this pack installed, for frontend checks.

The server runs from the ComfyUI checkout with --base-directory pointing at a scratch folder
whose custom_nodes/ links to this pack, so nothing is written into the checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-paint-by-example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def comfyui_server(comfy_root: Path, base: Path, timeout: float = 180.0, settings: dict | None = None):
    """Yield the server's URL; the server is stopped on exit. ``settings``: frontend settings (e.g.
    ``{"Comfy.Locale": "zh"}``) written to the default user's settings file before the server starts,
    as if the user had chosen them."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    if settings:
        user = base / "user" / "default"
        user.mkdir(parents=True, exist_ok=True)
        (user / "comfy.settings.json").write_text(json.dumps(settings, indent=2))
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    port = _free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--disable-auto-launch", "--disable-metadata"],
        cwd=comfy_root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/object_info/PaintByExampleSampler", timeout=5) as response:
                    if json.load(response):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ComfyUI did not start in {timeout} s:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()

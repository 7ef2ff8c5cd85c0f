"""Pictures of the example workflows, taken in ComfyUI's own frontend (headless Chromium).

Writes workflows/<name>.jpg next to each UI workflow (ComfyUI shows them as template
thumbnails; the README shows them too):

    COMFYUI_PATH=/path/to/ComfyUI python tools/workflow_pictures.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

LOAD = """
(workflow) => (window.app ?? window.comfyAPI?.app?.app).loadGraphData(workflow)
"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    from comfyui import NO_COMFYUI, find_comfyui
    from comfyui_server import comfyui_server
    from test_frontend import CHROMIUM_FLAGS, READY

    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed (Debian: apt-get install chromium)")
    base = Path(tempfile.mkdtemp(prefix="pbe_pictures_"))
    with comfyui_server(root, base) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function(READY, timeout=120_000)
        for ui_file in sorted((ROOT / "workflows").glob("*.json")):
            page.evaluate(LOAD, json.loads(ui_file.read_text()))  # its extra.ds fits the view
            page.wait_for_timeout(800)
            page.evaluate("() => { document.querySelectorAll('.p-toast-message').forEach((t) => t.remove());"
                          " document.querySelectorAll('.p-dialog-close-button').forEach((b) => b.click()); }")
            page.wait_for_timeout(500)
            target = ui_file.with_suffix(".jpg")
            page.screenshot(path=str(target), type="jpeg", quality=70)
            print(f"wrote workflows/{target.name}")
        browser.close()


if __name__ == "__main__":
    main()

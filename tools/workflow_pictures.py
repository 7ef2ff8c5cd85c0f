"""Pictures of the example workflows, taken in ComfyUI's own frontend (headless Chromium).

    COMFYUI_PATH=/path/to/ComfyUI python tools/workflow_pictures.py              # the thumbnails
    COMFYUI_PATH=/path/to/ComfyUI python tools/workflow_pictures.py --locale zh  # the UI in Chinese

Thumbnails: workflows/<name>.jpg beside each UI workflow, what ComfyUI's template browser shows on
a card about 256 px wide. A whole graph is unreadable at that size, so each thumbnail is a crop of
the graph around the nodes that make the workflow what it is (FOCUS), with the node titles drawn
large enough to stay readable when the card shrinks the picture to a quarter, and no menus.

--locale LANG: the whole UI in that language with the basic workflow open and one input's tooltip
showing, as workflows/<basic workflow>.<LANG>.jpg.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

BASIC = "Paint-by-Example - basic edit"
THUMBNAIL = {"width": 1024, "height": 768}  # 4:3, the card's picture box shows it whole
TITLE_FONT = {"NODE_TEXT_SIZE": 24, "NODE_TITLE_HEIGHT": 38, "NODE_TITLE_TEXT_Y": 27}

# The nodes each thumbnail frames (node types; every node of a listed type is framed): two columns at
# most, since a title stays readable on the card only while a row holds about 70 characters.
FOCUS = {
    "Paint-by-Example - basic edit": ["PaintByExampleEncode", "PaintByExampleSampler"],
    "Paint-by-Example - best 2 of 8 seeds": ["PaintByExampleSampler", "PaintByExampleScore"],
    "Paint-by-Example - blend two references": ["PaintByExampleEncode", "PaintByExampleBlend"],
    "Paint-by-Example - edit then upscale 2x": ["PaintByExampleSampler", "ImageScaleBy"],
    "Paint-by-Example - guided by ControlNet (canny)": ["ControlNetApplyAdvanced", "PaintByExampleSampler"],
    "Paint-by-Example - large image (crop and stitch)": ["PaintByExampleCrop", "PaintByExampleSampler"],
    "Paint-by-Example - large image (seamless blend)": ["PaintByExampleSampler", "PaintByExampleStitch"],
    "Paint-by-Example - 4 mask shapes (mask jitter)": ["PaintByExampleMaskJitter", "PaintByExampleSampler"],
    "Paint-by-Example - two references in two regions": ["PaintByExampleEncode", "PaintByExampleRegions"],
    "Paint-by-Example - with core KSampler nodes": ["KSampler", "VAEDecode"],
}

# The frontend's settings for the pictures: no first-run template dialog, no minimap, canvas menu,
# canvas info or node badges, and text drawn at every zoom.
PICTURE_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasMenu": False,
                    "Comfy.Graph.CanvasInfo": False, "LiteGraph.Canvas.MinFontSizeForLOD": 0,
                    "Comfy.NodeBadge.NodeSourceBadgeMode": "None", "Comfy.NodeBadge.NodeIdBadgeMode": "None"}
HIDE_MENUS = ".workflow-tabs-container, .comfy-menu-hamburger, .p-toast { display: none !important; }"

THUMBNAIL_VIEW = """
async ([workflow, focus, font]) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  Object.assign(LiteGraph, font);  // before loading: node sizes are computed with the title font
  await app.loadGraphData(workflow);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const nodes = app.graph._nodes;
  const context = app.canvas.canvas.getContext("2d");
  for (const node of nodes) {  // wide enough for the whole title (LiteGraph cuts it to the node's width)
    context.font = node.titleFontStyle;
    const title = context.measureText(node.getTitle()).width;
    node.size[0] = Math.max(node.size[0], title + 2.5 * LiteGraph.NODE_TITLE_HEIGHT);
  }
  // the same columns and order, spaced for the wider nodes
  const columns = [...new Set(nodes.map((n) => n.pos[0]))].sort((a, b) => a - b);
  let x = columns[0];
  for (const column of columns) {
    const stack = nodes.filter((n) => n.pos[0] === column).sort((a, b) => a.pos[1] - b.pos[1]);
    let y = stack[0].pos[1];
    for (const node of stack) {
      node.pos = [x, y];
      y += node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + 40;
    }
    x += Math.max(...stack.map((n) => n.size[0])) + 50;
  }
  const framed = nodes.filter((n) => focus.includes(n.type));
  const missing = focus.filter((type) => !framed.some((n) => n.type === type));
  if (missing.length) return missing;
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of framed) {
    [x0, y0] = [Math.min(x0, n.pos[0]), Math.min(y0, n.pos[1] - title)];
    [x1, y1] = [Math.max(x1, n.pos[0] + n.size[0]), Math.max(y1, n.pos[1] + n.size[1])];
  }
  const [width, height, margin] = [window.innerWidth, window.innerHeight, 16];
  const scale = Math.min((width - 2 * margin) / (x1 - x0), (height - 2 * margin) / (y1 - y0));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [(width / scale - (x1 - x0)) / 2 - x0, (height / scale - (y1 - y0)) / 2 - y0];
  app.canvas.setDirty(true, true);
  await new Promise((resolve) => setTimeout(resolve, 500));
  return [];
}
"""

SHOW_TOOLTIP_AT = """
async ([workflow, name, type, input]) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  await app.loadGraphData(workflow, true, true, name);  // opened under its name, as from the template browser
  await new Promise((resolve) => setTimeout(resolve, 800));
  document.querySelectorAll(".p-toast-message").forEach((toast) => toast.remove());
  const node = app.graph._nodes.find((n) => n.type === type);
  const [x, y] = app.canvas.ds.convertOffsetToCanvas(node.getInputPos(node.inputs.findIndex((i) => i.name === input)));
  const box = app.canvas.canvas.getBoundingClientRect();
  return [box.left + x / devicePixelRatio, box.top + y / devicePixelRatio];
}
"""


def _browser(playwright):
    from test_frontend import CHROMIUM_FLAGS

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed (Debian: apt-get install chromium)")
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)


def _open(browser, url, viewport):
    from test_frontend import READY

    page = browser.new_page(viewport=viewport)
    page.goto(url, wait_until="networkidle", timeout=120_000)
    page.wait_for_function(READY, timeout=120_000)
    return page


def thumbnails(url, playwright) -> None:
    browser = _browser(playwright)
    for ui_file in sorted((ROOT / "workflows").glob("*.json")):
        if ui_file.stem not in FOCUS:
            sys.exit(f"{ui_file.name}: say in FOCUS (tools/workflow_pictures.py) which nodes its thumbnail shows")
        page = _open(browser, url, THUMBNAIL)  # a fresh page: the enlarged title font is page-wide
        page.add_style_tag(content=HIDE_MENUS)
        page.evaluate("() => (window.app ?? window.comfyAPI?.app?.app).extensionManager.command"
                      ".execute('Workspace.ToggleFocusMode')")  # no side bar, no top menu
        workflow = json.loads(ui_file.read_text())
        workflow["nodes"] = [node for node in workflow["nodes"] if node["type"] != "Note"]  # not what sets it apart
        missing = page.evaluate(THUMBNAIL_VIEW, [workflow, FOCUS[ui_file.stem], TITLE_FONT])
        if missing:
            sys.exit(f"{ui_file.name}: no node of type {', '.join(missing)} (see FOCUS)")
        target = ui_file.with_suffix(".jpg")
        page.screenshot(path=str(target), type="jpeg", quality=85)
        page.close()
        print(f"wrote workflows/{target.name}")
    browser.close()


def locale_screenshot(url, playwright, locale: str) -> None:
    """The whole UI in ``locale`` with the basic workflow, the Sampler's source tooltip showing."""
    browser = _browser(playwright)
    page = _open(browser, url, {"width": 1400, "height": 800})
    x, y = page.evaluate(SHOW_TOOLTIP_AT, [json.loads((ROOT / "workflows" / f"{BASIC}.json").read_text()), BASIC,
                                          "PaintByExampleSampler", "source"])
    page.mouse.move(x + 40, y + 40)
    page.mouse.move(x, y, steps=4)
    page.wait_for_selector(".node-tooltip", timeout=10_000)
    target = ROOT / "workflows" / f"{BASIC}.{locale}.jpg"
    page.screenshot(path=str(target), type="jpeg", quality=80)
    print(f"wrote workflows/{target.name}")
    browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locale", help="take the UI screenshot in this language (e.g. zh) instead of the thumbnails")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from comfyui import NO_COMFYUI, find_comfyui, scratch_folder
    from comfyui_server import comfyui_server

    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    base = scratch_folder("pbe_pictures_")
    if args.locale:
        settings = {"Comfy.Locale": args.locale, "Comfy.TutorialCompleted": True}
    else:
        settings = {"Comfy.Locale": "en", **PICTURE_SETTINGS}
    with comfyui_server(root, base, settings=settings) as url, sync_playwright() as playwright:
        if args.locale:
            locale_screenshot(url, playwright, args.locale)
        else:
            thumbnails(url, playwright)


if __name__ == "__main__":
    main()

"""Each UI workflow loads in ComfyUI's own frontend (headless Chromium) with no missing node
types and no errors, and its template browser lists each one by its title, with its picture, and
opens it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from comfyui import NO_COMFYUI, find_comfyui

ROOT = Path(__file__).resolve().parents[1]
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# ready when the app exists and the node definitions (this pack's too) are registered
READY = "() => (window.app ?? window.comfyAPI?.app?.app)?.graph && window.LiteGraph?.registered_node_types?.PaintByExampleSampler"

LOAD = """
async (workflow) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  const registered = window.LiteGraph?.registered_node_types ?? {};
  document.querySelectorAll(".p-toast-message").forEach((toast) => toast.remove());
  document.querySelectorAll(".p-dialog-close-button").forEach((button) => button.click());
  await new Promise((resolve) => setTimeout(resolve, 200));
  await app.loadGraphData(workflow);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const nodes = app.graph._nodes ?? app.graph.nodes ?? [];
  return {
    missing: workflow.nodes.map((n) => n.type).filter((type) => !(type in registered)),
    loaded: nodes.map((n) => n.type),
    broken: nodes.filter((n) => n.has_errors || n.constructor?.name === "MissingNode").map((n) => n.type),
    links: Object.keys(app.graph.links ?? {}).length || (app.graph.links?.size ?? 0),
    alerts: [...document.querySelectorAll(".p-toast-message, .p-dialog")].map((el) => el.innerText.trim()),
  };
}
"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def frontend_page(tmp_path_factory, tiny_model, settings: dict | None = None):
    """Generator: (page, errors) on ComfyUI's frontend in headless Chromium, the pack installed and
    the files the workflows name in place; skips where ComfyUI, Chromium or playwright is missing.
    ``settings``: the user's frontend settings (e.g. the language) before the page loads."""
    root = find_comfyui()
    if root is None:
        pytest.skip(NO_COMFYUI)
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install --group test)")
    from comfyui_server import comfyui_server
    from pbe_core.testing import random_checkpoint

    base = tmp_path_factory.mktemp("comfy_base")
    # the files the workflows name, so the frontend reports no missing models
    random_checkpoint.write_single_file(base / "models" / "checkpoints" / "paint_by_example.safetensors", tiny_model)
    (base / "models" / "controlnet").mkdir(parents=True)
    (base / "models" / "controlnet" / "control_v11p_sd15_canny.pth").write_bytes(b"")
    (base / "input").mkdir()
    from PIL import Image

    for ui_file in UI_FILES:  # the images the Load Image nodes name, so their previews load
        for node in json.loads(ui_file.read_text())["nodes"]:
            if node["type"] == "LoadImage":
                Image.new("RGBA", (64, 64), (128, 128, 128, 255)).save(base / "input" / node["widgets_values"][0])
    with comfyui_server(root, base, settings=settings) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(f"{message.text} {message.location.get('url', '')}")
                if message.type == "error" else None)
        page.goto(url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function(READY, timeout=120_000)
        errors.clear()  # what happened before our workflows load is not ours
        yield page, errors
        browser.close()


@pytest.fixture(scope="module")
def frontend(tmp_path_factory, tiny_model):
    yield from frontend_page(tmp_path_factory, tiny_model)


def _ours(errors):
    # this machine is offline: the frontend's own calls to outside hosts fail and are not ours to judge
    # and the frontend probes optional user files (/api/userdata/…) that a fresh install lacks
    return [e for e in errors if "favicon" not in e and "ERR_NAME_NOT_RESOLVED" not in e and "/api/userdata/" not in e]


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_workflow_loads_in_the_frontend(frontend, ui_file):
    page, errors = frontend
    errors.clear()
    workflow = json.loads(ui_file.read_text())
    result = page.evaluate(LOAD, workflow)
    assert result["missing"] == [], f"node types unknown to the frontend: {result['missing']}"
    assert sorted(result["loaded"]) == sorted(n["type"] for n in workflow["nodes"])
    assert result["broken"] == []
    assert result["links"] == len(workflow["links"])
    assert result["alerts"] == [], f"the frontend complained: {result['alerts']}"
    ours = _ours(errors)
    assert ours == [], f"errors while loading {ui_file.name}: {ours}"


def test_the_check_sees_a_missing_node_type(frontend):
    page, _errors = frontend
    workflow = json.loads(UI_FILES[0].read_text())
    workflow["nodes"][0]["type"] = "PaintByExampleNoSuchNode"
    result = page.evaluate(LOAD, workflow)
    assert result["missing"] == ["PaintByExampleNoSuchNode"]
    assert any("PaintByExampleNoSuchNode" in alert for alert in result["alerts"]), "the missing-nodes dialog is seen"


def test_the_check_sees_an_invalid_workflow_alert(frontend):
    page, _errors = frontend
    workflow = json.loads(UI_FILES[0].read_text())
    workflow["nodes"][0]["properties"]["models"] = [{"name": "x.safetensors", "directory": "checkpoints"}]
    assert any("Invalid workflow" in alert for alert in page.evaluate(LOAD, workflow)["alerts"])


CLOSE_DIALOGS = """() => {
  document.querySelectorAll(".p-toast-message").forEach((toast) => toast.remove());
  document.querySelectorAll(".p-dialog-close-button").forEach((button) => button.click());
}"""
APP = "(window.app ?? window.comfyAPI?.app?.app)"
BROWSE_TEMPLATES = f"() => {APP}.extensionManager.command.execute('Comfy.BrowseTemplates')"
GRAPH = f"() => {APP}.graph._nodes.map((n) => [n.type, n.widgets?.[0]?.value ?? null])"


def test_the_template_browser_shows_each_workflow_by_title_with_its_picture_and_opens_it(frontend):
    import urllib.request

    from comfyui_server import PACK_NAME

    page, errors = frontend
    page.evaluate(CLOSE_DIALOGS)
    page.wait_for_timeout(300)
    errors.clear()
    with urllib.request.urlopen(page.url.rstrip("/") + "/i18n") as response:  # the pack's section, as the user sees it
        sections = json.load(response).get("en", {}).get("templateWorkflows", {}).get("category", {})
    section = sections.get(PACK_NAME, PACK_NAME)
    page.evaluate(BROWSE_TEMPLATES)
    page.locator(".p-dialog li", has_text=section).click()
    for ui_file in UI_FILES:
        card = page.locator(f'[data-testid="template-workflow-{ui_file.stem}"]')
        card.scroll_into_view_if_needed(timeout=10_000)
        assert card.locator("h3").inner_text() == ui_file.stem
        picture = card.locator("img").element_handle(timeout=10_000)
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=picture, timeout=10_000)
        assert picture.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [1024, 768], ui_file.name
    basic = ROOT / "workflows" / "Paint-by-Example - basic edit.json"
    page.locator(f'[data-testid="template-workflow-{basic.stem}"]').click()
    workflow = json.loads(basic.read_text())
    page.wait_for_function(f"() => {APP}.graph._nodes.length === {len(workflow['nodes'])}", timeout=20_000)
    graph = page.evaluate(GRAPH)
    assert sorted(t for t, _ in graph) == sorted(n["type"] for n in workflow["nodes"])
    (note,) = [value for t, value in graph if t == "Note"]
    assert "paint_by_example.safetensors" in note, "the template opens with its Note"
    assert _ours(errors) == [], "no errors (a missing picture or workflow is a 404)"

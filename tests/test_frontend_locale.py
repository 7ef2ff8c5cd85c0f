"""The pack in ComfyUI's own frontend (headless Chromium) set to Chinese: the basic workflow's node
titles and an input's tooltip are the pack's zh translations (locales/zh), as a user sees them.

A missing locales/zh, or a ComfyUI that does not serve it to the frontend, fails here: the titles
would be English.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_frontend import frontend_page

ROOT = Path(__file__).resolve().parents[1]
BASIC = ROOT / "workflows" / "Paint-by-Example - basic edit.json"
# Comfy.Locale is what the user picks in Settings → Appearance → Language
SETTINGS = {"Comfy.Locale": "zh", "Comfy.TutorialCompleted": True}

LOAD = """
async (workflow) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  await app.loadGraphData(workflow);
  await new Promise((resolve) => setTimeout(resolve, 800));
  document.querySelectorAll(".p-toast-message").forEach((toast) => toast.remove());
  const labels = (n) => Object.fromEntries((n.inputs ?? []).map((i) => [i.name, i.label ?? i.localized_name]));
  return app.graph._nodes.map((n) => ({id: n.id, type: n.type, title: n.title, inputs: labels(n)}));
}
"""

# where an input's dot is drawn, in page coordinates
INPUT_DOT = """
([type, input]) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  const node = app.graph._nodes.find((n) => n.type === type);
  const [x, y] = app.canvas.ds.convertOffsetToCanvas(node.getInputPos(node.inputs.findIndex((i) => i.name === input)));
  const box = app.canvas.canvas.getBoundingClientRect();
  return [box.left + x / devicePixelRatio, box.top + y / devicePixelRatio];
}
"""


def _node_defs(language: str) -> dict:
    path = ROOT / "locales" / language / "nodeDefs.json"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: the pack ships no {language} translation"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chinese(tmp_path_factory, tiny_model):
    yield from frontend_page(tmp_path_factory, tiny_model, SETTINGS)


def test_the_pack_node_titles_and_input_names_are_chinese(chinese):
    page, _errors = chinese
    zh, en = _node_defs("zh"), _node_defs("en")
    workflow = json.loads(BASIC.read_text())
    retitled = {node["id"] for node in workflow["nodes"] if node.get("title")}  # the workflow's own titles stay
    nodes = [n for n in page.evaluate(LOAD, workflow) if n["type"] in en and n["id"] not in retitled]
    assert {n["type"] for n in nodes} >= {"PaintByExampleLoader", "PaintByExampleEncode", "PaintByExampleSampler"}
    for node in nodes:
        translated = zh[node["type"]]
        assert translated["display_name"] != en[node["type"]]["display_name"]
        assert node["title"] == translated["display_name"], f"{node['type']}: the frontend shows {node['title']!r}"
        for name, label in node["inputs"].items():
            assert label == translated["inputs"][name]["name"], f"{node['type']}.{name}: shown as {label!r}"


def test_an_input_tooltip_is_chinese(chinese):
    page, _errors = chinese
    zh, en = _node_defs("zh"), _node_defs("en")
    page.evaluate(LOAD, json.loads(BASIC.read_text()))
    x, y = page.evaluate(INPUT_DOT, ["PaintByExampleSampler", "source"])
    assert 0 < x < page.viewport_size["width"] and 0 < y < page.viewport_size["height"], "the input is on screen"
    page.mouse.move(x + 40, y + 40)
    page.mouse.move(x, y, steps=4)  # the frontend shows a tooltip when the pointer rests on an input
    tooltip = page.wait_for_selector(".node-tooltip", timeout=10_000).inner_text()
    expected = zh["PaintByExampleSampler"]["inputs"]["source"]["tooltip"]
    assert expected != en["PaintByExampleSampler"]["inputs"]["source"]["tooltip"]
    assert tooltip == expected

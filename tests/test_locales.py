"""The translations: every shipped language covers every node, input and output, and names none that
does not exist; the English file is the code's own text (tools/locales.py writes it)."""

from __future__ import annotations

import copy
import importlib.util
import sys
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"
SHIPPED = ("zh", "ja", "ko")
CATEGORY = "paint by example"  # the segment of the pack's node categories the frontend translates


def _tool():
    spec = importlib.util.spec_from_file_location("pbe_locales_tool", ROOT / "tools" / "locales.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _load(language: str, name: str = "nodeDefs.json") -> dict:
    return json.loads((LOCALES / language / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("language", SHIPPED)
def test_every_node_input_and_output_is_translated(language):
    found = _tool().problems(_load(language), _load("en"))
    assert not found, f"locales/{language}/nodeDefs.json:\n" + "\n".join(found)


@pytest.mark.parametrize("language", SHIPPED)
def test_the_category_and_the_template_section_are_translated(language):
    main = _load(language, "main.json")
    assert main["nodeCategories"][CATEGORY].strip()
    assert all(v.strip() for v in main["templateWorkflows"]["category"].values())


@pytest.mark.parametrize("language", SHIPPED)
def test_translations_are_not_the_english_text(language):
    """A tooltip left in English is not a translation: at most the technical names may match."""
    ours, english = _load(language), _load("en")
    same = [f"{node}.{part}.{name}" for node, entry in english.items() for part in ("inputs", "outputs")
            for name, fields in entry[part].items()
            if fields.get("tooltip") and ours[node][part][name].get("tooltip") == fields["tooltip"]]
    same += [f"{node}.description" for node, entry in english.items() if ours[node]["description"] == entry["description"]]
    assert not same, f"{language}: still in English: {same}"


def test_the_checker_finds_what_is_missing_or_stale():
    tool, english = _tool(), _load("en")
    assert tool.problems(copy.deepcopy(english), english) == []
    broken = copy.deepcopy(english)
    node = "PaintByExampleSampler"
    del broken[node]["inputs"]["seed"]["tooltip"]
    broken[node]["inputs"]["old_input"] = {"name": "old", "tooltip": "gone"}
    broken[node]["outputs"]["0"]["name"] = " "
    del broken["PaintByExampleScore"]
    broken["PaintByExampleRemoved"] = {"display_name": "x"}
    found = tool.problems(broken, english)
    assert f"{node}.inputs.seed.tooltip: missing" in found
    assert f"{node}.inputs.old_input: no such input" in found
    assert f"{node}.outputs.0.name: missing" in found
    assert "PaintByExampleScore: missing" in found
    assert "PaintByExampleRemoved: no such node" in found


def test_english_is_the_code_own_text(comfy):
    """locales/en/nodeDefs.json equals what the live node definitions say (regenerate it with
    `python tools/locales.py` after changing a tooltip, then update the other languages)."""
    pack = comfy.pack("nodes")
    live = _tool().english(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    assert live == _load("en"), "locales/en/nodeDefs.json is out of date: run python tools/locales.py"

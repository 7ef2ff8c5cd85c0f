"""The example workflows: UI and API twins agree, validate against live node definitions, and run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from workflow_ui import node_definition, ui_to_api  # noqa: E402

API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
FAST = {"steps": 2, "resolution": 256}  # the tiny model paints noise anyway: keep runs short


def _definitions(comfy, prompt):
    return {node["class_type"]: node_definition(comfy.node(node["class_type"])) for node in prompt.values()}


def _normalized(prompt, definitions):
    """Titles dropped; widget inputs the prompt leaves out take their defaults, as in the UI."""
    from workflow_ui import _default, _is_widget

    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, spec in definitions[node["class_type"]]["inputs"]:
            if name not in inputs and _is_widget(spec):
                inputs[name] = _default(spec)
        out[node_id] = {"class_type": node["class_type"], "inputs": inputs}
    return out


@pytest.fixture
def workflow_files(comfy, tiny_model):
    """The files the example workflows name, made from the tiny random model and synthetic images."""
    from pbe_core.testing import random_checkpoint

    path = comfy.models / "checkpoints" / "paint_by_example.safetensors"
    if not path.exists():
        random_checkpoint.write_single_file(path, tiny_model)
        comfy.clear_folder_caches()
    controlnet = comfy.models / "controlnet" / "control_v11p_sd15_canny.pth"
    if not controlnet.exists():
        from test_comfy_nodes import _load, _tiny_controlnet

        name = _tiny_controlnet(comfy, _load(comfy)[0])
        sd = load_file(comfy.models / "controlnet" / name)
        torch.save(sd, controlnet)  # a pickled .pth, as ControlNet 1.1 files are
        comfy.clear_folder_caches()
    inputs = comfy.scratch / "input"
    rgba = np.zeros((768, 1024, 4), dtype=np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 256, (768, 1024, 3))
    rgba[..., 3] = 255
    rgba[300:380, 600:700, 3] = 0  # LoadImage's MASK is 1 - alpha: the painted region
    Image.fromarray(rgba).save(inputs / "pbe_large_source.png")
    source = rgba[:256, :256].copy()
    source[96:160, 64:192, 3] = 0
    Image.fromarray(source).save(inputs / "pbe_source.png")
    for index, (x0, x1) in enumerate(((48, 128), (128, 208)), start=1):  # two side-by-side regions
        region = np.full((256, 256, 4), 255, dtype=np.uint8)
        region[80:176, x0:x1, 3] = 0
        Image.fromarray(region).save(inputs / f"pbe_region_{index}.png")
    Image.fromarray(np.full((80, 60, 3), 180, dtype=np.uint8)).save(inputs / "pbe_reference.png")
    Image.fromarray(np.full((60, 80, 3), 60, dtype=np.uint8)).save(inputs / "pbe_reference_2.png")


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_ui_twin_says_the_same_as_the_api_workflow(comfy, api_file):
    prompt = json.loads(api_file.read_text())
    ui_file = ROOT / "workflows" / api_file.name
    assert ui_file.exists(), f"{ui_file.name}: the UI workflow is missing (run tools/workflow_ui.py)"
    ui = json.loads(ui_file.read_text())
    definitions = _definitions(comfy, prompt)
    assert _normalized(ui_to_api(ui, definitions), definitions) == _normalized(prompt, definitions)


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_ui_workflow_links_are_well_typed(comfy, api_file):
    ui = json.loads((ROOT / "workflows" / api_file.name).read_text())
    nodes = {node["id"]: node for node in ui["nodes"]}
    for link_id, source, slot, target, target_slot, kind in ui["links"]:
        assert source in nodes and target in nodes, f"link {link_id} joins missing nodes"
        source_cls = comfy.node(nodes[source]["type"])  # every node type exists
        assert source_cls.RETURN_TYPES[slot] == kind
        entry = nodes[target]["inputs"][target_slot]
        spec = dict(node_definition(comfy.node(nodes[target]["type"]))["inputs"])[entry["name"]]
        assert spec[0] == kind or spec[0] == "*", f"link {link_id}: {kind} into {entry['name']} ({spec[0]})"


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_validates_and_runs(comfy, workflow_files, api_file):
    prompt = json.loads(api_file.read_text())
    valid, error, _outputs, node_errors = comfy.validate(prompt)
    assert valid, f"{api_file.name}: {error} {node_errors}"
    for node in prompt.values():
        for name, value in FAST.items():
            if name in node["inputs"]:
                node["inputs"][name] = value
    comfy.run(prompt)


UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
MODEL_FILE = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def test_workflow_file_names_are_titles_with_thumbnails():
    """ComfyUI's template browser shows each UI workflow's file name as its card's title (the
    description repeats it with - and _ as spaces) and <name>.jpg as its picture."""
    assert {p.stem for p in UI_FILES} == {p.stem for p in API_FILES}, "each UI workflow has its API twin"
    for ui_file in UI_FILES:
        name = ui_file.stem
        # one scheme; characters the template URLs carry unescaped; two lines on the card at most
        assert name.startswith("Paint-by-Example - ") and len(name) <= 50, name
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -()"), name
        with Image.open(ui_file.with_suffix(".jpg")) as thumbnail:  # tools/workflow_pictures.py
            assert thumbnail.size == (1024, 768), f"{name}.jpg: {thumbnail.size}"


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_has_a_note_naming_the_model_files_it_needs(ui_file):
    """A core Note beside the loader says which model files the workflow's loaders pick, where the
    model comes from and how to convert it, before ComfyUI's missing-file message does."""
    nodes = json.loads(ui_file.read_text())["nodes"]
    notes = [node for node in nodes if node["type"] == "Note"]
    assert len(notes) == 1, f"{ui_file.name}: one Note saying which model files it needs (found {len(notes)})"
    text = notes[0]["widgets_values"][0]
    loaders = [node for node in nodes if node["type"].endswith("Loader")]
    files = [value for node in loaders for value in node["widgets_values"]
             if isinstance(value, str) and value.endswith(MODEL_FILE)]
    assert any(node["type"] == "PaintByExampleLoader" for node in loaders) and files
    for name in files:
        assert name in text, f"{ui_file.name}: the Note does not name {name}"
    for fact in ("https://huggingface.co/Fantasy-Studio/Paint-by-Example", "model.ckpt", "python -m pbe_core.convert"):
        assert fact in text, f"{ui_file.name}: the Note does not say {fact}"
    assert (ROOT / "pbe_core" / "convert.py").is_file(), "the converter the Note names exists"
    (loader,) = [node for node in loaders if node["type"] == "PaintByExampleLoader"]
    gap = max(_gap(notes[0], loader, 0), _gap(notes[0], loader, 1))
    assert gap < 120, f"{ui_file.name}: the Note is {gap:.0f} px away from the loader"


def _gap(a, b, axis):
    """The space between two nodes' boxes (title bars included) along one axis; negative when they overlap."""
    title = 30 if axis == 1 else 0
    a0, a1 = a["pos"][axis] - title, a["pos"][axis] + a["size"][axis]
    b0, b1 = b["pos"][axis] - title, b["pos"][axis] + b["size"][axis]
    return max(a0 - b1, b0 - a1)

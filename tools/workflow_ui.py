"""Convert between ComfyUI's API prompt format and its UI (graph editor) workflow format.

The example workflows are written once, in API format (workflows/api/*.json, runnable headless);
their UI twins (workflows/*.json, what ComfyUI offers as templates) are generated from them with
the live node definitions of a ComfyUI that has this pack loaded:

    COMFYUI_PATH=/path/to/ComfyUI python tools/workflow_ui.py

Each UI twin also gets a Note beside its loader saying which model files it needs
(tools/workflow_notes.py); Notes exist in the UI only, so the API twins stay runnable as they are.
``ui_to_api`` reads a UI workflow back, so tests can check that each pair says the same thing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
UI_ONLY = {"Note", "MarkdownNote"}  # the frontend's own nodes: never sent to the server
NOTE_SIZE = [720, 160]


def node_definition(cls) -> dict:
    spec = cls.INPUT_TYPES()
    inputs = [(name, value) for section in ("required", "optional") for name, value in spec.get(section, {}).items()]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return {"inputs": inputs, "outputs": list(zip(names, cls.RETURN_TYPES))}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _has_seed_control(name, spec) -> bool:
    return spec[0] == "INT" and (_options(spec).get("control_after_generate") or name in SEED_NAMES)


def _default(spec):
    options = _options(spec)
    if "default" in options:
        return options["default"]
    if isinstance(spec[0], list):
        return spec[0][0] if spec[0] else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


def api_to_ui(prompt: dict, definitions: dict, note: str | None = None) -> dict:
    """``definitions``: class_type -> node_definition(); ``note``: the text of a Note put above the
    (first) loader."""
    ids = {node_id: i + 1 for i, node_id in enumerate(prompt)}
    depth = {node_id: _depth(prompt, node_id, {}) for node_id in prompt}
    nodes, links, rows = [], [], {}
    order = sorted(prompt, key=lambda n: (depth[n], ids[n]))
    out_links: dict[tuple[int, int], list[int]] = {}
    for node_id in order:
        node = prompt[node_id]
        definition = definitions[node["class_type"]]
        inputs, widgets = [], []
        for name, spec in definition["inputs"]:
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id = len(links) + 1
                source = ids[value[0]]
                source_type = definitions[prompt[value[0]]["class_type"]]["outputs"][value[1]][1]
                entry = {"name": name, "type": source_type, "link": link_id}
                if _is_widget(spec):
                    entry["widget"] = {"name": name}
                    widgets.append(_default(spec))
                inputs.append(entry)
                links.append([link_id, source, value[1], ids[node_id], len(inputs) - 1, source_type])
                out_links.setdefault((source, value[1]), []).append(link_id)
                continue
            if not _is_widget(spec):
                inputs.append({"name": name, "type": spec[0], "link": None})
                continue
            widgets.append(_default(spec) if value is None else value)
            if _has_seed_control(name, spec):
                widgets.append("fixed")
        if any(_options(spec).get("image_upload") for _name, spec in definition["inputs"]):
            widgets.append("image")
        column = depth[node_id]
        rows[column] = rows.get(column, 0) + 1
        properties = {"Node name for S&R": node["class_type"]}
        nodes.append({
            "id": ids[node_id], "type": node["class_type"],
            "pos": [60 + 380 * column, 60 + 330 * (rows[column] - 1)], "size": [340, 260],
            "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "slot_index": slot, "links": []}
                        for slot, (name, kind) in enumerate(definition["outputs"])],
            "properties": properties, "widgets_values": widgets,
        })
        if "_meta" in node and node["_meta"].get("title"):
            nodes[-1]["title"] = node["_meta"]["title"]
    for node in nodes:
        for output in node["outputs"]:
            output["links"] = out_links.get((node["id"], output["slot_index"]), [])
    if note is not None:
        loader = next((n for n in nodes if n["type"].endswith("Loader")), nodes[0])
        nodes.append(_note(note, len(nodes) + 1, loader["pos"]))
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": sorted(nodes, key=lambda n: n["id"]),
            "links": links, "groups": [], "config": {}, "extra": {"ds": _fit_view(nodes)}, "version": 0.4}


def _note(text: str, node_id: int, beside: list) -> dict:
    """A core Note node, as the frontend saves one, above the node at ``beside``."""
    pos = [beside[0], beside[1] - NOTE_SIZE[1] - 70]  # clear of the node's title bar
    return {"id": node_id, "type": "Note", "pos": pos, "size": list(NOTE_SIZE), "flags": {}, "order": node_id - 1,
            "mode": 0, "inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
            "color": "#432", "bgcolor": "#653"}


def _fit_view(nodes, width=1400, height=800, margin=40, top=70, min_scale=0.75) -> dict:
    """The canvas view (LiteGraph's ds) that shows the whole graph in a typical browser window.

    Below a zoom of about 0.6 the frontend stops drawing text (its level-of-detail switch), so a
    graph too big for the window opens at ``min_scale`` on its top-left corner instead: the Note
    and the loader, readable."""
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    scale = max(min((width - 2 * margin) / (x1 - x0), (height - top - margin) / (y1 - y0), 1.0), min_scale)
    return {"scale": round(scale, 4), "offset": [round(margin / scale - x0, 1), round(top / scale - y0, 1)]}


def _depth(prompt, node_id, memo) -> int:
    if node_id not in memo:
        parents = [v[0] for v in prompt[node_id]["inputs"].values()
                   if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]
        memo[node_id] = 1 + max((_depth(prompt, p, memo) for p in parents), default=-1)
    return memo[node_id]


def ui_to_api(workflow: dict, definitions: dict) -> dict:
    """The API prompt a UI workflow stands for (widget values by position, links by id)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in UI_ONLY:
            continue
        definition = definitions[node["type"]]
        linked = {entry["name"]: links[entry["link"]] for entry in node.get("inputs", []) if entry.get("link")}
        values = list(node.get("widgets_values", []))
        inputs = {}
        for name, spec in definition["inputs"]:
            if _is_widget(spec):
                value = values.pop(0) if values else _default(spec)
                if _has_seed_control(name, spec) and values:
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = linked[name]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            prompt[str(node["id"])]["_meta"] = {"title": node["title"]}
    return prompt


def renumber(prompt: dict) -> dict:
    """An API prompt with node ids 1..N in its own order (as api_to_ui numbers them)."""
    ids = {node_id: str(i + 1) for i, node_id in enumerate(prompt)}
    out = {}
    for node_id, node in prompt.items():
        inputs = {k: ([ids[v[0]], v[1]] if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) else v)
                  for k, v in node["inputs"].items()}
        out[ids[node_id]] = {**node, "inputs": inputs}
    return out


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(root), str(root / "tests")]

    from comfyui import NO_COMFYUI, ComfyUI, find_comfyui, scratch_folder
    from workflow_notes import note_text

    comfy_root = find_comfyui()
    if comfy_root is None:
        sys.exit(NO_COMFYUI)
    scratch = scratch_folder("pbe_workflows_")
    comfy = ComfyUI(comfy_root, scratch / "models", scratch / "scratch")
    for api_file in sorted((root / "workflows" / "api").glob("*.json")):
        prompt = renumber(json.loads(api_file.read_text()))
        api_file.write_text(json.dumps(prompt, indent=2) + "\n")
        definitions = {n["class_type"]: node_definition(comfy.node(n["class_type"])) for n in prompt.values()}
        ui = api_to_ui(prompt, definitions, note_text(prompt))
        (root / "workflows" / api_file.name).write_text(json.dumps(ui, indent=2) + "\n")
        print(f"wrote workflows/{api_file.name}")


if __name__ == "__main__":
    main()

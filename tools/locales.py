"""The pack's translations, in ComfyUI's `locales/<language>/nodeDefs.json` format.

`locales/en/nodeDefs.json` is generated from the live node definitions (display names, descriptions,
input and output names and tooltips), so the English text is the code's own:

    COMFYUI_PATH=/path/to/ComfyUI python tools/locales.py

The other languages are written by people; :func:`problems` lists what a language file lacks or
names wrongly against the live definitions (tests/test_locales.py runs it for every shipped language).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "locales"


def node_entry(cls, display_name: str) -> dict:
    """One node's nodeDefs entry, as ComfyUI's frontend reads it: display_name, description,
    inputs.<name>.name/.tooltip and outputs.<index>.name/.tooltip."""
    spec = cls.INPUT_TYPES()
    inputs = {}
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            options = value[1] if len(value) > 1 and isinstance(value[1], dict) else {}
            inputs[name] = {"name": name, **({"tooltip": options["tooltip"]} if options.get("tooltip") else {})}
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ()
    outputs = {}
    for index, name in enumerate(names):
        outputs[str(index)] = {"name": name, **({"tooltip": tooltips[index]} if index < len(tooltips) else {})}
    return {"display_name": display_name, "description": getattr(cls, "DESCRIPTION", ""), "inputs": inputs,
            "outputs": outputs}


def english(node_classes: dict, display_names: dict) -> dict:
    return {node_id: node_entry(cls, display_names[node_id]) for node_id, cls in sorted(node_classes.items())}


def problems(translated: dict, reference: dict) -> list[str]:
    """What ``translated`` (a nodeDefs.json) lacks against ``reference`` (the English one built from the
    code): every node, display name, description, input and output name and tooltip must be there and
    not empty, and nothing may name a node, input or output that does not exist."""
    found = []
    for node_id in sorted(set(translated) - set(reference)):
        found.append(f"{node_id}: no such node")
    for node_id, entry in reference.items():
        theirs = translated.get(node_id)
        if not isinstance(theirs, dict):
            found.append(f"{node_id}: missing")
            continue
        for key in ("display_name", "description"):
            if entry.get(key) and not str(theirs.get(key, "")).strip():
                found.append(f"{node_id}.{key}: missing")
        for part in ("inputs", "outputs"):
            ours, given = entry[part], theirs.get(part, {})
            for name in sorted(set(given) - set(ours)):
                found.append(f"{node_id}.{part}.{name}: no such {part[:-1]}")
            for name, fields in ours.items():
                for field in fields:
                    if not str(given.get(name, {}).get(field, "")).strip():
                        found.append(f"{node_id}.{part}.{name}.{field}: missing")
    return found


def main() -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

    from comfyui import NO_COMFYUI, ComfyUI, find_comfyui, scratch_folder

    comfy_root = find_comfyui()
    if comfy_root is None:
        sys.exit(NO_COMFYUI)
    scratch = scratch_folder("pbe_locales_")
    comfy = ComfyUI(comfy_root, scratch / "models", scratch / "scratch")
    pack = comfy.pack("nodes")
    reference = english(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS)
    target = LOCALES / "en" / "nodeDefs.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(reference, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")
    for language in sorted(p for p in LOCALES.iterdir() if p.is_dir() and p.name != "en"):
        path = language / "nodeDefs.json"
        listed = problems(json.loads(path.read_text(encoding="utf-8")), reference) if path.exists() else ["no file"]
        print(f"{language.name}: {len(listed)} problems" + "".join(f"\n  {p}" for p in listed[:40]))


if __name__ == "__main__":
    main()

"""The pack never imports ComfyUI's node modules (`nodes`, `comfy_extras.nodes_*`), so it never
instantiates a core node class: core is moving its nodes to a new schema, and the pack calls the
library functions those nodes call instead. Checked on the syntax tree, which comments and strings
cannot fool."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTERS = {"import_module", "__import__"}


def _is_node_module(name: str) -> bool:
    return name == "nodes" or name.startswith("nodes.") or name.startswith("comfy_extras.nodes")


def core_node_module_uses(source: str) -> list[str]:
    """Each place a ComfyUI node module is reached, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _is_node_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:  # relative imports are ours
            names = [f"{node.module}.{a.name}" for a in node.names]
            if _is_node_module(node.module) or any(_is_node_module(n) for n in names):
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in IMPORTERS and isinstance(node.args[0].value, str) and _is_node_module(node.args[0].value):
                found.append(f"{node.lineno}: {func}({node.args[0].value!r})")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                ast.unparse(node.value) == "sys.modules" and _is_node_module(str(node.slice.value)):
            found.append(f"{node.lineno}: sys.modules[{node.slice.value!r}]")
    return found


def _pack_files() -> list[Path]:
    return [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")), *sorted((ROOT / "pbe_core").rglob("*.py"))]


def test_the_pack_never_reaches_comfyuis_node_modules():
    files = _pack_files()
    assert len(files) > 10
    found = {str(f.relative_to(ROOT)): uses for f in files if (uses := core_node_module_uses(f.read_text()))}
    assert not found, f"ComfyUI node modules used at run time (call the library functions instead): {found}"


def test_the_check_sees_every_way_in_and_nothing_else():
    reached = """
import nodes
import nodes as comfy_nodes
from nodes import InpaintModelConditioning
import comfy_extras.nodes_mask
from comfy_extras.nodes_mask import LatentCompositeMasked
from comfy_extras import nodes_latent
x = importlib.import_module("nodes")
y = __import__("comfy_extras.nodes_mask")
z = sys.modules["nodes"]
"""
    assert len(core_node_module_uses(reached)) == 9
    fine = """
# import nodes  -- a comment
from . import inputs
from .nodes import NODE_CLASS_MAPPINGS
from ..nodes import sampler
import node_helpers
import comfy.sample
text = "import nodes"
module = importlib.import_module(f".{name}", __name__)
"""
    assert core_node_module_uses(fine) == []

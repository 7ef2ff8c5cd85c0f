"""pbe_core stands alone: it imports without ComfyUI and never imports it."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes",
                 "node_helpers", "latent_preview", "execution", "server"}


def test_import_pbe_core_where_comfyui_is_absent():
    # Any attempt to import a ComfyUI module fails in this interpreter, as it would without ComfyUI.
    code = (
        "import sys\n"
        f"for name in {sorted(COMFY_MODULES)!r}: sys.modules[name] = None\n"
        "import pbe_core, pbe_core.testing, pbe_core.mask_jitter, pbe_core.reference\n"
        "w = pbe_core.testing.random_weights('tiny', 0)\n"
        "e = pbe_core.build_encoder(w.encoder)\n"
        "import torch\n"
        "print(tuple(e(pbe_core.prepare_references(torch.rand(1, 32, 32, 3))).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 1, 768)"


def test_no_comfyui_imports_in_pbe_core_sources():
    for path in (ROOT / "pbe_core").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in COMFY_MODULES, f"{path.name} imports {name}"

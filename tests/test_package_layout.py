"""pbe_core reads as the model: its test machinery (pbe_core/testing: random checkpoints, tensor-shape
generators) is never imported by the model code or the nodes, and pbe_core's API holds none of it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTING = "pbe_core.testing"
PACK = "<pack>"  # the repository root as a package (ComfyUI loads the pack under its folder's name)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACK, *parts])


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module (or ``module.name``) a source file imports, relative imports resolved against
    ``module`` (a dotted name under ``<pack>``); the ``<pack>.`` prefix is dropped."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import testing`
    return {n[len(PACK) + 1:] if n.startswith(PACK + ".") else n for n in names}


def _imports_testing(names: set[str]) -> list[str]:
    return sorted(n for n in names if n == TESTING or n.startswith(TESTING + "."))


def _shipped_sources() -> list[Path]:
    """The code users run: pbe_core outside pbe_core/testing, the nodes, the pack's __init__."""
    paths = [ROOT / "__init__.py", *sorted((ROOT / "nodes").rglob("*.py")), *sorted((ROOT / "pbe_core").rglob("*.py"))]
    return [p for p in paths if not p.relative_to(ROOT).as_posix().startswith("pbe_core/testing/")]


@pytest.mark.parametrize("source, module, is_package, caught", [
    ("from .testing import random_weights", "<pack>.pbe_core.convert", False, True),
    ("from . import testing", "<pack>.pbe_core.checkpoint", False, True),
    ("from .testing.tensor_shapes import EncoderSizes", "<pack>.pbe_core", True, True),
    ("from ..testing import random_checkpoint", "<pack>.pbe_core.sub.module", False, True),
    ("from ..pbe_core.testing import random_checkpoint", "<pack>.nodes.loaders", False, True),
    ("import pbe_core.testing.random_checkpoint", "<pack>.pbe_core.encoder", False, True),
    ("from pbe_core import testing", "<pack>.pbe_core.encoder", False, True),
    ("from pbe_core.testing import make_random_checkpoint", "<pack>.pbe_core.encoder", False, True),
    ("from . import layouts, safetensors_writer", "<pack>.pbe_core.convert", False, False),
    ("from .architecture import UNetShape", "<pack>.pbe_core", True, False),
    ("from ..pbe_core import CheckpointError", "<pack>.nodes.comfy_model", False, False),
    ("import torch.testing", "<pack>.pbe_core.encoder", False, False),
], ids=["relative", "from-dot", "package-init", "two-levels", "from-nodes", "absolute", "absolute-from",
        "absolute-name", "model-sibling", "model-in-init", "nodes-to-model", "other-testing"])
def test_the_import_check_resolves_relative_and_absolute_imports(source, module, is_package, caught):
    assert bool(_imports_testing(imported_names(source, module, is_package))) is caught


def test_model_code_and_nodes_never_import_the_testing_package():
    sources = _shipped_sources()
    assert ROOT / "pbe_core" / "__init__.py" in sources and ROOT / "pbe_core" / "checkpoint.py" in sources
    offenders = {}
    for path in sources:
        found = _imports_testing(imported_names(path.read_text(encoding="utf-8"), _module_name(path),
                                                path.name == "__init__.py"))
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = found
    assert not offenders, f"test machinery imported by shipped code: {offenders}"


def test_importing_the_model_code_loads_nothing_from_testing_and_exports_none_of_it():
    """At run time too (an importlib call is not an import statement): every shipped pbe_core module
    imported in a fresh interpreter leaves pbe_core.testing unloaded, and pbe_core's API names come
    from the model modules."""
    modules = sorted(_module_name(p)[len(PACK) + 1:] for p in _shipped_sources()
                     if p.relative_to(ROOT).parts[0] == "pbe_core")
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import pbe_core\n"
        "api = {n: getattr(getattr(pbe_core, n), '__module__', None) or '' for n in pbe_core.__all__}\n"
        "print(json.dumps({'loaded': sorted(m for m in sys.modules if m.startswith('pbe_core.testing')),\n"
        "                  'attribute': hasattr(pbe_core, 'testing'), 'api': api}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["loaded"] == [] and found["attribute"] is False, found["loaded"]
    assert {"read_checkpoint", "build_encoder", "prepare_references", "jitter_masks"} <= set(found["api"])
    from_testing = {name: module for name, module in found["api"].items() if module.startswith(TESTING)}
    assert not from_testing, f"pbe_core exports test machinery: {from_testing}"


def test_pbe_core_api_shares_no_name_with_the_testing_package():
    import importlib

    import pbe_core
    import pbe_core.testing

    assert pbe_core.testing.__all__, "the testing package names what it offers"
    defined = set(pbe_core.testing.__all__)
    for path in (ROOT / "pbe_core" / "testing").glob("*.py"):
        module = importlib.import_module(f"{TESTING}.{path.stem}" if path.stem != "__init__" else TESTING)
        defined |= {name for name, value in vars(module).items()
                    if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__}
    assert {"make_random_checkpoint", "random_weights", "EncoderSizes", "unet_tensor_shapes"} <= defined
    assert not defined & set(pbe_core.__all__), "pbe_core exports test machinery"
    assert not defined & set(vars(pbe_core)), "pbe_core's __init__ imports test machinery"

"""Running this pack inside a real ComfyUI, in-process, for the node and workflow tests.

ComfyUI is found through $COMFYUI_PATH, the ComfyUI that encloses this pack
(ComfyUI/custom_nodes/<pack>), or ~/comfy/ComfyUI (comfy-cli's default place).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]
NO_COMFYUI = ("no ComfyUI found: set COMFYUI_PATH to a ComfyUI checkout, install this pack in "
              "ComfyUI/custom_nodes, or check ComfyUI out at ~/comfy/ComfyUI")


def find_comfyui() -> Path | None:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(PACK_ROOT.parent.parent)
    candidates.append(Path.home() / "comfy" / "ComfyUI")
    for path in candidates:
        if (path / "main.py").is_file() and (path / "comfy").is_dir():
            return path.resolve()
    return None


class ComfyUI:
    """ComfyUI imported in this process with the pack loaded; model folders point at ``models``."""

    def __init__(self, root: Path, models: Path, scratch: Path, **cli_args):
        sys.path.insert(0, str(root))
        import torch

        import comfy.cli_args
        comfy.cli_args.args.cpu = comfy.cli_args.args.cpu or not torch.cuda.is_available()
        for name, value in cli_args.items():  # ComfyUI's command-line options, e.g. use_pytorch_cross_attention
            setattr(comfy.cli_args.args, name, value)
        import folder_paths
        import utils.extra_config  # noqa: F401  (must come before `nodes`, which reorders sys.path)

        for kind in ("checkpoints", "diffusers", "diffusion_models", "controlnet"):
            (models / kind).mkdir(parents=True, exist_ok=True)
            folder_paths.add_model_folder_path(kind, str(models / kind), is_default=True)
        for kind, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                             ("input", folder_paths.set_input_directory)):
            (scratch / kind).mkdir(parents=True, exist_ok=True)
            setter(str(scratch / kind))

        import execution
        import nodes

        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if not asyncio.run(nodes.load_custom_node(str(PACK_ROOT))):
            raise RuntimeError("ComfyUI could not load this pack (see the log above)")
        self.root, self.models, self.scratch = root, models, scratch
        self.nodes, self.execution, self.folder_paths = nodes, execution, folder_paths
        self.server = types.SimpleNamespace(client_id=None, last_node_id=None, last_prompt_id=None,
                                            sockets_metadata={}, send_sync=lambda *args, **kwargs: None)
        self._prompts = 0

    def node(self, class_type: str):
        return self.nodes.NODE_CLASS_MAPPINGS[class_type]

    @property
    def pack_package(self) -> str:
        """The pack's package name as ComfyUI loaded it (the pack's folder name)."""
        return self.node("PaintByExampleLoader").__module__.rsplit(".", 2)[0]

    def pack(self, module: str):
        """A module of the pack as ComfyUI loaded it, e.g. ``pack("nodes.comfy_model")``."""
        import importlib

        return importlib.import_module(f"{self.pack_package}.{module}")

    def pack_classes(self) -> dict:
        """{node id: class} of every node the pack registered."""
        return {node_id: cls for node_id, cls in self.nodes.NODE_CLASS_MAPPINGS.items()
                if cls.__module__.startswith(f"{self.pack_package}.")}

    def validate(self, prompt: dict):
        return asyncio.run(self.execution.validate_prompt("validate", prompt, None))

    def run(self, prompt: dict, wanted: list[str] | None = None) -> dict:
        """Validate and execute an API-format prompt; returns {node id: outputs tuple} for ``wanted``.

        A failed validation or execution raises AssertionError carrying ComfyUI's own message.
        """
        valid, error, outputs, node_errors = self.validate(prompt)
        if not valid:
            raise AssertionError(f"ComfyUI refused the prompt: {error} {node_errors}")
        self._prompts += 1
        executor = self.execution.PromptExecutor(self.server)
        executor.execute(prompt, f"test-{self._prompts}", {}, list(outputs) + list(wanted or []))
        if not executor.success:
            errors = [data for event, data in executor.status_messages if event == "execution_error"]
            raise ExecutionFailed(errors[0]["exception_message"] if errors else "unknown error", errors)
        return {node_id: _outputs(executor, node_id) for node_id in wanted or []}

    def clear_folder_caches(self) -> None:
        self.folder_paths.filename_list_cache.clear()


class ExecutionFailed(AssertionError):
    def __init__(self, message, errors):
        super().__init__(message)
        self.message = message
        self.errors = errors


def _outputs(executor, node_id):
    entry = executor.caches.outputs.get(node_id)
    if entry is None:
        raise AssertionError(f"node {node_id} produced no output")
    outputs = entry.outputs if hasattr(entry, "outputs") else entry
    return tuple(values[0] for values in outputs)


def scratch_folder(prefix: str, given: str | Path | None = None) -> Path:
    """The folder a script works in: ``given`` as it is (the user keeps it), or a new temporary
    folder removed when the script exits, since full-size models in it take gigabytes of disk."""
    if given:
        return Path(given)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


def comfyui_with_random_model(prefix: str, size: str = "tiny", **cli_args) -> ComfyUI:
    """For scripts (benchmarks): ComfyUI in this process with a random model as
    checkpoints/pbe.safetensors, in a scratch folder removed at exit. Exits with a reason without ComfyUI."""
    from pbe_core.testing import random_checkpoint

    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    work = scratch_folder(prefix)
    random_checkpoint.write_single_file(work / "models" / "checkpoints" / "pbe.safetensors",
                                        random_checkpoint.random_weights(size, seed=0))
    return ComfyUI(root, work / "models", work / "scratch", **cli_args)

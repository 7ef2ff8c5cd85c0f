"""The Note each example workflow carries: which model files it expects, where they go and where to
get them, so a user learns that before ComfyUI's missing-file message.

The text is built from the workflow itself (the file names its loaders pick), so a workflow that
names a file this module cannot explain stops the generator (tools/workflow_ui.py) instead of
shipping without a note.
"""

from __future__ import annotations

MODEL_PAGE = "https://huggingface.co/Fantasy-Studio/Paint-by-Example"
CONVERT = ("python -m pbe_core.convert ../../models/checkpoints/model.ckpt "
           "../../models/checkpoints/paint_by_example.safetensors")

# The pack's loaders: node type -> (the input naming the file, the models/ folder it is read from).
MODEL_LOADERS = {"PaintByExampleLoader": ("ckpt_name", "checkpoints")}

# Other model files a workflow may need: loader type -> (input, folder); and where each file comes from.
OTHER_LOADERS = {
    "ControlNetLoader": ("control_net_name", "controlnet"),
    "CLIPVisionLoader": ("clip_name", "clip_vision"),
    "UpscaleModelLoader": ("model_name", "upscale_models"),
}
SOURCES = {
    "control_v11p_sd15_canny.pth": "https://huggingface.co/lllyasviel/ControlNet-v1-1",
}


def needed_files(prompt: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(model files, other files) an API prompt reads, each as (file name, models/ folder)."""
    model, other = [], []
    for node in prompt.values():
        for table, found in ((MODEL_LOADERS, model), (OTHER_LOADERS, other)):
            if node["class_type"] in table:
                name, folder = table[node["class_type"]]
                if (node["inputs"][name], folder) not in found:
                    found.append((node["inputs"][name], folder))
    return model, other


def note_text(prompt: dict) -> str:
    model, other = needed_files(prompt)
    if not model:
        raise ValueError("the workflow has no Paint-by-Example Loader: nothing to say which model it expects")
    lines = ["What this workflow needs", ""]
    for name, folder in model:
        lines.append(f"Model: {name} in ComfyUI/models/{folder} (or the authors' model.ckpt there, "
                     "picked in the Paint-by-Example Loader).")
    lines += [f"Get it: {MODEL_PAGE} (file model.ckpt, 12.6 GB).",
              "Convert it once (2.6 GB result), from this pack's folder in ComfyUI/custom_nodes:",
              CONVERT]
    for name, folder in other:
        if name not in SOURCES:
            raise ValueError(f"{name}: say in tools/workflow_notes.py SOURCES where users get this file")
        lines += ["", f"Also: {name} in ComfyUI/models/{folder}, from {SOURCES[name]}"]
    if not other:
        lines += ["", "No other model files."]
    return "\n".join(lines)

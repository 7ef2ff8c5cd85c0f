"""Where users' Paint-by-Example files are listed from (ComfyUI's own model folders)."""

from __future__ import annotations

import os

import folder_paths

from ..pbe_core.tensor_files import SUPPORTED_EXTENSIONS


def checkpoint_names() -> list[str]:
    return [n for n in folder_paths.get_filename_list("checkpoints") if n.lower().endswith(SUPPORTED_EXTENSIONS)]


def checkpoint_path(name: str) -> str:
    try:
        return folder_paths.get_full_path_or_raise("checkpoints", name)
    except FileNotFoundError as e:
        folders = ", ".join(folder_paths.get_folder_paths("checkpoints"))
        raise ValueError(
            f"ckpt_name: {name!r} is not in ComfyUI's checkpoints folder ({folders}). Put the Paint-by-Example "
            "checkpoint there and refresh the page, or pick another file."
        ) from e


def diffusers_folder_names() -> list[str]:
    """Folders under ComfyUI's diffusers folder(s) that hold a model_index.json (as core lists them)."""
    names = []
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        for current, _dirs, files in os.walk(root, followlinks=True):
            if "model_index.json" in files:
                names.append(os.path.relpath(current, root))
    return sorted(set(names))


def diffusers_folder_path(name: str) -> str:
    for root in folder_paths.get_folder_paths("diffusers"):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    folders = ", ".join(folder_paths.get_folder_paths("diffusers"))
    raise ValueError(
        f"model_path: {name!r} is not a folder in ComfyUI's diffusers folder ({folders}). Put the whole "
        "Paint-by-Example diffusers folder (unet/, vae/, image_encoder/, model_index.json) there."
    )

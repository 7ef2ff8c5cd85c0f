"""Shared fixtures: tiny random Paint-by-Example checkpoints in every real layout."""

from __future__ import annotations

import pytest
import torch

from pbe_core.testing import random_checkpoint


_FIGURES: list[str] = []


@pytest.fixture
def report():
    """Record a measured figure; all of them are printed at the end of the run."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_model():
    return random_checkpoint.random_weights("tiny", seed=0)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, tiny_model):
    """One tiny model (seed 0) written in every layout users have."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {
        "safetensors": random_checkpoint.write_single_file(root / "pbe.safetensors", tiny_model),
        "ckpt": random_checkpoint.write_single_file(root / "model.ckpt", tiny_model),
        "safetensors_fp16": random_checkpoint.write_single_file(root / "pbe_fp16.safetensors", tiny_model, torch.float16),
        "safetensors_bf16": random_checkpoint.write_single_file(root / "pbe_bf16.safetensors", tiny_model, torch.bfloat16),
    }
    try:
        import diffusers  # noqa: F401  (the diffusers layout is written with diffusers' converters)
    except ImportError:
        return paths
    paths["diffusers"] = random_checkpoint.write_diffusers_folder(root / "pbe_diffusers", tiny_model)
    paths["diffusers_bin"] = random_checkpoint.write_diffusers_folder(root / "pbe_diffusers_bin", tiny_model,
                                                                       weights_format="bin")
    return paths


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_model):
    """A real ComfyUI in this process with the pack loaded, and tiny models in its folders:
    checkpoints/pbe_tiny.safetensors, pbe_tiny.ckpt, pbe_tiny_fp16.safetensors and
    diffusers/pbe_tiny (when diffusers is installed)."""
    from comfyui import NO_COMFYUI, ComfyUI, find_comfyui

    root = find_comfyui()
    if root is None:
        pytest.skip(NO_COMFYUI)
    models = tmp_path_factory.mktemp("comfy_models")
    random_checkpoint.write_single_file(models / "checkpoints" / "pbe_tiny.safetensors", tiny_model)
    random_checkpoint.write_single_file(models / "checkpoints" / "pbe_tiny.ckpt", tiny_model)
    random_checkpoint.write_single_file(models / "checkpoints" / "pbe_tiny_fp16.safetensors", tiny_model, torch.float16)
    try:
        random_checkpoint.write_diffusers_folder(models / "diffusers" / "pbe_tiny", tiny_model)
    except ImportError:
        pass
    return ComfyUI(root, models, tmp_path_factory.mktemp("comfy_scratch"))

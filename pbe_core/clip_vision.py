"""The CLIP ViT vision tower inside the exemplar encoder, built from shapes alone (no hub).

pbe_core keeps CLIP weights under transformers-5 names (no ``vision_model.`` prefix); files
written with transformers 4 carry that prefix and sometimes ``embeddings.position_ids``.
"""

from __future__ import annotations

import math

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from .errors import CheckpointError

_V4_PREFIX = "vision_model."
# Every OpenAI CLIP ViT uses 64-channel attention heads (ViT-L/14: width 1024, 16 heads).
_HEAD_CHANNELS = 64


def canonical_clip_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept transformers-4 or -5 CLIPVisionModel keys; return them without the v4 prefix."""
    out = {}
    for key, value in sd.items():
        if key.startswith(_V4_PREFIX):
            key = key[len(_V4_PREFIX):]
        if key == "embeddings.position_ids":  # a constant buffer some old files saved
            continue
        out[key] = value
    return out


def transformers_v4_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical keys -> the transformers-4 names found in the authors' and diffusers' files."""
    return {_V4_PREFIX + k: v for k, v in sd.items()}


def clip_config_from_weights(sd: dict[str, torch.Tensor], heads: int | None = None) -> CLIPVisionConfig:
    """Read every size of a CLIP vision tower from its (canonical) weights."""
    sd = canonical_clip_keys(sd)
    needed = ("embeddings.class_embedding", "embeddings.patch_embedding.weight",
              "embeddings.position_embedding.weight", "encoder.layers.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise CheckpointError(f"the CLIP image tower is incomplete (missing {', '.join(missing)})")
    width = sd["embeddings.class_embedding"].shape[0]
    patch = sd["embeddings.patch_embedding.weight"]
    positions = sd["embeddings.position_embedding.weight"].shape[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise CheckpointError(f"the CLIP image tower has {positions} positions, which is not a square grid plus one")
    layers = 0
    while f"encoder.layers.{layers}.mlp.fc1.weight" in sd:
        layers += 1
    if heads is None:
        if width % _HEAD_CHANNELS:
            raise CheckpointError(
                f"the CLIP image tower is {width} wide, not a multiple of {_HEAD_CHANNELS}: "
                "its number of attention heads cannot be inferred"
            )
        heads = width // _HEAD_CHANNELS
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_channels=patch.shape[1],
        patch_size=patch.shape[-1],
        image_size=grid * patch.shape[-1],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def build_clip_vision(config: CLIPVisionConfig) -> CLIPVisionModel:
    return CLIPVisionModel(config)


def clip_keys_for_model(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical keys -> the names the installed transformers version uses for ``model``."""
    sd = canonical_clip_keys(sd)
    if any(k.startswith(_V4_PREFIX) for k in model.state_dict(keep_vars=True)):
        return transformers_v4_keys(sd)
    return sd

"""diffusers names -> LDM names for the SD 1.x UNet and VAE (the authors' single-file naming).

Written from the two architectures' module trees, not from any converter: both hold the same
tensors in the same order, only the containers are named differently. The one change of shape:
the VAE's mid-block attention projections are linear layers in diffusers, 1x1 convolutions in LDM.
Every name must be recognised; an unknown one is an error rather than a silently dropped weight.
"""

from __future__ import annotations

import re

import torch

from .errors import CheckpointError

# --------------------------------------------------------------------------- UNet

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_UNET_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_MID_BLOCK = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def unet_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``UNet2DConditionModel`` (SD 1.x) state dict in LDM ``UNetModel`` names."""
    per_level = _count(sd, r"^down_blocks\.0\.resnets\.(\d+)\.") + 1  # resnets + the downsampler slot
    up_with_attention = {int(m.group(1)) for k in sd if (m := re.match(r"^up_blocks\.(\d+)\.attentions\.", k))}
    out, unknown = {}, []
    for key, value in sd.items():
        name = _unet_name(key, per_level, up_with_attention)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    _refuse_unknown(unknown, "UNet")
    return out


def _unet_name(key: str, per_level: int, up_with_attention: set[int]) -> str | None:
    for theirs, ours in _UNET_TOP.items():
        if key.startswith(theirs + "."):
            return ours + key[len(theirs):]
    if m := _MID_BLOCK.match(key):
        kind, index, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return _joined(f"middle_block.{2 * index}", _resnet(rest))
    m = _UNET_BLOCK.match(key)
    if m is None:
        return None
    side, level, kind, index, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if side == "down_blocks":
        if kind == "resnets":
            return _joined(f"input_blocks.{1 + level * per_level + index}.0", _resnet(rest))
        if kind == "attentions":
            return f"input_blocks.{1 + level * per_level + index}.1.{rest}"
        if kind == "downsamplers" and rest.startswith("conv."):
            return f"input_blocks.{(level + 1) * per_level}.0.op.{rest[len('conv.'):]}"
        return None
    block = level * per_level  # an up level has one more resnet than a down level: per_level of them
    if kind == "resnets":
        return _joined(f"output_blocks.{block + index}.0", _resnet(rest))
    if kind == "attentions":
        return f"output_blocks.{block + index}.1.{rest}"
    if kind == "upsamplers" and rest.startswith("conv."):
        layer = 2 if level in up_with_attention else 1
        return f"output_blocks.{block + per_level - 1}.{layer}.{rest}"
    return None


def _joined(block: str, rest: str | None) -> str | None:
    return None if rest is None else f"{block}.{rest}"


def _resnet(rest: str) -> str | None:
    part, _, param = rest.partition(".")
    return f"{_UNET_RESNET[part]}.{param}" if part in _UNET_RESNET else None


# --------------------------------------------------------------------------- VAE

_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
# diffusers >= 0.14 names, then the older ones (query/key/value/proj_attn) of folders written before
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                  "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
_VAE_SAME = ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.", "quant_conv.",
             "post_quant_conv.")
_VAE_BLOCK = re.compile(r"^(encoder\.down_blocks|decoder\.up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_VAE_MID = re.compile(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def vae_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in LDM ``AutoencoderKL`` names (attention
    projections reshaped from linear to 1x1 convolution weights: a view, no copy)."""
    up_levels = _count(sd, r"^decoder\.up_blocks\.(\d+)\.")
    out, unknown = {}, []
    for key, value in sd.items():
        converted = _vae_entry(key, value, up_levels)
        if converted is None:
            unknown.append(key)
        else:
            out[converted[0]] = converted[1]
    _refuse_unknown(unknown, "VAE")
    return out


def _vae_entry(key: str, value: torch.Tensor, up_levels: int):
    if key.startswith(_VAE_SAME):
        return key, value
    for side in ("encoder", "decoder"):
        if key.startswith(f"{side}.conv_norm_out."):
            return f"{side}.norm_out.{key[len(side) + len('.conv_norm_out.'):]}", value
    if m := _VAE_MID.match(key):
        side, kind, index, rest = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        if kind == "resnets":
            name = _vae_resnet(rest)
            return (f"{side}.mid.block_{index + 1}.{name}", value) if name else None
        part, param = rest.rsplit(".", 1)
        if part not in _VAE_ATTENTION:
            return None
        if part != "group_norm" and param == "weight" and value.dim() == 2:
            value = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv
        return f"{side}.mid.attn_1.{_VAE_ATTENTION[part]}.{param}", value
    m = _VAE_BLOCK.match(key)
    if m is None:
        return None
    blocks, level, kind, index, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    if blocks == "encoder.down_blocks":
        if kind == "resnets":
            name = _vae_resnet(rest)
            return (f"encoder.down.{level}.block.{index}.{name}", value) if name else None
        if kind == "downsamplers" and rest.startswith("conv."):
            return f"encoder.down.{level}.downsample.{rest}", value
        return None
    ldm_level = up_levels - 1 - level  # LDM numbers decoder levels from the finest; diffusers from the coarsest
    if kind == "resnets":
        name = _vae_resnet(rest)
        return (f"decoder.up.{ldm_level}.block.{index}.{name}", value) if name else None
    if kind == "upsamplers" and rest.startswith("conv."):
        return f"decoder.up.{ldm_level}.upsample.{rest}", value
    return None


def _vae_resnet(rest: str) -> str | None:
    part, _, param = rest.partition(".")
    return f"{_VAE_RESNET[part]}.{param}" if part in _VAE_RESNET else None


# --------------------------------------------------------------------------- shared


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _refuse_unknown(unknown: list[str], part: str) -> None:
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise CheckpointError(
            f"the diffusers {part} has weights an SD 1.x {part} does not ({shown}): it is not the "
            "Paint-by-Example model's architecture, so it cannot be converted to the authors' layout"
        )

"""Sizes of the UNet and VAE in LDM's terms, as the loaders need them: a diffusers UNet config
read as the LDM ``unet_config`` the host builds, and a VAE's sizes read back from its weights
(hosts' own VAE detection only knows the real widths).

The tensor shapes these sizes imply live with the random-checkpoint maker in
:mod:`pbe_core.testing.tensor_shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import CheckpointError


@dataclass(frozen=True)
class UNetShape:
    """An SD 1.x ``UNetModel`` (openaimodel) as Paint-by-Example configures it."""

    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)  # LDM attention_resolutions 4, 2, 1
    num_heads: int = 8
    context_dim: int = 768
    in_channels: int = 9
    out_channels: int = 4
    transformer_depth: int = 1

    @classmethod
    def from_diffusers_config(cls, config: dict) -> "UNetShape":
        """A diffusers ``UNet2DConditionModel`` config.json -> the same UNet's LDM sizes."""
        try:
            channels = list(config["block_out_channels"])
            depth = config.get("transformer_layers_per_block", 1)
            heads = config.get("num_attention_heads") or config["attention_head_dim"]  # SD1 names heads "head_dim"
            return cls(
                model_channels=channels[0],
                channel_mult=tuple(c // channels[0] for c in channels),
                num_res_blocks=int(config["layers_per_block"]),
                attention_levels=tuple(i for i, t in enumerate(config["down_block_types"]) if "CrossAttn" in t),
                num_heads=heads if isinstance(heads, int) else heads[0],
                context_dim=int(config["cross_attention_dim"]),
                in_channels=int(config["in_channels"]),
                out_channels=int(config["out_channels"]),
                transformer_depth=depth if isinstance(depth, int) else depth[0],
            )
        except (KeyError, TypeError, IndexError, ZeroDivisionError) as e:
            raise CheckpointError(f"the UNet's config.json is not a diffusers UNet2DConditionModel config ({e})") from e

    def ldm_params(self) -> dict:
        """The ``unet_config.params`` of an LDM yaml for this shape."""
        return {
            "image_size": 32, "in_channels": self.in_channels, "out_channels": self.out_channels,
            "model_channels": self.model_channels,
            "attention_resolutions": [2 ** level for level in self.attention_levels],
            "num_res_blocks": self.num_res_blocks, "channel_mult": list(self.channel_mult),
            "num_heads": self.num_heads, "use_spatial_transformer": True,
            "transformer_depth": self.transformer_depth, "context_dim": self.context_dim,
            "use_checkpoint": False, "legacy": False,
        }


@dataclass(frozen=True)
class VAEShape:
    """An LDM ``AutoencoderKL`` (the ``ddconfig`` of its yaml, plus ``embed_dim``)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3

    def ddconfig(self) -> dict:
        return {
            "double_z": True, "z_channels": self.z_channels, "resolution": 256,
            "in_channels": self.in_channels, "out_ch": self.out_ch, "ch": self.ch,
            "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": [], "dropout": 0.0,
        }


def vae_shape_from_weights(sd: dict[str, torch.Tensor]) -> VAEShape:
    """Read an LDM-named VAE's sizes from its tensors (any width, not just the real 128)."""
    try:
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = 0
        while f"encoder.down.{levels}.block.0.conv1.weight" in sd:
            levels += 1
        ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels))
        blocks = 0
        while f"encoder.down.0.block.{blocks}.conv1.weight" in sd:
            blocks += 1
        return VAEShape(
            ch=ch, ch_mult=ch_mult, num_res_blocks=blocks,
            z_channels=sd["decoder.conv_in.weight"].shape[1],
            embed_dim=sd["post_quant_conv.weight"].shape[1],
            in_channels=sd["encoder.conv_in.weight"].shape[1],
            out_ch=sd["decoder.conv_out.weight"].shape[0],
        )
    except KeyError as e:
        raise CheckpointError(f"the VAE weights are incomplete ({e.args[0]} is missing)") from e

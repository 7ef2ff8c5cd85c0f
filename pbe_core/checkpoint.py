"""Reading a Paint-by-Example model from any layout users have, with errors that say what to do."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import layouts
from .encoder import ExemplarEncoder, ExemplarHead, ExemplarTower, build_encoder, build_head, build_tower, check_tower
from .errors import CheckpointError
from .tensor_files import read_tensors

log = logging.getLogger(__name__)

UNET_IN_CHANNELS = 9  # [noisy latent 4, masked-source latent 4, keep-mask 1]

DIFFUSERS_PARTS = ("unet", "vae", "image_encoder")
_DIFFUSERS_WEIGHT_NAMES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "image_encoder": ("model", "pytorch_model"),
}


@dataclass
class PaintByExampleWeights:
    """The parts of a Paint-by-Example model, read from a file or a diffusers folder.

    ``unet`` and ``vae`` keep the naming of their source (``weights_format``: "ldm" for the
    authors' single file, "diffusers" for a diffusers folder) for the host's own converters;
    ``encoder`` is in pbe_core's naming. The ``*_config`` dicts are the diffusers config.json
    files, when there are any.
    """

    path: str
    layout: str
    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor]
    unet_config: dict | None = None
    vae_config: dict | None = None
    encoder_config: dict | None = None

    @property
    def weights_format(self) -> str:
        return "diffusers" if self.layout == "diffusers" else "ldm"

    @property
    def unet_in_channels(self) -> int:
        key = "conv_in.weight" if self.weights_format == "diffusers" else "input_blocks.0.0.weight"
        return self.unet[key].shape[1]

    def build_encoder(self, dtype: torch.dtype | None = None) -> ExemplarEncoder:
        return self._named(build_encoder, dtype=dtype)

    def build_head(self, dtype: torch.dtype | None = None) -> ExemplarHead:
        """The encoder's head alone (what runs on CLIP hidden states from elsewhere)."""
        return self._named(build_head, dtype=dtype)

    def build_tower(self, dtype: torch.dtype | None = None) -> ExemplarTower:
        """The encoder's CLIP tower alone."""
        return self._named(build_tower, dtype=dtype)

    def check_tower(self) -> None:
        """Check the CLIP tower's weights without reading them (see :func:`encoder.check_tower`)."""
        self._named(check_tower)

    def _named(self, build, **kwargs):
        heads = (self.encoder_config or {}).get("num_attention_heads")
        try:
            return build(self.encoder, clip_heads=heads, **kwargs)
        except CheckpointError as e:
            raise CheckpointError(f"{self.path}: {e}") from e


def read_checkpoint(path: str | os.PathLike) -> PaintByExampleWeights:
    """Read the authors' single file (.ckpt/.safetensors, any float dtype) or a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        return _read_diffusers_folder(path)
    return _read_single_file(path)


def _read_single_file(path: Path) -> PaintByExampleWeights:
    sd = read_tensors(path, keep=layouts.is_single_file_weight)
    missing = layouts.missing_single_file_parts(sd)
    if missing:
        raise CheckpointError(_not_pbe_message(path, sd, missing))
    unet, vae, encoder = layouts.split_single_file(sd)
    weights = PaintByExampleWeights(str(path), "single_file", unet, vae, encoder)
    _check_unet(weights)
    return weights


def _not_pbe_message(path: Path, sd: dict, missing: list[str]) -> str:
    if not sd:
        return (f"{path.name} holds no Stable Diffusion or Paint-by-Example weights at all: "
                "it is not a Paint-by-Example model. Pick the Paint-by-Example checkpoint (model.ckpt from "
                "Fantasy-Studio/Paint-by-Example, or its .safetensors conversion).")
    hint = ""
    if any(k.startswith(layouts.TEXT_CLIP_PREFIX) for k in sd):
        hint = (" It has a text encoder, so it looks like a Stable Diffusion 1.x checkpoint: load that with "
                "ComfyUI's Load Checkpoint node instead.")
    return (f"{path.name} is not a Paint-by-Example model: it lacks the {', '.join(missing)}.{hint} "
            "Pick the Paint-by-Example checkpoint (model.ckpt from Fantasy-Studio/Paint-by-Example, or its "
            ".safetensors conversion).")


def _check_unet(weights: PaintByExampleWeights) -> None:
    channels = weights.unet_in_channels
    if channels != UNET_IN_CHANNELS:
        kind = "a plain text-to-image model" if channels == 4 else f"a {channels}-channel model"
        raise CheckpointError(
            f"{Path(weights.path).name} has a UNet with {channels} input channels ({kind}); a Paint-by-Example "
            f"UNet takes {UNET_IN_CHANNELS}. This is not a Paint-by-Example model."
        )


def _read_diffusers_folder(folder: Path) -> PaintByExampleWeights:
    index = _read_json(folder / "model_index.json")
    pipeline = (index or {}).get("_class_name")
    if pipeline and pipeline != "PaintByExamplePipeline":
        raise CheckpointError(
            f"the diffusers folder {folder.name} holds a {pipeline}, not a Paint-by-Example model "
            "(its model_index.json says so). Pick a PaintByExamplePipeline folder."
        )
    absent = [p for p in DIFFUSERS_PARTS if not (folder / p).is_dir()]
    if absent:
        hint = " It has a text_encoder/, so it looks like a Stable Diffusion folder." if (folder / "text_encoder").is_dir() else ""
        raise CheckpointError(
            f"the diffusers folder {folder} has no {', '.join(p + '/' for p in absent)} subfolder: it is incomplete "
            f"or not a Paint-by-Example model.{hint} A Paint-by-Example folder has unet/, vae/ and image_encoder/."
        )
    parts = {name: _read_diffusers_part(folder / name, _DIFFUSERS_WEIGHT_NAMES[name]) for name in DIFFUSERS_PARTS}
    encoder = layouts.encoder_from_diffusers(parts["image_encoder"])
    needed = ("mapper.resblocks.0.attn.c_qkv.weight", "final_ln.weight", "proj_out.weight", layouts.UNCOND_KEY)
    lacking = [k for k in needed if k not in encoder]
    if lacking or not any(k.startswith("transformer.") for k in encoder):
        raise CheckpointError(
            f"{folder / 'image_encoder'} is not a Paint-by-Example image encoder (it lacks the mapper, final layer "
            "norm, projection or unconditional vector, or the CLIP tower): it may be a plain CLIP model."
        )
    weights = PaintByExampleWeights(
        str(folder), "diffusers", parts["unet"], parts["vae"], encoder,
        unet_config=_read_json(folder / "unet" / "config.json"),
        vae_config=_read_json(folder / "vae" / "config.json"),
        encoder_config=_read_json(folder / "image_encoder" / "config.json"),
    )
    if "conv_in.weight" not in weights.unet:
        raise CheckpointError(f"{folder / 'unet'} holds no diffusers UNet weights (conv_in.weight is missing)")
    _check_unet(weights)
    return weights


def _read_diffusers_part(part: Path, stems) -> dict[str, torch.Tensor]:
    stems = (stems,) if isinstance(stems, str) else stems
    candidates = [f"{stem}{variant}{ext}" for stem in stems for ext in (".safetensors", ".bin") for variant in ("", ".fp16")]
    for name in candidates:
        index = part / f"{name}.index.json"
        if index.is_file():
            return _read_sharded(index)
        if (part / name).is_file():
            return read_tensors(part / name)
    raise CheckpointError(
        f"{part} has no weights file (looked for {', '.join(candidates)}): the diffusers folder is incomplete; "
        "copy that part again"
    )


def _read_sharded(index: Path) -> dict[str, torch.Tensor]:
    info = _read_json(index)
    if not info or "weight_map" not in info:
        raise CheckpointError(f"{index} is not a valid shard index; copy that part again")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(info["weight_map"].values())):
        out.update(read_tensors(index.parent / shard))
    return out


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); copy that file again") from e

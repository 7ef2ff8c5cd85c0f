"""Random-weight Paint-by-Example checkpoints in the real file layouts, for tests and demos.

The weights are random: such a model paints noise, never a real edit. Files carry a
``random_weights`` note in their metadata so nobody mistakes one for the real model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .. import layouts
from ..architecture import UNetShape, VAEShape
from . import lightning_checkpoint
from .tensor_shapes import EncoderSizes, encoder_tensor_shapes, unet_tensor_shapes, vae_tensor_shapes

LATENT_SCALE = 0.18215

SIZES = {
    # Same structure as the real model, narrow: a full sampling run takes seconds on a CPU. The UNet is
    # 64 wide so that ComfyUI can load a matching small ControlNet (it assumes 64-channel heads there).
    "tiny": (UNetShape(model_channels=64), VAEShape(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
             EncoderSizes(clip_width=128, clip_layers=9, clip_intermediate=512, mapper_layers=2)),
    # SD 1.x's real UNet width (ComfyUI's own loaders recognise an SD 1.x UNet by it) but one level
    # and one block deep: for comparisons with core nodes that load the UNet themselves.
    "small": (UNetShape(channel_mult=(1,), num_res_blocks=1, attention_levels=(0,)),
              VAEShape(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
              EncoderSizes(clip_width=128, clip_layers=9, clip_intermediate=512, mapper_layers=2)),
    # The real Paint-by-Example architecture (about 1.25 billion parameters).
    "full": (UNetShape(), VAEShape(), EncoderSizes()),
}


@dataclass
class RandomPaintByExample:
    unet: dict[str, torch.Tensor]
    vae: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor]
    unet_shape: UNetShape
    vae_shape: VAEShape
    encoder_sizes: EncoderSizes


def random_weights(size: str = "tiny", seed: int = 0, context_dim: int | None = None) -> RandomPaintByExample:
    """Deterministic random weights (fp32) of the given size, in LDM / pbe_core naming.
    ``context_dim`` overrides the 768-wide context (to make a deliberately mismatched model)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    unet_shape, vae_shape, enc_sizes = SIZES[size]
    if context_dim is not None:
        unet_shape = dataclasses.replace(unet_shape, context_dim=context_dim)
        enc_sizes = dataclasses.replace(enc_sizes, context_dim=context_dim)
    gen = torch.Generator().manual_seed(seed)
    return RandomPaintByExample(
        unet=_fill(unet_tensor_shapes(unet_shape), gen),
        vae=_fill(vae_tensor_shapes(vae_shape), gen),
        encoder=_fill(encoder_tensor_shapes(enc_sizes), gen),
        unet_shape=unet_shape, vae_shape=vae_shape, encoder_sizes=enc_sizes,
    )


def _fill(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Scaled so activations stay O(1) through the network: N(0, 1/fan_in) for weights,
    1 + small noise for normalisation scales, small noise for biases and embeddings."""
    out = {}
    for name in sorted(shapes):  # a fixed order, so a seed gives the same weights in every layout
        shape = shapes[name]
        noise = torch.randn(shape, generator=gen)
        if name == layouts.UNCOND_KEY:
            out[name] = noise  # the authors initialise it with torch.randn
        elif len(shape) == 1 and name.endswith(".weight"):
            out[name] = 1.0 + 0.02 * noise
        elif len(shape) == 1:
            out[name] = 0.02 * noise
        else:
            out[name] = noise / math.sqrt(math.prod(shape[1:]))
    return out


def write_single_file(path: str | Path, model: RandomPaintByExample, dtype: torch.dtype = torch.float32,
                      optimizer_state: bool = True) -> Path:
    """The authors' single file: ``.safetensors`` (flat) or ``.ckpt`` (a Lightning training checkpoint
    with everything the real model.ckpt holds besides the weights; see :mod:`.lightning_checkpoint`).
    ``optimizer_state=False`` leaves the AdamW state out of a ``.ckpt`` (about 7 GB at full size)."""
    path = Path(path)
    sd = {k: v.to(dtype).contiguous() for k, v in layouts.join_single_file(model.unet, model.vae, model.encoder).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(sd, str(path), metadata={"random_weights": "true", "format": "pt"})
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        lightning_checkpoint.save(path, sd, optimizer_state=optimizer_state)
    else:
        raise ValueError(f"write a single file as .safetensors or .ckpt, not {path.suffix!r}")
    return path


def diffusers_parts(model: RandomPaintByExample) -> dict[str, tuple[str, dict, dict[str, torch.Tensor]]]:
    """{"unet" | "vae" | "image_encoder": (class name, config, weights)} in diffusers' layout, the
    UNet and VAE converted with diffusers' own converters (as the published folder was). Needs
    the ``diffusers`` package (a test dependency)."""
    try:
        from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                         create_unet_diffusers_config_from_ldm,
                                                         create_vae_diffusers_config_from_ldm)
    except ImportError as e:
        raise ImportError("writing a diffusers folder needs the diffusers package: pip install diffusers") from e
    original = {"model": {"params": {
        "scale_factor": LATENT_SCALE,
        "unet_config": {"params": model.unet_shape.ldm_params()},
        "first_stage_config": {"params": {"embed_dim": model.vae_shape.embed_dim, "ddconfig": model.vae_shape.ddconfig()}},
    }}}
    full = layouts.join_single_file(model.unet, model.vae, {})
    unet_config = create_unet_diffusers_config_from_ldm(original, full)
    vae_config = create_vae_diffusers_config_from_ldm(original, full)
    return {
        "unet": ("UNet2DConditionModel", unet_config, convert_ldm_unet_checkpoint(full, unet_config)),
        "vae": ("AutoencoderKL", vae_config, convert_ldm_vae_checkpoint(full, vae_config)),
        "image_encoder": ("PaintByExampleImageEncoder", _image_encoder_config(model.encoder_sizes),
                          layouts.encoder_to_diffusers(model.encoder)),
    }


def write_diffusers_folder(
    folder: str | Path,
    model: RandomPaintByExample,
    dtype: torch.dtype = torch.float32,
    weights_format: str = "safetensors",
) -> Path:
    """A diffusers ``PaintByExamplePipeline`` folder (see :func:`diffusers_parts`)."""
    if weights_format not in ("safetensors", "bin"):
        raise ValueError("weights_format must be 'safetensors' or 'bin'")
    folder = Path(folder)
    for name, (cls, config, sd) in diffusers_parts(model).items():
        stem = "diffusion_pytorch_model" if name != "image_encoder" else (
            "model" if weights_format == "safetensors" else "pytorch_model")
        part = folder / name
        part.mkdir(parents=True, exist_ok=True)
        (part / "config.json").write_text(json.dumps({"_class_name": cls, **config}, indent=2))
        sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
        if weights_format == "safetensors":
            save_file(sd, str(part / f"{stem}.safetensors"), metadata={"random_weights": "true", "format": "pt"})
        else:
            torch.save(sd, str(part / f"{stem}.bin"))
    _write_pipeline_files(folder)
    return folder


def _image_encoder_config(s: EncoderSizes) -> dict:
    # diffusers derives the mapper depth as (num_hidden_layers + 1) // 5; only the sizes where that
    # matches the mapper can be loaded by diffusers itself, which the "tiny" and "full" sizes do.
    return {
        "hidden_size": s.clip_width, "intermediate_size": s.clip_intermediate,
        "num_hidden_layers": s.clip_layers, "num_attention_heads": max(1, s.clip_width // 64),
        "image_size": s.image_size, "patch_size": s.patch_size, "projection_dim": s.context_dim,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_channels": 3, "model_type": "clip_vision_model",
        "random_weights": True,
    }


def _write_pipeline_files(folder: Path) -> None:
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "PaintByExamplePipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "image_encoder": ["paint_by_example", "PaintByExampleImageEncoder"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }, indent=2))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    }, indent=2))
    (folder / "feature_extractor").mkdir(exist_ok=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True,
        "do_resize": True, "do_convert_rgb": True, "do_rescale": True, "rescale_factor": 1 / 255,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "size": {"shortest_edge": 224}, "image_processor_type": "CLIPImageProcessor",
    }, indent=2))


def make_random_checkpoint(
    path: str | Path,
    layout: str | None = None,
    size: str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random Paint-by-Example model at ``path``.

    ``layout``: "safetensors" or "ckpt" (the authors' single file), "diffusers" (a folder with
    safetensors weights) or "diffusers_bin" (a folder with .bin pickles). Inferred from ``path``'s
    extension when omitted (no extension means a diffusers folder).
    """
    path = Path(path)
    if layout is None:
        layout = path.suffix.lstrip(".") or "diffusers"
    model = random_weights(size, seed)
    if layout in ("safetensors", "ckpt"):
        if path.suffix != f".{layout}":
            path = path.with_suffix(f".{layout}")
        return write_single_file(path, model, dtype)
    if layout in ("diffusers", "diffusers_bin"):
        return write_diffusers_folder(path, model, dtype, "bin" if layout == "diffusers_bin" else "safetensors")
    raise ValueError(f"layout must be safetensors, ckpt, diffusers or diffusers_bin, got {layout!r}")

"""Turning pbe_core's weights into ComfyUI's own MODEL, VAE and a managed exemplar encoder.

ComfyUI's detection only recognises real model widths, so every size is taken from the tensors
(or the diffusers config) and ComfyUI's own classes, converters and dtype policy do the rest.
"""

from __future__ import annotations

import logging

import comfy.cli_args
import comfy.diffusers_convert
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch

from ..pbe_core import CheckpointError, PaintByExampleWeights, UNetShape, vae_shape_from_weights
from .encoder_handle import ExemplarEncoderHandle

log = logging.getLogger(__name__)

# Paint-by-Example's UNet input is [noisy latent, masked-source latent, keep-mask (1 - mask)];
# ComfyUI's SD inpaint default is [noisy latent, mask, masked-source latent].
PBE_CONCAT_KEYS = ("masked_image", "mask_inverted")


def build_model(weights: PaintByExampleWeights) -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL (SD 1.x family, eps, latent scale 0.18215) with Paint-by-Example's inputs."""
    unet = _ldm_unet(weights)
    unet_config = comfy.model_detection.detect_unet_config(unet, "")
    if unet_config is None:
        raise CheckpointError(f"{weights.path}: the UNet weights are incomplete (input_blocks.0.0.weight is missing)")
    model_config = comfy.supported_models.SD15(unet_config)
    parameters = comfy.utils.calculate_parameters(unet)
    load_device = mm.get_torch_device()
    unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=list(model_config.supported_inference_dtypes),
                               weight_dtype=comfy.utils.weight_dtype(unet))
    manual_cast = mm.unet_manual_cast(unet_dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model(unet, "", device=mm.unet_inital_load_device(parameters, unet_dtype))
    missing, unexpected = model.diffusion_model.load_state_dict(unet, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights.path}: the UNet weights do not fit an SD 1.x UNet "
            f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(unexpected[:3]) or 'none'})"
        )
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    patcher = patcher.clone()  # the concat order is set on a clone, as on any shared MODEL
    patcher.add_object_patch("concat_keys", PBE_CONCAT_KEYS)
    return patcher


def _ldm_unet(weights: PaintByExampleWeights) -> dict[str, torch.Tensor]:
    if weights.weights_format == "ldm":
        return dict(weights.unet)
    if weights.unet_config is not None:
        params = UNetShape.from_diffusers_config(weights.unet_config).ldm_params()
        unet_config = comfy.model_detection.convert_config(
            {**params, "transformer_depth_middle": params["transformer_depth"]})
    else:  # no config.json: ComfyUI can still recognise the real model's size
        model_config = comfy.model_detection.model_config_from_diffusers_unet(weights.unet)
        if model_config is None:
            raise CheckpointError(f"{weights.path}: unet/config.json is missing and the UNet's size is not a known one")
        unet_config = model_config.unet_config
    key_map = comfy.utils.unet_to_diffusers(unet_config)
    unet = {ldm: weights.unet[theirs] for theirs, ldm in key_map.items() if theirs in weights.unet}
    left = set(weights.unet) - set(key_map)
    if left:
        raise CheckpointError(f"{weights.path}: unet/ has weights this UNet layout does not use ({', '.join(sorted(left)[:3])})")
    return unet


def build_vae(weights: PaintByExampleWeights) -> comfy.sd.VAE:
    """ComfyUI's own VAE object, with its sizes read from the weights (any width)."""
    vae = weights.vae
    if weights.weights_format == "diffusers":
        vae = comfy.diffusers_convert.convert_vae_state_dict(vae)
    shape = vae_shape_from_weights(vae)
    config = {"params": {"embed_dim": shape.embed_dim, "ddconfig": shape.ddconfig()}}
    return comfy.sd.VAE(sd=vae, config=config)


ENCODER_DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_encoder(weights: PaintByExampleWeights, dtype: str = "auto") -> ExemplarEncoderHandle:
    """The exemplar encoder under ComfyUI's memory management (text-encoder devices)."""
    load_device = mm.text_encoder_device()
    chosen = ENCODER_DTYPES[dtype] if dtype in ENCODER_DTYPES else None
    if chosen is None:
        chosen = _auto_encoder_dtype(load_device)
    encoder = weights.build_encoder(dtype=chosen)
    patcher = comfy.model_patcher.ModelPatcher(encoder, load_device=load_device,
                                               offload_device=mm.text_encoder_offload_device())
    return ExemplarEncoderHandle(patcher, source=weights.path)


def _auto_encoder_dtype(device: torch.device) -> torch.dtype:
    """An explicit --fp32/--fp16/--bf16-text-enc wins; otherwise half precision only where the
    device runs it well (ComfyUI's fp16/bf16 tests). Unlike ComfyUI's text-encoder default this
    never picks fp16 on a CPU, where plain torch layers in half precision are slow and lossy."""
    args = comfy.cli_args.args
    if args.fp32_text_enc or args.fp16_text_enc or args.bf16_text_enc:
        return mm.text_encoder_dtype(device)
    if mm.should_use_fp16(device, prioritize_performance=False):
        return torch.float16
    if mm.should_use_bf16(device, prioritize_performance=False):
        return torch.bfloat16
    return torch.float32

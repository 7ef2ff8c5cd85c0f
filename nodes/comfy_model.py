"""Turning pbe_core's weights into ComfyUI's own MODEL, VAE and a managed exemplar encoder.

The UNet and VAE are built the way ComfyUI's own checkpoint loader builds them: its detection, its
dtype and manual-cast policy, its initial device, and, when it builds a model straight on the
accelerator, registration with its model management. Only what ComfyUI cannot detect (models of
other widths: small test models, pruned files) gets its sizes from the tensors, and it then follows
the same rules. On a CPU the UNet and VAE are handed the file's own tensors instead of copies.
"""

from __future__ import annotations

import dataclasses
import logging

import comfy.cli_args
import comfy.diffusers_convert
import comfy.ldm.modules.attention as comfy_attention
import comfy.model_detection
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import torch

from ..pbe_core import CheckpointError, PaintByExampleWeights, UNetShape, VAEShape, vae_shape_from_weights
from ..pbe_core.cpu_features import cpu_has_native_bf16
from ..pbe_core.file_pages import cast_releasing_pages, release_file_pages
from . import model_guard
from .encoder_handle import ExemplarEncoderHandle

log = logging.getLogger(__name__)

# Paint-by-Example's UNet input is [noisy latent, masked-source latent, keep-mask (1 - mask)];
# ComfyUI's SD inpaint default is [noisy latent, mask, masked-source latent].
PBE_CONCAT_KEYS = ("masked_image", "mask_inverted")

# weight_dtype -> (storage dtype or None for ComfyUI's policy, fp8 fast matmuls); the fp8 values and
# their meaning are core's Load Diffusion Model's.
WEIGHT_DTYPES = {
    "default": (None, False),
    "fp8_e4m3fn": (torch.float8_e4m3fn, False),
    "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True),
    "fp8_e5m2": (torch.float8_e5m2, False),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}

ENCODER_DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_choice(input_name: str, value, choices) -> None:
    """Values sent through the API skip the UI's lists: refuse anything else by name."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{input_name}: {value!r} is not a valid choice; use one of {', '.join(choices)}")


def build_model(weights: PaintByExampleWeights, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    """A ComfyUI MODEL (SD 1.x family, eps, latent scale 0.18215) with Paint-by-Example's inputs."""
    check_choice("weight_dtype", weight_dtype, WEIGHT_DTYPES)
    unet = _ldm_unet(weights)
    model_config = _model_config(weights.path, unet)
    parameters = comfy.utils.calculate_parameters(unet)
    load_device = mm.get_torch_device()
    unet_dtype, fp8_fast = WEIGHT_DTYPES[weight_dtype]
    supported = list(model_config.supported_inference_dtypes)
    if unet_dtype is None:  # ComfyUI's policy, as its checkpoint loader applies it
        unet_dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=supported,
                                   weight_dtype=comfy.utils.weight_dtype(unet))
    manual_cast = mm.unet_manual_cast(unet_dtype, load_device, supported)
    if weight_dtype == "bf16" and computes_bf16_natively(load_device):
        manual_cast = None  # ComfyUI never computes bf16 on a CPU; on AVX512-BF16/AMX it is about 2x fp32
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    if fp8_fast:
        model_config.optimizations["fp8"] = True  # used where the device has fp8 matmuls, as core does

    initial_device = mm.unet_inital_load_device(parameters, unet_dtype)
    if initial_device == torch.device("cpu"):
        model = _model_sharing_file_tensors(weights.path, model_config, unet, unet_dtype)
    else:  # built straight on the accelerator: the copy goes there, never a second one in RAM
        model = model_config.get_model(unet, "", device=initial_device)
        _check_fit(weights.path, *model.diffusion_model.load_state_dict(unet, strict=False))
        release_file_pages(unet.values())  # read once for the copy; the VAE and encoder keep the file mapped
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    patcher.add_object_patch("concat_keys", PBE_CONCAT_KEYS)  # a fresh patcher nobody else holds
    model_guard.install(patcher)  # checks and adjusts every sampling run, in every route
    if _cpu_fallback_attention(load_device):
        log.info("Paint-by-Example: PyTorch attention for this model on the CPU (faster than the sub-quadratic "
                 "fallback; start ComfyUI with --use-quad-cross-attention to keep that one)")
        patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = _pytorch_attention
    if initial_device != torch.device("cpu"):
        # As ComfyUI's own loader does: its model management must know the weights are already on the
        # device, or the first sampling reserves them a second time and nothing can offload them.
        mm.load_models_gpu([patcher], force_full_load=True)
    return patcher


def computes_bf16_natively(device: torch.device) -> bool:
    """Where bf16 runs at full speed: the GPUs ComfyUI trusts with bf16, and CPUs with AVX512-BF16,
    AMX or Arm's BF16 (ComfyUI's policy keeps every CPU in fp32, the right choice elsewhere)."""
    if mm.is_device_cpu(device):
        return cpu_has_native_bf16()
    return mm.should_use_bf16(device)


def _model_config(path: str, unet: dict[str, torch.Tensor]):
    """ComfyUI's own detection (the real SD 1.x widths); the sizes read from the tensors otherwise."""
    unet_config = comfy.model_detection.detect_unet_config(unet, "")
    if unet_config is None:
        raise CheckpointError(f"{path}: the UNet weights are incomplete (input_blocks.0.0.weight is missing)")
    if comfy.supported_models.SD15.matches(unet_config, unet):  # asked first: detection logs an error on no match
        detected = comfy.model_detection.model_config_from_unet(unet, "")
        if isinstance(detected, comfy.supported_models.SD15):
            return detected
    return comfy.supported_models.SD15(unet_config)


def _cpu_fallback_attention(device: torch.device) -> bool:
    """True where ComfyUI runs attention on a CPU with its sub-quadratic fallback only because no
    attention option was given. PyTorch's own kernel (ComfyUI's choice on GPUs) is about 1.45x
    faster there for this UNet at 512x512 and just as lean; an explicit --use-quad-cross-attention
    or --use-split-cross-attention is respected, and a later patch on the MODEL still wins."""
    args = comfy.cli_args.args
    explicit = args.use_split_cross_attention or args.use_quad_cross_attention
    chosen = comfy_attention.optimized_attention is comfy_attention.attention_sub_quad
    return device.type == "cpu" and chosen and not explicit


def _pytorch_attention(_chosen, *args, **kwargs):
    """ComfyUI's own PyTorch attention, in place of the function it chose (ComfyUI's override hook)."""
    return comfy_attention.attention_pytorch(*args, **kwargs)


def _model_sharing_file_tensors(path, model_config, unet: dict[str, torch.Tensor], dtype: torch.dtype):
    """The UNet built empty (meta device) and handed the checkpoint's own tensors, cast only where
    ComfyUI's dtype differs: the weights are never held twice while loading (memory-mapped files
    stay mapped and are read on demand)."""
    model = model_config.get_model(unet, "", device=torch.device("meta"))
    model.device = torch.device("cpu")
    _check_fit(path, *model.diffusion_model.load_state_dict(_in_dtype(unet, dtype), strict=False, assign=True))
    left_empty = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_empty:
        raise CheckpointError(f"{path}: the UNet weights do not fill an SD 1.x UNet (nothing for {', '.join(left_empty[:3])})")
    if mm.force_channels_last():  # --force-channels-last: ComfyUI converts at build time, before the weights arrive
        model.diffusion_model.to(memory_format=torch.channels_last)
    return model


def _check_fit(path, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the UNet weights do not fit an SD 1.x UNet "
            f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(unexpected[:3]) or 'none'})"
        )


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


def build_vae(weights: PaintByExampleWeights, weight_dtype: str = "default") -> comfy.sd.VAE:
    """ComfyUI's own VAE object: ComfyUI's detection for the real SD 1.x VAE, sizes read from the
    weights for any other width. An explicit bf16 runs it in bf16 where the device does so natively."""
    check_choice("weight_dtype", weight_dtype, WEIGHT_DTYPES)
    vae = weights.vae
    if weights.weights_format == "diffusers":
        vae = comfy.diffusers_convert.convert_vae_state_dict(vae)
    shape = vae_shape_from_weights(vae)
    config = None if shape == VAEShape() else {"params": {"embed_dim": shape.embed_dim, "ddconfig": shape.ddconfig()}}
    args = comfy.cli_args.args
    explicit = args.fp16_vae or args.bf16_vae or args.fp32_vae
    dtype = torch.bfloat16 if weight_dtype == "bf16" and not explicit and computes_bf16_natively(mm.vae_device()) else None
    built = comfy.sd.VAE(sd=vae, config=config, dtype=dtype)
    _hand_over_file_tensors(built.first_stage_model, vae, built.vae_dtype)
    return built


def _hand_over_file_tensors(module: torch.nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """comfy.sd.VAE copies the weights it is given; the module gets the file's own tensors back
    (cast only where ComfyUI's dtype differs), so a memory-mapped checkpoint's VAE is not held twice
    (about 320 MB for SD 1.x). ComfyUI still moves it between devices as usual."""
    own = module.state_dict()
    module.load_state_dict(_in_dtype({key: weights[key] for key in own if key in weights}, dtype),
                           strict=False, assign=True)


def _in_dtype(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating-point tensors in ComfyUI's dtype: the same tensors where it already matches; where
    they are cast, the file's pages of the originals are handed back as the copies are made."""
    return cast_releasing_pages(tensors, dtype)


def build_encoder(weights: PaintByExampleWeights, dtype: str = "auto",
                  weight_dtype: str = "default") -> ExemplarEncoderHandle:
    """The exemplar encoder under ComfyUI's memory management (text-encoder devices): its head now,
    its CLIP tower when a reference image first needs it (checked now, without reading it)."""
    check_choice("encoder_dtype", dtype, ENCODER_DTYPES)
    chosen = ENCODER_DTYPES[dtype] or _auto_encoder_dtype(mm.text_encoder_device(), weight_dtype)
    head = weights.build_head(dtype=chosen)
    weights.check_tower()
    encoder_only = dataclasses.replace(weights, unet={}, vae={})  # the closure keeps no UNet or VAE tensors
    return ExemplarEncoderHandle(head, lambda: encoder_only.build_tower(dtype=chosen), source=weights.path)


def _auto_encoder_dtype(device: torch.device, weight_dtype: str = "default") -> torch.dtype:
    """An explicit --fp32/--fp16/--bf16-text-enc wins; otherwise half precision only where the
    device runs it well (ComfyUI's fp16/bf16 tests). Unlike ComfyUI's text-encoder default this
    never picks fp16 on a CPU, where plain torch layers in half precision are slow and lossy; bf16
    on a CPU only where the artist asked for a bf16 model and the CPU computes bf16 natively (there
    a new reference took 0.97 s in fp32 against 0.33 s in bf16, and the fp32 weights kept 1.4 GB
    of the file resident, on a 2-core Xeon with AMX)."""
    args = comfy.cli_args.args
    if args.fp32_text_enc or args.fp16_text_enc or args.bf16_text_enc:
        return mm.text_encoder_dtype(device)
    if mm.should_use_fp16(device, prioritize_performance=False):
        return torch.float16
    if mm.should_use_bf16(device, prioritize_performance=False):
        return torch.bfloat16
    if weight_dtype == "bf16" and mm.is_device_cpu(device) and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32

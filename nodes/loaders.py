"""Loader nodes: the authors' single file, or a diffusers folder -> MODEL, VAE, PBE_ENCODER."""

from __future__ import annotations

from ..pbe_core import CheckpointError, read_checkpoint
from . import comfy_model, model_files

_OUTPUT_TOOLTIPS = (
    "The Paint-by-Example diffusion model, for the Paint-by-Example Sampler or core's KSampler (with the "
    "samplers, schedulers, ControlNets and model patches listed as tested in the README).",
    "The model's own VAE (turns images into the model's latent space and back).",
    "The part that reads the reference image, for Paint-by-Example Encode (and Score).",
)
_ENCODER_DTYPE = (list(comfy_model.ENCODER_DTYPES), {
    "default": "auto",
    "tooltip": "Precision of the exemplar encoder (the part that reads the reference image). auto: half precision "
               "on a GPU that handles it well; on a CPU, bf16 when weight_dtype is bf16 and the CPU computes bf16 "
               "natively (AVX512-BF16 or AMX), full precision (fp32) otherwise; ComfyUI's own precision launch "
               "options (such as --fp32-text-enc) win. fp32 gives the most exact result.",
})
_WEIGHT_DTYPE = (list(comfy_model.WEIGHT_DTYPES), {
    "default": "default",
    "tooltip": "Precision of the diffusion model (as in Load Diffusion Model). default: ComfyUI's choice for your "
               "device (fp16 on most GPUs, fp32 on a CPU). fp8_*: the model in under 0.9 GB for small GPUs, a little "
               "less exact (fp8_e4m3fn_fast also uses fp8 arithmetic where the GPU has it). fp16 / bf16: half the "
               "memory of fp32; on a CPU with AVX512-BF16 or AMX, bf16 also computes in "
               "bf16 (UNet and VAE), which is faster there; on other CPUs it only saves memory.",
})


def _load(path: str, input_name: str, weight_dtype: str, encoder_dtype: str):
    comfy_model.check_choice("weight_dtype", weight_dtype, comfy_model.WEIGHT_DTYPES)
    comfy_model.check_choice("encoder_dtype", encoder_dtype, comfy_model.ENCODER_DTYPES)
    try:
        weights = read_checkpoint(path)
        return (comfy_model.build_model(weights, weight_dtype), comfy_model.build_vae(weights, weight_dtype),
                comfy_model.build_encoder(weights, encoder_dtype, weight_dtype))
    except CheckpointError as e:
        raise ValueError(f"{input_name}: {e}") from e


class _Loader:
    CATEGORY = "loaders/paint by example"
    RETURN_TYPES = ("MODEL", "VAE", "PBE_ENCODER")
    RETURN_NAMES = ("model", "vae", "encoder")
    OUTPUT_TOOLTIPS = _OUTPUT_TOOLTIPS
    FUNCTION = "load"


class PaintByExampleLoader(_Loader):
    DESCRIPTION = ("Loads a Paint-by-Example checkpoint (the authors' model.ckpt or a .safetensors conversion) "
                   "from ComfyUI's checkpoints folder. Use this instead of Load Checkpoint, which does not know "
                   "Paint-by-Example. Nothing is downloaded.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (model_files.checkpoint_names(), {
                    "tooltip": "The Paint-by-Example checkpoint, from ComfyUI/models/checkpoints. Pickled .ckpt files "
                               "are read in weights-only mode; .safetensors is preferred."}),
            },
            "optional": {"encoder_dtype": _ENCODER_DTYPE, "weight_dtype": _WEIGHT_DTYPE},
        }

    def load(self, ckpt_name, encoder_dtype="auto", weight_dtype="default"):
        return _load(model_files.checkpoint_path(ckpt_name), "ckpt_name", weight_dtype, encoder_dtype)


class PaintByExampleDiffusersLoader(_Loader):
    DESCRIPTION = ("Loads a Paint-by-Example model in diffusers' folder layout (unet/, vae/, image_encoder/) from "
                   "ComfyUI's diffusers folder. Nothing is downloaded.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_path": (model_files.diffusers_folder_names(), {
                    "tooltip": "A Paint-by-Example diffusers folder (with model_index.json) inside "
                               "ComfyUI/models/diffusers."}),
            },
            "optional": {"encoder_dtype": _ENCODER_DTYPE, "weight_dtype": _WEIGHT_DTYPE},
        }

    def load(self, model_path, encoder_dtype="auto", weight_dtype="default"):
        return _load(model_files.diffusers_folder_path(model_path), "model_path", weight_dtype, encoder_dtype)

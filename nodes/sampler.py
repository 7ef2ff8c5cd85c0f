"""Conditioned inpaint sampling with classifier-free guidance, on ComfyUI's own machinery."""

from __future__ import annotations

import comfy.samplers
import torch
import nodes as comfy_nodes

from ..pbe_core.geometry import composite, pad_to_multiple
from . import inputs
from .comfy_model import PBE_CONCAT_KEYS
from .last_encode import LastEncode


class PaintByExampleSampler:
    DESCRIPTION = ("Paints the exemplar into the masked region of the source. It encodes the masked source with "
                   "the VAE (as core's InpaintModelConditioning does), samples with ComfyUI's KSampler (cfg uses "
                   "the learned unconditional vector as negative), decodes, and pastes the result back so that "
                   "pixels outside the mask are exactly the source's. A re-run with only a new seed (or new "
                   "sampling settings) reuses the last encode.")
    CATEGORY = "sampling/paint by example"
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = (
        "The source with the edit composited in through the mask: unmasked pixels are unchanged.",
        "The sampled latent (with its noise mask), e.g. for a second pass.",
    )
    FUNCTION = "sample"

    def __init__(self):
        self.last_encode = LastEncode()  # re-rolling only the seed skips the VAE encode, as in core's graph

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL from a Paint-by-Example loader (LoRAs or patches on it are fine)."}),
                "vae": ("VAE", {"tooltip": "The VAE from the same loader."}),
                "positive": ("CONDITIONING", {"tooltip": "The exemplar conditioning from Paint-by-Example Encode."}),
                "negative": ("CONDITIONING", {"tooltip": "The unconditional conditioning from Paint-by-Example Encode."}),
                "source": ("IMAGE", {"tooltip": "The image to edit. Any size; sides that are not multiples of 8 are "
                                                "padded internally and cropped back."}),
                "mask": ("MASK", {"tooltip": "White (1) where the exemplar goes. One mask for all sources, one per "
                                             "source, or several masks for one source."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "The noise seed."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 10000, "tooltip": "Denoising steps (the authors used 50)."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance scale: how strongly the exemplar is followed (the authors used "
                                             "5; 1 skips the unconditional pass)."}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "ddim", "tooltip": "The sampling algorithm."}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform",
                                                                   "tooltip": "The noise schedule."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 repaints the masked region from scratch; less keeps some of the "
                                                 "source's structure there."}),
            },
            "optional": {
                "noise_mask": ("BOOLEAN", {"default": True,
                                           "tooltip": "Keep the unmasked latent fixed while sampling (as core's "
                                                      "InpaintModelConditioning noise_mask)."}),
            },
        }

    def sample(self, model, vae, positive, negative, source, mask, seed, steps, cfg, sampler_name, scheduler,
               denoise, noise_mask=True):
        _check_model(model)
        encode_inputs = (source, mask, vae, positive, negative, noise_mask)  # as given, before any normalising
        inputs.check_range("steps", steps, 1, 10000)
        inputs.check_range("cfg", cfg, 0.0, 100.0)
        inputs.check_range("denoise", denoise, 0.0, 1.0)
        inputs.check_range("seed", seed, 0, 0xFFFFFFFFFFFFFFFF)
        source = inputs.source_images(source)
        if not torch.isfinite(source).all():
            raise ValueError("source: the image contains NaN or infinite values; check the node that made it")
        source, mask = inputs.edit_masks(mask, source)
        context_dim = model.model.model_config.unet_config.get("context_dim")
        inputs.conditioning_batch(positive, "positive", source.shape[0], context_dim)
        inputs.conditioning_batch(negative, "negative", source.shape[0], context_dim)

        height, width = source.shape[1:3]
        positive, negative, latent = self.last_encode.get(
            encode_inputs, lambda: comfy_nodes.InpaintModelConditioning().encode(
                positive, negative, pad_to_multiple(source), vae, pad_to_multiple(mask), noise_mask))
        (latent,) = comfy_nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                                latent, denoise=denoise)
        decoded = vae.decode(latent["samples"])[:, :height, :width, :3]
        return composite(source, decoded.to(source.device), mask), latent


def _check_model(model) -> None:
    config = getattr(getattr(model, "model", None), "model_config", None)
    in_channels = config.unet_config.get("in_channels") if config is not None else None
    if in_channels != 9:
        raise ValueError(
            f"model: this MODEL's UNet takes {in_channels} input channels, not Paint-by-Example's 9. Load the model "
            "with the Paint-by-Example Loader."
        )
    if tuple(model.get_model_object("concat_keys")) != PBE_CONCAT_KEYS:
        raise ValueError(
            "model: this 9-channel MODEL is wired as an SD inpainting model (it was probably loaded with Load "
            "Checkpoint). Load Paint-by-Example with the Paint-by-Example Loader."
        )

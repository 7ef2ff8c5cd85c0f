"""Paint-by-Example's inpaint conditioning and start latent, for any sampler (core's KSampler too)."""

from __future__ import annotations

import comfy.sampler_helpers
import node_helpers
import torch

from ..pbe_core.geometry import pad_to_multiple
from ..pbe_core.masks import binarize
from . import conditioning_roles, inputs

STARTS = ("noise", "source")


def inpaint_conditioning(positive, negative, vae, source: torch.Tensor, mask: torch.Tensor, noise_mask: bool = True,
                         start: str = "noise") -> tuple[list, list, dict]:
    """(positive, negative, latent) for checked sources (B, H, W, 3) and masks (B, H, W) of one
    batch size. Sides are padded to multiples of 8 (edges repeated); the repainted region is
    where the mask is at or above 0.5.

    The latent is what sampling starts from. ComfyUI starts from ``noise * sigma + latent``, so
    with ``start`` "noise" the latent is 0 wherever a cell is repainted in full (all of it without
    a noise mask: the authors' pure-noise start); cells on the mask's edge, which the sampler holds
    partly at the latent, keep the source (a 0 there would darken the edge). With "source" it is
    the source's latent, re-noised by the sampler (for denoise below 1)."""
    source = pad_to_multiple(source)
    repainted = binarize(pad_to_multiple(mask))[:, None]  # (B, 1, H, W), the model's and the sampler's mask
    blanked = (source - 0.5) * (1 - repainted.movedim(1, -1)) + 0.5  # mid-grey (0 in -1..1) where repainted
    masked_latent = vae.encode(blanked)
    positive, negative = (node_helpers.conditioning_set_values(
        c, {"concat_latent_image": masked_latent, "concat_mask": repainted}) for c in (positive, negative))
    if start == "noise" and not noise_mask:
        samples = torch.zeros_like(masked_latent)  # nothing of the source is kept: no need to encode it
    else:
        samples = vae.encode(source)
        if start == "noise":  # the sampler's own denoise mask says which cells it repaints in full
            full = comfy.sampler_helpers.prepare_mask(repainted, samples.shape, samples.device) == 1
            samples = torch.where(full, torch.zeros_like(samples), samples)
    latent = {"samples": samples}
    if noise_mask:
        latent["noise_mask"] = repainted
    return positive, negative, latent


class PaintByExampleInpaintConditioning:
    DESCRIPTION = ("Prepares a Paint-by-Example edit for any sampler, core's KSampler included: blanks the masked "
                   "region of the source to grey, encodes it with the VAE into both conditionings (the model's extra "
                   "input channels), and makes the latent sampling starts from. With start 'noise' the masked region "
                   "starts from pure noise, as in the paper, instead of from the object being replaced. Then "
                   "KSampler (denoise 1) and Paint-by-Example Paste Back.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    OUTPUT_TOOLTIPS = (
        "The exemplar conditioning with the masked source attached, for KSampler's positive.",
        "The unconditional conditioning with the masked source attached, for KSampler's negative.",
        "What sampling starts from, for KSampler's latent_image (sides padded to multiples of 8; Paste Back "
        "crops them off).",
    )
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "The positive of Paint-by-Example Encode (or Regions, Blend, "
                                                         "Strength, a ControlNet after them)."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative of Paint-by-Example Encode (the learned "
                                                         "unconditional vector)."}),
                "vae": ("VAE", {"tooltip": "The VAE from the Paint-by-Example loader."}),
                "source": ("IMAGE", {"tooltip": "The image to edit."}),
                "mask": ("MASK", {"tooltip": "White where the exemplar goes: values at or above 0.5 are repainted. "
                                             "One mask for all sources, one per source, or several for one source."}),
                "noise_mask": ("BOOLEAN", {"default": True,
                                           "tooltip": "On: the sampler keeps the unmasked part of the image as it "
                                                      "is. Off: the sampler repaints the whole latent (the paper's "
                                                      "way; Paste Back still keeps the unmasked pixels)."}),
                "start": (list(STARTS), {"default": "noise",
                                         "tooltip": "What the masked region starts from. noise: pure noise, as in the "
                                                    "paper (use with denoise 1). source: the source itself, re-noised "
                                                    "by the sampler (use with denoise below 1 to keep some of its "
                                                    "shapes)."}),
            },
        }

    def prepare(self, positive, negative, vae, source, mask, noise_mask=True, start="noise"):
        source, mask = check_inputs(positive, negative, source, mask)
        if start not in STARTS:
            raise ValueError(f"start: {start!r} is not one of {', '.join(STARTS)}")
        return inpaint_conditioning(positive, negative, vae, source, mask, noise_mask, start)


def check_inputs(positive, negative, source, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The wiring and image checks every edit needs; returns the sources and masks, one each."""
    conditioning_roles.check(positive, negative)
    source = inputs.source_images(source)
    if not torch.isfinite(source).all():
        raise ValueError("source: the image contains NaN or infinite values; check the node that made it")
    return inputs.edit_masks(mask, source)

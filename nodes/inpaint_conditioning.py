"""Paint-by-Example's inpaint conditioning and start latent, for any sampler (core's KSampler too)."""

from __future__ import annotations

import comfy.sampler_helpers
import comfy.utils
import node_helpers
import torch

from ..pbe_core.geometry import pad_to_multiple
from ..pbe_core.masks import binarize
from . import conditioning_roles, inputs
from .source_latent import SOURCE_LATENT_TOOLTIP, checked_samples, distinct_sources, encode_each, needs_source_latent

STARTS = ("noise", "source")

POSITIVE_TOOLTIP = "The positive of Paint-by-Example Encode (or Regions, Blend, Strength, a ControlNet after them)."
NEGATIVE_TOOLTIP = "The negative of Paint-by-Example Encode (the model's 'no reference' input)."
_NOISE_MASK_TOOLTIP = ("On: the sampler keeps the unmasked part of the image as it is, so the edit's edge meets the "
                      "source itself (costs one more VAE encode when the source changes{}). Off: the sampler "
                      "repaints the whole latent, as in the paper; Paste Back still keeps the unmasked pixels "
                      "exactly, but the edit's edge meets the model's own repainting of the surroundings.")
# What a new mask costs differs by node: the Sampler and a wired source_latent keep the source's own encoding.
NOISE_MASK_TOOLTIP_SAMPLER = _NOISE_MASK_TOOLTIP.format("")
NOISE_MASK_TOOLTIP_OWN = _NOISE_MASK_TOOLTIP.format(" or the mask changes")
NOISE_MASK_TOOLTIP_SPLIT = _NOISE_MASK_TOOLTIP.format(
    ", and when the mask changes unless source_latent is wired")
ATTACHED_TOOLTIPS = (
    "The exemplar conditioning with the masked source attached, for KSampler's positive.",
    "The 'no reference' input with the masked source attached, for KSampler's negative.",
)
START_TOOLTIP = ("What the masked region starts from. noise: pure noise, as in the paper (use with denoise 1). "
                 "source: the source itself, re-noised by the sampler (use with denoise below 1 to keep some of its "
                 "shapes).")


def inpaint_conditioning(positive, negative, vae, source: torch.Tensor, mask: torch.Tensor, noise_mask: bool = True,
                         start: str = "noise") -> tuple[list, list, dict]:
    """(positive, negative, latent) for checked sources (B, H, W, 3) and masks (B, H, W) of one
    batch size: :func:`source_latents`, then :func:`attach_source`."""
    masked, latent = source_latents(vae, source, mask, noise_mask, start)
    positive, negative = attach_source(positive, negative, masked)
    return positive, negative, latent


def source_latents(vae, source: torch.Tensor, mask: torch.Tensor, noise_mask: bool = True,
                   start: str = "noise", whole: torch.Tensor | None = None) -> tuple[dict, dict]:
    """(masked source, start latent) for checked sources (B, H, W, 3) and masks (B, H, W) of one
    batch size. Sides are padded to multiples of 8 (edges repeated); the repainted region is
    where the mask is at or above 0.5.

    The masked source is the VAE latent of the source blanked to mid-grey where repainted, with
    the repainted mask as its noise mask: what the model's extra input channels take.

    The start latent is what sampling starts from. ComfyUI starts from ``noise * sigma + latent``,
    so with ``start`` "noise" the latent is 0 wherever a cell is repainted in full (all of it
    without a noise mask: the authors' pure-noise start); cells on the mask's edge, which the
    sampler holds partly at the latent, keep the source (a 0 there would darken the edge). With
    "source" it is the source's latent, re-noised by the sampler (for denoise below 1).

    ``whole`` is that latent of the sources themselves (a Source Latent's samples, one per source
    before the mask's batch rule); without it they are encoded here, one source drawn on by
    several masks once."""
    repainted = binarize(pad_to_multiple(mask))[:, None]  # (B, 1, H, W), the model's and the sampler's mask
    blanked = (pad_to_multiple(source) - 0.5) * (1 - repainted.movedim(1, -1)) + 0.5  # mid-grey (0 in -1..1)
    masked_latent = vae.encode(blanked)
    if not needs_source_latent(noise_mask, start):
        samples = torch.zeros_like(masked_latent)  # nothing of the source is kept: no second encode
    else:
        if whole is None:
            whole = encode_each(vae, distinct_sources(source))
        elif whole.shape[1:] != masked_latent.shape[1:]:
            raise ValueError(f"source_latent: it holds latents of {tuple(whole.shape[1:])}, but this VAE makes "
                             f"{tuple(masked_latent.shape[1:])}. Give Paint-by-Example Source Latent the same VAE "
                             "as this node")
        samples = comfy.utils.repeat_to_batch_size(whole, masked_latent.shape[0])  # one source, several masks
        if start == "noise":  # the sampler's own denoise mask says which cells it repaints in full
            full = comfy.sampler_helpers.prepare_mask(repainted, samples.shape, samples.device) == 1
            samples = torch.where(full, torch.zeros_like(samples), samples)
    latent = {"samples": samples}
    if noise_mask:
        latent["noise_mask"] = repainted
    return {"samples": masked_latent, "noise_mask": repainted}, latent


def attach_source(positive, negative, masked: dict) -> tuple[list, list]:
    """Both conditionings with the masked source attached (ComfyUI's ``concat_latent_image`` and
    ``concat_mask``, which the loader's MODEL turns into its extra input channels). No model runs."""
    values = {"concat_latent_image": masked["samples"], "concat_mask": masked["noise_mask"]}
    return tuple(node_helpers.conditioning_set_values(c, values) for c in (positive, negative))


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
        *ATTACHED_TOOLTIPS,
        "What sampling starts from, for KSampler's latent_image (sides padded to multiples of 8; Paste Back "
        "crops them off).",
    )
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": POSITIVE_TOOLTIP}),
                "negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
                "vae": ("VAE", {"tooltip": "The VAE from the Paint-by-Example loader."}),
                "source": ("IMAGE", {"tooltip": "The image to edit."}),
                "mask": ("MASK", {"tooltip": "White where the exemplar goes: values at or above 0.5 are repainted. "
                                             "One mask for all sources, one per source, or several for one source."}),
                "noise_mask": ("BOOLEAN", {"default": True, "tooltip": NOISE_MASK_TOOLTIP_OWN}),
                "start": (list(STARTS), {"default": "noise", "tooltip": START_TOOLTIP}),
            },
        }

    def prepare(self, positive, negative, vae, source, mask, noise_mask=True, start="noise"):
        source, mask = check_inputs(positive, negative, source, mask)
        check_start(start)
        return inpaint_conditioning(positive, negative, vae, source, mask, noise_mask, start)


class PaintByExampleEncodeSource:
    DESCRIPTION = ("The source half of Inpaint Conditioning: blanks the masked region of the source to grey and "
                   "encodes it with the VAE (for Attach Source), and makes the latent sampling starts from. It does "
                   "not take the exemplar, so a new reference re-runs only Encode and Attach Source: ComfyUI keeps "
                   "this node's result while the source, mask and VAE stay the same. With Paint-by-Example Source "
                   "Latent wired into source_latent, a new mask re-encodes only the masked source. Then Attach "
                   "Source, KSampler (denoise 1) and Paint-by-Example Paste Back.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("masked_source", "latent")
    OUTPUT_TOOLTIPS = (
        "The source with the masked region blanked, encoded, with the mask: for Attach Source.",
        "What sampling starts from, for KSampler's latent_image (sides padded to multiples of 8; Paste Back "
        "crops them off).",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE from the Paint-by-Example loader."}),
                "source": ("IMAGE", {"tooltip": "The image to edit."}),
                "mask": ("MASK", {"tooltip": "White where the exemplar goes: values at or above 0.5 are repainted. "
                                             "One mask for all sources, one per source, or several for one source."}),
                "noise_mask": ("BOOLEAN", {"default": True, "tooltip": NOISE_MASK_TOOLTIP_SPLIT}),
                "start": (list(STARTS), {"default": "noise", "tooltip": START_TOOLTIP}),
            },
            "optional": {
                "source_latent": ("LATENT", {"lazy": True, "tooltip": SOURCE_LATENT_TOOLTIP}),
            },
        }

    def check_lazy_status(self, noise_mask=True, start="noise", **given):
        """ComfyUI runs the wired Source Latent only when the start latent keeps some of the source."""
        unevaluated = "source_latent" in given and given["source_latent"] is None
        return ["source_latent"] if unevaluated and needs_source_latent(noise_mask, start) else []

    def encode(self, vae, source, mask, noise_mask=True, start="noise", source_latent=None):
        checked = inputs.checked_source(source)
        source, mask = inputs.edit_masks(mask, checked)
        check_start(start)
        whole = None
        if source_latent is not None and needs_source_latent(noise_mask, start):
            whole = checked_samples(source_latent, checked)
        return source_latents(vae, source, mask, noise_mask, start, whole)


class PaintByExampleAttachSource:
    DESCRIPTION = ("Attaches the encoded source (Encode Source's masked_source) to the exemplar's positive and "
                   "negative conditioning: the model's extra input channels. Nothing is encoded here, so changing "
                   "the reference costs only Paint-by-Example Encode and this node. Then KSampler.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ATTACHED_TOOLTIPS
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": POSITIVE_TOOLTIP}),
                "negative": ("CONDITIONING", {"tooltip": NEGATIVE_TOOLTIP}),
                "masked_source": ("LATENT", {"tooltip": "The masked_source output of Paint-by-Example Encode "
                                                        "Source."}),
            },
        }

    def attach(self, positive, negative, masked_source):
        conditioning_roles.check(positive, negative)
        check_masked_source(masked_source)
        return attach_source(positive, negative, masked_source)


def check_inputs(positive, negative, source, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """The wiring and image checks every edit needs; returns the sources and masks, one each."""
    conditioning_roles.check(positive, negative)
    return check_images(source, mask)


def check_images(source, mask) -> tuple[torch.Tensor, torch.Tensor]:
    return inputs.edit_masks(mask, inputs.checked_source(source))


def check_start(start) -> None:
    if start not in STARTS:
        raise ValueError(f"start: {start!r} is not one of {', '.join(STARTS)}")


def check_masked_source(masked) -> None:
    samples = masked.get("samples") if isinstance(masked, dict) else None
    mask = masked.get("noise_mask") if isinstance(masked, dict) else None
    if not isinstance(samples, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise ValueError("masked_source: expected the masked_source output of Paint-by-Example Encode Source (a "
                         "LATENT that carries its mask); connect that output here")
    if samples.ndim != 4 or mask.ndim != 4 or tuple(mask.shape[-2:]) != (samples.shape[-2] * 8, samples.shape[-1] * 8):
        raise ValueError("masked_source: this LATENT's mask does not match its size, so it did not come from "
                         "Paint-by-Example Encode Source; connect that node's masked_source output here")

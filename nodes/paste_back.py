"""Decode a Paint-by-Example edit and paste it back onto the source, exactly: with a linear feather or
a multi-band blend over the band, after an optional colour match (pbe_core.blend)."""

from __future__ import annotations

import torch

from ..pbe_core import blend as blending
from ..pbe_core.geometry import composite
from ..pbe_core.masks import paste_alpha
from . import inputs

BLEND_MODES = blending.BLENDS
COLOR_MATCHES = blending.COLOUR_MATCHES

# Tooltips shared with the Sampler, which passes these inputs on to Paste Back.
BLEND_TOOLTIP = ("Width, in pixels, of a band outside the mask over which the edit fades into the source (0: no "
                 "band, the edit ends at the mask's edge). blend_mode works inside this band, so it needs a band "
                 "above 0.")
BLEND_MODE_TOOLTIP = (
    "How the edit fades into the source across the blend band. linear: a plain cross-fade; in the middle of the "
    "band the two images show through each other, which can look like a washed-out halo on textured surfaces. "
    "multiband: broad colour and shading fade over the whole band, fine detail (grain, texture) switches from the "
    "edit to the source over a few pixels, so texture stays crisp. Needs blend above 0 (with 0 both give the "
    "same hard edge). It does not remove a colour difference by itself: that is color_match.")
COLOR_MATCH_TOOLTIP = (
    "Removes the faint colour cast the VAE gives the edit, which shows as a seam or a tinted ring around the "
    "painted region. Just outside the mask the edit should match the source exactly, so the difference measured "
    "there is the cast, and the whole edit is moved back by it. off: the edit as decoded. mean: one correction "
    "for the whole edit (an even cast). local: a correction that follows the edge (a cast that changes around "
    "it). Works with or without a blend band (it looks at a ring just outside the mask). Best with blend_mode "
    "multiband and a band. Leave it off when noise_mask is off (in the Sampler or Inpaint Conditioning): the "
    "surroundings are then repainted too and differ from the source by more than a cast.")


def check_blend_options(blend, blend_mode, color_match) -> None:
    """The API skips the UI's lists and limits: check them with errors that name the input."""
    inputs.check_range("blend", blend, 0, 512)
    if blend_mode not in BLEND_MODES:
        raise ValueError(f"blend_mode: {blend_mode!r} is not one of {', '.join(BLEND_MODES)}")
    if color_match not in COLOR_MATCHES:
        raise ValueError(f"color_match: {color_match!r} is not one of {', '.join(COLOR_MATCHES)}")


def paste_back(vae, latent: dict, source: torch.Tensor, mask: torch.Tensor, blend: int = 0,
               blend_mode: str = "linear", color_match: str = "off") -> torch.Tensor:
    """Decode ``latent`` and composite it over checked sources (B, H, W, 3) with the paste-back
    alpha of their masks (B, H, W), blended over the band with ``blend_mode`` after ``color_match``:
    pixels where that alpha is 0 are the source's, bit for bit."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError("latent: expected a LATENT (the sampler's output)")
    height, width = source.shape[1:3]
    cells = latent["samples"].shape[-2:]
    if cells != (-(-height // 8), -(-width // 8)):
        raise ValueError(
            f"latent: it is {cells[1] * 8}x{cells[0] * 8} pixels but the source is {width}x{height}. Connect the "
            "latent sampled from this source (from Paint-by-Example Inpaint Conditioning)."
        )
    edits, sources = latent["samples"].shape[0], source.shape[0]
    if edits != sources:
        if sources != 1:
            raise ValueError(f"latent: it holds {edits} edits for {sources} source images; give one edit per source")
        source, mask = source.expand(edits, -1, -1, -1), mask.expand(edits, -1, -1)
    decoded = vae.decode(latent["samples"])[:, :height, :width, :3].to(source.device)
    alpha = paste_alpha(mask, blend)
    if blend_mode == "linear" and color_match == "off":
        return composite(source, decoded, alpha)  # the plain feather, as it always was
    # the colour match needs the edit as decoded, before anything is pasted: this is the one place it can be measured
    return blending.paste(source, decoded.to(source.dtype), alpha, blend, blend_mode, color_match)


class PaintByExamplePasteBack:
    DESCRIPTION = ("Decodes a Paint-by-Example edit (KSampler's latent after Paint-by-Example Inpaint Conditioning) "
                   "and pastes it onto the source: the region painted at or above 0.5 takes the edit, softer mask "
                   "values blend it in by their value, and blend feathers the edge outward (blend_mode multiband "
                   "keeps texture crisp across that band; color_match removes the VAE's colour cast, the usual "
                   "cause of a visible seam). Every other pixel is the source's, bit for bit, and padding added for "
                   "the 8-pixel grid is cropped off.")
    CATEGORY = "image/paint by example"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The source with the edit in place, at the source's size.",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE from the Paint-by-Example loader."}),
                "latent": ("LATENT", {"tooltip": "The sampled latent (KSampler's output)."}),
                "source": ("IMAGE", {"tooltip": "The source the edit was made from."}),
                "mask": ("MASK", {"tooltip": "The mask the edit was made with."}),
                "blend": ("INT", {"default": 0, "min": 0, "max": 512, "step": 1, "tooltip": BLEND_TOOLTIP}),
            },
            "optional": {
                "blend_mode": (list(BLEND_MODES), {"default": "linear", "tooltip": BLEND_MODE_TOOLTIP}),
                "color_match": (list(COLOR_MATCHES), {"default": "off", "tooltip": COLOR_MATCH_TOOLTIP}),
            },
        }

    def paste(self, vae, latent, source, mask, blend=0, blend_mode="linear", color_match="off"):
        check_blend_options(blend, blend_mode, color_match)
        source = inputs.source_images(source)
        source, mask = inputs.edit_masks(mask, source)
        return (paste_back(vae, latent, source, mask, blend, blend_mode, color_match),)

"""Decode a Paint-by-Example edit and paste it back onto the source, exactly."""

from __future__ import annotations

import torch

from ..pbe_core.geometry import composite
from ..pbe_core.masks import paste_alpha
from . import inputs


def paste_back(vae, latent: dict, source: torch.Tensor, mask: torch.Tensor, blend: int = 0) -> torch.Tensor:
    """Decode ``latent`` and composite it over checked sources (B, H, W, 3) with the paste-back
    alpha of their masks (B, H, W): pixels where that alpha is 0 are the source's, bit for bit."""
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
    decoded = vae.decode(latent["samples"])[:, :height, :width, :3]
    return composite(source, decoded.to(source.device), paste_alpha(mask, blend))


class PaintByExamplePasteBack:
    DESCRIPTION = ("Decodes a Paint-by-Example edit (KSampler's latent after Paint-by-Example Inpaint Conditioning) "
                   "and pastes it onto the source: the region painted at or above 0.5 takes the edit, softer mask "
                   "values blend it in by their value, and blend feathers the edge outward. Every other pixel is the "
                   "source's, bit for bit, and padding added for the 8-pixel grid is cropped off.")
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
                "blend": ("INT", {"default": 0, "min": 0, "max": 512, "step": 1,
                                  "tooltip": "Width, in pixels, of a band outside the mask over which the edit fades "
                                             "into the source (0: no band)."}),
            },
        }

    def paste(self, vae, latent, source, mask, blend=0):
        inputs.check_range("blend", blend, 0, 512)
        source = inputs.source_images(source)
        source, mask = inputs.edit_masks(mask, source)
        return (paste_back(vae, latent, source, mask, blend),)

"""The source's own latent, encoded once per source: what the noise mask holds outside the mask.

It depends on the source and the VAE, not on the mask, so as its own node ComfyUI keeps it while
the artist redraws the mask: a new mask then costs one VAE encode (the masked source), not two.
"""

from __future__ import annotations

import torch

from ..pbe_core.geometry import pad_to_multiple
from . import inputs

# The LATENT key that says which source a source latent was made from (see fingerprint).
SOURCE_KEY = "pbe_source"

SOURCE_LATENT_TOOLTIP = ("Optional: Paint-by-Example Source Latent of the same source. ComfyUI then keeps the "
                         "source's own encoding while you redraw the mask, so a new mask costs one VAE encode "
                         "instead of two. Used only when noise_mask is on or start is source.")


def needs_source_latent(noise_mask: bool, start: str) -> bool:
    """Whether the start latent keeps any of the source: with the noise mask, or from a re-noised source."""
    return bool(noise_mask) or start == "source"


def fingerprint(source: torch.Tensor) -> torch.Tensor:
    """(B, H + W) float64: each image's row sums and column sums, on the CPU. Enough to tell
    another image from this one (a wiring mistake), not a cryptographic hash; small to keep."""
    rows, columns = source.sum(dim=(2, 3), dtype=torch.float64), source.sum(dim=(1, 3), dtype=torch.float64)
    return torch.cat([rows, columns], dim=1).cpu()


def encode_source(vae, source: torch.Tensor) -> dict:
    """The VAE latent of each checked source (B, H, W, 3), sides padded to multiples of 8 as the
    edit pads them, with the fingerprint of the sources it came from."""
    return {"samples": encode_each(vae, source), SOURCE_KEY: fingerprint(source)}


def encode_each(vae, source: torch.Tensor) -> torch.Tensor:
    """The VAE latents of (B, H, W, 3) images, sides padded. Padding a view (one source expanded
    for several masks) can give another memory layout, and the VAE's convolutions then round
    differently: made contiguous, the same pixels always encode to the same latent."""
    return vae.encode(pad_to_multiple(source).contiguous())


def checked_samples(source_latent, source: torch.Tensor) -> torch.Tensor:
    """The samples of a source latent wired to Encode Source, checked against that node's source
    (B, H, W, 3), as the artist gave it (before the mask's batch rule)."""
    samples = source_latent.get("samples") if isinstance(source_latent, dict) else None
    made_from = source_latent.get(SOURCE_KEY) if isinstance(source_latent, dict) else None
    if not isinstance(samples, torch.Tensor) or not isinstance(made_from, torch.Tensor):
        raise ValueError("source_latent: expected the output of Paint-by-Example Source Latent; connect that "
                         "node's source_latent output here, or leave the input empty")
    expected = fingerprint(source)
    if made_from.shape != expected.shape or not torch.equal(made_from.cpu(), expected):
        raise ValueError("source_latent: it was made from a different image than the one wired to source. Feed "
                         "Paint-by-Example Source Latent the same image as this node's source")
    return samples


def distinct_sources(source: torch.Tensor) -> torch.Tensor:
    """The sources as the artist gave them: one source drawn on by several masks arrives from
    inputs.edit_masks as an expanded view (batch stride 0), and is encoded once (as ``[0][None]``,
    a view with the strides of the image it expands, so that it encodes as that image does)."""
    return source[0][None] if source.shape[0] > 1 and source.stride(0) == 0 else source


class PaintByExampleSourceLatent:
    DESCRIPTION = ("Encodes the whole source once with the VAE, for Paint-by-Example Encode Source's source_latent "
                   "input: the part of the image the noise mask keeps. It does not depend on the mask, so ComfyUI "
                   "keeps its result while you redraw the mask, and a new mask costs one VAE encode instead of two. "
                   "The Paint-by-Example Sampler does this by itself.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("source_latent",)
    OUTPUT_TOOLTIPS = ("The whole source encoded (sides padded to multiples of 8), for Encode Source's "
                       "source_latent.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The VAE from the Paint-by-Example loader (the same as Encode Source's)."}),
                "source": ("IMAGE", {"tooltip": "The image to edit: the same image as Encode Source's source."}),
            },
        }

    def encode(self, vae, source):
        return (encode_source(vae, inputs.checked_source(source)),)

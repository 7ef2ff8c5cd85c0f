"""Image geometry the model needs: latent-grid padding (sides must be multiples of 8), and compositing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_amounts(height: int, width: int, multiple: int = 8) -> tuple[int, int]:
    """Rows and columns to add (at the bottom and right) to reach multiples of ``multiple``."""
    return (-height) % multiple, (-width) % multiple


def pad_to_multiple(images: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Pad (B, H, W, C) images or (B, H, W) masks at the bottom/right by repeating the edge, so
    every pixel of the original is processed (cropping would leave border pixels unedited)."""
    height, width = images.shape[1], images.shape[2]
    pad_h, pad_w = pad_amounts(height, width, multiple)
    if not pad_h and not pad_w:
        return images
    x = images if images.ndim == 4 else images[..., None]
    x = F.pad(x.movedim(-1, 1), (0, pad_w, 0, pad_h), mode="replicate").movedim(1, -1)
    return x if images.ndim == 4 else x[..., 0]


def composite(source: torch.Tensor, edited: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``edited`` over ``source`` (B, H, W, C) with ``alpha`` (B, H, W) in 0..1 (e.g.
    ``masks.paste_alpha``): where alpha is 0 the result is the source's pixel exactly."""
    alpha = alpha.clamp(0, 1)[..., None].to(source.dtype)
    out = source * (1 - alpha) + edited.to(source.dtype) * alpha
    return torch.where(alpha == 0, source, out)

"""Crop around the mask, edit at the model's scale, stitch back exactly.

Paint-by-Example was trained on 512x512 crops in which the object is a sizeable part of the
image; on a large photo a small mask is a few latent cells and nothing is painted. So: cut a
square around the mask (with some context), scale it to the working resolution, edit that,
then scale the edit back and blend it in through the mask's paste-back alpha (masks.paste_alpha:
the mask feathered outward), with a linear cross-fade or a multi-band blend (blend.py) over that
band. Pixels where that alpha is 0 are the source's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import blend as blending
from .masks import bounding_box, paste_alpha
from .reference import resize


@dataclass(frozen=True)
class CropBox:
    """A square region of the source (``x0``, ``y0``, ``side``; it may reach past the borders,
    where the source is padded by repeating its edge), worked on at ``size`` x ``size``."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def x1(self) -> int:
        return self.x0 + self.side

    @property
    def y1(self) -> int:
        return self.y0 + self.side

    def inside(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The part of the region that lies inside a height x width image: (x0, y0, x1, y1)."""
        return max(0, self.x0), max(0, self.y0), min(width, self.x1), min(height, self.y1)


def plan_crop(mask: torch.Tensor, context: float, size: int, blend: int = 0) -> CropBox:
    """The square around a (H, W) mask's box: ``context`` times the box's longer side, and at
    least the box plus the blend band on every side; shifted to stay inside the image, and padded
    only where it cannot (a region larger than the image)."""
    if context < 1.0:
        raise ValueError(f"context must be 1 or more (1 = just the mask's box), got {context}")
    if size < 8 or size % 8:
        raise ValueError(f"resolution must be a multiple of 8 (and at least 8), got {size}")
    box = bounding_box(mask)
    if box is None:
        raise ValueError("the mask is empty: paint the region to edit")
    height, width = mask.shape
    x0, y0, x1, y1 = box
    longest = max(x1 - x0, y1 - y0)
    side = max(math.ceil(longest * context), longest + 2 * max(0, blend), 8)
    return CropBox(_place(x0, x1, side, width), _place(y0, y1, side, height), side, size)


def _place(start: int, end: int, side: int, limit: int) -> int:
    """Centre the region on [start, end), then shift it inside [0, limit) as far as it fits."""
    origin = round((start + end) / 2 - side / 2)
    low, high = min(0, limit - side), max(0, limit - side)
    return min(max(origin, low), high)


def crop(images: torch.Tensor, box: CropBox) -> torch.Tensor:
    """(H, W, C) image or (H, W) mask -> the region at ``box.size`` (edges repeated past borders)."""
    is_mask = images.ndim == 2
    x = images[..., None] if is_mask else images
    height, width = x.shape[:2]
    ix0, iy0, ix1, iy1 = box.inside(height, width)
    region = x[iy0:iy1, ix0:ix1].movedim(-1, 0)
    pads = (ix0 - box.x0, box.x1 - ix1, iy0 - box.y0, box.y1 - iy1)
    if any(pads):
        region = F.pad(region[None], pads, mode="replicate")[0]
    out = resize(region.float(), box.size, box.size).movedim(0, -1)
    return out[..., 0] if is_mask else out


def stitch(source: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, box: CropBox, blend: int,
           blend_mode: str = "linear") -> torch.Tensor:
    """Put an edited crop (size x size x C) back into the (H, W, C) source with the paste-back
    alpha of the mask (``masks.paste_alpha``: feathered outward by ``blend`` pixels), blended over
    that band with ``blend_mode`` ("linear" or "multiband", see ``blend.paste``). Where that alpha
    is 0 the source is returned unchanged."""
    out = source.clone()
    stitch_into(out, edited, mask, box, blend, blend_mode)
    return out


def stitch_into(source: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, box: CropBox, blend: int,
                blend_mode: str = "linear") -> None:
    """:func:`stitch` writing into ``source`` itself (only the region changes): for a caller
    that already holds its own copy of a large image."""
    if blend_mode not in blending.BLENDS:
        raise ValueError(f"blend_mode must be one of {', '.join(blending.BLENDS)}, got {blend_mode!r}")
    height, width = source.shape[:2]
    ix0, iy0, ix1, iy1 = box.inside(height, width)
    back = resize(edited.movedim(-1, 0).float(), box.side, box.side).movedim(0, -1)
    back = back[iy0 - box.y0:iy1 - box.y0, ix0 - box.x0:ix1 - box.x0]
    region = source[iy0:iy1, ix0:ix1]
    alpha = paste_alpha(mask[iy0:iy1, ix0:ix1], blend)
    if blend_mode == "multiband":
        source[iy0:iy1, ix0:ix1] = blending.paste(region, back.to(source.dtype), alpha, blend, "multiband")
        return
    alpha = alpha[..., None].to(source.dtype)
    source[iy0:iy1, ix0:ix1] = torch.where(alpha == 0, region, region * (1 - alpha) + back.to(source.dtype) * alpha)

"""Small mask utilities. Masks are float tensors (H, W) or (B, H, W), 1 = the region to edit."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_batch(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """(H, W) or (B, H, W) -> (B, H, W) float; anything else is a clear error."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W) or (batch, H, W), got {tuple(mask.shape)}")
    if mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise ValueError(f"{name} is empty ({tuple(mask.shape)})")
    mask = mask.float()
    if not torch.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or infinite values: rebuild the mask")
    return mask


def binarize(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1 where ``mask >= threshold`` (the authors' rule), else 0."""
    return (mask >= threshold).to(mask.dtype if mask.is_floating_point() else torch.float32)


def bounding_box(mask: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels ``>= threshold`` in a 2-D mask, ends exclusive; None if empty."""
    if mask.ndim != 2:
        raise ValueError(f"bounding_box takes a single (H, W) mask, got {tuple(mask.shape)}")
    on = mask >= threshold
    rows = torch.nonzero(on.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(on.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) by a square of that radius; keeps the shape."""
    pixels = int(pixels)
    if pixels == 0:
        return mask.clone()
    batch = as_batch(mask)[:, None]
    k = 2 * abs(pixels) + 1
    if pixels > 0:
        out = F.max_pool2d(batch, k, stride=1, padding=abs(pixels))
    else:
        out = -F.max_pool2d(-batch, k, stride=1, padding=abs(pixels))
    return out[:, 0].reshape(mask.shape).to(mask.dtype)


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften a mask's edge outward over ``pixels``: values inside the mask are kept (at least
    as high), pixels farther than ``pixels`` (square distance) from it stay exactly 0, and a linear
    ramp joins the two."""
    pixels = int(pixels)
    if pixels < 0:
        raise ValueError(f"feather width must be 0 or more pixels, got {pixels}")
    if pixels == 0:
        return mask.clone()
    inner = pixels - pixels // 2  # grow by the larger half, blur by the smaller: the mask stays 1
    grown = grow(mask, inner)
    radius = pixels // 2
    if radius == 0:
        return torch.maximum(mask, grown * 0.5)
    batch = as_batch(grown)[:, None]
    k = 2 * radius + 1
    batch = F.avg_pool2d(F.pad(batch, (radius, radius, 0, 0), mode="replicate"), (1, k), stride=1)
    batch = F.avg_pool2d(F.pad(batch, (0, 0, radius, radius), mode="replicate"), (k, 1), stride=1)
    return torch.maximum(mask, batch[:, 0].reshape(mask.shape).to(mask.dtype))


# One rule for soft masks, for every node that repaints or pastes back:
# - the repainted region is where the mask is at or above 0.5 (``binarize``): the model sees it
#   blanked and paints it anew;
# - the paste-back alpha is ``paste_alpha``: 1 over the repainted region, the mask's own value
#   where it is softer than 0.5, and a ramp over ``blend`` pixels outside; where it is 0 the
#   source's pixel is kept exactly.


def paste_alpha(mask: torch.Tensor, blend: int = 0) -> torch.Tensor:
    """How much of the edit each pixel takes when it is pasted back onto the source:
    ``max(mask, feather(binarize(mask), blend))`` with the mask clamped to 0..1."""
    soft = mask.float().clamp(0, 1)
    return torch.maximum(soft, feather(binarize(soft), blend))

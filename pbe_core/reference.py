"""Turning reference (exemplar) images into the CLIP encoder's input.

Images follow ComfyUI's layout: float (B, H, W, C) in 0..1, with C = 3 (RGB), 1 (grayscale),
2 (grayscale + alpha) or 4 (RGBA). Output: (B, 3, size, size), CLIP-normalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import as_batch, bounding_box

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# stretch: the authors' inference (squash to a square, aspect not kept);
# center_crop: diffusers' CLIPImageProcessor (short side to size, centre crop);
# pad: keep the whole reference and its aspect, pad to a square with the background colour.
MODES = ("stretch", "center_crop", "pad")


def prepare_references(
    images: torch.Tensor,
    mode: str = "stretch",
    size: int = 224,
    mask: torch.Tensor | None = None,
    margin: int = 10,
    background: float = 1.0,
) -> torch.Tensor:
    """Preprocess a batch of references for the exemplar encoder.

    ``mask`` (optional; (H, W), (1, H, W) for every reference, or one per reference) marks the
    object: the background is filled with ``background`` (0..1 grey level; 1 = white) and the
    reference is cropped to the object's box plus ``margin`` pixels, as the model saw objects in
    training (box + 10 px). An alpha channel acts as such a mask too.
    """
    if mode not in MODES:
        raise ValueError(f"preprocess must be one of {', '.join(MODES)}, got {mode!r}")
    if margin < 0:
        raise ValueError(f"margin must be 0 or more pixels, got {margin}")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be a grey level between 0 and 1, got {background}")
    rgb, alpha = split_channels(images)
    masks = _combine_masks(alpha, mask, rgb.shape)
    out = []
    for i in range(rgb.shape[0]):
        image = rgb[i]
        if masks is not None:
            image = _isolate_object(image, masks[i], margin, background, i)
        out.append(fit_square(image, mode, size, background))
    return normalize(torch.stack(out))


def split_channels(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, H, W, C) -> RGB (B, 3, H, W) float32 and alpha (B, H, W) or None."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"reference must be an image tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"reference must be an image of shape (batch, height, width, channels) with 1 to 4 channels, "
            f"got {tuple(images.shape)}"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"reference image is empty ({tuple(images.shape)})")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError("reference image contains NaN or infinite values")
    images = images.clamp(0, 1).permute(0, 3, 1, 2)
    channels = images.shape[1]
    color = images[:, :3] if channels >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    alpha = images[:, -1] if channels in (2, 4) else None
    return color.contiguous(), alpha


def _combine_masks(alpha, mask, shape):
    batch, _, height, width = shape
    if mask is not None:
        mask = as_batch(mask, "reference mask").clamp(0, 1)
        if mask.shape[-2:] != (height, width):
            raise ValueError(
                f"reference mask is {mask.shape[-1]}x{mask.shape[-2]} but the reference is {width}x{height}: "
                "give a mask of the reference's size"
            )
        if mask.shape[0] not in (1, batch):
            raise ValueError(
                f"there are {mask.shape[0]} reference masks for {batch} references: give one mask for all, "
                "or one per reference"
            )
        mask = mask.expand(batch, -1, -1)
    if alpha is not None:
        mask = alpha if mask is None else mask * alpha
    return mask


def _isolate_object(image, mask, margin, background, index):
    box = bounding_box(mask)
    if box is None:
        raise ValueError(
            f"reference mask {index} is empty (or the reference is fully transparent): "
            "paint the object in the reference mask, or leave the mask unconnected"
        )
    image = image * mask + background * (1 - mask)
    x0, y0, x1, y1 = box
    height, width = image.shape[-2:]
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(width, x1 + margin), min(height, y1 + margin)
    return image[:, y0:y1, x0:x1]


def fit_square(image: torch.Tensor, mode: str, size: int, background: float = 1.0) -> torch.Tensor:
    """(3, H, W) -> (3, size, size) by the given mode."""
    height, width = image.shape[-2:]
    if mode == "stretch":
        return resize(image, size, size)
    if mode == "center_crop":
        scale = size / min(height, width)
        h, w = max(size, round(height * scale)), max(size, round(width * scale))
        image = resize(image, h, w)
        top, left = (h - size) // 2, (w - size) // 2
        return image[:, top:top + size, left:left + size]
    scale = size / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    image = resize(image, h, w)
    out = torch.full((3, size, size), float(background), dtype=image.dtype)
    top, left = (size - h) // 2, (size - w) // 2
    out[:, top:top + h, left:left + w] = image
    return out


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bicubic (PIL's filter, which both reference implementations use), clamped."""
    if image.shape[-2:] == (height, width):
        return image
    out = F.interpolate(image[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 1)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, dtype=pixels.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean) / std

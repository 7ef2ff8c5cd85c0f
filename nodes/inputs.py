"""Checks of what users wire into the nodes, with errors that name the input and say what to do."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def user_error(input_name: str):
    """Prefix a ValueError from pbe_core with the node input it is about."""
    try:
        yield
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith(f"{input_name}:") else f"{input_name}: {message}") from e


def check_range(input_name: str, value, low, high) -> None:
    """Headless users (the API) are not held to the UI's limits: check them here too."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{input_name}: {value!r} is out of range; use a value from {low} to {high}")


def source_images(source: torch.Tensor, input_name: str = "source") -> torch.Tensor:
    """IMAGE (B, H, W, C) with 1-4 channels -> RGB (B, H, W, 3) float, values untouched (so that
    unedited pixels come back exactly); alpha is ignored. No copy for ordinary RGB images."""
    if not isinstance(source, torch.Tensor) or source.ndim != 4 or source.shape[-1] not in (1, 2, 3, 4):
        shape = tuple(source.shape) if isinstance(source, torch.Tensor) else type(source).__name__
        raise ValueError(f"{input_name}: expected an IMAGE (batch, height, width, 1 to 4 channels), got {shape}")
    if 0 in source.shape[:3]:
        raise ValueError(f"{input_name}: the image is empty ({tuple(source.shape)})")
    channels = source.shape[-1]
    rgb = source[..., :3] if channels >= 3 else source[..., :1].expand(-1, -1, -1, 3)
    return rgb.float()


def checked_source(source) -> torch.Tensor:
    """:func:`source_images`, refusing NaN and infinite values (the VAE would spread them)."""
    source = source_images(source)
    if not torch.isfinite(source).all():
        raise ValueError("source: the image contains NaN or infinite values; check the node that made it")
    return source


def edit_masks(mask: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the mask against the source and apply the batch rules: one mask for N sources,
    N masks for one source, or N for N. Returns (sources, masks) of equal batch size."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ValueError("mask: expected a MASK (height x width, or a batch of them)")
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None]
    height, width = source.shape[1:3]
    if mask.shape[-2:] != (height, width):
        if not torch.count_nonzero(mask):  # what Load Image gives for an image with nothing painted
            raise ValueError(
                f"mask: no mask was painted on the source (the mask is empty, {mask.shape[-1]}x{mask.shape[-2]}; "
                "Load Image gives an empty 64x64 mask when nothing is painted). Paint the region to change in the "
                "mask editor (right-click the Load Image node, Open in MaskEditor)."
            )
        raise ValueError(
            f"mask: it is {mask.shape[-1]}x{mask.shape[-2]} but the source is {width}x{height}. Make the mask from "
            "the source image (or resize it to the source's size)."
        )
    if not torch.isfinite(mask).all():
        raise ValueError("mask: it contains NaN or infinite values; rebuild the mask")
    sources, masks = source.shape[0], mask.shape[0]
    if sources != masks:
        if masks == 1:
            mask = mask.expand(sources, -1, -1)
        elif sources == 1:
            source = source.expand(masks, -1, -1, -1)
        else:
            raise ValueError(
                f"mask: there are {masks} masks for {sources} source images. Give one mask for all sources, one "
                "source for all masks, or as many masks as sources."
            )
    mask = mask.clamp(0, 1)
    for i, m in enumerate(mask):
        edited = m >= 0.5
        if not edited.any():
            raise ValueError(f"mask: mask {i} is empty (nothing at or above 0.5): paint the region to change")
        if edited.all():
            raise ValueError(
                f"mask: mask {i} covers the whole source. Paint-by-Example blends the exemplar into the surrounding "
                "image, so leave some of the source unmasked."
            )
    return source, mask


def conditioning_batch(conditioning, input_name: str, batch: int, context_dim: int) -> None:
    """Each conditioning entry holds one batch of (B, tokens, context_dim) with B = 1 or the edit batch."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{input_name}: expected a CONDITIONING from Paint-by-Example Encode")
    for tensor, _options in conditioning:
        if tensor.shape[-1] != context_dim:
            raise ValueError(
                f"{input_name}: its width is {tensor.shape[-1]} but the model expects {context_dim}. The encoder "
                "comes from a different model: use the encoder and model from the same Paint-by-Example loader."
            )
        if tensor.shape[0] not in (1, batch):
            raise ValueError(
                f"{input_name}: it holds {tensor.shape[0]} exemplars for {batch} images. Give one reference for all "
                "images, or one per image."
            )

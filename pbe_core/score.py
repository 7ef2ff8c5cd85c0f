"""Exemplar likeness: the paper's CLIP score between each edit's repainted region and its reference.

Paint-by-Example's paper scores an edit by the cosine similarity (x100) between the CLIP image
embedding of the reference and that of the edited region. The region is the repainted part of the
mask (at or above 0.5, the rule every node uses), its box plus a margin, squashed to the image
tower's square ("stretch": how the authors fed objects to the encoder in training, box + 10 px).

Pure functions: cutting and preprocessing the regions, the scores, the ranking and the report.
The image tower itself is the caller's (this pack's encoder or a host's CLIP vision model).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .masks import as_batch, bounding_box
from .reference import CLIP_MEAN, CLIP_STD, prepare_references, resize

# The paper's scale: cosine similarity x 100, so scores lie in [-100, 100] and 100 is an identical embedding.
SCALE = 100.0


def check_inputs(images: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the edits, their mask(s) and the reference batch against each other (one mask or
    reference for all edits, or one per edit). Returns the edits as RGB (B, H, W, 3) float and the
    masks (B, H, W), one per edit. Errors name the input at fault."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected an IMAGE (batch, height, width, 1 to 4 channels), got {shape}")
    if 0 in images.shape[:3]:
        raise ValueError(f"images: the batch is empty ({tuple(images.shape)})")
    count, height, width = images.shape[:3]
    rgb = images[..., :3] if images.shape[-1] >= 3 else images[..., :1].expand(-1, -1, -1, 3)
    rgb = rgb.float()
    if not torch.isfinite(rgb).all():
        raise ValueError("images: they contain NaN or infinite values")
    masks = as_batch(mask, "mask")
    if masks.shape[-2:] != (height, width):
        raise ValueError(f"mask: it is {masks.shape[-1]}x{masks.shape[-2]} but the images are {width}x{height}; "
                         "give the mask the edits were made with (at the images' size)")
    if masks.shape[0] not in (1, count):
        raise ValueError(f"mask: there are {masks.shape[0]} masks for {count} images; give one mask for all "
                         "images, or one per image")
    if isinstance(reference, torch.Tensor) and reference.ndim == 4 and reference.shape[0] not in (1, count):
        raise ValueError(f"reference: there are {reference.shape[0]} references for {count} images; give one "
                         "reference for all images, or one per image")
    return rgb.clamp(0, 1), masks.expand(count, -1, -1)


def region_boxes(masks: torch.Tensor, margin: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) per mask (B, H, W): the box of its repainted pixels (>= 0.5) grown by
    ``margin`` pixels on every side and kept inside the image. An empty mask is an error naming it."""
    if margin < 0:
        raise ValueError(f"margin: it must be 0 or more pixels, got {margin}")
    height, width = masks.shape[-2:]
    boxes = []
    for i, m in enumerate(masks):
        box = bounding_box(m)
        if box is None:
            raise ValueError(f"mask: mask {i} is empty (nothing at or above 0.5). The score compares the repainted "
                             "region with the reference: give the mask the edit was made with")
        x0, y0, x1, y1 = box
        boxes.append((max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)))
    return boxes


def region_squares(images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]], size: int) -> torch.Tensor:
    """Each edit's region (RGB (B, H, W, 3) in 0..1, one box per edit) squashed to size x size, as
    (B, 3, size, size) in 0..1: the authors' "stretch", with the filter references get."""
    out = [resize(image[y0:y1, x0:x1].movedim(-1, 0), size, size) for image, (x0, y0, x1, y1) in zip(images, boxes)]
    return torch.stack(out)


def reference_squares(reference: torch.Tensor, preprocess: str, size: int, mask: torch.Tensor | None = None,
                      margin: int = 10) -> torch.Tensor:
    """The references as the exemplar encoder sees them (``prepare_references``: the same modes,
    reference mask and margin), as (B, 3, size, size) in 0..1, before any model's normalisation."""
    return unnormalize(prepare_references(reference, preprocess, size=size, mask=mask, margin=margin)).clamp(0, 1)


def normalize(squares: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
              ) -> torch.Tensor:
    """(B, 3, S, S) in 0..1 -> a CLIP tower's input."""
    return (squares - _channels(mean, squares)) / _channels(std, squares)


def unnormalize(pixels: torch.Tensor) -> torch.Tensor:
    return pixels * _channels(CLIP_STD, pixels) + _channels(CLIP_MEAN, pixels)


def _channels(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def embed_all(embed: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor,
              out_of_memory: tuple[type[BaseException], ...] = ()) -> torch.Tensor:
    """``embed`` on the whole batch in one call; if that runs out of memory (one of the
    ``out_of_memory`` exception types), on halves, recursively. Results are concatenated in order."""
    try:
        return embed(pixels)
    except out_of_memory:
        if pixels.shape[0] == 1:
            raise
    half = pixels.shape[0] // 2
    return torch.cat([embed_all(embed, pixels[:half], out_of_memory), embed_all(embed, pixels[half:], out_of_memory)])


def pooled(embeddings: torch.Tensor) -> torch.Tensor:
    """One vector per image: (B, D) as is; per-token embeddings (B, tokens, D), which ComfyUI's SigLIP
    towers give (they have no pooling head there), are averaged over the tokens."""
    if embeddings.ndim == 3:
        return embeddings.float().mean(dim=1)
    if embeddings.ndim != 2:
        raise ValueError(f"expected image embeddings of shape (batch, width), got {tuple(embeddings.shape)}")
    return embeddings.float()


def cosine_scores(edits: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """The paper's score per edit: 100 x cos(edit embedding, reference embedding), float64 (B,).
    ``references`` is (1, D) for all edits or (B, D), one per edit."""
    if references.shape[0] not in (1, edits.shape[0]):
        raise ValueError(f"{references.shape[0]} reference embeddings for {edits.shape[0]} edits")
    references = references.double().expand(edits.shape[0], -1)
    return SCALE * F.cosine_similarity(edits.double(), references, dim=-1, eps=1e-12)


def ranking(scores: Sequence[float], top_k: int = 0) -> list[int]:
    """Batch indices best first; ties keep batch order. ``top_k`` > 0 keeps that many (all if fewer)."""
    if top_k < 0:
        raise ValueError(f"top_k: it must be 0 (keep all) or more, got {top_k}")
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # sorted() is stable
    return order[:top_k] if top_k else order


def report_text(order: Sequence[int], scores: Sequence[float], model: str) -> str:
    """A readable table: rank, batch index (0-based, as ComfyUI's batch nodes count), score."""
    kept = f"the best {len(order)}" if len(order) < len(scores) else "all"
    lines = [f"Exemplar likeness ({model}): {len(scores)} images, {kept} kept, best first",
             "rank  batch  score"]
    lines += [f"{rank:>4}  {index:>5}  {float(scores[index]):6.2f}" for rank, index in enumerate(order, 1)]
    return "\n".join(lines)


def score_names(order: Sequence[int], scores: Sequence[float]) -> list[str]:
    """A file-name-safe label per kept image (rank, batch index, score), e.g. ``rank1_batch3_score87.31``:
    what Save Image's filename_prefix can take to put the score in the saved file's name."""
    return [f"rank{rank}_batch{index}_score{float(scores[index]):.2f}" for rank, index in enumerate(order, 1)]

"""Combining exemplar contexts: weighted blends of several references, and exemplar strength."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def blend_contexts(contexts: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean of exemplar contexts (each (B, 1, dim), B = 1 or a common batch size).
    Weights are relative: (2, 1) is the same blend as (1, 0.5)."""
    if len(contexts) != len(weights):
        raise ValueError(f"there are {len(contexts)} exemplars for {len(weights)} weights: give one weight each")
    if not contexts:
        raise ValueError("no exemplars to blend: connect at least one")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be 0 or more, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("all weights are 0: give at least one exemplar a weight above 0")
    widths = {c.shape[-1] for c in contexts}
    if len(widths) != 1:
        raise ValueError(f"the exemplars have different widths {sorted(widths)}: encode them with the same model")
    batches = {c.shape[0] for c in contexts} - {1}
    if len(batches) > 1:
        raise ValueError(f"the exemplars hold different batch sizes {sorted(batches)}: use one reference each, or "
                         "the same number in every one")
    return sum(c * (w / total) for c, w in zip(contexts, weights))


def apply_strength(context: torch.Tensor, unconditional: torch.Tensor, strength: float) -> torch.Tensor:
    """``uncond + strength * (context - uncond)``: 0 ignores the reference (the learned
    unconditional vector), 1 is the exemplar itself, above 1 exaggerates it."""
    if context.shape[-1] != unconditional.shape[-1]:
        raise ValueError(f"the exemplar is {context.shape[-1]} wide but the unconditional vector "
                         f"{unconditional.shape[-1]}: both must come from the same Paint-by-Example Encode")
    return unconditional + strength * (context - unconditional)

"""Blending exemplars and exemplar strength (pure math in pbe_core)."""

from __future__ import annotations

import pytest
import torch

from pbe_core.exemplar_mix import apply_strength, blend_contexts

_G = torch.Generator().manual_seed(0)
A, B, U = (torch.randn(1, 1, 768, generator=_G) for _ in range(3))


def test_blend_endpoints_and_midpoint():
    assert torch.allclose(blend_contexts([A, B], [1, 0]), A, atol=1e-6)
    assert torch.allclose(blend_contexts([A, B], [0, 3]), B, atol=1e-6)
    assert torch.allclose(blend_contexts([A, B], [1, 1]), (A + B) / 2, atol=1e-6)
    assert torch.allclose(blend_contexts([A, B], [2, 1]), blend_contexts([A, B], [1, 0.5]), atol=1e-6)


def test_blend_broadcasts_single_references_against_a_batch():
    batch = torch.randn(3, 1, 768)
    out = blend_contexts([batch, A], [1, 1])
    assert out.shape == (3, 1, 768) and torch.allclose(out[2], (batch[2] + A[0]) / 2, atol=1e-6)


def test_strength_endpoints():
    assert torch.equal(apply_strength(A, U, 0.0), U)
    assert torch.allclose(apply_strength(A, U, 1.0), A, atol=1e-6)
    assert torch.allclose(apply_strength(A, U, 0.5), (A + U) / 2, atol=1e-6)
    assert torch.allclose(apply_strength(A, U, 2.0), U + 2 * (A - U), atol=1e-6)


@pytest.mark.parametrize(("contexts", "weights", "message"), [
    ([A, B], [1], "2 exemplars for 1 weights"),
    ([A, B], [0, 0], "all weights are 0"),
    ([A, B], [1, -1], "weights must be 0 or more"),
    ([A, torch.randn(1, 1, 1024)], [1, 1], "different widths"),
    ([torch.randn(2, 1, 768), torch.randn(3, 1, 768)], [1, 1], "different batch sizes"),
    ([], [], "no exemplars"),
])
def test_blend_errors(contexts, weights, message):
    with pytest.raises(ValueError, match=message):
        blend_contexts(contexts, weights)


def test_strength_width_mismatch():
    with pytest.raises(ValueError, match="same Paint-by-Example Encode"):
        apply_strength(A, torch.randn(1, 1, 1024), 0.5)

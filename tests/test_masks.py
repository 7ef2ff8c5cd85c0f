"""Mask utilities: binarise, bounding box, grow and feather."""

from __future__ import annotations

import pytest
import torch

from pbe_core.masks import as_batch, binarize, bounding_box, feather, grow


def _square(size=64, box=(20, 10, 40, 30)):
    mask = torch.zeros(size, size)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def test_binarize_uses_the_authors_half_threshold():
    mask = torch.tensor([[0.0, 0.49, 0.5, 0.51, 1.0]])
    assert binarize(mask).tolist() == [[0, 0, 1, 1, 1]]


def test_bounding_box_has_exclusive_ends():
    assert bounding_box(_square()) == (20, 10, 40, 30)
    assert bounding_box(torch.zeros(8, 8)) is None
    soft = torch.zeros(8, 8)
    soft[2, 3] = 0.4
    assert bounding_box(soft) is None and bounding_box(soft, threshold=0.3) == (3, 2, 4, 3)


def test_grow_and_shrink_by_exact_pixels():
    mask = _square()
    assert bounding_box(grow(mask, 5)) == (15, 5, 45, 35)
    assert grow(mask, 5).sum() == 30 * 30
    assert bounding_box(grow(mask, -3)) == (23, 13, 37, 27)
    assert torch.equal(grow(grow(mask, 4), -4), mask)
    batch = torch.stack([mask, mask.flip(0)])
    assert grow(batch, 2).shape == (2, 64, 64)


@pytest.mark.parametrize("pixels", [1, 4, 9])
def test_feather_is_one_inside_zero_beyond_and_ramps_between(pixels):
    mask = _square()
    soft = feather(mask, pixels)
    assert torch.equal(soft[mask > 0], torch.ones(int(mask.sum())))
    beyond = grow(mask, pixels) == 0
    assert torch.equal(soft[beyond], torch.zeros(int(beyond.sum())))
    row = soft[20, 40:40 + pixels + 1]  # moving right, away from the mask
    assert (row[1:] <= row[:-1]).all() and row[-1] == 0 and 0 < row[0] <= 1
    assert ((row > 0) & (row < 1)).sum() >= pixels // 2  # a real ramp, not a hard edge


def test_feather_at_the_image_border_does_not_fade():
    mask = torch.zeros(32, 32)
    mask[:, :10] = 1  # touches the left border
    soft = feather(mask, 6)
    assert torch.equal(soft[:, :10], torch.ones(32, 10))
    assert torch.allclose(soft[0], soft[16])  # the border row behaves like any other


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match=r"shape \(H, W\) or \(batch, H, W\)"):
        as_batch(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        as_batch(torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="feather width"):
        feather(_square(), -1)

"""Crop & stitch geometry: exact preservation, exact placement, any size, every border."""

from __future__ import annotations

import pytest
import torch

from pbe_core.crop import crop, plan_crop, stitch

RED = torch.tensor([1.0, 0.0, 0.0])


def _mask(height, width, box):
    mask = torch.zeros(height, width)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def _source(height, width, seed=0):
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


def _paint_mask_red(cropped, cropped_mask):
    """A stand-in edit whose result is known: red wherever the cropped mask is."""
    return torch.where(cropped_mask[..., None] >= 0.5, RED, cropped)


def _rect(height, width, box, grow_by):
    x0, y0, x1, y1 = box
    out = torch.zeros(height, width, dtype=torch.bool)
    out[max(0, y0 - grow_by):max(0, y1 + grow_by), max(0, x0 - grow_by):max(0, x1 + grow_by)] = True
    return out


def _check_round_trip(source, mask_box, context=2.0, size=512, blend=12):
    height, width = source.shape[:2]
    mask = _mask(height, width, mask_box)
    box = plan_crop(mask, context, size, blend)
    cropped, cropped_mask = crop(source, box), crop(mask, box)
    assert cropped.shape == (size, size, 3) and cropped_mask.shape == (size, size)
    out = stitch(source, _paint_mask_red(cropped, cropped_mask), mask, box, blend)
    assert out.shape == source.shape
    band = _rect(height, width, mask_box, blend)  # a square grow of a rectangle is a rectangle
    assert torch.equal(out[~band], source[~band]), "outside mask + blend band: bit-identical"
    inner = _rect(height, width, mask_box, -3)  # away from the resampled edge, the edit is exactly where the mask was
    assert torch.allclose(out[inner], RED.expand(int(inner.sum()), 3), atol=1e-6)
    return box, out


def test_large_photo_small_mask():
    source = _source(3072, 4096)
    box, _ = _check_round_trip(source, (2500, 1200, 2560, 1240))  # 60 x 40 px in a 12-megapixel photo
    assert box.side == 120 and (box.x0, box.y0) == (2470, 1160)  # centred, 2x the longer side
    assert box.inside(3072, 4096) == (box.x0, box.y0, box.x1, box.y1), "fits inside: no padding"


@pytest.mark.parametrize("where", ["top", "bottom", "left", "right", "top-left", "top-right", "bottom-left",
                                   "bottom-right"])
def test_masks_touching_each_border_and_corner(where):
    height, width, w, h = 3072, 4096, 80, 50
    x0 = 0 if "left" in where else width - w if "right" in where else 2000
    y0 = 0 if "top" in where else height - h if "bottom" in where else 1500
    box, _ = _check_round_trip(_source(height, width, 1), (x0, y0, x0 + w, y0 + h))
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, "shifted inside, not padded"
    assert box.x0 <= x0 and x0 + w <= box.x1 and box.y0 <= y0 and y0 + h <= box.y1


@pytest.mark.parametrize(("height", "width"), [(757, 1001), (513, 333), (97, 61)])
def test_odd_sizes(height, width):
    _check_round_trip(_source(height, width, 2), (width // 3, height // 3, width // 3 + 31, height // 3 + 17), size=256)


def test_region_larger_than_the_image_is_padded():
    source = _source(60, 100, 3)
    box, out = _check_round_trip(source, (0, 10, 50, 50), context=3.0, size=128, blend=4)  # touches the left border
    assert box.side == 150 and box.x0 <= 0 and box.x1 >= 100 and box.y0 < 0 and box.y1 > 60
    cropped = crop(source, box)
    # padding repeats the edge: the crop's top rows all come from the source's first row
    assert torch.allclose(cropped[0], cropped[1], atol=1e-6)


def test_blend_band_is_feathered():
    source, mask = torch.zeros(400, 400, 3), _mask(400, 400, (150, 150, 250, 250))
    box = plan_crop(mask, 2.0, 256, blend=20)
    white = torch.ones(256, 256, 3)
    out = stitch(source, white, mask, box, blend=20)
    row = out[200, 250:272, 0]
    assert row[0] == 1 or row[0] > 0.9
    assert (row[1:] <= row[:-1] + 1e-6).all() and row[-1] == 0 and ((row > 0) & (row < 1)).sum() >= 8
    assert out[200, 271:, 0].abs().max() == 0


def test_crop_keeps_room_for_the_blend_band():
    mask = _mask(2000, 2000, (1000, 1000, 1100, 1100))
    assert plan_crop(mask, 1.0, 512, blend=30).side == 160


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"context": 0.5}, "context must be 1 or more"),
    ({"size": 500}, "multiple of 8"),
])
def test_bad_parameters(kwargs, message):
    args = {"context": 2.0, "size": 512, "blend": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_crop(_mask(64, 64, (10, 10, 20, 20)), **args)


def test_empty_mask():
    with pytest.raises(ValueError, match="the mask is empty"):
        plan_crop(torch.zeros(32, 32), 2.0, 512)

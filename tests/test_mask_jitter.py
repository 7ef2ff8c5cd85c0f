"""Mask jitter: the paper's arbitrary-shape masks, deterministic, inside the image, around the box."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pbe_core.mask_jitter import JitterSettings, bezier_polygon, fill_polygon, jitter_masks
from pbe_core.masks import bounding_box

H, W = 120, 160
BOX = (50, 40, 90, 70)


def _mask(box=BOX, h=H, w=W):
    mask = torch.zeros(h, w)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def test_same_seed_same_mask_other_seed_other_mask():
    a = jitter_masks(_mask(), seed=11)
    assert torch.equal(a, jitter_masks(_mask(), seed=11))
    assert not torch.equal(a, jitter_masks(_mask(), seed=12))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.shape == (H, W)


def test_batch_item_i_uses_seed_plus_i():
    batch = jitter_masks(_mask().expand(4, -1, -1), seed=100)
    for i in range(4):
        assert torch.equal(batch[i], jitter_masks(_mask(), seed=100 + i))
    assert len({tuple(m.flatten().tolist()) for m in batch}) == 4


@pytest.mark.parametrize("shape", ["bezier", "box", "random"])
@pytest.mark.parametrize("box", [BOX, (0, 0, 30, 20), (130, 100, 160, 120), (0, 50, 160, 60), (70, 0, 80, 120)])
def test_contains_the_box_and_respects_the_extension_bounds(shape, box):
    settings = JitterSettings(extend_min=0.1, extend_max=0.3, point_jitter=4, shape=shape)
    x0, y0, x1, y1 = box
    for seed in range(25):
        out = jitter_masks(_mask(box), seed=seed, settings=settings)
        assert out[y0:y1, x0:x1].min() == 1, "the original box must stay covered"
        bx0, by0, bx1, by1 = bounding_box(out)
        j = settings.point_jitter
        assert bx0 >= x0 - math.floor(0.3 * x0) - j and by0 >= y0 - math.floor(0.3 * y0) - j
        assert bx1 <= x1 + math.floor(0.3 * (W - x1)) + j and by1 <= y1 + math.floor(0.3 * (H - y1)) + j


def test_box_shape_is_exactly_the_extended_box():
    settings = JitterSettings(extend_min=0.25, extend_max=0.25, shape="box")
    out = jitter_masks(_mask(), seed=0, settings=settings)
    x0, y0, x1, y1 = BOX
    expected = (x0 - math.ceil(0.25 * x0), y0 - math.ceil(0.25 * y0),
                x1 + math.ceil(0.25 * (W - x1)), y1 + math.ceil(0.25 * (H - y1)))
    assert bounding_box(out) == expected
    assert out.sum() == (expected[2] - expected[0]) * (expected[3] - expected[1])


def test_no_extension_and_no_jitter_gives_back_the_box():
    settings = JitterSettings(extend_min=0.0, extend_max=0.0, point_jitter=0, shape="bezier")
    assert torch.equal(jitter_masks(_mask(), seed=3, settings=settings), _mask())


def test_bezier_bulges_beyond_the_box_but_not_the_corners():
    settings = JitterSettings(extend_min=0.4, extend_max=0.4, point_jitter=0, shape="bezier")
    out = jitter_masks(_mask(), seed=0, settings=settings)
    x0, y0, x1, y1 = BOX
    top_ext = y0 - math.ceil(0.4 * y0)
    assert out[:y0, (x0 + x1) // 2].sum() > 0  # the top curve bulges above the box mid-edge
    # a quadratic curve reaches halfway to its control point
    assert bounding_box(out)[1] >= (y0 + top_ext) // 2 - 1
    assert out[y0 - 3, x0 - 3] == 0  # corners are not extended like the box shape would


def test_curve_points_follow_the_authors_sampling():
    pts = bezier_polygon((0, 0, 100, 100), (0, -40, 100, 100), points_per_side=18)
    assert pts.shape == (72, 2)
    t = 0.05  # first point of the top curve
    assert np.allclose(pts[0], [(1 - t) ** 2 * 0 + 2 * t * (1 - t) * 50 + t * t * 100, 2 * t * (1 - t) * -40])
    assert np.allclose(pts[17, 0], 2 * 0.9 * 0.1 * 50 + 0.81 * 100)  # last point at t = 0.90


def test_fill_polygon_samples_pixel_centres():
    square = np.array([[2, 2], [6, 2], [6, 5], [2, 5]], dtype=float)
    filled = fill_polygon(square, 8, 8)
    assert filled.sum() == 4 * 3 and filled[2:5, 2:6].all()


def test_large_image_is_fast_enough_and_stays_inside():
    big = torch.zeros(3072, 4096)
    big[3000:3072, 4000:4096] = 1  # a corner object
    out = jitter_masks(big, seed=5)
    assert out.shape == big.shape and out[3000:, 4000:].min() == 1


@pytest.mark.parametrize(("settings", "message"), [
    (JitterSettings(extend_min=0.5, extend_max=0.2), "0 <= min <= max <= 1"),
    (JitterSettings(point_jitter=-1), "point jitter"),
    (JitterSettings(points_per_side=0), "points per side"),
    (JitterSettings(shape="ellipse"), "shape must be one of"),
])
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        jitter_masks(_mask(), seed=0, settings=settings)


def test_empty_mask_is_named():
    masks = torch.stack([_mask(), torch.zeros(H, W)])
    with pytest.raises(ValueError, match="mask 1 of the batch is empty"):
        jitter_masks(masks, seed=0)


def test_input_is_not_modified():
    mask = _mask()
    before = mask.clone()
    jitter_masks(mask, seed=1)
    assert torch.equal(mask, before)

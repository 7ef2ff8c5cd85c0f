"""Stitch's blend_mode (pbe_core.crop): the multi-band blend over the Crop's band keeps texture crisp,
every pixel outside the mask and its band stays the source's, bit for bit, at every image size the crop
tests use, and the linear feather is the one Stitch always had."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from pbe_core.crop import crop, plan_crop, stitch
from pbe_core.masks import paste_alpha
from test_crop import _mask, _rect

RED = torch.tensor([1.0, 0.0, 0.0])


@functools.lru_cache(maxsize=2)  # the 12-megapixel sources are reused across cases (stitch never changes them)
def _source(height, width, seed=0):
    return torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))


def _round_trip(source, mask_box, context=2.0, size=512, blend=12):
    """Crop, paint the mask red (an edit whose result is known), stitch back with each blend mode."""
    height, width = source.shape[:2]
    mask = _mask(height, width, mask_box)
    box = plan_crop(mask, context, size, blend)
    cropped, cropped_mask = crop(source, box), crop(mask, box)
    edited = torch.where(cropped_mask[..., None] >= 0.5, RED, cropped)
    linear = stitch(source, edited, mask, box, blend)
    multiband = stitch(source, edited, mask, box, blend, "multiband")
    return mask, linear, multiband


def _check_exact(source, mask_box, **kwargs):
    height, width = source.shape[:2]
    blend = kwargs.get("blend", 12)
    mask, linear, multiband = _round_trip(source, mask_box, **kwargs)
    band = _rect(height, width, mask_box, blend)  # a square grow of a rectangle is a rectangle
    assert multiband.shape == source.shape and multiband.dtype == source.dtype
    assert torch.equal(multiband[~band], source[~band]), "outside mask + blend band: bit-identical"
    inner = _rect(height, width, mask_box, -3)
    assert torch.allclose(multiband[inner], RED.expand(int(inner.sum()), 3), atol=1e-6), "the edit, whole, inside"
    x0, y0, x1, y1 = mask_box
    window = (slice(max(0, y0 - blend - 1), y1 + blend + 1), slice(max(0, x0 - blend - 1), x1 + blend + 1))
    alpha = paste_alpha(mask[window], blend)
    in_band = (alpha > 0) & (alpha < 1)
    if blend > 2:  # the multi-band blend is not the feather inside the band
        assert not torch.equal(multiband[window][in_band], linear[window][in_band])
    assert multiband.min() >= 0 and multiband.max() <= 1


def test_large_photo_small_mask():
    _check_exact(_source(3072, 4096), (2500, 1200, 2560, 1240))


@pytest.mark.parametrize("where", ["top", "bottom", "left", "right", "top-left", "top-right", "bottom-left",
                                   "bottom-right"])
def test_masks_touching_each_border_and_corner(where):
    height, width, w, h = 3072, 4096, 80, 50
    x0 = 0 if "left" in where else width - w if "right" in where else 2000
    y0 = 0 if "top" in where else height - h if "bottom" in where else 1500
    _check_exact(_source(height, width, 1), (x0, y0, x0 + w, y0 + h))


@pytest.mark.parametrize(("height", "width"), [(757, 1001), (513, 333), (97, 61), (400, 400)])
@pytest.mark.parametrize("blend", [0, 1, 5, 12, 33])
def test_odd_sizes_and_bands(height, width, blend):
    box = (width // 3, height // 3, width // 3 + 31, height // 3 + 17)
    _check_exact(_source(height, width, 2), box, size=256, blend=blend)


def test_region_larger_than_the_image_is_padded():
    _check_exact(_source(60, 100, 3), (0, 10, 50, 50), context=3.0, size=128, blend=4)


def test_soft_mask_values_blend_by_their_value_in_both_modes():
    mask = torch.zeros(400, 400)
    mask[100:300, 100:300] = 0.3
    mask[150:250, 150:250] = 1.0
    source, white = torch.zeros(400, 400, 3), torch.ones(256, 256, 3)
    box = plan_crop(mask, 2.0, 256, blend=10)
    alpha = paste_alpha(mask, 10)
    for mode in ("linear", "multiband"):
        out = stitch(source, white, mask, box, 10, mode)[..., 0]
        assert torch.equal(out[alpha == 0], torch.zeros(int((alpha == 0).sum()))), mode
        assert torch.allclose(out[120, 110], torch.tensor(0.3)), f"{mode}: a far soft value blends by its value"


def test_without_blend_mode_stitch_is_the_feather_it_always_was():
    """The default: ``source * (1 - alpha) + edit * alpha`` with the edit scaled back, source kept where
    alpha is 0 (the formula Stitch had before blend_mode), bit for bit."""
    source = _source(300, 420, 4)
    mask = _mask(300, 420, (150, 100, 230, 160))
    box = plan_crop(mask, 2.0, 256, 16)
    edited = _source(256, 256, 5)
    out = stitch(source, edited, mask, box, 16)
    assert torch.equal(out, stitch(source, edited, mask, box, 16, "linear"))
    ix0, iy0, ix1, iy1 = box.inside(300, 420)
    back = F.interpolate(edited.movedim(-1, 0)[None], size=(box.side, box.side), mode="bicubic", antialias=True,
                         align_corners=False)[0].clamp(0, 1).movedim(0, -1)[iy0 - box.y0:iy1 - box.y0,
                                                                              ix0 - box.x0:ix1 - box.x0]
    alpha = paste_alpha(mask[iy0:iy1, ix0:ix1], 16)[..., None]
    region = source[iy0:iy1, ix0:ix1]
    expected = source.clone()
    expected[iy0:iy1, ix0:ix1] = torch.where(alpha == 0, region, region * (1 - alpha) + back * alpha)
    assert torch.equal(out, expected)


def test_multiband_keeps_texture_crisp_across_the_stitch_band():
    """Two different textures: the feather averages them in mid-band (their contrast drops to about 0.7,
    a washed-out halo); the multi-band stitch switches fine detail over a few pixels and keeps it."""
    g = torch.Generator().manual_seed(6)
    source = 0.5 + 0.1 * torch.randn(300, 400, 3, generator=g)
    mask = _mask(300, 400, (168, 118, 232, 182))  # 64 x 64: context 2 gives a 128 square, worked on at 128
    box = plan_crop(mask, 2.0, 128, 16)
    assert box.side == box.size, "no rescaling: the texture reaches the stitch as it is"
    edited = 0.5 + 0.1 * torch.randn(128, 128, 3, generator=g)
    alpha = paste_alpha(mask, 16)
    middle = (alpha > 0.25) & (alpha < 0.75)

    def contrast(image):
        def detail(x):
            return x - F.avg_pool2d(x.movedim(-1, 0)[None], 3, 1, 1, count_include_pad=False)[0].movedim(0, -1)
        return (detail(image)[middle].std() / detail(source)[middle].std()).item()

    linear = contrast(stitch(source, edited, mask, box, 16))
    multiband = contrast(stitch(source, edited, mask, box, 16, "multiband"))
    assert linear < 0.76 and multiband >= 0.9, (linear, multiband)


def test_an_unknown_blend_mode_is_refused():
    source = _source(64, 64)
    mask = _mask(64, 64, (20, 20, 40, 40))
    box = plan_crop(mask, 2.0, 64, 4)
    with pytest.raises(ValueError, match="blend_mode must be one of linear, multiband"):
        stitch(source, crop(source, box), mask, box, 4, "poisson")

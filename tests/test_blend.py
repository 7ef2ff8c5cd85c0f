"""Seamless paste-back (pbe_core.blend): the colour match removes a VAE-like colour seam, the
multi-band blend keeps fine detail crisp across the band, and every pixel outside the band stays
the source's, bit for bit, at every size and shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pbe_core import blend
from pbe_core.masks import grow, paste_alpha

H, W = 160, 192


def _picture(height, width, seed, cells=4):
    """A smooth photo-like colour field in 0.2..0.8."""
    coarse = torch.rand(1, 3, cells, cells, generator=torch.Generator().manual_seed(seed)) * 0.6 + 0.2
    return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0].movedim(0, -1)


def _noise(height, width, seed, amount):
    return amount * torch.randn(height, width, 3, generator=torch.Generator().manual_seed(seed))


def _blur3(image):
    return F.avg_pool2d(image.movedim(-1, 0)[None], 3, 1, 1, count_include_pad=False)[0].movedim(0, -1)


def _masks():
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    box = torch.zeros(H, W)
    box[40:120, 56:136] = 1
    disk = (((yy - 83) ** 2 + (xx - 95) ** 2) < 45 ** 2).float()
    return {"box": box, "disk": disk}


def _shift(kind):
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    if kind == "constant":
        return torch.tensor([0.05, -0.03, 0.04]).expand(H, W, 3)
    # a shift that changes along the edge, as a VAE's does over a picture
    return 0.05 * torch.stack([torch.sin(yy / 20), torch.cos(xx / 25), torch.sin((xx + yy) / 30)], -1)


def _vae_like_edit(texture):
    """A source and its 'decoded edit': the same picture, colour-shifted, its fine texture softened,
    plus a little noise of its own (what a VAE round trip does to the pixels it should keep)."""
    base = _picture(H, W, 1)
    grain = _noise(H, W, 2, 0.03 if texture else 0.0)
    source = (base + grain).clamp(0, 1)

    def edit(shift):
        return (base + shift + _blur3(grain) + _noise(H, W, 3, 0.005 if texture else 0.0)).clamp(0, 1)

    return source, edit


def seam_gradient(out, source, mask, band):
    """Mean gradient magnitude, across the mask's edge, of the error the paste leaves (the result
    minus the source, which outside the mask is the truth), at the scale of a seam (a 5 px low-pass
    first, so pixel grain does not count): over the band outside the mask and the mask's edge pixel."""
    error = (out - source).movedim(-1, 0)[None]
    for _ in range(2):
        error = F.avg_pool2d(error, 5, 1, 2, count_include_pad=False)
    error = error[0].movedim(0, -1)
    inside = (mask >= 0.5).float()
    ring = (grow(inside, band + 1) > 0) & ~(grow(inside, -1) > 0)
    gradient = torch.zeros(error.shape[:2])
    gradient[:-1] += (error[1:] - error[:-1]).abs().mean(-1)
    gradient[:, :-1] += (error[:, 1:] - error[:, :-1]).abs().mean(-1)
    return gradient[ring].mean().item()


# ------------------------------------------------------------------------------------------ seams


@pytest.mark.parametrize("band", [8, 16, 32])
@pytest.mark.parametrize("mask_name", ["box", "disk"])
@pytest.mark.parametrize("shift", ["constant", "varying"])
@pytest.mark.parametrize("texture", [False, True], ids=["smooth", "textured"])
def test_colour_match_with_multiband_halves_the_seam_gradient(band, mask_name, shift, texture, report):
    mask = _masks()[mask_name]
    source, make_edit = _vae_like_edit(texture)
    edit = make_edit(_shift(shift))
    alpha = paste_alpha(mask, band)
    linear = seam_gradient(blend.paste(source, edit, alpha, band, "linear"), source, mask, band)
    seamless = seam_gradient(blend.paste(source, edit, alpha, band, "multiband", "local"), source, mask, band)
    report(f"seam gradient {mask_name} band {band} {shift} shift {'textured' if texture else 'smooth'}: "
           f"linear {linear:.5f}, multiband + local colour match {seamless:.5f} ({seamless / linear:.2f}x)")
    assert linear > 5e-4, "the test scene has a visible seam to remove"
    assert seamless <= 0.5 * linear
    if shift == "constant":  # one offset per channel is enough for a constant shift
        mean_match = seam_gradient(blend.paste(source, edit, alpha, band, "multiband", "mean"), source, mask, band)
        assert mean_match <= 0.5 * linear


def test_without_a_colour_match_the_seam_stays():
    """The colour match is what removes the colour seam: the multi-band blend alone spreads a
    colour step over the band just as the feather does."""
    mask = _masks()["box"]
    source, make_edit = _vae_like_edit(False)
    edit = make_edit(_shift("constant"))
    alpha = paste_alpha(mask, 16)
    linear = seam_gradient(blend.paste(source, edit, alpha, 16, "linear"), source, mask, 16)
    multiband = seam_gradient(blend.paste(source, edit, alpha, 16, "multiband"), source, mask, 16)
    assert multiband == pytest.approx(linear, rel=0.05)


def test_the_mean_colour_match_measures_the_shift_on_the_ring_only():
    source = torch.full((40, 50, 3), 0.5)
    edit = torch.full((40, 50, 3), 0.6)
    edit[10:30, 15:35] = torch.tensor([0.9, 0.1, 0.3])  # the new object: its own colours, shifted by +0.1 too
    mask = torch.zeros(40, 50)
    mask[10:30, 15:35] = 1
    alpha = paste_alpha(mask, 6)
    matched = blend.match_colours(source, edit, alpha, 6, "mean")
    assert torch.allclose(matched[20, 25], torch.tensor([0.8, 0.0, 0.2]), atol=1e-6), "the object keeps its colours"
    expected = torch.where(mask[..., None] > 0, edit - 0.1, source)
    assert torch.allclose(matched[alpha > 0], expected[alpha > 0], atol=1e-6)
    local = blend.match_colours(source, edit, alpha, 6, "local")
    assert torch.allclose(local[alpha > 0], matched[alpha > 0], atol=1e-5), "a constant shift: local = mean"


def test_multiband_keeps_fine_detail_crisp_across_the_band():
    """Two different textures: the feather averages them in mid-band (contrast drops to about 0.7,
    a washed-out halo); the multi-band blend switches fine detail over a few pixels and keeps it."""
    source = 0.5 + _noise(128, 160, 0, 0.1)
    edit = 0.5 + _noise(128, 160, 1, 0.1)
    mask = torch.zeros(128, 160)
    mask[32:96, 48:112] = 1
    for band, at_least in ((8, 0.85), (16, 0.9), (32, 0.9)):
        alpha = paste_alpha(mask, band)
        middle = (alpha > 0.25) & (alpha < 0.75)

        def contrast(image):
            detail = image - _blur3(image)
            return (detail[middle].std() / (source - _blur3(source))[middle].std()).item()

        assert contrast(blend.paste(source, edit, alpha, band, "linear")) < 0.76
        assert contrast(blend.paste(source, edit, alpha, band, "multiband")) >= at_least


# ------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize(("height", "width"), [(768, 1024), (757, 1001), (513, 333), (97, 61), (31, 17), (5, 3),
                                               (1, 1), (64, 64)])
@pytest.mark.parametrize(("mode", "colour_match"), [("linear", "off"), ("multiband", "off"), ("multiband", "mean"),
                                                    ("multiband", "local"), ("linear", "local")])
def test_outside_the_band_the_source_is_kept_bit_for_bit(height, width, mode, colour_match):
    g = torch.Generator().manual_seed(height * 7 + width)
    source, edit = torch.rand(height, width, 3, generator=g), torch.rand(height, width, 3, generator=g)
    mask = torch.zeros(height, width)
    mask[height // 3: height // 3 + max(1, height // 5), width // 4: width // 4 + max(1, width // 6)] = 1
    mask[0, 0] = 0.3  # a soft speck: pasted with its own alpha
    for band in (0, 1, 3, 16):
        alpha = paste_alpha(mask, band)
        out = blend.paste(source, edit, alpha, band, mode, colour_match)
        assert out.shape == source.shape and out.dtype == source.dtype
        assert torch.equal(out[alpha == 0], source[alpha == 0])
        if colour_match == "off":
            assert torch.equal(out[alpha == 1], edit[alpha == 1]), "the repainted region is the edit's"
        elif colour_match == "mean":
            shown = blend.match_colours(source, edit, alpha, band, "mean")
            assert torch.allclose(out[alpha == 1], shown[alpha == 1], atol=1e-5), "... the colour-matched edit's"
        assert out.min() >= 0 and out.max() <= 1


def test_a_4096x3072_source_is_kept_outside_the_band():
    source, edit = torch.rand(3072, 4096, 3), torch.rand(3072, 4096, 3)
    mask = torch.zeros(3072, 4096)
    mask[1500:1620, 2000:2090] = 1
    mask[3000:, 4050:] = 1  # and a second region in the corner
    alpha = torch.zeros(3072, 4096)  # the feather is local: made around each region only, as Stitch does
    for rows, cols in ((slice(1400, 1720), slice(1900, 2190)), (slice(2900, 3072), slice(3950, 4096))):
        alpha[rows, cols] = paste_alpha(mask[rows, cols], 16)
    out = blend.paste(source, edit, alpha, 16, "multiband", "local")
    outside = (alpha == 0)[..., None]
    assert torch.equal(torch.where(outside, out, source), source)
    assert not torch.equal(out, source)


def test_source_values_out_of_range_are_kept_too():
    """Exactness does not rest on the values being in 0..1 (the blend itself clamps what it makes)."""
    g = torch.Generator().manual_seed(9)
    source, edit = torch.rand(64, 64, 3, generator=g) * 1.6 - 0.3, torch.rand(64, 64, 3, generator=g)
    mask = torch.zeros(64, 64)
    mask[20:40, 20:40] = 1
    alpha = paste_alpha(mask, 8)
    for mode, colour_match in (("multiband", "off"), ("multiband", "local"), ("linear", "mean")):
        out = blend.paste(source, edit, alpha, 8, mode, colour_match)
        assert torch.equal(out[alpha == 0], source[alpha == 0])


@pytest.mark.parametrize("where", ["top", "bottom-right", "left", "whole-rows"])
def test_masks_touching_the_border(where):
    source, edit = torch.rand(60, 80, 3), torch.rand(60, 80, 3)
    mask = torch.zeros(60, 80)
    region = {"top": (slice(0, 12), slice(20, 50)), "bottom-right": (slice(40, 60), slice(55, 80)),
              "left": (slice(10, 40), slice(0, 9)), "whole-rows": (slice(20, 30), slice(0, 80))}[where]
    mask[region] = 1
    alpha = paste_alpha(mask, 12)
    for mode, colour_match in (("multiband", "local"), ("multiband", "mean"), ("linear", "off")):
        out = blend.paste(source, edit, alpha, 12, mode, colour_match)
        assert torch.equal(out[alpha == 0], source[alpha == 0])


def test_alpha_edge_cases():
    source, edit = torch.rand(40, 40, 3), torch.rand(40, 40, 3)
    nothing = torch.zeros(40, 40)
    for mode, colour_match in (("multiband", "local"), ("linear", "mean")):
        assert torch.equal(blend.paste(source, edit, nothing, 16, mode, colour_match), source), "alpha 0: the source"
        # alpha 1 everywhere: no ring to measure a shift on, so the edit comes back as it is
        assert torch.equal(blend.paste(source, edit, torch.ones(40, 40), 16, mode, colour_match), edit)
    hard = torch.zeros(40, 40)
    hard[10:30, 10:30] = 1
    # an empty band (no feather): multiband is the hard paste, exactly what the feather gives
    assert torch.equal(blend.paste(source, edit, hard, 0, "multiband"), blend.paste(source, edit, hard, 0, "linear"))
    assert torch.equal(blend.paste(source, edit, hard, 0, "linear"), torch.where(hard[..., None] > 0, edit, source))


def test_linear_is_the_current_feather_exactly():
    source, edit = torch.rand(50, 70, 3), torch.rand(50, 70, 3)
    mask = torch.zeros(50, 70)
    mask[10:30, 20:50] = 1
    alpha = paste_alpha(mask, 9)
    a = alpha[..., None]
    assert torch.equal(blend.paste(source, edit, alpha, 9), torch.where(a == 0, source, source * (1 - a) + edit * a))


def test_batches_and_shapes():
    g = torch.Generator().manual_seed(5)
    source, edit = torch.rand(3, 40, 50, 3, generator=g), torch.rand(3, 40, 50, 3, generator=g)
    masks = torch.zeros(3, 40, 50)
    masks[0, 5:15, 5:15] = 1
    masks[1, 20:35, 30:45] = 1  # the third has nothing to paste
    alpha = paste_alpha(masks, 6)
    out = blend.paste(source, edit, alpha, 6, "multiband", "local")
    for i in range(3):
        single = blend.paste(source[i], edit[i], alpha[i], 6, "multiband", "local")
        assert torch.equal(out[i], single), "each item blends as it would alone"
    assert torch.equal(out[2], source[2])
    one_alpha = blend.paste(source, edit, alpha[0], 6, "multiband")
    assert torch.equal(one_alpha[1][alpha[0] == 0], source[1][alpha[0] == 0])
    half = blend.paste(source.half(), edit.half(), alpha, 6, "multiband", "mean")
    assert half.dtype == torch.float16 and torch.equal(half[alpha == 0], source.half()[alpha == 0])


def test_bad_arguments():
    source = torch.rand(10, 10, 3)
    with pytest.raises(ValueError, match="blend must be one of linear, multiband"):
        blend.paste(source, source, torch.zeros(10, 10), 4, "poisson")
    with pytest.raises(ValueError, match="colour_match must be one of"):
        blend.paste(source, source, torch.zeros(10, 10), 4, "linear", "histogram")
    with pytest.raises(ValueError, match="same shape"):
        blend.paste(source, torch.rand(10, 11, 3), torch.zeros(10, 10), 4)
    with pytest.raises(ValueError, match="does not fit"):
        blend.paste(source, source, torch.zeros(10, 12), 4)

"""Reference preprocessing: the documented geometry of each mode, masks, alpha and grayscale."""

from __future__ import annotations

import pytest
import torch

from pbe_core.reference import CLIP_MEAN, CLIP_STD, prepare_references

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def _clip(rgb):
    return torch.tensor([(c - m) / s for c, m, s in zip(rgb, CLIP_MEAN, CLIP_STD)])


def _image(height, width, fill=(0.5, 0.5, 0.5)):
    return torch.tensor(fill).expand(1, height, width, 3).clone()


def _close(pixels, rgb, atol=1e-4):
    return torch.allclose(pixels, _clip(rgb).view(3, *([1] * (pixels.ndim - 1))).expand_as(pixels), atol=atol)


def test_normalisation_is_clips():
    out = prepare_references(_image(50, 50, (0.2, 0.4, 0.6)))
    assert out.shape == (1, 3, 224, 224)
    assert _close(out[0], (0.2, 0.4, 0.6))


def test_stretch_squashes_the_whole_image():
    image = _image(100, 300, RED)
    image[:, :, 150:] = torch.tensor(BLUE)  # right half blue
    out = prepare_references(image, "stretch")[0]
    assert _close(out[:, :, :100], RED) and _close(out[:, :, 124:], BLUE)  # the seam lands at 112


def test_center_crop_keeps_the_middle_of_the_long_side():
    image = _image(100, 300, BLUE)
    image[:, :, 100:200] = torch.tensor(RED)  # middle third red
    out = prepare_references(image, "center_crop")[0]
    assert _close(out[:, :, 4:-4], RED)  # only the middle third survives (edges touch the resampling kernel)
    assert out.shape == (3, 224, 224)


def test_pad_keeps_aspect_and_pads_with_the_background():
    out = prepare_references(_image(100, 300, RED), "pad")[0]
    # 300 -> 224 wide, 100 -> 75 high, centred: rows 74..148 are the image
    assert _close(out[:, 76:147], RED)
    assert _close(out[:, :73], (1, 1, 1)) and _close(out[:, 150:], (1, 1, 1))
    grey = prepare_references(_image(100, 300, RED), "pad", background=0.5)[0]
    assert _close(grey[:, :73], (0.5, 0.5, 0.5))


def test_reference_mask_blanks_the_background_and_crops_to_box_plus_margin():
    image = _image(200, 200, BLUE)
    image[:, 50:100, 60:120] = torch.tensor(RED)
    mask = torch.zeros(200, 200)
    mask[50:100, 60:120] = 1
    out = prepare_references(image, "stretch", mask=mask, margin=10)[0]
    # crop = rows 40..110, cols 50..130 (70 x 80); background inside it turned white, not blue
    expected_crop = torch.ones(1, 70, 80, 3)
    expected_crop[:, 10:60, 10:70] = torch.tensor(RED)
    expected = prepare_references(expected_crop, "stretch")[0]
    assert torch.allclose(out, expected, atol=1e-5)
    assert not (out[2] > _clip(BLUE)[2] - 0.1).all()  # no blue survives at full strength


def test_margin_is_clamped_at_the_image_border():
    image = _image(64, 64, RED)
    mask = torch.zeros(64, 64)
    mask[0:10, 54:64] = 1
    out = prepare_references(image, "stretch", mask=mask, margin=10)[0]
    expected_crop = torch.ones(1, 20, 20, 3)
    expected_crop[:, :10, 10:] = torch.tensor(RED)
    assert torch.allclose(out, prepare_references(expected_crop, "stretch")[0], atol=1e-5)


def test_alpha_channel_acts_as_the_reference_mask():
    rgba = torch.zeros(1, 120, 90, 4)
    rgba[..., :3] = torch.tensor(BLUE)
    rgba[:, 30:60, 20:50, :3] = torch.tensor(RED)
    rgba[:, 30:60, 20:50, 3] = 1.0
    mask = rgba[0, :, :, 3].clone()
    with_alpha = prepare_references(rgba, "pad")
    with_mask = prepare_references(rgba[..., :3], "pad", mask=mask)
    assert torch.allclose(with_alpha, with_mask)


def test_grayscale_becomes_three_equal_channels():
    gray = torch.rand(2, 40, 60, 1)
    assert torch.allclose(prepare_references(gray), prepare_references(gray.expand(-1, -1, -1, 3)))
    gray_alpha = torch.cat([gray, torch.ones_like(gray)], dim=-1)
    assert torch.allclose(prepare_references(gray_alpha, "pad"), prepare_references(gray, "pad"))


def test_tiny_and_large_references():
    assert _close(prepare_references(_image(1, 1, RED))[0], RED)
    assert prepare_references(torch.rand(1, 2048, 1536, 3), "center_crop").shape == (1, 3, 224, 224)


def test_one_mask_per_reference_in_a_batch():
    images = _image(100, 100, RED).repeat(2, 1, 1, 1)
    masks = torch.zeros(2, 100, 100)
    masks[0, :20, :20] = 1
    masks[1, 50:, 50:] = 1
    out = prepare_references(images, "stretch", mask=masks, margin=0)
    assert _close(out[0], RED) and _close(out[1], RED)  # each crop is its own object only


def test_matches_diffusers_clip_image_processor_on_center_crop():
    transformers = pytest.importorskip("transformers")
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 180), torch.linspace(0, 1, 320), indexing="ij")
    smooth = torch.stack([xx, yy, (xx + yy) / 2], dim=-1)
    uint8 = (smooth * 255).round().to(torch.uint8)
    theirs = processor(images=[uint8.numpy()], return_tensors="pt").pixel_values
    ours = prepare_references(uint8[None].float() / 255, "center_crop")
    # same geometry and normalisation; only resampling details differ (a few 1/255 steps)
    assert (theirs - ours).abs().max() < 0.06


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "fit"}, "preprocess must be one of stretch, center_crop, pad"),
    ({"mask": torch.ones(10, 10)}, "reference mask is 10x10 but the reference is 64x48"),
    ({"mask": torch.zeros(48, 64)}, "reference mask 0 is empty"),
    ({"mask": torch.ones(3, 48, 64)}, "3 reference masks for 2 references"),
    ({"margin": -1}, "margin must be 0 or more"),
])
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prepare_references(torch.rand(2, 48, 64, 3), **kwargs)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match="1 to 4 channels"):
        prepare_references(torch.rand(1, 8, 8, 5))
    with pytest.raises(ValueError, match="NaN"):
        prepare_references(torch.full((1, 8, 8, 3), float("nan")))


def test_input_is_not_modified():
    image = torch.rand(1, 30, 40, 4)
    mask = torch.rand(30, 40)
    before = image.clone(), mask.clone()
    prepare_references(image, "pad", mask=mask)
    assert torch.equal(image, before[0]) and torch.equal(mask, before[1])

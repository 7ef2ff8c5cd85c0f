"""The seamless paste-back in a real ComfyUI: the Sampler's blend, blend_mode and color_match reach Paste Back
(in the expanded graph and from Python alike), a multi-band blend with a colour match removes a VAE-like
colour seam from a real graph's edit, pixels outside the mask and its band stay the source's on odd sizes,
and graphs that leave the new inputs out give the image they always gave, bit for bit."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from comfyui import _outputs
from pbe_core import blend
from pbe_core.crop import stitch
from pbe_core.geometry import composite
from pbe_core.masks import grow, paste_alpha
from test_blend import _blur3, seam_gradient
from test_comfy_nodes import _graph, _inputs, _load, _png, _sample, _scene

SEAMLESS = {"blend": 16, "blend_mode": "multiband", "color_match": "local"}
OLD_SAMPLER_INPUTS = {"model", "vae", "positive", "negative", "source", "mask", "seed", "steps", "cfg", "sampler_name",
                      "scheduler", "denoise"}


def _execute(executor, graph, name, wanted):
    executor.execute(graph, name, {}, wanted)
    assert executor.success, [data for event, data in executor.status_messages if event == "execution_error"]
    return {node_id: _outputs(executor, node_id) for node_id in wanted}


# ------------------------------------------------------------------------------------------ the options reach the paste


def test_the_blend_options_reach_the_paste_in_the_graph_and_from_python(comfy):
    """An odd size (70x54, padded to 72x56 for the model): the expanded graph's image is the Python path's, and
    both are the pbe_core blend of the decoded edit, not the plain feather."""
    source, mask, reference = _scene(comfy, height=70, width=54, box=(10, 20, 40, 52), seed=61)
    options = {"blend": 6, "blend_mode": "multiband", "color_match": "local"}
    out = comfy.run(_graph(source, mask, reference, seed=9, steps=2, **options), ["1", "2", "3", "5", "6"])
    model, vae, _encoder = out["1"]
    positive, negative = out["5"]
    original, edit_mask = out["2"][0], out["3"][0]
    image, latent = out["6"]
    with torch.inference_mode():  # as the executor runs nodes
        python_image, python_latent = comfy.node("PaintByExampleSampler")().sample(
            model, vae, positive, negative, original, edit_mask, 9, 2, 5.0, "ddim", "ddim_uniform", 1.0, **options)
        decoded = vae.decode(latent["samples"])[:, :70, :54, :3]
    assert torch.equal(python_latent["samples"], latent["samples"]) and torch.equal(python_image, image)
    alpha = paste_alpha(edit_mask, 6)
    assert torch.equal(image, blend.paste(original, decoded, alpha, 6, "multiband", "local"))
    assert not torch.equal(image, composite(original, decoded, alpha)), "not the linear feather"
    assert torch.equal(image[alpha == 0], original[alpha == 0])


def test_new_blend_settings_rerun_only_paste_back(comfy, monkeypatch):
    """The Sampler hands the settings to its Paste Back node: a change of blend settings alone is served
    from ComfyUI's cache up to KSampler (no new encode, no new sampling) and only Paste Back runs again."""
    ran = []
    watched = [node_id for node_id in comfy.pack_classes() if node_id != "PaintByExampleSampler"] + ["KSampler"]
    for node_id in watched:  # every node the Sampler may expand into, whatever its encode steps are
        cls = comfy.node(node_id)
        plain = getattr(cls, cls.FUNCTION)
        monkeypatch.setattr(cls, cls.FUNCTION, lambda self, *a, _plain=plain, _id=node_id, **k: ran.append(_id)
                            or _plain(self, *a, **k))
    source, mask, reference = _scene(comfy, seed=62)
    executor = comfy.execution.PromptExecutor(comfy.server)
    first = _execute(executor, _graph(source, mask, reference, seed=4, steps=2), "blend-0", ["6"])["6"][0]
    assert ran[-2:] == ["KSampler", "PaintByExamplePasteBack"] and len(ran) > 2, ran
    ran.clear()
    second = _execute(executor, _graph(source, mask, reference, seed=4, steps=2, **SEAMLESS), "blend-1", ["6"])
    assert ran == ["PaintByExamplePasteBack"]
    assert not torch.equal(second["6"][0], first), "the new settings changed the paste"
    assert torch.equal(second["6"][1]["samples"], _outputs(executor, "6")[1]["samples"])


# ------------------------------------------------------------------------------------------ the seam


H, W = 96, 128
MASK_BOX = (40, 32, 88, 64)  # x0, y0, x1, y1: 48 x 32, on the 8-pixel grid


def _scene_with_a_vae_like_round_trip(comfy, seed):
    """A smooth photo-like source with a little grain, as an 8-bit PNG; returns its name, the mask's, and the
    source as LoadImage gives it (the truth), with its smooth part."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g) * 0.6 + 0.2
    smooth = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0].movedim(0, -1)
    grain = 0.03 * torch.randn(H, W, 3, generator=g)
    pixels = ((smooth + grain).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    mask = np.zeros((H, W), dtype=np.uint8)
    x0, y0, x1, y1 = MASK_BOX
    mask[y0:y1, x0:x1] = 255
    tag = f"vae_like_{seed}"
    truth = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    return _png(comfy, f"{tag}.png", pixels), _png(comfy, f"{tag}_mask.png", mask), truth, smooth


def _shift(kind):
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    if kind == "constant":
        return torch.tensor([0.05, -0.03, 0.04]).expand(H, W, 3)
    return 0.05 * torch.stack([torch.sin(yy / 20), torch.cos(xx / 25), torch.sin((xx + yy) / 30)], -1)


def _stand_in_a_vae_like_decoder(monkeypatch, truth, smooth, shift, painted_region):
    """The tiny random VAE reconstructs nothing, so its decoder is wrapped: what a trained VAE gives back for the
    pixels it should keep (the source colour-shifted, its grain softened, plus a little noise of its own) and,
    well inside the mask, what the tiny model painted."""
    vae_class = importlib.import_module("comfy.sd").VAE
    real_decode = vae_class.decode
    noise = 0.005 * torch.randn(H, W, 3, generator=torch.Generator().manual_seed(99))
    round_trip = (smooth + shift + _blur3(truth - smooth) + noise).clamp(0, 1)

    def decode(self, samples, *args, **kwargs):
        painted = real_decode(self, samples, *args, **kwargs)
        assert painted.shape[1:3] == (H, W)
        return torch.where(painted_region[..., None], painted, round_trip.to(painted.dtype))

    monkeypatch.setattr(vae_class, "decode", decode)


@pytest.mark.parametrize("shift", ["constant", "varying"])
def test_multiband_and_colour_match_remove_a_vae_like_seam_in_a_real_graph(comfy, monkeypatch, report, shift):
    source, mask_file, truth, smooth = _scene_with_a_vae_like_round_trip(comfy, seed=63)
    reference = _png(comfy, "vae_like_reference.png", np.full((50, 40, 3), 90, dtype=np.uint8))
    mask = torch.zeros(H, W)
    x0, y0, x1, y1 = MASK_BOX
    mask[y0:y1, x0:x1] = 1
    # the tiny model's own paint, 8 px inside the edge: the seam measure (a 2x5 px low-pass) never reaches it
    _stand_in_a_vae_like_decoder(monkeypatch, truth, smooth, _shift(shift), grow(mask, -8) > 0)
    executor = comfy.execution.PromptExecutor(comfy.server)
    settings = {"linear feather": {"blend": 16},
                "multiband + local colour match": SEAMLESS,
                "multiband + mean colour match": {**SEAMLESS, "color_match": "mean"}}
    images = {}
    for name, options in settings.items():
        graph = _graph(source, mask_file, reference, seed=5, steps=1, **options)
        out = _execute(executor, graph, f"seam-{shift}-{name}", ["2", "6"])
        assert torch.equal(out["2"][0][0], truth)
        images[name] = out["6"][0][0]
    alpha = paste_alpha(mask, 16)
    for image in images.values():
        assert torch.equal(image[alpha == 0], truth[alpha == 0]), "outside the mask and its band: the source's"
    seams = {name: seam_gradient(image, truth, mask, 16) for name, image in images.items()}
    linear = seams["linear feather"]
    report(f"seam gradient in a graph (tiny model, VAE-like {shift} colour shift, band 16): "
           + ", ".join(f"{name} {value:.5f} ({value / linear:.2f}x)" for name, value in seams.items()))
    assert linear > 5e-4, "the scene has a visible seam to remove"
    assert seams["multiband + local colour match"] <= 0.5 * linear
    if shift == "constant":  # one offset per channel is enough for an even cast
        assert seams["multiband + mean colour match"] <= 0.5 * linear


# ------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize(("height", "width", "options"), [
    (70, 54, SEAMLESS),
    (33, 97, {"blend": 7, "blend_mode": "multiband", "color_match": "mean"}),
    (33, 97, {"blend": 0, "blend_mode": "multiband", "color_match": "local"}),
    (70, 54, {"blend": 5, "blend_mode": "linear", "color_match": "local"}),
], ids=["70x54-band16-multiband-local", "33x97-band7-multiband-mean", "33x97-band0-local", "70x54-band5-linear-local"])
def test_outside_the_mask_and_its_band_the_sampler_keeps_the_source_on_odd_sizes(comfy, height, width, options):
    model, vae, encoder = _load(comfy)
    box = (width - 20, height - 16, width, height)  # touches the bottom-right corner, in the padded cells
    source, mask, reference = _inputs(height, width, box, seed=height)
    mask[0, 2:9, 3:12] = 0.3  # and a soft patch, pasted by its own value
    image, latent = _sample(comfy, model, vae, encoder, source, mask, reference, **options)
    assert image.shape == source.shape
    alpha = paste_alpha(mask, options["blend"])
    assert torch.equal(image[alpha == 0], source[alpha == 0])
    decoded = vae.decode(latent["samples"])[:, :height, :width, :3]
    assert torch.equal(image, blend.paste(source, decoded, alpha, options["blend"], options["blend_mode"],
                                          options["color_match"]))


# ------------------------------------------------------------------------------------------ defaults unchanged


def test_an_old_sampler_prompt_gives_the_image_it_always_gave(comfy):
    """A prompt written before the new inputs (no noise_mask, blend, blend_mode or color_match): the decoded edit
    over the source through the mask's own alpha (the composite the Sampler always made), bit for bit, and the same
    as spelling the defaults out."""
    source, mask, reference = _scene(comfy, height=70, width=54, box=(10, 20, 40, 52), seed=64)
    old = _graph(source, mask, reference, seed=2, steps=2)
    assert set(old["6"]["inputs"]) == OLD_SAMPLER_INPUTS
    executor = comfy.execution.PromptExecutor(comfy.server)
    out = _execute(executor, old, "old-prompt", ["1", "2", "3", "6"])
    vae, (original,), (edit_mask,) = out["1"][1], out["2"][:1], out["3"]
    image, latent = out["6"]
    with torch.inference_mode():
        decoded = vae.decode(latent["samples"])[:, :70, :54, :3]
    assert torch.equal(image, composite(original, decoded, paste_alpha(edit_mask, 0)))
    explicit = _graph(source, mask, reference, seed=2, steps=2, noise_mask=True, blend=0, blend_mode="linear",
                      color_match="off")
    assert torch.equal(_execute(executor, explicit, "explicit-defaults", ["6"])["6"][0], image)


def test_an_old_paste_back_and_stitch_give_what_they_always_gave(comfy):
    model, vae, encoder = _load(comfy)
    source, mask, reference = _inputs(64, 96, (24, 16, 72, 48), seed=65)
    mask[0, 8:14, 8:20] = 0.4
    _image, latent = _sample(comfy, model, vae, encoder, source, mask, reference)
    decoded = vae.decode(latent["samples"])[..., :3]
    pasted = comfy.node("PaintByExamplePasteBack")().paste(vae, latent, source, mask, 12)[0]
    assert torch.equal(pasted, composite(source, decoded, paste_alpha(mask, 12)))

    large = torch.rand(1, 300, 420, 3, generator=torch.Generator().manual_seed(66))
    large_mask = torch.zeros(1, 300, 420)
    large_mask[:, 100:160, 150:230] = 1
    crop_info, cropped, _cropped_mask = comfy.node("PaintByExampleCrop")().crop(large, large_mask, 2.0, 128, 16)
    edited = torch.rand_like(cropped)
    (stitched,) = comfy.node("PaintByExampleStitch")().stitch(crop_info, edited)
    assert torch.equal(stitched[0], stitch(large[0], edited[0], large_mask[0], crop_info.boxes[0], 16))
    (multiband,) = comfy.node("PaintByExampleStitch")().stitch(crop_info, edited, "multiband")
    assert torch.equal(multiband[0], stitch(large[0], edited[0], large_mask[0], crop_info.boxes[0], 16, "multiband"))
    assert not torch.equal(multiband, stitched)


# ------------------------------------------------------------------------------------------ contract and errors


def test_the_new_inputs_are_optional_with_todays_defaults(comfy):
    for node_id, names in (("PaintByExampleSampler", ("blend", "blend_mode", "color_match")),
                           ("PaintByExamplePasteBack", ("blend_mode", "color_match")),
                           ("PaintByExampleStitch", ("blend_mode",))):
        spec = comfy.node(node_id).INPUT_TYPES()
        optional = spec["optional"]
        for name in names:
            assert name in optional and name not in spec["required"], f"{node_id}.{name} is optional"
        expected = {"blend": 0, "blend_mode": "linear", "color_match": "off"}
        for name in names:
            assert optional[name][1]["default"] == expected[name]
        if "blend_mode" in names:
            assert optional["blend_mode"][0] == ["linear", "multiband"]
            assert "blend" in optional["blend_mode"][1]["tooltip"] and "texture" in optional["blend_mode"][1]["tooltip"]
        if "color_match" in names:
            assert optional["color_match"][0] == ["off", "mean", "local"]
            assert "without a blend band" in optional["color_match"][1]["tooltip"]
    assert "blend" in comfy.node("PaintByExamplePasteBack").INPUT_TYPES()["required"], "still where it was"


def test_bad_blend_options_name_the_input(comfy):
    model, vae, encoder = _load(comfy)
    source, mask, reference = _inputs(seed=67)
    latent = {"samples": torch.zeros(1, 4, 8, 12)}
    paste = comfy.node("PaintByExamplePasteBack")().paste
    with pytest.raises(ValueError, match="blend_mode: 'poisson' is not one of linear, multiband"):
        paste(vae, latent, source, mask, 8, "poisson")
    with pytest.raises(ValueError, match="color_match: 'histogram' is not one of off, mean, local"):
        paste(vae, latent, source, mask, 8, "linear", "histogram")
    with pytest.raises(ValueError, match="blend: -1 is out of range"):
        _sample(comfy, model, vae, encoder, source, mask, reference, blend=-1)
    with pytest.raises(ValueError, match="color_match: 'lab' is not one of"):
        _sample(comfy, model, vae, encoder, source, mask, reference, color_match="lab")
    crop_info, cropped, _ = comfy.node("PaintByExampleCrop")().crop(source, mask, 2.0, 64, 4)
    with pytest.raises(ValueError, match="blend_mode: 'laplace' is not one of linear, multiband"):
        comfy.node("PaintByExampleStitch")().stitch(crop_info, cropped, "laplace")
    graph = _graph(*_scene(comfy, seed=68), blend_mode="poisson")
    valid, _error, _outputs, node_errors = comfy.validate(graph)
    assert not valid and "blend_mode" in str(node_errors), "the API prompt is refused before it runs"

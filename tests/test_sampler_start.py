"""Where sampling starts: at denoise 1 the masked region starts from pure noise, as in the authors'
inference (ComfyUI starts from noise * sigma + latent, so the latent must be 0 there); below 1 it
starts from the source, re-noised. And the Sampler equals core's nodes wired as docs/guide.md shows."""

from __future__ import annotations

import importlib

import pytest
import torch

from test_comfy_nodes import _graph, _load, _scene

LATENT_SCALE = 0.18215


def _prepare(comfy, vae, encoder, source, mask, noise_mask, start):
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    return comfy.node("PaintByExampleInpaintConditioning")().prepare(positive, negative, vae, source, mask,
                                                                   noise_mask, start)


def _counted_encodes(monkeypatch):
    vae_class = importlib.import_module("comfy.sd").VAE
    encode, calls = vae_class.encode, []
    monkeypatch.setattr(vae_class, "encode", lambda self, pixels: calls.append(1) or encode(self, pixels))
    return calls


def test_start_latent_without_noise_mask_is_all_zeros(comfy, monkeypatch):
    _model, vae, encoder = _load(comfy)
    source, mask = torch.rand(1, 64, 96, 3), torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1
    encodes = _counted_encodes(monkeypatch)
    _positive, _negative, latent = _prepare(comfy, vae, encoder, source, mask, False, "noise")
    assert latent["samples"].shape == (1, 4, 8, 12) and not torch.count_nonzero(latent["samples"])
    assert "noise_mask" not in latent
    assert len(encodes) == 1, "only the masked source is encoded: nothing of the source is in the start"


def test_start_latent_with_noise_mask_is_zero_only_where_the_sampler_repaints_in_full(comfy):
    sampler_helpers = importlib.import_module("comfy.sampler_helpers")
    _model, vae, encoder = _load(comfy)
    source, mask = torch.rand(1, 64, 96, 3), torch.zeros(1, 64, 96)
    mask[:, 12:44, 20:68] = 1  # off the 8-pixel grid: some cells on the edge are partly masked
    _positive, _negative, latent = _prepare(comfy, vae, encoder, source, mask, True, "noise")
    samples, source_latent = latent["samples"], vae.encode(source)
    denoise_mask = sampler_helpers.prepare_mask(latent["noise_mask"], samples.shape, "cpu")  # the sampler's own
    full, partial = denoise_mask == 1, (denoise_mask > 0) & (denoise_mask < 1)
    assert full.any() and partial.any()
    assert not torch.count_nonzero(samples[full]), "fully repainted cells start from pure noise"
    assert torch.equal(samples[~full], source_latent[~full]), "held and edge cells keep the source's latent"
    cells = torch.nn.functional.avg_pool2d(mask[:, None], 8)[:, 0]  # share of each 8x8 block that is masked
    assert (cells[0] == 0).any() and torch.equal(samples[0][:, cells[0] == 0], source_latent[0][:, cells[0] == 0])


def test_start_latent_from_the_source_below_denoise_1(comfy):
    _model, vae, encoder = _load(comfy)
    source, mask = torch.rand(1, 64, 96, 3), torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1
    for noise_mask in (True, False):
        _positive, _negative, latent = _prepare(comfy, vae, encoder, source, mask, noise_mask, "source")
        assert torch.equal(latent["samples"], vae.encode(source))


@pytest.mark.parametrize("noise_mask", [True, False])
def test_the_unet_first_sees_pure_noise_in_the_masked_region(comfy, noise_mask):
    """What the Sampler hands the UNet first at denoise 1: the noise its seed gives, scaled, and
    nothing of the object being replaced; with a noise mask the rest is the source plus noise."""
    model, vae, encoder = _load(comfy)
    source, mask = torch.rand(1, 64, 96, 3), torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1
    first = []

    def spy(apply, args):
        if not first:
            first.append(args["input"][:1].clone())
        return apply(args["input"], args["timestep"], **args["c"])

    spied = model.clone()
    spied.set_model_unet_function_wrapper(spy)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    comfy.node("PaintByExampleSampler")().sample(spied, vae, positive, negative, source, mask, 5, 2, 5.0, "euler",
                                                 "simple", 1.0, noise_mask=noise_mask)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    noise = importlib.import_module("comfy.sample").prepare_noise(torch.zeros(1, 4, 8, 12), 5)
    pure = noise * (1 + sigma ** 2) ** 0.5  # ComfyUI's full-denoise start, as diffusers' init_noise_sigma
    masked = torch.zeros(1, 4, 8, 12, dtype=torch.bool)
    masked[..., 2:6, 3:9] = True
    assert torch.allclose(first[0][masked], pure[masked], rtol=0, atol=1e-4)
    if not noise_mask:
        assert torch.allclose(first[0], pure, rtol=0, atol=1e-4), "the whole latent starts from pure noise"
    else:
        # ComfyUI holds the unmasked cells at noise * sigma + the source's latent
        held = noise * sigma + vae.encode(source) * LATENT_SCALE
        assert torch.allclose(first[0][~masked], held[~masked], rtol=0, atol=1e-4), "unmasked: the source + noise"


def _core_route(noise_mask: bool) -> dict:
    """The core nodes that give the Sampler's start (README; the workflow "Paint-by-Example - with core
    KSampler nodes"): the latent of InpaintModelConditioning with 0 in the mask (LatentMultiply 0,
    then LatentCompositeMasked with the mask; without a noise mask, the zeros alone)."""
    return {
        "10": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["5", 0], "negative": ["5", 1], "vae": ["1", 1], "pixels": ["2", 0], "mask": ["3", 0],
            "noise_mask": noise_mask}},
        "14": {"class_type": "LatentMultiply", "inputs": {"samples": ["10", 2], "multiplier": 0.0}},
        "15": {"class_type": "LatentCompositeMasked", "inputs": {
            "destination": ["10", 2], "source": ["14", 0], "x": 0, "y": 0, "resize_source": False,
            "mask": ["3", 0]}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "positive": ["10", 0], "negative": ["10", 1],
            "latent_image": ["15", 0] if noise_mask else ["14", 0], "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 1]}},
        "13": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": ["2", 0], "source": ["12", 0], "x": 0, "y": 0, "resize_source": False,
            "mask": ["3", 0]}},
        "16": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
    }


@pytest.mark.parametrize("noise_mask", [True, False])
def test_same_result_as_the_documented_core_nodes_route(comfy, noise_mask):
    source, mask, reference = _scene(comfy)  # a mask on the 8-pixel grid
    graph = _graph(source, mask, reference, steps=3, noise_mask=noise_mask)
    graph.update(_core_route(noise_mask))
    out = comfy.run(graph, ["2", "3", "6", "11", "13"])
    ours_image, ours_latent = out["6"]
    assert torch.equal(ours_latent["samples"], out["11"][0]["samples"])
    edit = out["3"][0][0] > 0.5
    assert torch.equal(ours_image[0][edit], out["13"][0][0][edit])
    assert torch.equal(ours_image[0][~edit], out["2"][0][0][~edit])


def test_the_core_route_with_the_source_in_its_start_differs(comfy):
    """The control for the test above: core's plain InpaintModelConditioning -> KSampler (the source's
    latent under the noise) does not give the Sampler's edit."""
    source, mask, reference = _scene(comfy)
    graph = _graph(source, mask, reference, steps=3, noise_mask=True)
    graph.update(_core_route(True))
    graph["11"]["inputs"]["latent_image"] = ["10", 2]
    out = comfy.run(graph, ["6", "11"])
    assert (out["6"][1]["samples"] - out["11"][0]["samples"]).abs().max() > 1e-2


def test_the_core_nodes_route_workflow_is_wired_as_tested():
    """The example workflow shows the route the test above checks."""
    import json
    from pathlib import Path

    api_file = Path(__file__).resolve().parents[1] / "workflows" / "api" / "Paint-by-Example - with core KSampler nodes.json"
    prompt = json.loads(api_file.read_text())
    by_class = {node["class_type"]: (node_id, node["inputs"]) for node_id, node in prompt.items()}
    imc, imc_inputs = by_class["InpaintModelConditioning"]
    zeros, zeros_inputs = by_class["LatentMultiply"]
    composite, composite_inputs = by_class["LatentCompositeMasked"]
    _ksampler, ksampler_inputs = by_class["KSampler"]
    assert imc_inputs["noise_mask"] is True and zeros_inputs == {"samples": [imc, 2], "multiplier": 0.0}
    assert composite_inputs["destination"] == [imc, 2] and composite_inputs["source"] == [zeros, 0]
    assert composite_inputs["mask"] == imc_inputs["mask"] and not composite_inputs["resize_source"]
    assert ksampler_inputs["latent_image"] == [composite, 0] and ksampler_inputs["denoise"] == 1.0

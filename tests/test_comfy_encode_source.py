"""Encode Source and Attach Source: Inpaint Conditioning in two halves, so that the VAE encode of the
source does not depend on the exemplar (a new reference re-runs only Encode and Attach Source; the
counts are in test_comfy_lean_and_fast.py). Together they give exactly what Inpaint Conditioning gives.
Source Latent, the source's own encode, does not depend on the mask either; wired into Encode Source
it gives exactly what Encode Source gives alone."""

from __future__ import annotations

import pytest
import torch

from test_comfy_nodes import _graph, _load, _scene

NODES = {
    "PaintByExampleEncodeSource": ({"vae", "source", "mask", "noise_mask", "start"}, ("LATENT", "LATENT")),
    "PaintByExampleAttachSource": ({"positive", "negative", "masked_source"}, ("CONDITIONING", "CONDITIONING")),
    "PaintByExampleSourceLatent": ({"vae", "source"}, ("LATENT",)),
}
OPTIONAL = {"PaintByExampleEncodeSource": {"source_latent"}}


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_contract_tooltips_and_descriptions(comfy, node_id):
    cls = comfy.node(node_id)
    names, outputs = NODES[node_id]
    inputs = cls.INPUT_TYPES()["required"]
    optional = cls.INPUT_TYPES().get("optional", {})
    assert set(inputs) == names and set(optional) == OPTIONAL.get(node_id, set())
    assert cls.RETURN_TYPES == outputs and cls.DESCRIPTION.strip()
    assert len(cls.OUTPUT_TOOLTIPS) == len(outputs) and all(t.strip() for t in cls.OUTPUT_TOOLTIPS)
    assert all(options[1]["tooltip"].strip() for options in (*inputs.values(), *optional.values()))


def _prepare(comfy, noise_mask: bool, start: str):
    _model, vae, encoder = _load(comfy)
    g = torch.Generator().manual_seed(5)
    source, mask = torch.rand(2, 60, 92, 3, generator=g), torch.zeros(1, 60, 92)  # padded to 64x96 inside
    mask[:, 12:44, 20:68] = 1
    mask[:, 44:48, 20:68] = 0.3  # a soft band: not repainted
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3, generator=g),
                                                                     "stretch")
    whole = comfy.node("PaintByExampleInpaintConditioning")().prepare(positive, negative, vae, source, mask,
                                                                    noise_mask, start)
    masked, latent = comfy.node("PaintByExampleEncodeSource")().encode(vae, source, mask, noise_mask, start)
    halves = (*comfy.node("PaintByExampleAttachSource")().attach(positive, negative, masked), latent)
    return whole, halves, masked


@pytest.mark.parametrize("noise_mask, start", [(True, "noise"), (False, "noise"), (True, "source")])
def test_the_two_halves_give_what_inpaint_conditioning_gives(comfy, noise_mask, start):
    whole, halves, _masked = _prepare(comfy, noise_mask, start)
    for ours, theirs in zip(whole[:2], halves[:2]):  # positive, negative
        assert len(ours) == len(theirs) == 1
        (tensor, options), (other_tensor, other_options) = ours[0], theirs[0]
        assert torch.equal(tensor, other_tensor) and options.keys() == other_options.keys()
        for key in ("concat_latent_image", "concat_mask"):
            assert torch.equal(options[key], other_options[key])
    assert whole[2].keys() == halves[2].keys()
    assert all(torch.equal(whole[2][key], halves[2][key]) for key in whole[2])


def test_attach_source_refuses_a_latent_that_is_not_a_masked_source(comfy):
    _whole, halves, masked = _prepare(comfy, True, "noise")
    attach = comfy.node("PaintByExampleAttachSource")()
    positive, negative = comfy.node("PaintByExampleEncode")().encode(_load(comfy)[2], torch.rand(1, 40, 40, 3),
                                                                     "stretch")
    start = halves[2]["samples"]  # Encode Source's other output, what sampling starts from
    with pytest.raises(ValueError, match="masked_source: expected the masked_source output"):
        attach.attach(positive, negative, {"samples": start})
    with pytest.raises(ValueError, match="masked_source: this LATENT's mask does not match its size"):
        attach.attach(positive, negative, {"samples": start, "noise_mask": torch.ones(2, 1, 32, 32)})
    with pytest.raises(ValueError, match="positive and negative are swapped"):
        attach.attach(negative, positive, masked)


def test_wired_by_hand_they_edit_as_the_sampler_does(comfy):
    """Encode Source -> Attach Source -> core's KSampler -> Paste Back, wired in a graph, is the Sampler's
    edit bit for bit (the Sampler expands into exactly these nodes)."""
    source, mask, reference = _scene(comfy, seed=71)
    graph = _graph(source, mask, reference, seed=5)
    graph.update({
        "20": {"class_type": "PaintByExampleEncodeSource", "inputs": {
            "vae": ["1", 1], "source": ["2", 0], "mask": ["3", 0], "noise_mask": True, "start": "noise"}},
        "21": {"class_type": "PaintByExampleAttachSource", "inputs": {
            "positive": ["5", 0], "negative": ["5", 1], "masked_source": ["20", 0]}},
        "22": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 5, "steps": 3, "cfg": 5.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
            "positive": ["21", 0], "negative": ["21", 1], "latent_image": ["20", 1], "denoise": 1.0}},
        "23": {"class_type": "PaintByExamplePasteBack", "inputs": {
            "vae": ["1", 1], "latent": ["22", 0], "source": ["2", 0], "mask": ["3", 0], "blend": 0}},
        "24": {"class_type": "PreviewImage", "inputs": {"images": ["23", 0]}},
    })
    out = comfy.run(graph, ["6", "22", "23"])
    assert torch.equal(out["6"][1]["samples"], out["22"][0]["samples"])
    assert torch.equal(out["6"][0], out["23"][0])


def test_encode_source_checks_its_inputs(comfy):
    """Values sent through the API skip the UI's lists; masks are checked as everywhere else."""
    _model, vae, _encoder = _load(comfy)
    encode = comfy.node("PaintByExampleEncodeSource")().encode
    source, mask = torch.rand(1, 64, 64, 3), torch.zeros(1, 64, 64)
    with pytest.raises(ValueError, match="mask: mask 0 is empty"):
        encode(vae, source, mask, True, "noise")
    mask[:, 16:48, 16:48] = 1
    with pytest.raises(ValueError, match="start: 'sideways' is not one of noise, source"):
        encode(vae, source, mask, True, "sideways")
    with pytest.raises(ValueError, match="source: the image contains NaN"):
        encode(vae, torch.full((1, 64, 64, 3), float("nan")), mask, True, "noise")


def _source_and_masks(masks: int, sources: int, seed: int = 8, height: int = 60, width: int = 92):
    g = torch.Generator().manual_seed(seed)
    source, mask = torch.rand(sources, height, width, 3, generator=g), torch.zeros(masks, height, width)
    for i in range(masks):
        mask[i, 10 + 4 * i:40 + 4 * i, 16:60 + 6 * i] = 1
    mask[:, 44:48, 20:68] = 0.6  # a soft band that is repainted
    return source, mask


@pytest.mark.parametrize("noise_mask, start", [(True, "noise"), (False, "noise"), (True, "source")])
@pytest.mark.parametrize("masks, sources, width", [(1, 1, 92), (1, 2, 92), (3, 1, 92), (3, 1, 96), (2, 2, 96)])
def test_a_wired_source_latent_gives_what_encode_source_gives_alone(comfy, noise_mask, start, masks, sources, width):
    """Every batch rule (one mask for all sources, several masks on one source, one each), every
    start, padded or not: with Source Latent wired, Encode Source's two outputs are the same
    tensors bit for bit."""
    _model, vae, _encoder = _load(comfy)
    source, mask = _source_and_masks(masks, sources, height=64 if width == 96 else 60, width=width)
    encode = comfy.node("PaintByExampleEncodeSource")().encode
    (source_latent,) = comfy.node("PaintByExampleSourceLatent")().encode(vae, source)
    assert source_latent["samples"].shape == (sources, 4, 64 // 8, 96 // 8)  # padded as the edit pads
    alone, wired = encode(vae, source, mask, noise_mask, start), encode(vae, source, mask, noise_mask, start,
                                                                       source_latent)
    for ours, theirs in zip(alone, wired):
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    if noise_mask:  # outside the mask the start latent is the source's own latent, one copy per mask
        assert not torch.equal(wired[1]["samples"], torch.zeros_like(wired[1]["samples"]))
        assert wired[1]["samples"].shape[0] == max(masks, sources)


def test_source_latent_is_checked_against_the_source(comfy):
    """A source latent of another image (a wiring mistake) would blend two pictures: refused, as is a
    LATENT that Source Latent did not make."""
    _model, vae, _encoder = _load(comfy)
    source, mask = _source_and_masks(1, 1)
    other, _mask = _source_and_masks(1, 1, seed=9)
    encode = comfy.node("PaintByExampleEncodeSource")().encode
    (of_other,) = comfy.node("PaintByExampleSourceLatent")().encode(vae, other)
    with pytest.raises(ValueError, match="source_latent: it was made from a different image"):
        encode(vae, source, mask, True, "noise", of_other)
    with pytest.raises(ValueError, match="source_latent: it was made from a different image"):
        encode(vae, torch.cat([source, source]), mask, True, "noise", of_other)  # a batch of two
    with pytest.raises(ValueError, match="source_latent: expected the output of Paint-by-Example Source Latent"):
        encode(vae, source, mask, True, "noise", {"samples": of_other["samples"]})
    (own,) = comfy.node("PaintByExampleSourceLatent")().encode(vae, source)
    another_vae = {**own, "samples": torch.cat([own["samples"]] * 4, dim=1)}  # a 16-channel VAE's latent
    with pytest.raises(ValueError, match=r"source_latent: it holds latents of \(16, 8, 12\), but this VAE makes"):
        encode(vae, source, mask, True, "noise", another_vae)
    with pytest.raises(ValueError, match="source: the image contains NaN"):
        comfy.node("PaintByExampleSourceLatent")().encode(vae, torch.full((1, 64, 64, 3), float("nan")))
    # Not used when nothing of the source is kept, so not checked either.
    encode(vae, source, mask, False, "noise", of_other)


def test_encode_source_asks_for_its_source_latent_only_when_it_uses_it(comfy):
    """The lazy input: ComfyUI runs a wired Source Latent only when the start latent keeps the source."""
    encode_source = comfy.node("PaintByExampleEncodeSource")()
    wired_not_run = {"source_latent": None}
    assert encode_source.check_lazy_status(True, "noise", **wired_not_run) == ["source_latent"]
    assert encode_source.check_lazy_status(False, "source", **wired_not_run) == ["source_latent"]
    assert encode_source.check_lazy_status(False, "noise", **wired_not_run) == []
    assert encode_source.check_lazy_status(True, "noise") == []  # not wired: it encodes the source itself
    assert encode_source.check_lazy_status(True, "noise", source_latent={"samples": torch.zeros(1)}) == []

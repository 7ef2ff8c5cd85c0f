"""Several exemplars inside a real ComfyUI: regions in one pass, blends, strength, CLIP vision reuse."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from pbe_core.clip_vision import transformers_v4_keys
from test_comfy_nodes import _load

H, W = 64, 96


def _box(x0, y0, x1, y1, batch=1):
    mask = torch.zeros(batch, H, W)
    mask[:, y0:y1, x0:x1] = 1
    return mask


def _encode(comfy, encoder, seed):
    reference = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(seed))
    return comfy.node("PaintByExampleEncode")().encode(encoder, reference, "stretch")


def test_two_exemplars_in_two_regions_in_one_batched_pass(comfy):
    model, vae, encoder = _load(comfy)
    (pos1, neg), (pos2, _) = _encode(comfy, encoder, 1), _encode(comfy, encoder, 2)
    region1, region2 = _box(8, 8, 48, 48), _box(40, 8, 88, 48)  # overlapping in columns 40..47
    edit = _box(8, 8, 88, 56)  # rows 48..55 are edited but in no region
    (positive,) = comfy.node("PaintByExampleRegions")().combine(neg, exemplar_1=pos1, mask_1=region1,
                                                                exemplar_2=pos2, mask_2=region2)
    assert len(positive) == 3  # two regions and the uncovered rest

    codes = [(pos1[0][0][0], 1.0), (pos2[0][0][0], 2.0), (neg[0][0][0], 3.0)]
    calls, seen = [], []

    def unet_stand_in(apply_model, args):
        """Each batch row answers with the code of the context it received, so the sampler's
        combined positive prediction shows, cell by cell, whose context reached it."""
        contexts = args["c"]["c_crossattn"]
        calls.append(contexts.shape[0])
        rows = []
        for context in contexts:
            code = next(c for ref, c in codes if torch.allclose(context[0], ref, atol=1e-5))
            seen.append(code)
            rows.append(torch.full_like(args["input"][0], code))
        return torch.stack(rows)

    def capture(args):
        captured.append(args["cond_denoised"].clone())
        return args["denoised"]

    captured = []
    spied = model.clone()
    spied.set_model_unet_function_wrapper(unet_stand_in)
    spied.set_model_sampler_post_cfg_function(capture)
    source = torch.rand(1, H, W, 3)
    comfy.node("PaintByExampleSampler")().sample(spied, vae, positive, neg, source, edit, 1, 1, 5.0, "ddim",
                                                 "ddim_uniform", 1.0)
    assert calls == [4], "one model call per step, all regions and the negative batched together"
    assert sorted(seen) == [1.0, 2.0, 3.0, 3.0]
    cond = captured[0][0, 0]  # latent cells: 8 x 12; region 1 = columns 1..5, region 2 = columns 5..10
    assert torch.allclose(cond[1:6, 1:5], torch.tensor(1.0)), "region 1 got exemplar 1"
    assert torch.allclose(cond[1:6, 6:11], torch.tensor(2.0)), "region 2 got exemplar 2"
    assert torch.allclose(cond[1:6, 5], torch.tensor(1.5)), "the overlap averages both"
    assert torch.allclose(cond[6, 1:11], torch.tensor(3.0)), "edit cells in no region: no exemplar (uncond)"


def test_regions_run_as_a_graph_with_a_real_model(comfy):
    model, vae, encoder = _load(comfy)
    (pos1, neg), (pos2, _) = _encode(comfy, encoder, 1), _encode(comfy, encoder, 2)
    (positive,) = comfy.node("PaintByExampleRegions")().combine(
        neg, exemplar_1=pos1, mask_1=_box(0, 0, 48, 64), exemplar_2=pos2, mask_2=_box(48, 0, 96, 64))
    assert len(positive) == 2  # the regions cover everything: no background entry
    source = torch.rand(1, H, W, 3)
    edit = _box(16, 16, 80, 48)
    image, _ = comfy.node("PaintByExampleSampler")().sample(model, vae, positive, neg, source, edit, 1, 2, 5.0,
                                                            "ddim", "ddim_uniform", 1.0)
    assert torch.equal(image[0][edit[0] == 0], source[0][edit[0] == 0])


def test_region_errors(comfy):
    _model, _vae, encoder = _load(comfy)
    pos, neg = _encode(comfy, encoder, 1)
    regions = comfy.node("PaintByExampleRegions")()
    with pytest.raises(ValueError, match="mask_3: exemplar_3 and mask_3 go together"):
        regions.combine(neg, exemplar_1=pos, mask_1=_box(0, 0, 8, 8), exemplar_2=pos, mask_2=_box(8, 8, 16, 16),
                        exemplar_3=pos)
    with pytest.raises(ValueError, match="mask_2: it is 32x32 but mask_1 is 96x64"):
        regions.combine(neg, exemplar_1=pos, mask_1=_box(0, 0, 8, 8), exemplar_2=pos, mask_2=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="mask_2: it is empty"):
        regions.combine(neg, exemplar_1=pos, mask_1=_box(0, 0, 8, 8), exemplar_2=pos, mask_2=torch.zeros(1, H, W))


def test_blend_and_strength_endpoints(comfy):
    _model, _vae, encoder = _load(comfy)
    (pos1, neg), (pos2, _) = _encode(comfy, encoder, 1), _encode(comfy, encoder, 2)
    blend = comfy.node("PaintByExampleBlend")().blend
    assert torch.allclose(blend(exemplar_1=pos1, weight_1=1.0, exemplar_2=pos2, weight_2=0.0)[0][0][0], pos1[0][0], atol=1e-6)
    assert torch.allclose(blend(exemplar_1=pos1, weight_1=0.0, exemplar_2=pos2, weight_2=1.0)[0][0][0], pos2[0][0], atol=1e-6)
    mid = blend(exemplar_1=pos1, weight_1=1.0, exemplar_2=pos2, weight_2=1.0)[0][0][0]
    assert torch.allclose(mid, (pos1[0][0] + pos2[0][0]) / 2, atol=1e-6)
    strength = comfy.node("PaintByExampleStrength")().apply
    assert torch.equal(strength(pos1, neg, 0.0)[0][0][0], neg[0][0]), "strength 0 = the unconditional vector"
    assert torch.allclose(strength(pos1, neg, 1.0)[0][0][0], pos1[0][0], atol=1e-6), "strength 1 = the plain exemplar"
    with pytest.raises(ValueError, match="weight: all weights are 0"):
        blend(exemplar_1=pos1, weight_1=0.0, exemplar_2=pos2, weight_2=0.0)
    with pytest.raises(ValueError, match="weight_3: exemplar_3 and weight_3 go together"):
        blend(exemplar_1=pos1, weight_1=1.0, exemplar_2=pos2, weight_2=1.0, exemplar_3=pos1)


def _tiny_clip_vision(comfy, tiny_model, monkeypatch):
    """ComfyUI's own CLIP vision model holding the tiny PbE checkpoint's CLIP tower, in fp32."""
    clip_vision = importlib.import_module("comfy.clip_vision")
    monkeypatch.setattr(importlib.import_module("comfy.cli_args").args, "fp32_text_enc", True)
    config = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 9, "num_attention_heads": 2,
              "patch_size": 14, "image_size": 224, "projection_dim": 768, "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-5, "num_channels": 3, "model_type": "clip_vision_model"}
    path = comfy.scratch / "tiny_clip_vision.json"
    path.write_text(json.dumps(config))
    model = clip_vision.ClipVisionModel(str(path))
    clip = {k[len("transformer."):]: v for k, v in tiny_model.encoder.items() if k.startswith("transformer.")}
    sd = transformers_v4_keys(clip)
    sd["visual_projection.weight"] = torch.randn(768, 128)
    missing, unexpected = model.load_sd(sd)
    assert not missing and not unexpected
    return model


def test_clip_vision_path_equals_paint_by_example_encode(comfy, tiny_model, monkeypatch, report):
    _model, _vae, encoder = _load(comfy)
    clip_vision = _tiny_clip_vision(comfy, tiny_model, monkeypatch)
    # a 224 x 224 reference on the 8-bit grid: both paths see the same pixels (no resampling needed)
    reference = torch.randint(0, 256, (2, 224, 224, 3), generator=torch.Generator().manual_seed(0)) / 255.0
    output = comfy.node("CLIPVisionEncode")().encode(clip_vision, reference, "none")[0]
    positive, negative = comfy.node("PaintByExampleEncodeCLIPVision")().encode(encoder, output)
    direct_positive, direct_negative = comfy.node("PaintByExampleEncode")().encode(encoder, reference, "stretch")
    difference = (positive[0][0] - direct_positive[0][0]).abs().max().item()
    report(f"CLIP-vision path vs PaintByExampleEncode: max |diff| = {difference:.2e}")
    assert positive[0][0].shape == (2, 1, 768) and difference <= 1e-4
    assert torch.equal(negative[0][0], direct_negative[0][0])


def test_clip_vision_of_another_width_is_refused(comfy):
    _model, _vae, encoder = _load(comfy)
    wrong = {"last_hidden_state": torch.randn(1, 257, 1280)}
    with pytest.raises(ValueError, match="clip_vision_output: it comes from a CLIP vision model 1280 wide.*ViT-L/14"):
        comfy.node("PaintByExampleEncodeCLIPVision")().encode(encoder, wrong)


@pytest.mark.parametrize("node_id", ["PaintByExampleRegions", "PaintByExampleBlend", "PaintByExampleStrength",
                                     "PaintByExampleEncodeCLIPVision"])
def test_tooltips_and_descriptions(comfy, node_id):
    cls = comfy.node(node_id)
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    assert cls.DESCRIPTION and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    assert all(options[1]["tooltip"] for options in inputs.values())

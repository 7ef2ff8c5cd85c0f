"""Wiring mistakes get an error, not a quiet wrong edit: the pack marks its conditioning (exemplar,
learned unconditional vector) and refuses what is not, or is in the wrong place; an exemplar that
has passed through core's conditioning nodes is still accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui import ExecutionFailed
from test_comfy_nodes import _graph, _load, _scene, _tiny_controlnet

H, W = 64, 96


@pytest.fixture(scope="module")
def kit(comfy):
    model, vae, encoder = _load(comfy)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    other, _ = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 30, 50, 3), "stretch")
    # what CLIP Text Encode gives: 77 text tokens as wide as the UNet's context, and a pooled output
    text = [[torch.randn(1, 77, 768), {"pooled_output": torch.randn(1, 768)}]]
    source, mask = torch.rand(1, H, W, 3), torch.zeros(1, H, W)
    mask[:, 16:48, 24:72] = 1
    check = comfy.pack("nodes.conditioning_roles").check
    return dict(model=model, vae=vae, encoder=encoder, positive=positive, negative=negative, other=other, text=text,
                source=source, mask=mask, check=check, comfy=comfy)


def _zero_out(comfy, conditioning):
    return comfy.node("ConditioningZeroOut")().zero_out(conditioning)[0]


# (case, positive, negative, the input named first, what the message says)
REFUSED = [
    ("text_prompt_as_positive", lambda k: k["text"], lambda k: k["negative"], "positive",
     "77 tokens, as CLIP Text Encode makes"),
    ("text_prompt_as_negative", lambda k: k["positive"], lambda k: k["text"], "negative",
     "77 tokens, as CLIP Text Encode makes"),
    ("text_prompts_as_both", lambda k: k["text"], lambda k: k["text"], "positive", "Paint-by-Example Encode"),
    ("zero_out_as_negative", lambda k: k["positive"], lambda k: _zero_out(k["comfy"], k["negative"]), "negative",
     "all zeros (ConditioningZeroOut?)"),
    ("zero_out_of_the_exemplar_as_negative", lambda k: k["positive"], lambda k: _zero_out(k["comfy"], k["positive"]),
     "negative", "holds an exemplar"),
    ("zero_out_on_the_positive", lambda k: _zero_out(k["comfy"], k["positive"]), lambda k: k["negative"], "positive",
     "all zeros (ConditioningZeroOut?)"),
    ("positive_and_negative_swapped", lambda k: k["negative"], lambda k: k["positive"], "positive", "swapped"),
    ("exemplar_as_negative", lambda k: k["positive"], lambda k: k["other"], "negative",
     "the negative output of Paint-by-Example Encode"),
    ("unconditional_as_both", lambda k: k["negative"], lambda k: k["negative"], "positive", "no exemplar"),
    ("unconditional_mixed_into_the_positive", lambda k: k["comfy"].node("ConditioningCombine")().combine(
        k["positive"], k["negative"])[0], lambda k: k["negative"], "positive", "Paint-by-Example Regions"),
    ("hand_made_unmarked", lambda k: [[k["positive"][0][0], {}]], lambda k: k["negative"], "positive",
     "not made by a Paint-by-Example node"),
    ("not_a_conditioning", lambda k: [k["positive"][0][0]], lambda k: k["negative"], "positive",
     "expected a CONDITIONING"),
]


@pytest.mark.parametrize(("positive", "negative", "input_name", "message"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_wiring_mistakes_are_refused(kit, positive, negative, input_name, message):
    pos, neg = positive(kit), negative(kit)
    for action in (lambda: kit["check"](pos, neg),
                   lambda: kit["comfy"].node("PaintByExampleSampler")().sample(
                       kit["model"], kit["vae"], pos, neg, kit["source"], kit["mask"], 1, 1, 5.0, "ddim",
                       "ddim_uniform", 1.0),
                   lambda: kit["comfy"].node("PaintByExampleInpaintConditioning")().prepare(
                       pos, neg, kit["vae"], kit["source"], kit["mask"])):
        with pytest.raises(ValueError) as err:
            action()
        assert str(err.value).startswith(f"{input_name}:"), str(err.value)
        assert message in str(err.value), str(err.value)


def _controlnet(kit, positive, negative):
    comfy = kit["comfy"]
    name = _tiny_controlnet(comfy, kit["model"])
    control = comfy.node("ControlNetLoader")().load_controlnet(name)[0]
    return comfy.node("ControlNetApplyAdvanced")().apply_controlnet(positive, negative, control, kit["source"], 1.0,
                                                                    0.0, 1.0)


def _region_mask(x0=0, x1=48):
    mask = torch.zeros(1, H, W)
    mask[:, :, x0:x1] = 1
    return mask


ACCEPTED = [
    ("encode", lambda k: (k["positive"], k["negative"])),
    ("controlnet_apply_advanced", lambda k: _controlnet(k, k["positive"], k["negative"])),
    ("conditioning_set_mask", lambda k: (k["comfy"].node("ConditioningSetMask")().append(
        k["positive"], _region_mask(), "default", 1.0)[0], k["negative"])),
    ("set_timestep_range_and_combine", lambda k: (k["comfy"].node("ConditioningCombine")().combine(
        k["comfy"].node("ConditioningSetTimestepRange")().set_range(k["positive"], 0.0, 0.5)[0],
        k["comfy"].node("ConditioningSetTimestepRange")().set_range(k["other"], 0.5, 1.0)[0])[0], k["negative"])),
    ("regions", lambda k: (k["comfy"].node("PaintByExampleRegions")().combine(
        k["negative"], exemplar_1=k["positive"], mask_1=_region_mask(), exemplar_2=k["other"],
        mask_2=_region_mask(60, 80))[0], k["negative"])),
    ("blend", lambda k: (k["comfy"].node("PaintByExampleBlend")().blend(
        exemplar_1=k["positive"], weight_1=0.7, exemplar_2=k["other"], weight_2=0.3)[0], k["negative"])),
    ("strength", lambda k: (k["comfy"].node("PaintByExampleStrength")().apply(k["positive"], k["negative"], 0.5)[0],
                            k["negative"])),
    ("encode_from_clip_vision", lambda k: k["comfy"].node("PaintByExampleEncodeCLIPVision")().encode(
        k["encoder"], {"last_hidden_state": torch.randn(1, 257, k["encoder"].clip_width)})),
]


@pytest.mark.parametrize("make", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_paint_by_example_conditioning_is_accepted_through_conditioning_nodes(kit, make):
    positive, negative = make(kit)
    kit["check"](positive, negative)
    image, _latent = kit["comfy"].node("PaintByExampleSampler")().sample(
        kit["model"], kit["vae"], positive, negative, kit["source"], kit["mask"], 1, 1, 5.0, "ddim", "ddim_uniform",
        1.0)
    assert image.shape == kit["source"].shape


def test_a_wiring_mistake_in_a_graph_names_the_input_and_the_node(comfy):
    source, mask, reference = _scene(comfy)
    graph = _graph(source, mask, reference)
    graph["6"]["inputs"].update(positive=["5", 1], negative=["5", 0])
    with pytest.raises(ExecutionFailed) as err:
        comfy.run(graph)
    assert "positive:" in err.value.message and "swapped" in err.value.message, err.value.message
    graph = _graph(source, mask, reference)
    graph["8"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["5", 1]}}
    graph["6"]["inputs"]["negative"] = ["8", 0]
    with pytest.raises(ExecutionFailed) as err:
        comfy.run(graph)
    assert "negative:" in err.value.message and "ConditioningZeroOut" in err.value.message, err.value.message


@pytest.mark.parametrize("node", ["sampler", "inpaint_conditioning", "crop"])
def test_a_source_with_nothing_painted_says_so(comfy, node):
    """Load Image gives an empty 64x64 mask for an image with no alpha: name that, not a size mismatch."""
    source, _mask, reference = _scene(comfy)
    rgb = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(comfy.scratch / "input" / "nothing_painted.png")
    graph = _graph(source, _mask, reference)
    graph["2"]["inputs"]["image"] = "nothing_painted.png"
    mask = ["2", 1]  # Load Image's own MASK output
    if node == "sampler":
        graph["6"]["inputs"]["mask"] = mask
    elif node == "inpaint_conditioning":
        graph["6"] = {"class_type": "PaintByExampleInpaintConditioning", "inputs": {
            "positive": ["5", 0], "negative": ["5", 1], "vae": ["1", 1], "source": ["2", 0], "mask": mask,
            "noise_mask": True, "start": "noise"}}
        graph["7"] = {"class_type": "PreviewAny", "inputs": {"source": ["6", 2]}}
    else:
        graph["6"] = {"class_type": "PaintByExampleCrop", "inputs": {
            "source": ["2", 0], "mask": mask, "context": 2.0, "resolution": 256, "blend": 16}}
        graph["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 1]}}
    with pytest.raises(ExecutionFailed) as err:
        comfy.run(graph)
    assert "mask: no mask was painted on the source" in err.value.message, err.value.message

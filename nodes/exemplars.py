"""Several exemplars: regions in one pass, blends, strength, and encoding from a CLIP vision output."""

from __future__ import annotations

import node_helpers
import torch

from ..pbe_core.exemplar_mix import apply_strength, blend_contexts
from ..pbe_core.masks import as_batch
from . import conditioning_roles
from .inputs import check_range, user_error

MAX_EXEMPLARS = 4


def _optional_pairs(first: str, second: str, first_tooltip: str, second_spec) -> dict:
    out = {}
    for i in range(3, MAX_EXEMPLARS + 1):
        out[f"{first}_{i}"] = ("CONDITIONING", {"tooltip": first_tooltip})
        out[f"{second}_{i}"] = second_spec
    return out


def _pairs(kwargs: dict, first: str, second: str) -> list[tuple]:
    """The numbered (exemplar, mask/weight) pairs given, with a clear error for half a pair."""
    pairs = []
    for i in range(1, MAX_EXEMPLARS + 1):
        a, b = kwargs.get(f"{first}_{i}"), kwargs.get(f"{second}_{i}")
        if (a is None) != (b is None):
            missing = f"{second}_{i}" if b is None else f"{first}_{i}"
            raise ValueError(f"{missing}: {first}_{i} and {second}_{i} go together; connect both or neither")
        if a is not None:
            pairs.append((i, a, b))
    return pairs


def _contexts(conditioning, input_name: str) -> torch.Tensor:
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError(f"{input_name}: expected a CONDITIONING from Paint-by-Example Encode")
    return conditioning[0][0]


class PaintByExampleRegions:
    DESCRIPTION = ("Places several exemplars, each in its own region of the edit, in one sampling pass: each "
                   "exemplar's conditioning is limited to its mask (ComfyUI's regional conditioning), all of them are "
                   "batched into one model call per step. Edit pixels outside every region get no exemplar (the "
                   "model's 'no reference' input: plain inpainting); where regions overlap, their predictions are "
                   "averaged, weighted by the mask values.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The regional positive conditioning for the sampler (use the Encode node's negative).",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        exemplar = "The positive of Paint-by-Example Encode for this region's reference."
        mask = ("MASK", {"tooltip": "Where this exemplar goes (at the source's size); the sampler's mask should "
                                    "cover all regions."})
        required = {"negative": ("CONDITIONING", {"tooltip": "The negative of Paint-by-Example Encode (the 'no reference' "
                                                             "input), used where no region is."})}
        for i in (1, 2):
            required[f"exemplar_{i}"] = ("CONDITIONING", {"tooltip": exemplar})
            required[f"mask_{i}"] = mask
        return {"required": required, "optional": _optional_pairs("exemplar", "mask", exemplar, mask)}

    def combine(self, negative, **kwargs):
        pairs = _pairs(kwargs, "exemplar", "mask")
        masks = []
        for i, conditioning, mask in pairs:
            _contexts(conditioning, f"exemplar_{i}")
            with user_error(f"mask_{i}"):
                mask = as_batch(mask, "the mask").clamp(0, 1)
            if masks and mask.shape[-2:] != masks[0].shape[-2:]:
                raise ValueError(f"mask_{i}: it is {mask.shape[-1]}x{mask.shape[-2]} but mask_1 is "
                                 f"{masks[0].shape[-1]}x{masks[0].shape[-2]}; make every region mask at the source's size")
            if not (mask > 0).any():
                raise ValueError(f"mask_{i}: it is empty; paint where exemplar_{i} goes")
            masks.append(mask)
        positive = []
        for (_i, conditioning, _mask), mask in zip(pairs, masks):
            positive += _in_region(conditioning, mask)
        covered = torch.stack([m.amax(dim=0) for m in masks]).amax(dim=0)
        background = (1 - covered)[None]
        if (background > 0).any():  # without it, uncovered pixels would get a zero positive prediction
            _contexts(negative, "negative")
            positive += _in_region(negative, background)  # keeps its role: the unconditional vector, under a mask
        return (positive,)


def _in_region(conditioning, mask: torch.Tensor) -> list:
    """The conditioning limited to a (B, H, W) mask: the values core's Conditioning (Set Mask)
    sets with strength 1 and set_cond_area "default"."""
    return node_helpers.conditioning_set_values(conditioning, {"mask": mask, "set_area_to_bounds": False,
                                                               "mask_strength": 1.0})


class PaintByExampleBlend:
    DESCRIPTION = ("Blends several exemplars into one, with relative weights, in the model's conditioning space: "
                   "e.g. the shape of one reference with a bit of another's look.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The blended exemplar conditioning.",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        exemplar = "The positive of Paint-by-Example Encode for one reference."
        weight = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.05,
                            "tooltip": "Relative weight of this exemplar (weights are normalised to sum to 1)."})
        required = {}
        for i in (1, 2):
            required[f"exemplar_{i}"] = ("CONDITIONING", {"tooltip": exemplar})
            required[f"weight_{i}"] = weight
        return {"required": required, "optional": _optional_pairs("exemplar", "weight", exemplar, weight)}

    def blend(self, **kwargs):
        pairs = _pairs(kwargs, "exemplar", "weight")
        contexts = [_contexts(c, f"exemplar_{i}") for i, c, _w in pairs]
        with user_error("weight"):
            blended = blend_contexts(contexts, [w for _i, _c, w in pairs])
        options = dict(pairs[0][1][0][1])
        return ([[blended, options]],)


class PaintByExampleStrength:
    DESCRIPTION = ("Sets how much the exemplar counts: 0 ignores the reference (the model's 'no reference' "
                   "input), 1 is the exemplar as encoded, above 1 exaggerates it. Independent of cfg, and per "
                   "exemplar.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("positive",)
    OUTPUT_TOOLTIPS = ("The exemplar conditioning at the chosen strength.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "The positive of Paint-by-Example Encode (or a blend)."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative of Paint-by-Example Encode (the model's "
                                                     "'no reference' input)."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.01,
                                   "tooltip": "0: ignore the reference; 1: the exemplar itself; above 1: stronger."}),
        }}

    def apply(self, positive, negative, strength):
        check_range("strength", strength, 0.0, 3.0)
        uncond = _contexts(negative, "negative")
        out = []
        for context, options in positive:
            with user_error("negative"):
                out.append([apply_strength(context, uncond, strength), dict(options)])
        return (out,)


class PaintByExampleEncodeCLIPVision:
    DESCRIPTION = ("Makes the Paint-by-Example conditioning from a CLIP vision output of ComfyUI's own CLIP Vision "
                   "Encode (crop: none), so a CLIP ViT-L/14 model you already have does the image encoding and only "
                   "Paint-by-Example's small mapper runs here. Paint-by-Example's CLIP tower was frozen in training, "
                   "so the result equals Paint-by-Example Encode with preprocess 'stretch'.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("The exemplar's conditioning.", "The model's built-in 'no reference' input, for the sampler's negative.")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "encoder": ("PBE_ENCODER", {"tooltip": "The encoder from a Paint-by-Example loader (its mapper and "
                                                   "projection are used)."}),
            "clip_vision_output": ("CLIP_VISION_OUTPUT", {
                "tooltip": "From CLIP Vision Encode with crop 'none', using a CLIP ViT-L/14 vision model."}),
        }}

    def encode(self, encoder, clip_vision_output):
        hidden = getattr(clip_vision_output, "last_hidden_state", None)
        if hidden is None and isinstance(clip_vision_output, dict):
            hidden = clip_vision_output.get("last_hidden_state")
        if not isinstance(hidden, torch.Tensor) or hidden.ndim != 3:
            raise ValueError("clip_vision_output: expected the output of CLIP Vision Encode")
        width = encoder.clip_width
        if hidden.shape[-1] != width:
            raise ValueError(
                f"clip_vision_output: it comes from a CLIP vision model {hidden.shape[-1]} wide, but Paint-by-Example "
                f"uses CLIP ViT-L/14 ({width} wide). Load a CLIP ViT-L/14 vision model in CLIP Vision Loader."
            )
        context, uncond = encoder.encode_hidden_states(hidden)
        return conditioning_roles.marked(context, uncond)

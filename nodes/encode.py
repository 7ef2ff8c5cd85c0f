"""Exemplar encoding: reference image -> Paint-by-Example positive and negative CONDITIONING."""

from __future__ import annotations

from ..pbe_core import PREPROCESS_MODES, prepare_references
from . import conditioning_roles
from .inputs import check_range, user_error


class PaintByExampleEncode:
    DESCRIPTION = ("Turns the reference (exemplar) image into what the sampler follows: the positive describes the "
                   "object, the negative is the model's built-in 'no reference' input (what it paints when shown "
                   "nothing), which the sampler's cfg pushes the edit away from.")
    CATEGORY = "conditioning/paint by example"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The exemplar's conditioning (one per reference in the batch).",
        "The model's built-in 'no reference' input, for the sampler's negative.",
    )
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": ("PBE_ENCODER", {"tooltip": "The encoder from a Paint-by-Example loader."}),
                "reference": ("IMAGE", {
                    "tooltip": "The object to paint in. A tight crop of the object works best; a batch gives one "
                               "conditioning per image. Grayscale and RGBA (alpha = the object) are accepted."}),
                "preprocess": (list(PREPROCESS_MODES), {
                    "default": "stretch",
                    "tooltip": "How the reference becomes a 224x224 square. stretch: squash it (the authors' way); "
                               "center_crop: crop the middle (diffusers' way); pad: keep it whole and pad with white."}),
            },
            "optional": {
                "reference_mask": ("MASK", {
                    "tooltip": "Marks the object in the reference: the background is painted white and the reference "
                               "is cropped to the object plus a margin, as the model saw objects in training."}),
                "margin": ("INT", {
                    "default": 10, "min": 0, "max": 512, "step": 1,
                    "tooltip": "Pixels kept around the object's box when a reference mask (or alpha) is given; the "
                               "authors trained with 10."}),
            },
        }

    def encode(self, encoder, reference, preprocess, reference_mask=None, margin=10):
        check_range("margin", margin, 0, 512)
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess: {preprocess!r} is not one of {', '.join(PREPROCESS_MODES)}")
        with user_error("reference"):
            pixels = prepare_references(reference, preprocess, size=encoder.image_size, mask=reference_mask,
                                        margin=margin)
        context, uncond = encoder.encode(pixels)
        return conditioning_roles.marked(context, uncond)

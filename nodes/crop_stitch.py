"""Crop & stitch nodes: edit a large image at the model's scale, put the edit back exactly."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pbe_core.blend import BLENDS
from ..pbe_core.crop import CropBox, crop, plan_crop, stitch_into
from . import inputs

STITCH_BLEND_TOOLTIP = (
    "How the edited crop fades into the source across the Crop's blend band. linear: a plain cross-fade (in the "
    "middle of the band the two images show through each other, a soft halo on textured surfaces). multiband: broad "
    "colour fades over the whole band, fine detail switches over a few pixels, so texture stays crisp across the "
    "edge. Needs the Crop's blend above 0. A colour cast from the VAE is removed earlier, by the Sampler's "
    "color_match: the crop arrives here already pasted, with no cast left to measure.")


@dataclass
class CropInfo:
    """What flows along a PBE_CROP link: the full-size sources and masks and each item's region."""

    source: torch.Tensor
    mask: torch.Tensor
    boxes: list[CropBox]
    blend: int

    @property
    def size(self) -> int:
        return self.boxes[0].size


class PaintByExampleCrop:
    DESCRIPTION = ("Cuts a square around the mask (with some surrounding context) and scales it to the model's "
                   "working size, so a small region of a large photo is edited at the scale Paint-by-Example was "
                   "trained on. Feed cropped_source and cropped_mask to the sampler, then its image to "
                   "Paint-by-Example Stitch.")
    CATEGORY = "image/paint by example"
    RETURN_TYPES = ("PBE_CROP", "IMAGE", "MASK")
    RETURN_NAMES = ("crop", "cropped_source", "cropped_mask")
    OUTPUT_TOOLTIPS = (
        "Where each crop came from, for Paint-by-Example Stitch.",
        "The region around the mask at the working resolution.",
        "The mask cut and scaled the same way.",
    )
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": ("IMAGE", {"tooltip": "The full-size image to edit."}),
                "mask": ("MASK", {"tooltip": "White (1) where the exemplar goes, at the source's size."}),
                "context": ("FLOAT", {"default": 2.0, "min": 1.0, "max": 10.0, "step": 0.05,
                                      "tooltip": "Size of the cut-out square as a multiple of the mask box's longer "
                                                 "side: 1 keeps just the box, 2 gives the model as much surrounding "
                                                 "image again (the mask then fills about a quarter of the crop)."}),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                                       "tooltip": "Working size of the square crop (Paint-by-Example was trained at "
                                                  "512)."}),
                "blend": ("INT", {"default": 16, "min": 0, "max": 512, "step": 1,
                                  "tooltip": "Width, in source pixels, of the band outside the mask over which the "
                                             "edit fades into the source when stitched back (Stitch's blend_mode "
                                             "works inside it; 0: no band)."}),
            },
        }

    def crop(self, source, mask, context, resolution, blend):
        inputs.check_range("context", context, 1.0, 10.0)
        inputs.check_range("resolution", resolution, 64, 2048)
        inputs.check_range("blend", blend, 0, 512)
        source = inputs.source_images(source)
        source, mask = inputs.edit_masks(mask, source)
        with inputs.user_error("context"):
            boxes = [plan_crop(m, context, resolution, blend) for m in mask]
        cropped = torch.stack([crop(s, b) for s, b in zip(source, boxes)])
        cropped_mask = torch.stack([crop(m, b) for m, b in zip(mask, boxes)])
        return CropInfo(source, mask, boxes, blend), cropped, cropped_mask


class PaintByExampleStitch:
    DESCRIPTION = ("Scales the edited crop back and pastes it into the full-size source: the region painted at or "
                   "above 0.5 takes the edit, softer mask values blend it in by their value, and the crop's blend "
                   "width feathers the edge outward (linearly, or with blend_mode multiband, which keeps texture "
                   "crisp across the band). Pixels outside the mask and that band are exactly the source's.")
    CATEGORY = "image/paint by example"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The full-size source with the edit in place.",)
    FUNCTION = "stitch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "crop": ("PBE_CROP", {"tooltip": "The crop output of Paint-by-Example Crop."}),
                "edited": ("IMAGE", {"tooltip": "The edited crop (the sampler's image made from cropped_source)."}),
            },
            "optional": {
                "blend_mode": (list(BLENDS), {"default": "linear", "tooltip": STITCH_BLEND_TOOLTIP}),
            },
        }

    def stitch(self, crop, edited, blend_mode="linear"):
        if blend_mode not in BLENDS:
            raise ValueError(f"blend_mode: {blend_mode!r} is not one of {', '.join(BLENDS)}")
        size = crop.size
        edited = inputs.source_images(edited, "edited")
        if edited.shape[1:3] != (size, size):
            raise ValueError(
                f"edited: it is {edited.shape[2]}x{edited.shape[1]} but the crop is {size}x{size}. Connect the "
                "image the sampler made from this crop's cropped_source."
            )
        count = len(crop.boxes)
        if edited.shape[0] not in (1, count):
            raise ValueError(f"edited: it holds {edited.shape[0]} images for {count} crops; give one per crop")
        edited = edited.expand(count, -1, -1, -1)
        out = crop.source.clone()  # the only full-size copy; each edit then changes its region alone
        for i, box in enumerate(crop.boxes):
            stitch_into(out[i], edited[i], crop.mask[i], box, crop.blend, blend_mode)
        return (out,)

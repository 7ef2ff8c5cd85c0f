"""Mask jitter node: the paper's arbitrary-shape masks around an artist's mask."""

from __future__ import annotations

from ..pbe_core import JitterSettings, jitter_masks
from ..pbe_core.mask_jitter import SHAPES
import torch

from . import inputs
from .inputs import user_error


class PaintByExampleMaskJitter:
    DESCRIPTION = ("Turns a mask into the kind of mask Paint-by-Example was trained on: its bounding box pushed "
                   "outward by a random amount, either as a box or as jittered Bezier curves. This gives the model "
                   "room to re-pose the exemplar. The result always covers the original mask's box.")
    CATEGORY = "mask/paint by example"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("The jittered mask (a batch when batch_size > 1: one per seed).",)
    FUNCTION = "jitter"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The region to edit; only its bounding box matters."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                                 "tooltip": "Random seed. Mask i of a batch uses seed + i."}),
                "extend_min": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "Least outward push of each side, as a share of the space "
                                                    "between the box and the image border."}),
                "extend_max": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "Largest outward push of each side (the authors used 0.4)."}),
                "point_jitter": ("INT", {"default": 5, "min": 0, "max": 256,
                                         "tooltip": "Largest random offset of each curve point, in pixels "
                                                    "(the authors used 5)."}),
                "points_per_side": ("INT", {"default": 18, "min": 1, "max": 512,
                                            "tooltip": "Curve points per side of the box (the authors used 18)."}),
                "shape": (list(SHAPES), {"default": "bezier",
                                         "tooltip": "bezier: wavy curves around the box; box: the pushed-out box; "
                                                    "random: either, half the time each, as in training."}),
            },
            "optional": {
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 256,
                                       "tooltip": "Variants of a single mask, with seeds seed, seed+1, …"}),
            },
        }

    def jitter(self, mask, seed, extend_min, extend_max, point_jitter, points_per_side, shape, batch_size=1):
        inputs.check_range("seed", seed, 0, 0xFFFFFFFFFFFFFFFF)
        inputs.check_range("batch_size", batch_size, 1, 256)
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            raise ValueError("mask: expected a MASK (height x width, or a batch of them)")
        settings = JitterSettings(extend_min=extend_min, extend_max=extend_max, point_jitter=point_jitter,
                                  points_per_side=points_per_side, shape=shape)
        masks = mask if mask.ndim == 3 else mask[None]
        if batch_size > 1:
            if masks.shape[0] != 1:
                raise ValueError(
                    f"batch_size: it makes variants of one mask, but {masks.shape[0]} masks came in. Set batch_size "
                    "to 1 to jitter each of them, or pass a single mask."
                )
            masks = masks.expand(batch_size, -1, -1)
        with user_error("mask"):
            return (jitter_masks(masks, seed, settings),)

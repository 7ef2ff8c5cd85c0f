"""Crop -> sampler -> stitch inside a real ComfyUI, on a large image with a small mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


def _large_scene(comfy, height=3072, width=4096, box=(3000, 500, 3090, 560)):
    yy, xx = np.mgrid[0:height, 0:width]
    source = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], -1)
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    tag = f"{width}x{height}"
    Image.fromarray(source.astype(np.uint8)).save(comfy.scratch / "input" / f"large_{tag}.png")
    Image.fromarray(mask).save(comfy.scratch / "input" / f"large_mask_{tag}.png")
    Image.fromarray(np.full((60, 40, 3), 200, dtype=np.uint8)).save(comfy.scratch / "input" / "ref_plain.png")
    return f"large_{tag}.png", f"large_mask_{tag}.png", "ref_plain.png"


def _crop_graph(source, mask, reference, resolution=256, blend=16, jitter=True):
    graph = {
        "1": {"class_type": "PaintByExampleLoader", "inputs": {"ckpt_name": "pbe_tiny.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": source}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "5": {"class_type": "PaintByExampleEncode",
              "inputs": {"encoder": ["1", 2], "reference": ["4", 0], "preprocess": "stretch"}},
        "8": {"class_type": "PaintByExampleMaskJitter", "inputs": {
            "mask": ["3", 0], "seed": 1, "extend_min": 0.0, "extend_max": 0.02, "point_jitter": 5,
            "points_per_side": 18, "shape": "bezier"}},
        "9": {"class_type": "PaintByExampleCrop", "inputs": {
            "source": ["2", 0], "mask": ["8", 0] if jitter else ["3", 0], "context": 2.0,
            "resolution": resolution, "blend": blend}},
        "6": {"class_type": "PaintByExampleSampler", "inputs": {
            "model": ["1", 0], "vae": ["1", 1], "positive": ["5", 0], "negative": ["5", 1],
            "source": ["9", 1], "mask": ["9", 2], "seed": 3, "steps": 2, "cfg": 5.0,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "10": {"class_type": "PaintByExampleStitch", "inputs": {"crop": ["9", 0], "edited": ["6", 0]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }
    return graph


def test_large_image_edit_through_crop_and_stitch(comfy):
    source, mask, reference = _large_scene(comfy)
    out = comfy.run(_crop_graph(source, mask, reference), ["2", "8", "9", "10"])
    original, jittered = out["2"][0], out["8"][0]
    crop_info, cropped, cropped_mask = out["9"]
    image = out["10"][0]
    assert image.shape == original.shape == (1, 3072, 4096, 3)
    assert cropped.shape == (1, 256, 256, 3) and cropped_mask.shape == (1, 256, 256)
    # outside the (jittered) mask grown by the blend band nothing moved, bit for bit
    band = torch.nn.functional.max_pool2d(jittered[:, None], 33, stride=1, padding=16)[:, 0] > 0
    assert torch.equal(image[~band], original[~band])
    inside = jittered[0] > 0.5
    assert (image[0][inside] - original[0][inside]).abs().mean() > 0.01, "the masked region was edited"
    box = crop_info.boxes[0]
    assert box.x0 <= 3000 and box.x1 >= 3090 and box.y0 <= 500 and box.y1 >= 560


def test_crop_batch_rules_and_errors(comfy):
    crop_node = comfy.node("PaintByExampleCrop")()
    stitch_node = comfy.node("PaintByExampleStitch")()
    sources = torch.rand(2, 200, 300, 3)
    mask = torch.zeros(1, 200, 300)
    mask[:, 50:90, 100:160] = 1
    info, cropped, cropped_mask = crop_node.crop(sources, mask, 2.0, 128, 8)  # one mask, two sources
    assert cropped.shape == (2, 128, 128, 3) and len(info.boxes) == 2
    (image,) = stitch_node.stitch(info, cropped)  # an untouched crop stitches back to (nearly) the source
    outside = torch.nn.functional.max_pool2d(mask[:, None], 17, stride=1, padding=8)[:, 0] == 0
    assert torch.equal(image[0][outside[0]], sources[0][outside[0]])
    masks = torch.zeros(3, 200, 300)
    masks[:, 10:30, 10:30] = 1
    with pytest.raises(ValueError, match="mask: there are 3 masks for 2 source images"):
        crop_node.crop(sources, masks, 2.0, 128, 8)
    with pytest.raises(ValueError, match="edited: it is 64x64 but the crop is 128x128"):
        stitch_node.stitch(info, torch.rand(2, 64, 64, 3))
    with pytest.raises(ValueError, match="edited: it holds 3 images for 2 crops"):
        stitch_node.stitch(info, torch.rand(3, 128, 128, 3))


def test_crop_nodes_have_tooltips(comfy):
    for node_id in ("PaintByExampleCrop", "PaintByExampleStitch"):
        cls = comfy.node(node_id)
        spec = cls.INPUT_TYPES()["required"]
        assert cls.DESCRIPTION and all(options[1]["tooltip"] for options in spec.values())
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    inputs = set(comfy.node("PaintByExampleCrop").INPUT_TYPES()["required"])
    assert {"source", "mask", "context", "resolution"} <= inputs
    assert set(comfy.node("PaintByExampleStitch").INPUT_TYPES()["required"]) == {"crop", "edited"}

"""Soak: many consecutive edits in one ComfyUI process; resident memory must stay flat.

    python bench/soak.py [--edits 200] [--every 20]

Each edit runs Encode -> Sampler -> Crop -> Sampler -> Stitch with new inputs (so nothing comes
from a cache) on the tiny random model, and the resident set size is printed every --every edits.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import comfyui_with_random_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()
    comfy = comfyui_with_random_model("pbe_soak_")
    model, vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe.safetensors")
    encode, sampler = comfy.node("PaintByExampleEncode")(), comfy.node("PaintByExampleSampler")()
    crop, stitch = comfy.node("PaintByExampleCrop")(), comfy.node("PaintByExampleStitch")()
    process = psutil.Process()
    readings = []
    start = time.perf_counter()
    for edit in range(1, args.edits + 1):
        generator = torch.Generator().manual_seed(edit)
        positive, negative = encode.encode(encoder, torch.rand(1, 60, 50, 3, generator=generator), "stretch")
        source = torch.rand(1, 96, 128, 3, generator=generator)
        mask = torch.zeros(1, 96, 128)
        mask[:, 24 + edit % 16:64, 32:96] = 1
        sampler.sample(model, vae, positive, negative, source, mask, edit, 2, 5.0, "ddim", "ddim_uniform", 1.0)
        info, cropped, cropped_mask = crop.crop(source, mask, 2.0, 64, 4)
        edited, _ = sampler.sample(model, vae, positive, negative, cropped, cropped_mask, edit, 2, 5.0, "ddim",
                                   "ddim_uniform", 1.0)
        stitch.stitch(info, edited)
        if edit % args.every == 0 or edit == 1:
            gc.collect()
            rss = process.memory_info().rss / 2**20
            readings.append(rss)
            print(f"edit {edit:4d}: resident {rss:8.1f} MiB  ({time.perf_counter() - start:6.1f} s)", flush=True)
    growth = readings[-1] - readings[1] if len(readings) > 2 else 0.0
    print(f"growth from edit {args.every} to edit {args.edits}: {growth:+.1f} MiB")


if __name__ == "__main__":
    main()

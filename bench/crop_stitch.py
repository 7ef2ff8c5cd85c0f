"""Cost of an edit on a 512 source against a 4096x3072 source with the same mask footprint.

Both go through Paint-by-Example Crop -> Sampler -> Stitch inside ComfyUI (in-process, found as
the tests find it), so the sampler works at the same resolution; the ratio shows what the large
image itself costs (crop, stitch, checks). Goal: at most 1.15.

    python bench/crop_stitch.py [--steps 20] [--size tiny|full] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import comfyui_with_random_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=512)
    args = parser.parse_args()
    comfy = comfyui_with_random_model("pbe_bench_", args.size)
    unet, vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe.safetensors")
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 224, 224, 3), "stretch")
    crop_node, sampler, stitch_node = (comfy.node(n)() for n in
                                       ("PaintByExampleCrop", "PaintByExampleSampler", "PaintByExampleStitch"))

    def edit(source, mask):
        info, cropped, cropped_mask = crop_node.crop(source, mask, 2.0, args.resolution, 16)
        edited, _latent = sampler.sample(unet, vae, positive, negative, cropped, cropped_mask, 1, args.steps, 5.0,
                                         "ddim", "ddim_uniform", 1.0)
        return stitch_node.stitch(info, edited)[0]

    cases = {}
    for height, width in ((512, 512), (3072, 4096)):
        source = torch.rand(1, height, width, 3)
        mask = torch.zeros(1, height, width)
        y0, x0 = height // 2 - 48, width // 2 - 48
        mask[:, y0:y0 + 96, x0:x0 + 96] = 1  # the same 96 x 96 footprint
        cases[(height, width)] = (source, mask)
        edit(source, mask)  # warm-up: loads the models
    times = {key: [] for key in cases}
    for _ in range(args.repeats):  # interleaved, so that drift in the machine's speed hits both alike
        for key, (source, mask) in cases.items():
            start = time.perf_counter()
            edit(source, mask)
            times[key].append(time.perf_counter() - start)
    results = {key: statistics.median(values) for key, values in times.items()}
    for (height, width), median in results.items():
        print(f"source {width}x{height}: median {median:.3f} s over {args.repeats} runs "
              f"({args.steps} steps at {args.resolution}, {args.size} model)")
    ratio = results[(3072, 4096)] / results[(512, 512)]
    print(f"ratio 4096x3072 / 512x512: {ratio:.3f} (goal <= 1.15)")


if __name__ == "__main__":
    main()

"""Cost of Paint-by-Example Score on a batch of edits, and of the seamless blends on a large stitch.

Scoring runs the Score node inside ComfyUI (in-process, found as the tests find it) with a random
checkpoint's own CLIP tower: the first call (which builds and loads the tower) and the median of warm
calls. The blends are pure pbe_core, timed on the region a Stitch pastes into a 4096x3072 source
(the mask's box with context around it): the linear feather (what Stitch does now) against the
multi-band blend, with and without the colour match; once for a small mask, once for a large one.

    python bench/score_blend.py [--size tiny|full] [--edits 8] [--repeats 3] [--source 3072 4096]
                                [--skip-score] [--skip-blend]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pbe_core import blend  # noqa: E402
from pbe_core.cpu_features import describe_cpu  # noqa: E402
from pbe_core.masks import paste_alpha  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny", help="the random checkpoint for scoring")
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--edit-size", type=int, default=512, help="side of each edit (square)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", type=int, nargs=2, default=[3072, 4096], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--band", type=int, default=16, help="blend band in source pixels")
    parser.add_argument("--skip-score", action="store_true")
    parser.add_argument("--skip-blend", action="store_true")
    args = parser.parse_args()
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads{load}")
    if not args.skip_score:
        score_cost(args)
    if not args.skip_blend:
        blend_cost(args)


def score_cost(args) -> None:
    from comfyui import comfyui_with_random_model

    comfy = comfyui_with_random_model("pbe_bench_score_", args.size)
    _unet, _vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe.safetensors")
    g = torch.Generator().manual_seed(0)
    side = args.edit_size
    images = torch.rand(args.edits, side, side, 3, generator=g)
    mask = torch.zeros(1, side, side)
    mask[:, side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1
    reference = torch.rand(1, 300, 240, 3, generator=g)
    node = comfy.node("PaintByExampleScore")()

    def run():
        start = time.perf_counter()
        node.score(images, mask, reference, 2, 10, "stretch", encoder=encoder)
        return time.perf_counter() - start

    first = run()
    warm = statistics.median(run() for _ in range(max(args.repeats, 1)))
    print(f"score {args.edits} edits ({side}x{side}, {args.size} checkpoint, its own CLIP tower {encoder.clip_width} "
          f"wide): first {first:.3f} s (builds and loads the tower), warm {warm:.3f} s "
          f"= {1000 * warm / args.edits:.1f} ms per edit")


def blend_cost(args) -> None:
    height, width = args.source
    g = torch.Generator().manual_seed(1)
    source = torch.rand(height, width, 3, generator=g)
    small = max(8, round(96 * height / 3072))
    cases = {"small mask": (small, small), "large mask": (height // 2, width // 2)}
    print(f"blend on a {width}x{height} source, band {args.band} px (the region Stitch pastes into: the mask's box "
          f"with the mask's size again around it), median of {args.repeats} runs (x10 for the small mask)")
    for name, (mask_h, mask_w) in cases.items():
        repeats = args.repeats * (10 if name == "small mask" else 1)  # small regions: more runs against noise
        y0, x0 = (height - mask_h) // 2, (width - mask_w) // 2
        context = max(mask_h, mask_w) // 2 + args.band
        rows = slice(max(0, y0 - context), min(height, y0 + mask_h + context))
        cols = slice(max(0, x0 - context), min(width, x0 + mask_w + context))
        region = source[rows, cols]
        mask = _ellipse(region.shape[0], region.shape[1], y0 - rows.start, x0 - cols.start, mask_h, mask_w)
        edit = (region + torch.tensor([0.03, -0.02, 0.02])).clamp(0, 1)
        alpha_time, alpha = _timed(lambda: paste_alpha(mask, args.band), repeats)
        times = {}
        for label, blend_name, colour in (("linear feather", "linear", "off"), ("multiband", "multiband", "off"),
                                          ("multiband + mean colour", "multiband", "mean"),
                                          ("multiband + local colour", "multiband", "local")):
            times[label], _ = _timed(lambda: blend.paste(region, edit, alpha, args.band, blend_name, colour),
                                     repeats)
        base = times["linear feather"]
        print(f"  {name} {mask_w}x{mask_h} (region {region.shape[1]}x{region.shape[0]}): alpha {alpha_time:.3f} s; "
              + "; ".join(f"{label} {seconds:.3f} s (x{seconds / base:.1f})" for label, seconds in times.items()))


def _ellipse(height, width, top, left, mask_h, mask_w) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    cy, cx = top + mask_h / 2, left + mask_w / 2
    return ((((yy - cy) / (mask_h / 2)) ** 2 + ((xx - cx) / (mask_w / 2)) ** 2) <= 1).float()


def _timed(fn, repeats):
    result, times = fn(), []  # a first, untimed run: allocations and thread pools warm up
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


if __name__ == "__main__":
    main()

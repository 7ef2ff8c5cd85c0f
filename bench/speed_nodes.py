"""The speed a user can buy with core's LazyCache and TorchCompileModel on the Paint-by-Example MODEL,
and its price in the result.

One ComfyUI process, the random model (full size by default), Loader -> [LazyCache] ->
[TorchCompileModel] -> Paint-by-Example Sampler at --size, --steps steps, guidance 5, ddim /
ddim_uniform, for each configuration: plain, LazyCache, TorchCompileModel, both. Each configuration
runs a first edit (which for TorchCompileModel includes compiling) and --repeats re-rolls with new
seeds; printed per configuration: the first edit's time, the median re-roll's time and steps per
second (as ComfyUI's progress bar counts them), the speed-up over plain, the steps LazyCache reused,
and how far the decoded image moves from the plain MODEL's for the same seed (max and mean absolute
difference, on 0..1 pixels).

Random weights do not predict like the real model, so how many steps LazyCache skips at a threshold
is only indicative here; the cost of a skipped step and of compiling is what the figures show.

    python bench/speed_nodes.py [--model full|small|tiny] [--size 512] [--steps 20] [--repeats 2]
                                [--threshold 0.2] [--configs plain lazycache compile both] [--work DIR]
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import NO_COMFYUI, ComfyUI, find_comfyui, scratch_folder  # noqa: E402
from harness import Executor, ours_prompt, write_inputs  # noqa: E402

from pbe_core.testing import random_checkpoint  # noqa: E402
from pbe_core.cpu_features import describe_cpu  # noqa: E402


class SkipCount(logging.Handler):
    """LazyCache logs "skipped N/M steps" at the end of each sampling run."""

    def __init__(self):
        super().__init__()
        self.last = None

    def emit(self, record):
        match = re.search(r"LazyCache - skipped (\d+)/(\d+) steps", record.getMessage())
        if match:
            self.last = (int(match.group(1)), int(match.group(2)))


def configure(prompt: dict, config: str, threshold: float) -> dict:
    """Put the configuration's nodes between the loader and the Sampler."""
    model = ["loader", 0]
    if config in ("lazycache", "both"):
        prompt["lazycache"] = {"class_type": "LazyCache", "inputs": {
            "model": model, "reuse_threshold": threshold, "start_percent": 0.15, "end_percent": 0.95,
            "verbose": False}}
        model = ["lazycache", 0]
    if config in ("compile", "both"):
        prompt["compile"] = {"class_type": "TorchCompileModel", "inputs": {"model": model, "backend": "inductor"}}
        model = ["compile", 0]
    prompt["sampler"]["inputs"]["model"] = model
    return prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="full", choices=["full", "small", "tiny"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.2, help="LazyCache's reuse_threshold (its default)")
    parser.add_argument("--configs", nargs="+", default=["plain", "lazycache", "compile", "both"])
    parser.add_argument("--work", default=None,
                        help="folder for the model and scratch files (kept); "
                             "without it a temporary one is removed at exit")
    args = parser.parse_args()
    if find_comfyui() is None:
        sys.exit(NO_COMFYUI)
    work = scratch_folder("pbe_speed_nodes_", args.work)
    ckpt = f"pbe_{args.model}.safetensors"
    path = work / "models" / "checkpoints" / ckpt
    if not path.exists():
        random_checkpoint.write_single_file(path, random_checkpoint.random_weights(args.model, seed=0))
    comfy = ComfyUI(find_comfyui(), work / "models", work / "scratch")
    source, mask = write_inputs(comfy.scratch / "input", [args.size])[args.size]
    executor = Executor(comfy)
    skips = SkipCount()
    root = logging.getLogger()
    for handler in root.handlers:  # LazyCache reports its skips at INFO: hear them without printing the rest
        handler.setLevel(max(handler.level, logging.WARNING))
    root.addHandler(skips)
    root.setLevel(logging.INFO)
    print(f"CPU: {describe_cpu()}; model {args.model}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.repeats} re-rolls per configuration", flush=True)
    results, images = {}, {}
    for config in args.configs:
        prompt = configure(ours_prompt(ckpt, source, mask, "reference.png", seed=0, steps=args.steps), config,
                           args.threshold)
        first, _nodes = executor.run(prompt)
        runs, rates, skipped = [], [], []
        for seed in range(1, args.repeats + 1):
            prompt["sampler"]["inputs"]["seed"] = seed
            skips.last = None
            elapsed, _nodes = executor.run(prompt)
            runs.append(elapsed)
            rates.append(executor.steps_per_second())
            skipped.append(skips.last[0] if skips.last else 0)
        images[config] = comfy.run(prompt, ["sampler"])["sampler"][0]  # seed = repeats, from the cache
        results[config] = (first, statistics.median(runs), statistics.median(r for r in rates if r),
                           statistics.median(skipped))
        print(f"  {config}: first {first:.1f} s, re-rolls {', '.join(f'{r:.1f}' for r in runs)} s", flush=True)
    base = results.get("plain")
    print(f"{'configuration':>14} {'first s':>8} {'edit s':>8} {'steps/s':>8} {'speed-up':>9} {'reused':>7} "
          f"{'max |d|':>9} {'mean |d|':>9}")
    for config, (first, edit, rate, skipped) in results.items():
        speedup = f"x{base[1] / edit:.2f}" if base else "-"
        if "plain" in images:
            difference = (images[config] - images["plain"]).abs()
            moved = f"{difference.max().item():9.2e} {difference.mean().item():9.2e}"
        else:
            moved = f"{'-':>9} {'-':>9}"
        print(f"{config:>14} {first:8.1f} {edit:8.1f} {rate:8.3f} {speedup:>9} {skipped:7.0f} {moved}")


if __name__ == "__main__":
    main()

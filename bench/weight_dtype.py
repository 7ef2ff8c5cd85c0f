"""Speed, memory and result of each weight_dtype of the Paint-by-Example Loader on this machine.

Each precision runs in a process of its own (so its peak memory is its own): ComfyUI in-process with
the random model, Loader (weight_dtype) -> Encode -> Sampler at --size, --steps steps, guidance 5,
ddim / ddim_uniform, one warm-up edit and then --repeats timed re-rolls (new seeds). Printed per
precision: steps per second (as ComfyUI's progress bar counts them), seconds per edit, peak resident
memory (VmHWM), and the decoded image's difference from the `default` precision's for the same seed.
The CPU's model and whether it computes bf16 natively (AVX512-BF16, AMX or Arm BF16) are printed
first: only there does `bf16` compute in bf16; elsewhere ComfyUI stores bf16 and computes in fp32.

    python bench/weight_dtype.py [--model full|small|tiny] [--size 512] [--steps 4] [--repeats 2]
                                 [--dtypes default bf16 ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import NO_COMFYUI, ComfyUI, find_comfyui, scratch_folder  # noqa: E402
from harness import Executor, ours_prompt, write_inputs  # noqa: E402

from pbe_core.testing import random_checkpoint  # noqa: E402
from pbe_core.cpu_features import describe_cpu  # noqa: E402


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args) -> None:
    """One precision: load, warm up, time the re-rolls; one JSON line on stdout."""
    work = Path(args.work)
    comfy = ComfyUI(find_comfyui(), work / "models", work / "scratch")
    names = write_inputs(comfy.scratch / "input", [args.size])
    source, mask = names[args.size]
    executor = Executor(comfy)
    prompt = ours_prompt(args.ckpt, source, mask, "reference.png", seed=0, steps=args.steps)
    prompt["loader"]["inputs"]["weight_dtype"] = args.child
    first, _nodes = executor.run(prompt)
    runs, rates = [], []
    for seed in range(1, args.repeats + 1):
        prompt["sampler"]["inputs"]["seed"] = seed
        elapsed, _nodes = executor.run(prompt)  # a re-roll: only the sampling part of the graph runs
        runs.append(elapsed)
        rates.append(executor.steps_per_second())
    image = comfy.run(prompt, ["sampler"])["sampler"][0]  # the last seed again, from the cache
    np.save(work / f"image_{args.child}.npy", image.float().numpy())
    print(json.dumps({"dtype": args.child, "first": first, "edit": statistics.median(runs),
                      "steps_per_second": statistics.median(r for r in rates if r), "peak_mib": _peak_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="full", choices=["full", "small", "tiny"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["default", "bf16"])
    parser.add_argument("--work", default=None,
                        help="folder for the model and scratch files (kept); "
                             "without it a temporary one is removed at exit")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if find_comfyui() is None:
        sys.exit(NO_COMFYUI)
    if args.child:
        child(args)
        return
    work = scratch_folder("pbe_weight_dtype_", args.work)
    ckpt = "pbe.ckpt" if args.model == "full" else f"pbe_{args.model}.safetensors"
    path = work / "models" / "checkpoints" / ckpt
    if not path.exists():
        random_checkpoint.write_single_file(path, random_checkpoint.random_weights(args.model, seed=0))
    print(f"CPU: {describe_cpu()}; model {args.model}, {args.size}x{args.size}, {args.steps} steps, "
          f"{args.repeats} re-rolls per precision", flush=True)
    results = {}
    for dtype in args.dtypes:
        done = subprocess.run([sys.executable, __file__, "--child", dtype, "--ckpt", ckpt, "--work", str(work),
                               "--size", str(args.size), "--steps", str(args.steps), "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{dtype} failed:\n{done.stderr[-3000:]}")
        results[dtype] = json.loads(done.stdout.strip().splitlines()[-1])
    baseline = np.load(work / f"image_{args.dtypes[0]}.npy")
    print(f"{'weight_dtype':>16} {'steps/s':>8} {'edit s':>8} {'first s':>8} {'peak MiB':>9} "
          f"{'max |d| vs ' + args.dtypes[0]:>18} {'mean |d|':>9}")
    for dtype, r in results.items():
        image = np.load(work / f"image_{dtype}.npy")
        difference = np.abs(image - baseline)
        print(f"{dtype:>16} {r['steps_per_second']:8.3f} {r['edit']:8.2f} {r['first']:8.2f} {r['peak_mib']:9.0f} "
              f"{difference.max():18.2e} {difference.mean():9.2e}")
    base = results[args.dtypes[0]]
    for dtype, r in list(results.items())[1:]:
        print(f"{dtype} / {args.dtypes[0]}: steps/s x{r['steps_per_second'] / base['steps_per_second']:.2f}, "
              f"peak memory x{r['peak_mib'] / base['peak_mib']:.2f}")


if __name__ == "__main__":
    main()

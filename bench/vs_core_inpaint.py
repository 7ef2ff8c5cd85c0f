"""Steps per second of this pack's path against ComfyUI's own SD 1.5 inpainting path, same UNet.

The same random UNet weights are loaded twice in one ComfyUI process: by the Paint-by-Example
Loader (with the rest of the checkpoint), and, written out alone as
diffusion_models/<name>_unet.safetensors, by core's Load Diffusion Model (UNETLoader), which
recognises it as a 9-channel SD 1.5 inpainting UNet and applies ComfyUI's own dtype, device and
attention choices. Both sample with the same exemplar conditioning, source, mask, seeds, sampler
(ddim), schedule (ddim_uniform) and guidance:

- ours: Paint-by-Example Encode -> Paint-by-Example Sampler;
- core: Paint-by-Example Encode -> InpaintModelConditioning -> KSampler -> VAE Decode.

Both graphs are one prompt, run once to warm up and then --repeats times with a new seed each,
so ComfyUI's cache serves what an artist's re-run would not recompute (the loaders, the exemplar
conditioning, and core's InpaintModelConditioning; our Sampler expands into nodes ComfyUI caches
too, so its encode of the source is served the same way). Steps per second are counted as ComfyUI's
progress bar counts them, from the first step's end to the last's, so loading, encoding and
decoding are left out; "edit s" is the rest of the edit after the encoder (ours: the Sampler node
and the nodes it expands into; core: those of its three nodes that ran). Medians
and ours/core are printed. Core feeds the UNet its inputs in SD inpainting order, so its picture
differs from ours; the work per step is the same.

    python bench/vs_core_inpaint.py [--model full|small] [--sizes 512] [--steps 20] [--repeats 3]
                                    [--work DIR] [--device cpu|cuda]

Goal: ours/core >= 1.0 in steps per second (the pack's model is as fast as ComfyUI's own).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import NO_COMFYUI, ComfyUI, find_comfyui, scratch_folder  # noqa: E402
from harness import CFG, STEPS_DEFAULT, Executor, ours_prompt, write_inputs  # noqa: E402

from pbe_core import read_checkpoint  # noqa: E402
from pbe_core.testing import random_checkpoint  # noqa: E402


def make_files(work: Path, model: str) -> tuple[Path, Path]:
    """The authors' single file (the same pbe.ckpt as vs_diffusers.py makes in a shared --work) and
    its UNet alone, as core's UNETLoader reads one (kept in --work)."""
    single = work / "models" / "checkpoints" / ("pbe.ckpt" if model == "full" else f"pbe_{model}.safetensors")
    if not single.exists():
        started = time.perf_counter()
        random_checkpoint.write_single_file(single, random_checkpoint.random_weights(model, seed=0))
        print(f"wrote the {model} random model to {single} in {time.perf_counter() - started:.0f} s", flush=True)
    unet = work / "models" / "diffusion_models" / f"{single.stem}_unet.safetensors"
    if not unet.exists():
        unet.parent.mkdir(parents=True, exist_ok=True)
        weights = read_checkpoint(single)  # the very tensors our loader reads, in LDM names
        save_file({name: tensor.contiguous() for name, tensor in weights.unet.items()}, str(unet),
                  metadata={"random_weights": "true"})
        del weights
    return single, unet


def both_prompt(ckpt: str, unet: str, source: str, mask: str, seed: int, steps: int) -> dict:
    """Ours, and ComfyUI's SD inpainting graph around the same exemplar conditioning, VAE and
    pictures, in one prompt: ComfyUI's cache then treats both as it would an artist's re-run."""
    prompt = ours_prompt(ckpt, source, mask, "reference.png", seed, steps)
    prompt.update({
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "inpaint": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["encode", 0], "negative": ["encode", 1], "vae": ["loader", 1],
            "pixels": ["source", 0], "mask": ["mask", 0], "noise_mask": True}},
        "ksampler": {"class_type": "KSampler", "inputs": {
            "model": ["unet", 0], "seed": seed, "steps": steps, "cfg": CFG, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "positive": ["inpaint", 0], "negative": ["inpaint", 1],
            "latent_image": ["inpaint", 2], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["ksampler", 0], "vae": ["loader", 1]}},
        "core_preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    })
    return prompt


SAMPLING_NODE = {"ours": "sampler", "core": "ksampler"}
EDIT_NODES = {"ours": ("sampler",), "core": ("inpaint", "ksampler", "decode")}


def compare(runner: Executor, ckpt: str, unet: str, names: dict, args) -> dict:
    """{size: {path: ([steps/s], [edit s])}} over the timed runs."""
    figures = {}
    for size in args.sizes:
        source, mask = names[size]
        figures[size] = {path: ([], []) for path in SAMPLING_NODE}
        for repeat in range(args.repeats + 1):  # a new seed each run, so both samplers really run
            _elapsed, nodes = runner.run(both_prompt(ckpt, unet, source, mask, repeat, args.steps))
            ran = runner.order()
            first = min(SAMPLING_NODE, key=lambda path: ran.index(SAMPLING_NODE[path]))
            for path, node in SAMPLING_NODE.items():
                rate, edit = runner.steps_per_second(node), sum(nodes.get(n, 0.0) for n in EDIT_NODES[path])
                if rate is None:
                    raise RuntimeError(f"no sampling steps were timed in {node}: use --steps 2 or more")
                if repeat:
                    figures[size][path][0].append(rate)
                    figures[size][path][1].append(edit)
                print(f"  {size} {path}: run {repeat} {rate:.3f} steps/s, edit {edit:.2f} s"
                      + (" (ran first)" if path == first else ""), flush=True)
            print(f"    nodes: {', '.join(f'{k} {v:.2f}' for k, v in nodes.items())}", flush=True)
    return figures


def report(args, figures: dict) -> None:
    print(f"\n== ours against ComfyUI's SD 1.5 inpainting path on the same UNet: {args.model} random weights, "
          f"{args.steps} steps, guidance {CFG:g}, {args.device}, torch {torch.__version__}, "
          f"median of {args.repeats} runs each")
    print(f"{'size':>5} {'path':<6} {'steps/s':>9} {'edit s':>8}")
    for size, paths in figures.items():
        for path, (rates, edits) in paths.items():
            print(f"{size:>5} {path:<6} {statistics.median(rates):9.3f} {statistics.median(edits):8.2f}")
    print("ratios ours/core (goal: steps/s >= 1.0):")
    for size, paths in figures.items():
        (our_rates, our_edits), (core_rates, core_edits) = paths["ours"], paths["core"]
        print(f"  {size}x{size}: steps/s {statistics.median(our_rates) / statistics.median(core_rates):.3f}, "
              f"edit time {statistics.median(our_edits) / statistics.median(core_edits):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["full", "small"], default="full",
                        help="full: the real architecture; small: SD 1.x width, one level deep (a quick check)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per size and path (after a warm-up)")
    parser.add_argument("--work", type=Path,
                        help="folder for the model and images (kept, and reused next time); "
                             "without it a temporary one is removed at exit")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: both paths on the GPU, with ComfyUI's defaults there (fp16)")
    args = parser.parse_args()
    if args.steps < 2 or args.repeats < 1:
        sys.exit("--steps must be 2 or more and --repeats 1 or more: steps per second need two step ends")
    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    work = scratch_folder("pbe_vs_core_", args.work)
    single, unet = make_files(work, args.model)
    comfy = ComfyUI(root, work / "models", work / "scratch", cpu=args.device == "cpu")
    names = write_inputs(Path(comfy.folder_paths.get_input_directory()), args.sizes)
    report(args, compare(Executor(comfy), single.name, unet.name, names, args))


if __name__ == "__main__":
    main()

"""Paint-by-Example in ComfyUI (this pack) against diffusers' PaintByExamplePipeline, same weights.

One process makes a full-size random-weight model (the authors' single file for us, and the same
weights converted to a diffusers folder for diffusers), then runs, one after the other:

- diffusers: PaintByExamplePipeline.from_pretrained(folder) with DDIMScheduler;
- ours: PaintByExampleLoader -> PaintByExampleEncode -> PaintByExampleSampler, executed by
  ComfyUI's own prompt executor (so its graph cache and model management are in play), with
  ComfyUI's ddim sampler and ddim_uniform schedule.

Both: 20 steps, guidance 5, the same source, mask, reference and seeds, one UNet call (cond and
uncond batched) per step. For each size it prints the load time, the first run, the median of
--repeats warm runs (a new seed each, so the sampler really runs; the reference is unchanged, so
ComfyUI's cache serves the encoder), steps per second, the peak resident memory of each side at
each size (VmHWM, reset before each side and each size; the first size includes loading) with the
part of it that is the weights' memory-mapped file pages, and the ratios ours/diffusers. Then the
encoder's share of a run (first run, a new reference on a warm model, and a cached re-run) and the
cost of an edit on a 512 vs a 4096x3072 source through Crop -> Sampler -> Stitch.

    python bench/vs_diffusers.py [--sizes 256 512] [--steps 20] [--repeats 3] [--layout ckpt]
                                 [--work DIR] [--attention default|quad] [--device cpu|cuda]

Goals on a CPU: wall time ours/diffusers <= 0.85 and peak memory <= 0.9 at both sizes; the encoder
<= 2% of a 20-step run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from comfyui import NO_COMFYUI, ComfyUI, find_comfyui  # noqa: E402
from harness import CFG, STEPS_DEFAULT, Executor, ours_prompt, write_inputs  # noqa: E402

from pbe_core import random_checkpoint  # noqa: E402


# ---------------------------------------------------------------- memory
def _status_mib(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) / 1024


def reset_peak() -> None:
    """Linux: make the peak resident set size (VmHWM) start again from the current size."""
    Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2 ** 20 if torch.cuda.is_available() else None


def peak_mib() -> float:
    return _status_mib("VmHWM")


def rss_mib() -> float:
    return _status_mib("VmRSS")


def file_mib() -> float:
    """Resident pages backed by files: memory-mapped weights (both sides map theirs) and libraries."""
    return _status_mib("RssFile")


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # hand freed heap pages back to the system, so the next side starts from the same floor
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def make_model(work: Path, layout: str, size: str) -> tuple[Path, Path]:
    """The same random weights as the authors' single file and as a diffusers folder (kept in --work)."""
    single = work / "models" / "checkpoints" / f"pbe.{layout}"
    folder = work / "diffusers_pbe"
    if not (single.exists() and (folder / "model_index.json").exists()):
        started = time.perf_counter()
        weights = random_checkpoint.random_weights(size, seed=0)
        random_checkpoint.write_single_file(single, weights)  # .ckpt: a Lightning-style pickle
        random_checkpoint.write_diffusers_folder(folder, weights)
        del weights
        release()
        print(f"wrote the {size} random model to {work} in {time.perf_counter() - started:.0f} s")
    return single, folder


# ---------------------------------------------------------------- the two sides
class Side:
    """Figures of one implementation at one size."""

    def __init__(self, name: str):
        self.name, self.load_s, self.first_s, self.runs = name, 0.0, 0.0, []
        self.peak_mib = self.file_mib = 0.0
        self.gpu_peak_mib = None

    def close(self) -> None:
        """Record this size's peak memory, and start the next size's from here."""
        self.peak_mib, self.file_mib, self.gpu_peak_mib = peak_mib(), file_mib(), gpu_peak_mib()
        reset_peak()

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs)


def run_diffusers(folder: Path, inputs: Path, names: dict, args) -> tuple[dict, float]:
    """diffusers as its users run it: from_pretrained, then one pipeline call per image."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder, PaintByExamplePipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    reset_peak()
    floor = rss_mib()
    started = time.perf_counter()
    # Each part through its own from_pretrained: diffusers no longer resolves the folder's
    # "paint_by_example" image encoder (the pipeline moved to `deprecated`), and that encoder's
    # config is a CLIPVisionConfig, which its class does not read by itself.
    pipe = PaintByExamplePipeline(
        unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        image_encoder=PaintByExampleImageEncoder.from_pretrained(
            folder / "image_encoder", config=CLIPVisionConfig.from_pretrained(folder / "image_encoder")),
        scheduler=DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
        feature_extractor=CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor"),
        safety_checker=None, requires_safety_checker=False)
    if args.device == "cuda":
        pipe.to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - started
    reference = Image.open(inputs / "reference.png").convert("RGB")
    results = {}
    for size in args.sizes:
        source_name, mask_name = names[size]
        source = Image.open(inputs / source_name).convert("RGB")
        mask = Image.open(inputs / mask_name).convert("L")
        side = results[size] = Side("diffusers")
        side.load_s = load_s
        for repeat in range(args.repeats + 1):
            started = time.perf_counter()
            pipe(example_image=reference, image=source, mask_image=mask, height=size, width=size,
                 num_inference_steps=args.steps, guidance_scale=CFG,
                 generator=torch.Generator().manual_seed(repeat)).images[0]
            elapsed = time.perf_counter() - started
            if repeat == 0:
                side.first_s = elapsed
            else:
                side.runs.append(elapsed)
            print(f"  diffusers {size}: run {repeat} {elapsed:.2f} s", flush=True)
        side.close()
    del pipe
    release()
    return results, floor


def run_ours(comfy: ComfyUI, ckpt: str, names: dict, args) -> tuple[dict, dict, float, Executor]:
    reset_peak()
    floor = rss_mib()
    ours = Executor(comfy)
    results, encoder, load_s = {}, {}, 0.0
    for size in args.sizes:
        source, mask = names[size]
        side = results[size] = Side("ours")
        for repeat in range(args.repeats + 1):
            elapsed, nodes = ours.run(ours_prompt(ckpt, source, mask, "reference.png", repeat, args.steps))
            if repeat == 0:
                load_s = load_s or nodes.get("loader", 0.0)
                side.load_s = load_s
                side.first_s = elapsed - nodes.get("loader", 0.0)
                if "encode" in nodes:
                    encoder["first"] = (size, nodes["encode"], side.first_s)
            else:
                side.runs.append(elapsed)
                if repeat == 1:
                    encoder.setdefault(f"cached {size}", (size, nodes.get("encode", 0.0), elapsed))
            print(f"  ours {size}: run {repeat} {elapsed:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in nodes.items())})",
                  flush=True)
        side.close()
    # a new reference on the warm model: the encoder runs again, the loader comes from the cache
    size = args.sizes[-1]
    elapsed, nodes = ours.run(ours_prompt(ckpt, *names[size], "reference_2.png", 0, args.steps))
    encoder["new reference"] = (size, nodes.get("encode", 0.0), elapsed)
    return results, encoder, floor, ours


def crop_prompt(ckpt: str, source: str, mask: str, seed: int, steps: int) -> dict:
    prompt = ours_prompt(ckpt, source, mask, "reference.png", seed, steps)
    # a slightly different context each run, so the crop really runs instead of coming from the cache
    prompt["crop"] = {"class_type": "PaintByExampleCrop", "inputs": {
        "source": ["source", 0], "mask": ["mask", 0], "context": 2.0 + (seed % 100) / 100, "resolution": 512, "blend": 16}}
    prompt["sampler"]["inputs"].update(source=["crop", 1], mask=["crop", 2])
    prompt["stitch"] = {"class_type": "PaintByExampleStitch", "inputs": {"crop": ["crop", 0], "edited": ["sampler", 0]}}
    prompt["preview"]["inputs"]["images"] = ["stitch", 0]
    return prompt


def run_crop(ours: Executor, ckpt: str, args) -> dict[str, list[float]]:
    """Crop -> Sampler -> Stitch on a 512x512 and a 4096x3072 source with the same 96 px mask, so the
    sampler works on the same 512 crop. Each case is warmed up once (the PNG is decoded then, as when
    an artist edits one picture again and again); timed is what the pack's three nodes take, not
    ComfyUI's PNG decoding or preview writing."""
    cases = {"512x512": ("source_512.png", "mask_512_small.png"), "4096x3072": ("source_4096.png", "mask_4096.png")}
    times = {name: [] for name in cases}
    for name, (source, mask) in cases.items():
        for repeat in range(args.crop_repeats + 1):
            steps = args.steps if repeat else 1  # the warm-up only has to decode the PNG and fill the caches
            _elapsed, nodes = ours.run(crop_prompt(ckpt, source, mask, 100 + repeat, steps))
            pack = sum(nodes.get(node, 0.0) for node in ("crop", "sampler", "stitch"))
            if repeat:
                times[name].append(pack)
            print(f"  crop {name}: run {repeat} {pack:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in nodes.items())})",
                  flush=True)
    return times


# ---------------------------------------------------------------- report
def report(args, theirs: dict, ours: dict, floors: dict, encoder: dict, crop: dict) -> None:
    print(f"\n== Paint-by-Example, {args.model} random weights, {args.steps} steps, guidance {CFG:g}, "
          f"{args.device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}, median of {args.repeats} warm runs")
    print(f"{'size':>5} {'side':<10} {'load s':>8} {'first s':>8} {'median s':>9} {'steps/s':>8} {'peak MiB':>9} "
          f"{'file MiB':>10}" + (f" {'GPU MiB':>9}" if args.device == "cuda" else ""))
    for size in args.sizes:
        for side in (theirs[size], ours[size]):
            print(f"{size:>5} {side.name:<10} {side.load_s:8.2f} {side.first_s:8.2f} {side.median_s:9.2f} "
                  f"{args.steps / side.median_s:8.3f} {side.peak_mib:9.0f} {side.file_mib:10.0f}"
                  + (f" {side.gpu_peak_mib:9.0f}" if args.device == "cuda" else ""))
    print("ratios ours/diffusers (goals: wall <= 0.85, peak memory <= 0.9):")
    for size in args.sizes:
        mine, other = ours[size], theirs[size]
        print(f"  {size}x{size}: wall {mine.median_s / other.median_s:.3f}, "
              f"first run {mine.first_s / other.first_s:.3f}, "
              f"peak memory {mine.peak_mib / other.peak_mib:.3f} (not file-backed: "
              f"{(mine.peak_mib - mine.file_mib) / (other.peak_mib - other.file_mib):.3f})"
              + (f", peak GPU memory {mine.gpu_peak_mib / other.gpu_peak_mib:.3f}" if args.device == "cuda" else ""))
    print(f"  load: {ours[args.sizes[0]].load_s / theirs[args.sizes[0]].load_s:.3f}")
    print(f"  memory floors before each side: diffusers {floors['diffusers']:.0f} MiB, ours {floors['ours']:.0f} MiB")
    print("encoder share of a run (goal <= 2%):")
    for label, (size, seconds, total) in encoder.items():
        print(f"  {label} ({size}x{size}): encoder {seconds:.3f} s of {total:.2f} s = {100 * seconds / total:.2f}%")
    if crop:
        small, big = (statistics.median(crop[name]) for name in ("512x512", "4096x3072"))
        print(f"crop -> sampler -> stitch at resolution 512, median of {args.crop_repeats}: 512x512 source {small:.2f} s, "
              f"4096x3072 source {big:.2f} s, ratio {big / small:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT)
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per size and side (after a first run)")
    parser.add_argument("--crop-repeats", type=int, default=1, help="timed crop & stitch runs per source (0: skip)")
    parser.add_argument("--model", choices=["full", "tiny"], default="full")
    parser.add_argument("--layout", choices=["ckpt", "safetensors"], default="ckpt",
                        help="our side's file: the authors' .ckpt pickle or a .safetensors conversion")
    parser.add_argument("--work", type=Path, help="folder for the model and images (kept, and reused next time)")
    parser.add_argument("--attention", choices=["default", "quad"], default="default",
                        help="ours with the pack's choice (PyTorch's kernel on a CPU), or ComfyUI's "
                             "sub-quadratic one (as with --use-quad-cross-attention)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: both sides on the GPU in fp16 (ComfyUI's default there); adds peak GPU memory")
    args = parser.parse_args()
    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("peak memory is read from /proc (VmHWM): run this on Linux")
    work = args.work or Path(tempfile.mkdtemp(prefix="pbe_vs_diffusers_"))
    work.mkdir(parents=True, exist_ok=True)
    single, folder = make_model(work, args.layout, args.model)
    options = {"cpu": args.device == "cpu"}
    if args.attention == "quad":
        options["use_quad_cross_attention"] = True
    comfy = ComfyUI(root, work / "models", work / "scratch", **options)
    names = write_inputs(Path(comfy.folder_paths.get_input_directory()), args.sizes)
    import diffusers  # noqa: F401  (imported before either side, so both start from the same floor)
    release()

    print("diffusers' PaintByExamplePipeline:", flush=True)
    theirs, floor = run_diffusers(folder, Path(comfy.folder_paths.get_input_directory()), names, args)
    floors = {"diffusers": floor}
    print(f"  after releasing it: {rss_mib():.0f} MiB resident", flush=True)
    print("ours (Loader -> Encode -> Sampler in ComfyUI):", flush=True)
    ours, encoder, floors["ours"], runner = run_ours(comfy, single.name, names, args)
    crop = run_crop(runner, single.name, args) if args.crop_repeats else {}
    report(args, theirs, ours, floors, encoder, crop)


if __name__ == "__main__":
    main()

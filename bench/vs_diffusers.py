"""Paint-by-Example edits as an artist feels them: this pack in ComfyUI against diffusers' PaintByExamplePipeline.

The same random-weight model (a single .safetensors file for us, as the README's conversion makes
it, or with --layout ckpt the authors' .ckpt; the same weights as a diffusers folder for diffusers)
is written once to --work. Each side then runs in ONE process that
stays up (bench/edit_side.py): ours is ComfyUI's own prompt executor with its graph cache
(Loader -> Encode -> Sampler -> Preview Image) on a worker thread, as ComfyUI's server runs it,
theirs one PaintByExamplePipeline object reused between edits. This parent asks each side for
one edit at a time and alternates the sides run by run, so the drift of a shared machine hits both
alike. For every size and step count:

- load + first edit: the side drops its model and caches (a server opening the workflow), loads,
  edits (after one warm-up edit per size and side, not counted: a process's very first edit pays
  one-time costs);
- re-roll: the same edit with a new seed;
- new reference: the same source and mask with another reference (and a new seed);
- new mask: then the same source and that reference with another mask (and a new seed), as an
  artist redrawing the mask. No goal was set for it; ours re-encodes only the masked source.

Both: DDIM-like sampling (ComfyUI's ddim + ddim_uniform; diffusers' DDIMScheduler), guidance 5,
the same source, mask (the middle half), references and seeds, one batched cond+uncond UNet call
per step. Printed: per-phase medians over the --repeats interleaved runs and ours/diffusers, each
side's peak resident memory (its own process; VmHWM since the model was loaded, with the part that
is memory-mapped files), and where the time of each phase goes (encoder, each VAE call, the
sampling steps with the UNet's own share, decode, paste-back, everything else), and which of
those parts was running when each side's memory peaked.

With --dtype bf16: ours loads with weight_dtype bf16, and runs against diffusers in fp32 (its
default) and in bf16 (torch_dtype bfloat16); the decoded images are compared with our fp32 edit
of the same seed. ComfyUI computes bf16 only where the CPU has AVX512-BF16, AMX or Arm BF16 (the
CPU line says whether this one has): elsewhere it stores bf16 and computes in fp32.

    python bench/vs_diffusers.py [--model full|small|tiny] [--sizes 256 512] [--steps 4 20]
                                 [--repeats 3] [--dtype fp32|bf16] [--layout safetensors|ckpt]
                                 [--file-dtype fp32|fp16|bf16]
                                 [--work DIR] [--attention default|quad] [--device cpu|cuda]
                                 [--noise-mask default|on|off] [--warm-up 1|0]

Goals, ours/diffusers at equal precision: first edit <= 0.95, re-roll <= 0.90, new reference
<= 1.00, peak memory <= 1.00; with bf16 on a CPU with native bf16 against diffusers in fp32:
first edit <= 0.60, peak memory <= 0.65.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE)]

from call_timer import median  # noqa: E402
from comfyui import NO_COMFYUI, find_comfyui, scratch_folder  # noqa: E402
from harness import allocator, write_inputs  # noqa: E402

from pbe_core import convert  # noqa: E402
from pbe_core.testing import random_checkpoint  # noqa: E402
from pbe_core.cpu_features import cpu_has_native_bf16, describe_cpu  # noqa: E402

PHASES = {"first": "load + first edit", "reroll": "re-roll (new seed)", "newref": "new reference",
          "newmask": "new mask"}
GOALS = {"first": 0.95, "reroll": 0.90, "newref": 1.00, "peak": 1.00}
NATIVE_BF16_GOALS = {"first": 0.60, "peak": 0.65}  # ours in bf16 against diffusers in fp32
REFERENCES = {"first": "reference.png", "reroll": "reference.png", "newref": "reference_2.png",
              "newmask": "reference_2.png"}
MASKS = {"newmask": "_2"}  # the mask file's suffix: mask_<size>_2.png, the redrawn mask


def make_model(work: Path, layout: str, size: str) -> tuple[str, str]:
    """The same random weights as the authors' single file and as a diffusers folder (kept in --work)."""
    stem = "pbe" if size == "full" else f"pbe_{size}"
    single = work / "models" / "checkpoints" / f"{stem}.{layout}"
    folder = work / f"diffusers_{stem}"
    if not (single.exists() and (folder / "model_index.json").exists()):
        started = time.perf_counter()
        weights = random_checkpoint.random_weights(size, seed=0)
        # a .ckpt is a Lightning-style pickle; its AdamW state (7 GB at full size) changes nothing we measure
        random_checkpoint.write_single_file(single, weights, optimizer_state=False)
        random_checkpoint.write_diffusers_folder(folder, weights)
        print(f"wrote the {size} random model to {work} in {time.perf_counter() - started:.0f} s", flush=True)
    return single.name, folder.name


def our_file(work: Path, single: str, file_dtype: str) -> str:
    """Our side's file: the written one (fp32, the same values as diffusers' folder), or the pack's
    own conversion of it to fp16 or bf16 (made once with pbe_core.convert, as the README says)."""
    if file_dtype == "fp32":
        return single
    source = work / "models" / "checkpoints" / single
    converted = source.with_name(f"{source.stem}_{file_dtype}.safetensors")
    if not converted.exists():
        convert.convert(source, converted, dtype=file_dtype)
    return converted.name


class Side:
    """One implementation in a process of its own (bench/edit_side.py), asked for one edit at a time."""

    def __init__(self, label: str, impl: str, dtype: str, args, ckpt: str, folder: str):
        self.label, self.impl, self.dtype = label, impl, dtype
        self.log = args.work / "logs" / f"{label.replace(' ', '_')}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(HERE / "edit_side.py"), "--side", impl, "--dtype", dtype, "--work",
                   str(args.work), "--ckpt", ckpt, "--diffusers-folder", folder, "--device", args.device,
                   "--attention", args.attention, "--noise-mask", args.noise_mask]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            text=True, bufsize=1)
        ready = self._answer()
        self.threads, self.floor_mib = ready["threads"], ready["floor_mib"]
        self.runs: dict[tuple, list[dict]] = {}  # (size, steps, phase) -> answers

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"{self.label} stopped; the end of its log ({self.log}):\n{self.log.read_text()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            sys.exit(f"{self.label} failed:\n{answer['error']}")
        return answer

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
            self.process.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()


def seed_of(repeat: int, config: int, phase: str) -> int:
    return 1000 * repeat + 10 * config + list(PHASES).index(phase)


def warm_up(sides: list[Side], args) -> None:
    """A first edit per size and side, not counted, so that every counted first edit starts from a
    process that has edited before (a server that has run once), whatever the order of the runs:
    a process's very first edit also pays one-time costs (libraries' lazy set-up, and the weights
    read from disk when they are not in the page cache yet)."""
    for size in args.sizes:
        for side in sides:
            answer = side.ask(op="first", size=size, steps=2, seed=0, reference=REFERENCES["first"], mask="")
            print(f"  {size}x{size} 2 steps, warm-up (not counted): {side.label} {answer['seconds']:.2f} s", flush=True)


def run_interleaved(sides: list[Side], configs: list[tuple[int, int]], args) -> None:
    runs = 0
    for repeat in range(args.repeats):
        for index, (size, steps) in enumerate(configs):
            for phase in PHASES:
                shift = runs % len(sides)  # who goes first turns with every run
                runs += 1
                for side in sides[shift:] + sides[:shift]:
                    answer = side.ask(op="first" if phase == "first" else "edit", size=size, steps=steps,
                                      seed=seed_of(repeat, index, phase), reference=REFERENCES[phase],
                                      mask=MASKS.get(phase, ""))
                    side.runs.setdefault((size, steps, phase), []).append(answer)
                    print(f"  {size}x{size} {steps} steps, {PHASES[phase]}: {side.label} "
                          f"{_breakdown(side, [answer])}", flush=True)
                    if phase == "reroll" and repeat == args.repeats - 1 and args.dtype == "bf16":
                        side.ask(op="save", path=str(image_path(args, side.label, size, steps)))


def image_path(args, label: str, size: int, steps: int) -> Path:
    return args.work / "images" / f"{label.replace(' ', '_')}_{size}_{steps}.npy"


# ---------------------------------------------------------------- report
def _seconds(answers: list[dict]) -> list[float]:
    return [answer["seconds"] for answer in answers]


def _ratio_line(name: str, ours: float, others: list[tuple[Side, float]], goal: tuple | None) -> str:
    ratios = ", ".join(f"{ours / value:.3f} vs {side.label}" for side, value in others)
    verdict = "" if goal is None else f" (goal <= {goal[0]:.2f} vs {goal[1]})"
    return f"  ratio ours/diffusers, {name}: {ratios}{verdict}"


def _part(answers: list[dict], name: str) -> float:
    values = [answer["parts"].get(name) for answer in answers]
    values = [sum(v) if isinstance(v, list) else v for v in values if v is not None]
    return median(values) if values else float("nan")


def _breakdown(side: Side, answers: list[dict]) -> str:
    last = answers[-1]["parts"]
    unet, steps = median([median(a["parts"]["unet"]) for a in answers]), len(last["unet"])
    per_step = median([median(a["parts"]["steps"]) for a in answers if a["parts"]["steps"]]) if steps > 1 else unet
    faults = [median(a["parts"]["unet_faults"]) for a in answers if a["parts"].get("unet_faults")]
    faults_text = f"{median(faults) / 1000:.0f}k page faults/call" if faults else "page faults not counted"
    text = (f"total {median(_seconds(answers)):.2f} | load {_part(answers, 'load'):.2f} | encoder "
            f"{_part(answers, 'encoder'):.2f} | VAE encode {len(last['vae_encode'])}x "
            f"{_part(answers, 'vae_encode'):.2f} | {steps} steps {_part(answers, 'sampling'):.2f} "
            f"({per_step:.3f}/step, UNet {unet:.3f}/call, {faults_text}) | VAE decode {len(last['vae_decode'])}x "
            f"{_part(answers, 'vae_decode'):.2f}")
    if "sampler_setup" in last:
        text += (f" | sampler setup {_part(answers, 'sampler_setup'):.2f} | paste {_part(answers, 'paste'):.3f}"
                 f" | preview {_part(answers, 'preview'):.3f}")
    return text + f" | other {_part(answers, 'other'):.2f}"


def _peaks(answers: list[dict]) -> str:
    """Each part's highest resident memory over the runs, highest first (where an edit peaks), with
    the most it rose above what was resident as the part started (what the part itself needed)."""
    peaks: dict[str, float] = {}
    rises: dict[str, float] = {}
    for answer in answers:
        for part, mib in answer.get("peak_by_part", {}).items():
            peaks[part] = max(peaks.get(part, 0.0), mib)
            rises[part] = max(rises.get(part, 0.0), answer["rise_by_part"][part])
    return " | ".join(f"{part} {mib:.0f} (+{rises[part]:.0f})"
                      for part, mib in sorted(peaks.items(), key=lambda item: -item[1]))


def report(args, sides: list[Side], configs: list[tuple[int, int]]) -> None:
    ours, others = sides[0], sides[1:]
    import diffusers

    threads = ", ".join(f"{s.label} {s.threads}" for s in sides)
    where = ", ".join(f"{s.label} on a {next(iter(s.runs.values()))[0]['thread']} thread" for s in sides)
    print(f"\n== Paint-by-Example edits: {args.model} random weights, ours {ours.dtype} from {args.ckpt} "
          f"(noise_mask {args.noise_mask}), {args.device}; CPU: {describe_cpu()}; allocator: {allocator()}; "
          f"edits: {where}; torch threads {threads}; torch "
          f"{torch.__version__}, diffusers {diffusers.__version__}, transformers "
          f"{importlib.metadata.version('transformers')}; guidance 5, DDIM-like; medians of {args.repeats} "
          "interleaved runs (runs in brackets)")
    for size, steps in configs:
        print(f"\n{size}x{size}, {steps} steps")
        for phase, name in PHASES.items():
            row = [f"{median(_seconds(s.runs[size, steps, phase])):.2f} s "
                   f"({', '.join(f'{v:.2f}' for v in _seconds(s.runs[size, steps, phase]))})" for s in sides]
            print(f"  {name:<20} " + " | ".join(f"{s.label} {value}" for s, value in zip(sides, row)))
        peaks = {s.label: max(a["peak_mib"] for key, answers in s.runs.items() if key[:2] == (size, steps)
                              for a in answers) for s in sides}
        files = {s.label: max(a["file_mib"] for key, answers in s.runs.items() if key[:2] == (size, steps)
                              for a in answers) for s in sides}
        print(f"  {'peak resident memory':<20} " + " | ".join(
            f"{s.label} {peaks[s.label]:.0f} MiB (file-backed {files[s.label]:.0f})" for s in sides))
        for phase, name in PHASES.items():
            mine = median(_seconds(ours.runs[size, steps, phase]))
            theirs = [(s, median(_seconds(s.runs[size, steps, phase]))) for s in others]
            print(_ratio_line(name, mine, theirs, _goal(args, phase, others)))
        print(_ratio_line("peak memory", peaks[ours.label], [(s, peaks[s.label]) for s in others],
                          _goal(args, "peak", others)))
    print("\nresident memory of each process once its libraries are imported, before any model: "
          + ", ".join(f"{s.label} {s.floor_mib:.0f} MiB" for s in sides))
    print("\nwhere the time goes (seconds, medians; steps: from the first UNet call's start to the last one's end)")
    for size, steps in configs:
        for phase, name in PHASES.items():
            for side in sides:
                print(f"  {size}x{size} {steps} steps, {name}, {side.label}: "
                      f"{_breakdown(side, side.runs[size, steps, phase])}")
    print("\nwhere the peak memory is reached (resident MiB, file-backed pages included: the highest over the "
          "runs while each part ran innermost; in brackets the most it rose above what was resident as that part "
          "started, less the model file's pages read meanwhile, the parts inside it included; other: between the "
          "parts)")
    for size, steps in configs:
        for phase, name in PHASES.items():
            for side in sides:
                print(f"  {size}x{size} {steps} steps, {name}, {side.label}: {_peaks(side.runs[size, steps, phase])}")
    if args.dtype == "bf16":
        image_differences(args, sides, configs)


def _goal(args, phase: str, others: list[Side]) -> tuple | None:
    """(ratio, against which side), where the issue set one."""
    if args.dtype == "fp32":
        return (GOALS[phase], others[0].label) if phase in GOALS else None
    if cpu_has_native_bf16() and phase in NATIVE_BF16_GOALS:  # ours in bf16 against diffusers in fp32
        return NATIVE_BF16_GOALS[phase], others[0].label
    return None  # a CPU without native bf16: ComfyUI computes in fp32 there, no goal


def image_differences(args, sides: list[Side], configs: list[tuple[int, int]]) -> None:
    """The decoded images' difference from our fp32 edit of the same seed, source, mask and reference."""
    reference = Side("ours fp32", "ours", "fp32", args, args.fp32_ckpt, args.folder)  # the fp32 file
    try:
        for index, (size, steps) in enumerate(configs):
            reference.ask(op="first", size=size, steps=steps, seed=seed_of(args.repeats - 1, index, "reroll"),
                          reference=REFERENCES["reroll"])
            reference.ask(op="save", path=str(image_path(args, reference.label, size, steps)))
    finally:
        reference.close()
    print("\ndecoded image against our fp32 edit (same seed; 0..1 pixel values)")
    for size, steps in configs:
        baseline = np.load(image_path(args, reference.label, size, steps))
        for side in sides:
            difference = np.abs(np.load(image_path(args, side.label, size, steps)) - baseline)
            print(f"  {size}x{size} {steps} steps, {side.label}: max |d| {difference.max():.2e}, mean |d| "
                  f"{difference.mean():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["full", "small", "tiny"], default="full")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 20])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every phase per side")
    parser.add_argument("--warm-up", type=int, choices=[0, 1], default=1,
                        help="1: each side first edits each size once, not counted (a server that has run before)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: ours with weight_dtype bf16, against diffusers in fp32 and in bf16")
    parser.add_argument("--layout", choices=["ckpt", "safetensors"], default="safetensors",
                        help="our side's file: a .safetensors conversion (what the README and the example "
                             "workflows load; diffusers' folder holds .safetensors too) or the authors' .ckpt "
                             "pickle, which takes longer to load")
    parser.add_argument("--file-dtype", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="precision of our side's .safetensors file: fp32 (the same values as diffusers' "
                             "folder) or the pack's converter's fp16 / bf16 conversion of it (python -m "
                             "pbe_core.convert --dtype ...); a bf16 file loads without a cast for --dtype bf16")
    parser.add_argument("--work", type=Path,
                        help="folder for the model and images (kept, and reused next time); "
                             "without it a temporary one is removed at exit")
    parser.add_argument("--attention", choices=["default", "quad"], default="default",
                        help="ours with the pack's choice (PyTorch's kernel on a CPU), or ComfyUI's sub-quadratic "
                             "one (as with --use-quad-cross-attention)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: both sides on the GPU in ComfyUI's precision there (fp16)")
    parser.add_argument("--noise-mask", choices=["default", "on", "off"], default="default",
                        help="ours: the Sampler's noise_mask (default: as the Sampler's own default); off encodes "
                             "the source once, as diffusers does")
    args = parser.parse_args()
    if find_comfyui() is None:
        sys.exit(NO_COMFYUI)
    if importlib.util.find_spec("diffusers") is None:
        sys.exit("diffusers is not installed (pip install --group test)")
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("peak memory is read from /proc (VmHWM): run this on Linux")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA GPU here")
    args.work = scratch_folder("pbe_vs_diffusers_", args.work).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.ckpt, args.folder = make_model(args.work, args.layout, args.model)
    if args.file_dtype != "fp32" and args.layout != "safetensors":
        sys.exit("--file-dtype fp16/bf16 is a .safetensors conversion: use it with --layout safetensors")
    args.fp32_ckpt, args.ckpt = args.ckpt, our_file(args.work, args.ckpt, args.file_dtype)
    (args.work / "scratch" / "input").mkdir(parents=True, exist_ok=True)
    (args.work / "images").mkdir(exist_ok=True)
    write_inputs(args.work / "scratch" / "input", args.sizes, large=False)
    configs = [(size, steps) for size in args.sizes for steps in args.steps]
    plan = [("ours", "ours", args.dtype), ("diffusers", "diffusers", "fp32")]
    if args.dtype == "bf16":
        plan = [("ours bf16", "ours", "bf16"), ("diffusers fp32", "diffusers", "fp32"),
                ("diffusers bf16", "diffusers", "bf16")]
    sides = [Side(label, impl, dtype, args, args.ckpt, args.folder) for label, impl, dtype in plan]
    try:
        if args.warm_up:
            warm_up(sides, args)
        run_interleaved(sides, configs, args)
    finally:
        for side in sides:
            side.close()
    report(args, sides, configs)


if __name__ == "__main__":
    main()

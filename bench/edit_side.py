"""One side of bench/vs_diffusers.py: a process that stays up, as a ComfyUI server does, and runs the
edits its parent asks for, one JSON line per command on stdin and per answer on stdout.

- ours: ComfyUI's own prompt executor (its graph cache and model management in play), on a worker
  thread as in ComfyUI's server, running
  Loader -> Encode -> Sampler -> Preview Image, ComfyUI's ddim sampler and ddim_uniform schedule;
- diffusers: one PaintByExamplePipeline object (its DDIMScheduler), reused between edits.

Commands: {"op": "first" | "edit", "size", "steps", "seed", "reference"} ("first" drops the model
and everything cached, then loads and edits: what opening a workflow in a fresh server costs),
{"op": "save", "path"} (the last edit's image as .npy, float 0..1), {"op": "quit"}. Each edit's
answer holds its seconds, where they went (see breakdown()), the peak resident memory during the
edit (VmHWM; for a "first", counted from after the previous model was released, so the load is in
it) and which part of the edit was running when each part's highest memory was reached.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from call_timer import CallTimer, status_mib  # noqa: E402


# ---------------------------------------------------------------- memory
def release() -> None:
    gc.collect()
    try:  # hand freed heap pages back to the system, so each load starts from the same floor
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def breakdown(timer: CallTimer, total: float) -> dict:
    """Seconds per part of one edit. "steps" are the intervals between consecutive UNet calls (a
    whole sampling step each); "sampling" runs from the first UNet call's start to the last one's
    end; "other" is what no part below accounts for."""
    parts = {
        "load": timer.total("load"), "encoder": timer.total("encoder"),
        "vae_encode": timer.seconds("vae_encode"), "unet": timer.seconds("unet"),
        "steps": timer.intervals("unet"), "sampling": timer.span("unet"),
        "vae_decode": timer.seconds("vae_decode"), "unet_faults": timer.faults("unet"),
    }
    accounted = parts["load"] + parts["encoder"] + sum(parts["vae_encode"])
    if any(label == "sampler" for label, _s, _e in timer.calls):  # ours: the nodes around the model calls
        parts["sampler_setup"] = timer.total("sampler") - parts["sampling"]
        parts["paste"] = timer.total("paste") - sum(parts["vae_decode"])
        parts["preview"] = timer.total("preview")
        accounted += timer.total("sampler") + timer.total("paste") + parts["preview"]
    else:
        accounted += parts["sampling"] + sum(parts["vae_decode"])
    parts["other"] = total - accounted
    return parts


# ---------------------------------------------------------------- ours
class Ours:
    def __init__(self, args):
        from comfyui import ComfyUI, find_comfyui

        options = {"cpu": args.device == "cpu"}
        if args.attention == "quad":
            options["use_quad_cross_attention"] = True
        self.comfy = ComfyUI(find_comfyui(), args.work / "models", args.work / "scratch", **options)
        import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
        import comfy.model_management
        import comfy.sd
        import nodes

        self.mm = comfy.model_management
        self.timer = CallTimer(memory=True)
        for node_id, label in (("PaintByExampleLoader", "load"), ("PaintByExampleEncode", "encoder"),
                               ("KSampler", "sampler"), ("PaintByExamplePasteBack", "paste"),
                               ("PreviewImage", "preview")):
            cls = nodes.NODE_CLASS_MAPPINGS[node_id]
            self.timer.wrap(cls, cls.FUNCTION, label)
        self.timer.wrap(comfy.sd.VAE, "encode", "vae_encode")
        self.timer.wrap(comfy.sd.VAE, "decode", "vae_decode")
        self.timer.wrap(openaimodel.UNetModel, "forward", "unet")
        self.ckpt, self.dtype, self.noise_mask, self.runner = args.ckpt, args.dtype, args.noise_mask, None

    def drop(self) -> None:
        """As a fresh server: nothing cached, no model loaded."""
        self.runner = None
        gc.collect()
        self.mm.unload_all_models()
        self.mm.cleanup_models()
        self.mm.soft_empty_cache()
        release()

    def edit(self, size: int, steps: int, seed: int, reference: str, mask: str = "") -> float:
        from harness import Executor, ours_prompt

        if self.runner is None:
            self.runner = Executor(self.comfy)
        prompt = ours_prompt(self.ckpt, f"source_{size}.png", f"mask_{size}{mask}.png", reference, seed, steps)
        prompt["loader"]["inputs"]["weight_dtype"] = "bf16" if self.dtype == "bf16" else "default"
        if self.noise_mask != "default":
            prompt["sampler"]["inputs"]["noise_mask"] = self.noise_mask == "on"
        elapsed, _nodes = self.runner.run(prompt)
        return elapsed

    def image(self) -> np.ndarray:
        return self.runner.output("sampler")[0][0].float().numpy()


# ---------------------------------------------------------------- diffusers
class Diffusers:
    def __init__(self, args):
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.pipelines.deprecated.paint_by_example import PaintByExamplePipeline

        self.timer = CallTimer(memory=True)
        self.timer.wrap(self, "load", "load")
        self.timer.wrap(PaintByExamplePipeline, "_encode_image", "encoder")
        self.timer.wrap(AutoencoderKL, "encode", "vae_encode")
        self.timer.wrap(AutoencoderKL, "decode", "vae_decode")
        self.timer.wrap(UNet2DConditionModel, "forward", "unet")
        self.folder, self.inputs = args.work / args.diffusers_folder, args.work / "scratch" / "input"
        self.dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        self.device = args.device
        self.pipe, self.last = None, None

    def drop(self) -> None:
        self.pipe = None
        release()

    def load(self):
        """As diffusers' users load it: each part through its own from_pretrained (diffusers no longer
        resolves the folder's "paint_by_example" image encoder, and that encoder's config is a
        CLIPVisionConfig, which its class does not read by itself)."""
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder, PaintByExamplePipeline
        from transformers import CLIPImageProcessor, CLIPVisionConfig

        folder, dtype = self.folder, self.dtype
        pipe = PaintByExamplePipeline(
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype),
            image_encoder=PaintByExampleImageEncoder.from_pretrained(
                folder / "image_encoder", config=CLIPVisionConfig.from_pretrained(folder / "image_encoder"),
                dtype=dtype),
            scheduler=DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
            feature_extractor=CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor"),
            safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        if self.device == "cuda":  # as ComfyUI runs it there: fp16 unless bf16 was asked for
            pipe.to("cuda", torch.bfloat16 if dtype == torch.bfloat16 else torch.float16)
        self.pipe = pipe

    def edit(self, size: int, steps: int, seed: int, reference: str, mask: str = "") -> float:
        from PIL import Image

        started = time.perf_counter()
        if self.pipe is None:
            self.load()
        source = Image.open(self.inputs / f"source_{size}.png").convert("RGB")
        example = Image.open(self.inputs / reference).convert("RGB")
        self.last = self.pipe(example_image=example, image=source,
                              mask_image=Image.open(self.inputs / f"mask_{size}{mask}.png").convert("L"),
                              height=size, width=size,
                              num_inference_steps=steps, guidance_scale=GUIDANCE,
                              generator=torch.Generator().manual_seed(seed)).images[0]
        return time.perf_counter() - started

    def image(self) -> np.ndarray:
        return np.asarray(self.last, dtype=np.float32) / 255


GUIDANCE = 5.0


# ---------------------------------------------------------------- the command loop
def serve(side, answers) -> None:
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "quit":
                break
            if op == "save":
                np.save(command["path"], side.image())
                answer = {}
            else:
                if op == "first":
                    side.drop()
                    if torch.cuda.is_available():
                        torch.cuda.reset_peak_memory_stats()
                side.timer.clear()  # restarts the kernel's peak count too (VmHWM)
                seconds = side.edit(command["size"], command["steps"], command["seed"], command["reference"],
                                    command.get("mask", ""))
                answer = {"seconds": seconds, "parts": breakdown(side.timer, seconds),
                          "peak_mib": side.timer.peak(), "peak_by_part": dict(side.timer.peaks),
                          "rise_by_part": dict(side.timer.rises),
                          "file_mib": status_mib("RssFile"),
                          "thread": "main" if threading.current_thread() is threading.main_thread() else "worker"}
                if torch.cuda.is_available():
                    answer["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        except Exception:  # the parent prints it and stops
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["ours", "diffusers"], required=True)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--ckpt", help="ours: the checkpoint's name in work/models/checkpoints")
    parser.add_argument("--diffusers-folder", help="diffusers: the model folder's name in work")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--attention", choices=["default", "quad"], default="default")
    parser.add_argument("--noise-mask", choices=["default", "on", "off"], default="default")
    args = parser.parse_args()
    answers = os.fdopen(os.dup(1), "w")  # the answers; whatever the libraries print goes to stderr
    os.dup2(2, 1)
    side = Ours(args) if args.side == "ours" else Diffusers(args)
    release()
    answers.write(json.dumps({"ready": True, "threads": torch.get_num_threads(), "floor_mib": status_mib("VmRSS")})
                  + "\n")
    answers.flush()
    if args.side == "ours":
        # ComfyUI's server runs prompts on a worker thread, not its main one; where the C library's
        # malloc keeps a thread's freed memory depends on that (docs/benchmarks.md), so ours does too
        worker = threading.Thread(target=serve, args=(side, answers), name="prompt_worker")
        worker.start()
        worker.join()
    else:
        serve(side, answers)


if __name__ == "__main__":
    main()

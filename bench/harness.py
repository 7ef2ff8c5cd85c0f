"""What the benchmarks share: test pictures, this pack's graph, and ComfyUI's own prompt executor
with node and sampling-step timing. Scripts put the repository and tests/ on sys.path first."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comfyui import ComfyUI

STEPS_DEFAULT, CFG = 20, 5.0


def allocator() -> str:
    """The C memory allocator both sides run with: a CPU step's speed depends on it (figures in
    docs/benchmarks.md), so the benchmarks print it beside the CPU."""
    preloaded = [Path(p).name for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()]
    if preloaded:
        return f"LD_PRELOAD {', '.join(preloaded)}"
    tuned = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t.startswith("glibc.malloc.")]
    return f"the C library's malloc with {', '.join(tuned)}" if tuned else "the C library's malloc"


# ---------------------------------------------------------------- inputs
def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like test picture: low-frequency colour noise, 8-bit RGB."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_inputs(folder: Path, sizes: list[int], large: bool = True) -> dict:
    """Source, mask (the middle half of each side) and reference PNGs, for every side alike, and a
    second mask of the same size moved up and right (``mask_<size>_2.png``, an artist's redrawn
    mask); with ``large``, also the 512 and 4096x3072 cases of the crop comparison."""
    names = {}
    for size in sorted({*sizes, 512} if large else set(sizes)):
        mask, moved = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
        mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
        moved[size // 8: 5 * size // 8, 3 * size // 8: 7 * size // 8] = 255
        Image.fromarray(smooth_image(size, size, seed=size)).save(folder / f"source_{size}.png")
        Image.fromarray(mask).save(folder / f"mask_{size}.png")
        Image.fromarray(moved).save(folder / f"mask_{size}_2.png")
        names[size] = (f"source_{size}.png", f"mask_{size}.png")
    for seed, name in ((1, "reference.png"), (2, "reference_2.png")):
        Image.fromarray(smooth_image(400, 320, seed=seed)).save(folder / name)
    if not large:
        return names
    big = np.zeros((3072, 4096), np.uint8)
    big[1536 - 48:1536 + 48, 2048 - 48:2048 + 48] = 255
    Image.fromarray(smooth_image(3072, 4096, seed=3)).save(folder / "source_4096.png")
    Image.fromarray(big).save(folder / "mask_4096.png")
    small = np.zeros((512, 512), np.uint8)
    small[256 - 48:256 + 48, 256 - 48:256 + 48] = 255
    Image.fromarray(small).save(folder / "mask_512_small.png")
    return names


# ---------------------------------------------------------------- this pack's graph
def ours_prompt(ckpt: str, source: str, mask: str, reference: str, seed: int, steps: int) -> dict:
    """Loader -> Encode -> Sampler, ComfyUI's ddim sampler and ddim_uniform schedule."""
    return {
        "loader": {"class_type": "PaintByExampleLoader", "inputs": {"ckpt_name": ckpt}},
        "source": {"class_type": "LoadImage", "inputs": {"image": source}},
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}},
        "reference": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "encode": {"class_type": "PaintByExampleEncode",
                   "inputs": {"encoder": ["loader", 2], "reference": ["reference", 0], "preprocess": "center_crop"}},
        "sampler": {"class_type": "PaintByExampleSampler", "inputs": {
            "model": ["loader", 0], "vae": ["loader", 1], "positive": ["encode", 0], "negative": ["encode", 1],
            "source": ["source", 0], "mask": ["mask", 0], "seed": seed, "steps": steps, "cfg": CFG,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["sampler", 0]}},
    }


# ---------------------------------------------------------------- running prompts
class Timeline:
    """Stands in for ComfyUI's server: records when each node starts, and (through ComfyUI's
    progress hook, as its server does) when each sampling step ends."""

    client_id, last_node_id, last_prompt_id, sockets_metadata = "bench", None, None, {}

    def __init__(self):
        self.events, self.steps = [], []

    def send_sync(self, event, data, sid=None):
        if event == "executing":  # nodes a node expands into count as that node (ComfyUI's display node)
            self.events.append((time.perf_counter(), data.get("display_node") or data.get("node")))

    def step_done(self, value, total, preview, node_id=None):
        running = self.events[-1][1] if self.events else None  # the node that reports the step
        self.steps.append((time.perf_counter(), value, running))

    def clear(self) -> None:
        self.events.clear()
        self.steps.clear()

    def node_seconds(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for (at, node), (later, _) in zip(self.events, self.events[1:]):
            if node is not None:
                seconds[node] = seconds.get(node, 0.0) + later - at
        return seconds

    def steps_per_second(self, node: str | None = None) -> float | None:
        """As tqdm counts it: steps between the first and the last step's end (of one node's
        sampling, or of all), so the first step (which also moves the model to its device) and
        everything around sampling are left out."""
        steps = [(at, value) for at, value, running in self.steps if node is None or running == node]
        if len(steps) < 2 or steps[-1][0] <= steps[0][0]:
            return None
        (first_at, first), (last_at, last) = steps[0], steps[-1]
        return (last - first) / (last_at - first_at)


class Executor:
    """ComfyUI's own prompt executor (graph cache and model management included), timed."""

    def __init__(self, comfy: ComfyUI):
        import comfy.utils as comfy_utils  # importable once ComfyUI is set up

        self.comfy = comfy
        self.timeline = Timeline()
        self.executor = comfy.execution.PromptExecutor(self.timeline)
        comfy_utils.set_progress_bar_global_hook(self.timeline.step_done)
        comfy_utils.set_progress_bar_enabled(False)  # no console bars between the figures; the hook still runs
        self.count = 0

    def run(self, prompt: dict) -> tuple[float, dict[str, float]]:
        """Seconds for the whole prompt, and per node run (nodes served by the cache are absent)."""
        valid, error, outputs, node_errors = self.comfy.validate(prompt)
        if not valid:
            raise RuntimeError(f"ComfyUI refused the prompt: {error} {node_errors}")
        self.timeline.clear()
        self.count += 1
        started = time.perf_counter()
        self.executor.execute(prompt, f"bench-{self.count}", {"client_id": "bench"}, list(outputs))
        elapsed = time.perf_counter() - started
        if not self.executor.success:
            raise RuntimeError(f"ComfyUI failed: {self.executor.status_messages[-1]}")
        return elapsed, self.timeline.node_seconds()

    def steps_per_second(self, node: str | None = None) -> float | None:
        """Of the last prompt's sampling (in one node, or in all)."""
        return self.timeline.steps_per_second(node)

    def output(self, node: str) -> tuple:
        """The last prompt's outputs of a node, one value per output (the first item of each list)."""
        entry = self.executor.caches.outputs.get(node)
        outputs = entry.outputs if hasattr(entry, "outputs") else entry
        return tuple(values[0] for values in outputs)

    def order(self) -> list[str]:
        """The nodes the last prompt ran, in order."""
        return [node for _at, node in self.timeline.events if node is not None]

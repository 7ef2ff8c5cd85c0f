"""Edits in a real ComfyUI server, as an artist runs them: `python main.py --cpu` with this pack
installed, a first edit (Loader -> Encode -> Sampler -> Preview Image, ComfyUI's ddim sampler and
ddim_uniform schedule, guidance 5) and then re-rolls with new seeds, each queued over ComfyUI's HTTP
API as the frontend queues it.

Printed per prompt: the seconds the server itself reports (its execution_start to
execution_success), the memory pages the server process faulted in meanwhile (Linux), and its
resident memory afterwards; then the medians of the re-rolls. The server inherits this script's
environment, so the C library's allocator settings it runs with are the ones this script is started
with: compare a run without them against one with GLIBC_TUNABLES or LD_PRELOAD (README, "A faster
CPU edit"; figures in docs/benchmarks.md).

    python bench/server_edits.py [--model full|small|tiny] [--size 256] [--steps 4] [--rerolls 4]
                                 [--work DIR]

--work keeps the model and images between runs (the same model file as bench/vs_diffusers.py's
--work); without it a temporary folder is used and removed at exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE)]

from call_timer import median  # noqa: E402
from comfyui import NO_COMFYUI, find_comfyui, scratch_folder  # noqa: E402
from comfyui_server import comfyui_server  # noqa: E402
from harness import allocator, ours_prompt, write_inputs  # noqa: E402

from pbe_core.cpu_features import describe_cpu  # noqa: E402
from pbe_core.testing import random_checkpoint  # noqa: E402


def make_model(work: Path, size: str) -> str:
    """The random model as the authors' single .ckpt in work/models/checkpoints (kept for the next run)."""
    name = "pbe.ckpt" if size == "full" else f"pbe_{size}.ckpt"
    path = work / "models" / "checkpoints" / name
    if not path.exists():
        started = time.perf_counter()
        random_checkpoint.write_single_file(path, random_checkpoint.random_weights(size, seed=0),
                                            optimizer_state=False)
        print(f"wrote the {size} random model to {path} in {time.perf_counter() - started:.0f} s", flush=True)
    return name


def server_process(base: Path) -> Path | None:
    """/proc/<pid> of the server started with --base-directory base (Linux), or None."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"main.py" in command and str(base).encode() in command:
                return entry
    return None


def page_faults(process: Path | None) -> int | None:
    if process is None:
        return None
    return int((process / "stat").read_text().rsplit(")", 1)[1].split()[7])  # minflt


def resident_mib(process: Path | None) -> float | None:
    if process is None:
        return None
    return int((process / "statm").read_text().split()[1]) * 4096 / 2 ** 20


def run_prompt(url: str, prompt: dict, timeout: float = 3600.0) -> float:
    """Queue one prompt; its seconds as the server reports them. Stops with the server's error."""
    request = urllib.request.Request(f"{url}/prompt", json.dumps({"prompt": prompt}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        prompt_id = json.load(response)["prompt_id"]
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
            history = json.load(response)
        status = history.get(prompt_id, {}).get("status", {})
        if status.get("completed") is not None:
            break
        if time.monotonic() > deadline:
            sys.exit(f"the prompt did not finish within {timeout:.0f} s")
        time.sleep(0.2)
    messages = dict(status["messages"])
    if status["status_str"] != "success":
        sys.exit(f"the server's edit failed: {json.dumps(messages.get('execution_error', status))[:3000]}")
    return (messages["execution_success"]["timestamp"] - messages["execution_start"]["timestamp"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["full", "small", "tiny"], default="full")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rerolls", type=int, default=4)
    parser.add_argument("--work", help="folder for the model and images (kept, and reused next time)")
    args = parser.parse_args()
    root = find_comfyui()
    if root is None:
        sys.exit(NO_COMFYUI)
    work = scratch_folder("pbe_server_", args.work).resolve()
    ckpt = make_model(work, args.model)
    (work / "input").mkdir(parents=True, exist_ok=True)
    source, mask = write_inputs(work / "input", [args.size], large=False)[args.size]

    with comfyui_server(root, work, timeout=600) as url:
        process = server_process(work)
        print(f"== {args.model} random weights, {args.size}x{args.size}, {args.steps} steps, a real ComfyUI "
              f"server (main.py --cpu); CPU: {describe_cpu()}; allocator: {allocator()}", flush=True)
        rerolls = []
        for index in range(args.rerolls + 1):
            faults, started = page_faults(process), time.perf_counter()
            seconds = run_prompt(url, ours_prompt(ckpt, source, mask, "reference.png", index + 1, args.steps))
            counted = page_faults(process)
            faults_text = ("page faults not counted" if counted is None
                           else f"{(counted - faults) / 1000:.0f}k page faults")
            rss = resident_mib(process)
            label = "load + first edit" if index == 0 else "re-roll (new seed)"
            print(f"  {label}: {seconds:.2f} s (the server's; {time.perf_counter() - started:.2f} s queued to "
                  f"done), {faults_text}, resident afterwards "
                  f"{'not read' if rss is None else f'{rss:.0f} MiB'}", flush=True)
            if index:
                rerolls.append(seconds)
        if rerolls:
            print(f"re-rolls: median {median(rerolls):.2f} s ({', '.join(f'{s:.2f}' for s in rerolls)})")


if __name__ == "__main__":
    main()

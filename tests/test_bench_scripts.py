"""The benchmarks keep working (they are run by people, not timed here): each runs on the tiny model
with a step or two and must print its figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from comfyui import NO_COMFYUI, find_comfyui

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str, tmp_path: Path, needs_diffusers: bool = True) -> str:
    if find_comfyui() is None:
        pytest.skip(NO_COMFYUI)
    if needs_diffusers:
        pytest.importorskip("diffusers")
    temp = tmp_path / "temp"
    temp.mkdir()
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path, env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    # a script's own scratch folder (a full-size model takes gigabytes) goes when the script ends
    assert not [p.name for p in temp.iterdir() if p.name.startswith("pbe_")]
    return done.stdout


def test_vs_diffusers_prints_every_phase_ratio_and_breakdown(tmp_path):
    out = _run("vs_diffusers.py", "--model", "tiny", "--sizes", "64", "--steps", "2", "--repeats", "1",
               "--work", str(tmp_path / "work"), tmp_path=tmp_path)
    assert "CPU: " in out and re.search(r"\((no native|native) bf16\)", out)
    assert "ours fp32 from pbe_tiny.safetensors (noise_mask default)" in out  # the file the workflows load
    # what the figures ran with
    assert re.search(r"allocator: (the C library's malloc( with [^;]+)?|LD_PRELOAD \S+);", out)
    # ours edits as ComfyUI's server does, on a worker thread (where malloc keeps freed memory depends on it)
    assert "edits: ours on a worker thread, diffusers on a main thread;" in out
    for phase, goal in (("load + first edit", "0.95"), ("re-roll (new seed)", "0.90"), ("new reference", "1.00"),
                        ("peak memory", "1.00")):
        assert re.search(rf"ratio ours/diffusers, {re.escape(phase)}: \d+\.\d+ vs diffusers \(goal <= {goal}", out)
    assert re.search(r"peak resident memory +ours \d+ MiB \(file-backed \d+\) \| diffusers \d+ MiB", out)
    breakdown = {tuple(line.split(":")[0].strip().split(", ")[1:]): line for line in out.splitlines()
                 if line.startswith("  64x64 2 steps, ") and ": total " in line}
    # what ComfyUI's cache serves shows in the counts: a re-roll encodes nothing, a new reference only the exemplar,
    # a new mask only the masked source
    assert "VAE encode 2x" in breakdown["load + first edit", "ours"]
    assert "VAE encode 1x" in breakdown["new mask", "ours"] and "encoder 0.00" in breakdown["new mask", "ours"]
    assert re.search(r"ratio ours/diffusers, new mask: \d+\.\d+ vs diffusers\n", out)  # no goal was set
    assert "VAE encode 0x" in breakdown["re-roll (new seed)", "ours"] and "encoder 0.00" in breakdown[
        "re-roll (new seed)", "ours"]
    assert "VAE encode 0x" in breakdown["new reference", "ours"]
    assert all("VAE encode 1x" in breakdown[phase, "diffusers"] for phase in ("load + first edit", "re-roll (new seed)",
                                                                              "new reference", "new mask"))
    for line in breakdown.values():
        assert re.search(r"2 steps \d+\.\d+ \(\d+\.\d+/step, UNet \d+\.\d+/call, \d+k page faults/call\) \| "
                         r"VAE decode 1x", line), line
    assert all("sampler setup" in breakdown[phase, "ours"] and "other" in breakdown[phase, "ours"]
               for phase in ("load + first edit", "re-roll (new seed)", "new reference"))
    # which part of each edit was running when each side's memory peaked, and the peak line agrees with it
    peaks_section = out.split("where the peak memory is reached")[1]
    peaks = {tuple(line.split(":")[0].strip().split(", ")[1:]): dict(
        (part, float(mib)) for part, mib in re.findall(r"(\w+) (\d+) \(\+\d+\)", line.split(": ", 1)[1]))
        for line in peaks_section.splitlines() if line.startswith("  64x64 2 steps, ")}
    assert len(peaks) == 8
    assert {"load", "encoder", "vae_encode", "unet", "vae_decode"} <= set(peaks["load + first edit", "ours"])
    assert {"load", "encoder", "vae_encode", "unet", "vae_decode"} <= set(peaks["load + first edit", "diffusers"])
    assert "load" not in peaks["re-roll (new seed)", "ours"] and "unet" in peaks["re-roll (new seed)", "ours"]
    for side in ("ours", "diffusers"):
        overall = float(re.search(rf"\b{side} (\d+) MiB \(file-backed", out).group(1))
        assert round(max(mib for key, parts in peaks.items() if key[1] == side for mib in parts.values())) == overall


def test_vs_diffusers_bf16_compares_with_both_precisions_and_our_fp32_image(tmp_path):
    out = _run("vs_diffusers.py", "--model", "tiny", "--sizes", "64", "--steps", "2", "--repeats", "1", "--dtype",
               "bf16", "--file-dtype", "bf16", "--warm-up", "0", "--work", str(tmp_path / "work"), tmp_path=tmp_path)
    assert "ours bf16 from pbe_tiny_bf16.safetensors" in out, "ours loads the pack's own bf16 conversion"
    assert re.search(r"ratio ours/diffusers, new reference: \d+\.\d+ vs diffusers fp32, \d+\.\d+ vs diffusers bf16",
                     out)
    found = re.findall(r"64x64 2 steps, (ours bf16|diffusers fp32|diffusers bf16): max \|d\| ([0-9.e+-]+),", out)
    differences = {side: float(value) for side, value in found}
    assert set(differences) == {"ours bf16", "diffusers fp32", "diffusers bf16"}
    assert 0 < differences["ours bf16"] <= 1, "bf16 weights move our result, and it stays an image"


def test_vs_core_inpaint_prints_steps_per_second_of_both_paths(tmp_path):
    out = _run("vs_core_inpaint.py", "--model", "small", "--sizes", "64", "--steps", "3", "--repeats", "1",
               "--work", str(tmp_path / "work"), tmp_path=tmp_path, needs_diffusers=False)
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.startswith("   64 ")}
    assert set(rows) == {"ours", "core"}
    assert all(float(value) > 0 for values in rows.values() for value in values)
    assert "64x64: steps/s " in out and "edit time " in out
    # core really ran its own inpainting graph on the UNet file, loaded by UNETLoader
    assert "64 core: run 1 " in out and "64 ours: run 1 " in out
    assert re.search(r"nodes: .*\bunet \d+\.\d\d.*\bksampler \d", out)  # core's own loader and sampler ran
    assert (tmp_path / "work" / "models" / "diffusion_models" / "pbe_small_unet.safetensors").is_file()


def test_crop_stitch_prints_the_ratio(tmp_path):
    out = _run("crop_stitch.py", "--steps", "1", "--repeats", "1", "--resolution", "128", tmp_path=tmp_path)
    assert "ratio 4096x3072 / 512x512:" in out


def test_soak_prints_resident_memory(tmp_path):
    out = _run("soak.py", "--edits", "2", "--every", "1", tmp_path=tmp_path)
    assert out.count("MiB") >= 2


def test_weight_dtype_prints_speed_memory_and_difference(tmp_path):
    out = _run("weight_dtype.py", "--model", "tiny", "--size", "64", "--steps", "2", "--repeats", "1",
               "--dtypes", "default", "bf16", "--work", str(tmp_path / "work"), tmp_path=tmp_path,
               needs_diffusers=False)
    assert re.search(r"CPU: .*\((no native|native) bf16\)", out)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split()[:1] in (["default"], ["bf16"]) and len(line.split()) == 7}
    assert set(rows) == {"default", "bf16"} and all(float(v) >= 0 for values in rows.values() for v in values)
    assert float(rows["default"][4]) == 0 and float(rows["bf16"][4]) > 0  # bf16 moves the result, default is itself
    assert "bf16 / default: steps/s x" in out


def test_score_blend_prints_the_cost_of_scoring_and_of_each_blend(tmp_path):
    out = _run("score_blend.py", "--edits", "2", "--edit-size", "64", "--repeats", "1", "--source", "384", "512",
               tmp_path=tmp_path, needs_diffusers=False)
    assert re.search(r"score 2 edits \(64x64, tiny checkpoint.*warm \d+\.\d+ s = \d+\.\d ms per edit", out)
    assert "blend on a 512x384 source" in out
    for case in ("small mask", "large mask"):
        line = next(line for line in out.splitlines() if line.strip().startswith(case))
        for label in ("linear feather", "multiband", "multiband + mean colour", "multiband + local colour"):
            assert re.search(rf"{re.escape(label)} \d+\.\d+ s \(x\d+\.\d\)", line), (label, line)


def test_speed_nodes_prints_the_speed_up_and_the_price(tmp_path):
    out = _run("speed_nodes.py", "--model", "tiny", "--size", "64", "--steps", "4", "--repeats", "1",
               "--threshold", "3.0", "--configs", "plain", "lazycache", "--work", str(tmp_path / "work"),
               tmp_path=tmp_path, needs_diffusers=False)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split()[:1] in (["plain"], ["lazycache"]) and len(line.split()) == 8}
    assert set(rows) == {"plain", "lazycache"}
    assert rows["plain"][3] == "x1.00" and float(rows["plain"][5]) == 0
    assert int(rows["lazycache"][4]) >= 1, "LazyCache reused a step"
    assert float(rows["lazycache"][5]) > 0, "and that moved the result"


def test_server_edits_prints_each_prompt_of_a_real_server(tmp_path):
    out = _run("server_edits.py", "--model", "tiny", "--size", "64", "--steps", "2", "--rerolls", "2",
               tmp_path=tmp_path, needs_diffusers=False)
    # the allocator the server inherited is what the figures depend on
    assert re.search(r"a real ComfyUI server .*; allocator: (the C library's malloc( with \S+)*|LD_PRELOAD \S+)$",
                     out, re.M)
    assert re.search(r"load \+ first edit: \d+\.\d+ s \(the server's; \d+\.\d+ s queued to done\), "
                     r"\d+k page faults, resident afterwards \d+ MiB", out)
    assert len(re.findall(r"re-roll \(new seed\): \d+\.\d+ s \(the server's", out)) == 2
    assert re.search(r"re-rolls: median \d+\.\d+ s \(\d+\.\d+, \d+\.\d+\)", out)


def test_call_timer_charges_each_peak_to_the_call_that_reached_it():
    """The benchmark's own bookkeeping: a call that fills 256 MiB is charged with that peak and
    that rise; a call after it that needs nothing is not (the kernel's peak is reset between)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak memory is read from /proc: Linux only")
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("call_timer", BENCH / "call_timer.py")
    call_timer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(call_timer)

    class Work:
        def fill(self):
            buffer = torch.ones(64 * 2 ** 20)  # 256 MiB, written, then freed (a block this big goes back to the system)
            return float(buffer[-1])

        def nothing(self):
            return 0.0

    work, timer = Work(), call_timer.CallTimer(memory=True)
    timer.wrap(work, "fill", "fill")
    timer.wrap(work, "nothing", "nothing")
    timer.clear()
    work.fill()
    work.nothing()
    peak = timer.peak()
    assert timer.rises["fill"] >= 200 and timer.rises["nothing"] < 50, timer.rises
    assert timer.peaks["fill"] - timer.peaks["nothing"] >= 200, timer.peaks
    assert peak == timer.peaks["fill"] and set(timer.peaks) == {"fill", "nothing", "other"}

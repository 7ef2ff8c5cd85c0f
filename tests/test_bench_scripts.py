"""The benchmarks keep working (they are run by people, not timed here): each runs on the tiny model
with a step or two and must print its figures."""

from __future__ import annotations

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
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_vs_diffusers_prints_every_figure(tmp_path):
    out = _run("vs_diffusers.py", "--model", "tiny", "--sizes", "64", "128", "--steps", "2", "--repeats", "1",
               "--crop-repeats", "1", "--work", str(tmp_path / "work"), tmp_path=tmp_path)
    for size in (64, 128):
        assert f"{size}x{size}: wall " in out
        assert f"{size} diffusers" in out and f"{size} ours" in out
    assert "peak memory" in out and "not file-backed" in out and "encoder share" in out
    assert "first (64x64): encoder" in out and "new reference (128x128): encoder" in out
    assert "cached 64 (64x64): encoder 0.000 s" in out  # served by ComfyUI's graph cache
    assert "4096x3072 source" in out and "ratio" in out


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

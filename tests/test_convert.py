"""python -m pbe_core.convert: the authors' .ckpt, a .safetensors or a diffusers folder -> one
.safetensors in the authors' layout, without training state; refuses what the loader refuses;
atomic, verified, streaming. Plus the diffusers -> LDM names it needs for diffusers folders."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pbe_core import convert, layouts, ldm_names, read_checkpoint
from pbe_core.errors import CheckpointError
from pbe_core.testing import random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PIXELS = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def _needs_diffusers(checkpoints):
    if "diffusers" not in checkpoints:
        pytest.skip("diffusers is not installed (pip install --group test): no diffusers folder to convert")


def _source(checkpoints, name):
    if name == "diffusers":
        _needs_diffusers(checkpoints)
    return checkpoints[name]


def _context(weights, dtype=torch.float32):
    with torch.no_grad():
        encoder = weights.build_encoder(dtype=dtype) if hasattr(weights, "build_encoder") else weights
        return encoder(PIXELS.to(dtype))


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


# ---------------------------------------------------------------------------- what is written


@pytest.mark.parametrize("source", ["ckpt", "safetensors", "diffusers"])
def test_fp32_output_is_bit_identical_and_conditions_the_same(checkpoints, tiny_model, tmp_path, source):
    dest = tmp_path / "pbe.safetensors"
    result = convert.convert(_source(checkpoints, source), dest, dtype="fp32")
    assert result.dest == dest and dest.is_file()
    converted = read_checkpoint(dest)
    for part in ("unet", "vae", "encoder"):
        original, ours = getattr(tiny_model, part), getattr(converted, part)
        assert ours.keys() == original.keys(), part
        for key, value in original.items():
            assert ours[key].dtype == torch.float32 and torch.equal(ours[key], value), key
    assert torch.equal(_context(converted), _context(read_checkpoint(_source(checkpoints, source))))


def test_default_fp16_equals_the_source_cast_to_fp16(checkpoints, tiny_model, tmp_path):
    dest = tmp_path / "paint_by_example.safetensors"
    convert.convert(checkpoints["ckpt"], dest)
    expected = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    written = load_file(dest)
    assert written.keys() == expected.keys()  # the authors' names, and nothing else (no EMA, no training state)
    for key, value in expected.items():
        assert written[key].dtype == torch.float16 and torch.equal(written[key], value.half()), key
    with safe_open(str(dest), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "converted_from": "model.ckpt", "dtype": "fp16"}
    # same conditioning as the fp16-cast source, close to the fp32 original
    from pbe_core import build_encoder
    cast = build_encoder({k: v.half() for k, v in tiny_model.encoder.items()}, dtype=torch.float32)
    ours = _context(read_checkpoint(dest))
    assert torch.equal(ours, _context(cast))
    assert torch.allclose(ours, _context(read_checkpoint(checkpoints["ckpt"])), atol=0.05)
    assert dest.stat().st_size < 0.55 * sum(v.numel() * 4 for v in expected.values())


def test_bf16_and_fp16_sources(checkpoints, tiny_model, tmp_path):
    dest = tmp_path / "bf16.safetensors"
    convert.convert(checkpoints["safetensors_fp16"], dest, dtype="bf16")
    expected = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    written = load_file(dest)
    assert all(torch.equal(written[k], v.half().to(torch.bfloat16)) for k, v in expected.items())


def test_diffusers_folder_gives_the_same_file_as_the_single_file(checkpoints, tmp_path):
    _needs_diffusers(checkpoints)
    convert.convert(checkpoints["diffusers"], tmp_path / "from_folder.safetensors")
    convert.convert(checkpoints["safetensors"], tmp_path / "from_file.safetensors")
    folder, single = load_file(tmp_path / "from_folder.safetensors"), load_file(tmp_path / "from_file.safetensors")
    assert folder.keys() == single.keys()
    assert all(torch.equal(folder[k], single[k]) for k in single)


# ---------------------------------------------------------------------------- refusals and failures


def test_non_paint_by_example_input_gets_the_loaders_message(tmp_path, tiny_model):
    source = tmp_path / "v1-5-pruned-emaonly.safetensors"
    sd = {layouts.UNET_PREFIX + k: v for k, v in tiny_model.unet.items()}
    sd.update({layouts.VAE_PREFIX + k: v for k, v in tiny_model.vae.items()})
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(8, 8)
    save_file(sd, str(source))
    with pytest.raises(CheckpointError) as loader:
        read_checkpoint(source)
    with pytest.raises(CheckpointError) as converter:
        convert.convert(source, tmp_path / "out.safetensors")
    assert str(converter.value) == str(loader.value)
    assert not (tmp_path / "out.safetensors").exists() and not _leftovers(tmp_path)


def test_existing_dest_is_never_overwritten_unless_asked(checkpoints, tiny_model, tmp_path):
    dest = tmp_path / "paint_by_example.safetensors"
    dest.write_bytes(b"precious")
    with pytest.raises(convert.ConversionError, match="already exists.*--overwrite") as err:
        convert.convert(checkpoints["ckpt"], dest)
    assert err.value.status == 2 and dest.read_bytes() == b"precious"
    convert.convert(checkpoints["ckpt"], dest, overwrite=True)
    assert torch.equal(load_file(dest)["learnable_vector"], tiny_model.encoder["learnable_vector"].half())


@pytest.mark.parametrize("interruption", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_crash_mid_write_leaves_neither_dest_nor_the_temporary_file(checkpoints, tmp_path, monkeypatch,
                                                                      interruption):
    dest = tmp_path / "paint_by_example.safetensors"
    real, calls = convert._converted, []

    def crashing(tensor, dtype):
        calls.append(1)
        if len(calls) == 40:
            assert _leftovers(tmp_path), "the partial output should exist under a temporary name by now"
            raise interruption
        return real(tensor, dtype)

    monkeypatch.setattr(convert, "_converted", crashing)
    with pytest.raises(type(interruption)):
        convert.convert(checkpoints["ckpt"], dest)
    assert len(calls) == 40
    assert not dest.exists() and not _leftovers(tmp_path)
    # an existing DEST survives a crashed --overwrite untouched
    dest.write_bytes(b"previous")
    calls.clear()
    with pytest.raises(type(interruption)):
        convert.convert(checkpoints["ckpt"], dest, overwrite=True)
    assert dest.read_bytes() == b"previous" and not _leftovers(tmp_path)


def test_a_verify_mismatch_fails_without_leaving_dest(checkpoints, tmp_path, monkeypatch):
    dest = tmp_path / "paint_by_example.safetensors"
    real_write = convert._write

    def write_then_damage(file, *args):
        real_write(file, *args)
        file.flush()
        with open(f"/proc/self/fd/{file.fileno()}", "r+b") as same:  # flip a bit of the last tensor's data
            same.seek(-3, 2)
            byte = same.read(1)[0]
            same.seek(-3, 2)
            same.write(bytes([byte ^ 0x10]))

    monkeypatch.setattr(convert, "_write", write_then_damage)
    with pytest.raises(convert.ConversionError, match="verification failed: .* differs from the source") as err:
        convert.convert(checkpoints["ckpt"], dest)
    assert err.value.status == 1
    assert not dest.exists() and not _leftovers(tmp_path)


def test_input_pages_are_handed_back_as_they_are_written_and_verified(checkpoints, tmp_path, monkeypatch):
    released: list[int] = []
    monkeypatch.setattr(convert, "release_file_pages", lambda tensors: released.extend(t.data_ptr() for t in tensors))
    monkeypatch.setattr(convert._UsedPages, "BATCH", 1 << 20)  # small batches for the tiny model
    convert.convert(checkpoints["ckpt"], tmp_path / "out.safetensors", dtype="fp32")
    sources = convert.single_file_tensors(read_checkpoint(checkpoints["ckpt"]))
    # every source tensor twice (after writing it, after verifying it), plus each read-back tensor
    assert len(released) == 3 * len(sources)
    assert len({p for p in released}) >= len(sources)


# ---------------------------------------------------------------------------- the command


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pbe_core.convert", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_command_line(checkpoints, tiny_model, tmp_path):
    dest = tmp_path / "paint_by_example.safetensors"
    done = _cli(checkpoints["ckpt"], dest)
    assert done.returncode == 0, done.stderr
    assert "writing: 100 %" in done.stderr and "verifying: 100 %" in done.stderr  # progress without a terminal
    assert re.search(r"wrote .*paint_by_example.safetensors: \d+ tensors, .*fp16, verified", done.stderr)
    assert torch.equal(load_file(dest)["learnable_vector"], tiny_model.encoder["learnable_vector"].half())

    again = _cli(checkpoints["ckpt"], dest)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr

    save_file({"lora_unet_down.alpha": torch.ones(1)}, str(tmp_path / "lora.safetensors"))
    refused = _cli(tmp_path / "lora.safetensors", tmp_path / "out.safetensors")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "lora.safetensors holds no Stable Diffusion or Paint-by-Example weights" in refused.stderr
    assert not (tmp_path / "out.safetensors").exists()

    wrong = _cli(checkpoints["ckpt"], tmp_path / "out.ckpt")
    assert wrong.returncode == 2 and "must be a .safetensors file name" in wrong.stderr


# ---------------------------------------------------------------------------- diffusers -> LDM names


def test_diffusers_names_map_back_to_ldm_bit_identically(tiny_model):
    pytest.importorskip("diffusers")
    parts = random_checkpoint.diffusers_parts(tiny_model)  # diffusers' own converter
    unet, vae = ldm_names.unet_to_ldm(parts["unet"][2]), ldm_names.vae_to_ldm(parts["vae"][2])
    for ours, original in ((unet, tiny_model.unet), (vae, tiny_model.vae)):
        assert ours.keys() == original.keys()
        assert all(ours[k].shape == v.shape and torch.equal(ours[k], v) for k, v in original.items())


def test_full_size_diffusers_names_map_back_to_ldm():
    """The real SD 1.x widths and depths, with tensors that cost no memory: each is one distinct
    value expanded to its shape, so a swapped or reshaped tensor is caught."""
    pytest.importorskip("diffusers")
    from pbe_core.testing.tensor_shapes import unet_tensor_shapes, vae_tensor_shapes
    unet_shape, vae_shape, encoder_sizes = random_checkpoint.SIZES["full"]

    def tagged(shapes, first):
        return {k: torch.tensor(float(first + i)).expand(s) for i, (k, s) in enumerate(sorted(shapes.items()))}

    model = random_checkpoint.RandomPaintByExample(
        tagged(unet_tensor_shapes(unet_shape), 0), tagged(vae_tensor_shapes(vae_shape), 10_000), {},
        unet_shape, vae_shape, encoder_sizes)
    parts = random_checkpoint.diffusers_parts(model)
    unet, vae = ldm_names.unet_to_ldm(parts["unet"][2]), ldm_names.vae_to_ldm(parts["vae"][2])
    for ours, original in ((unet, model.unet), (vae, model.vae)):
        assert ours.keys() == original.keys()
        for key, value in original.items():
            assert ours[key].shape == value.shape, key
            assert ours[key].reshape(-1)[0].item() == value.reshape(-1)[0].item(), key
    assert vae["encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)  # linear -> 1x1 conv


def test_vae_attention_names_of_older_diffusers_folders(tiny_model):
    pytest.importorskip("diffusers")
    vae = random_checkpoint.diffusers_parts(tiny_model)["vae"][2]
    old = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}
    renamed = {}
    for key, value in vae.items():
        for new, previous in old.items():
            key = key.replace(f"attentions.0.{new}", f"attentions.0.{previous}")
        renamed[key] = value
    assert renamed.keys() != vae.keys()
    converted = ldm_names.vae_to_ldm(renamed)
    assert all(torch.equal(converted[k], v) for k, v in tiny_model.vae.items())


def test_unknown_diffusers_names_are_refused(tiny_model):
    pytest.importorskip("diffusers")
    unet = dict(random_checkpoint.diffusers_parts(tiny_model)["unet"][2])
    unet["add_embedding.linear_1.weight"] = torch.zeros(2, 2)  # an SDXL UNet part
    with pytest.raises(CheckpointError, match="UNet has weights an SD 1.x UNet does not .*add_embedding"):
        ldm_names.unet_to_ldm(unet)


# ---------------------------------------------------------------------------- the benchmark


def test_memory_benchmark_prints_its_figures(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "convert_memory.py"), "--model", "tiny",
                           "--work", str(tmp_path / "work"), "--compare-without-release"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"input: pbe_tiny_random.ckpt, [\d.]+ GiB \(training state with optimizer\)", out)
    line = next(line for line in out.splitlines() if line.startswith("fp16: "))
    for figure in ("peak resident", "output", "limit (output + 2 GiB)", "wall", "input"):
        assert figure in line, line
    assert "within the limit" in line
    assert "fp16 WITHOUT page release (comparison only): peak resident" in out
    assert not (tmp_path / "work").exists()  # the big files are deleted

"""What keeps the pack lean and fast inside ComfyUI (the figures are in bench/vs_diffusers.py):
the UNet and the VAE are handed the checkpoint's own tensors instead of copies, on a CPU attention runs in
PyTorch's kernel instead of ComfyUI's sub-quadratic fallback, with the same result, and a re-run with a new seed
neither encodes the exemplar nor the source again."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch


def _pack(comfy, module: str):
    """A module of the pack as ComfyUI loaded it (its package name is the pack's folder name)."""
    package = comfy.node("PaintByExampleLoader").__module__.rsplit(".", 2)[0]
    return importlib.import_module(f"{package}.{module}")


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def test_unet_is_handed_the_checkpoint_tensors_not_a_copy(comfy):
    pbe_core, comfy_model = _pack(comfy, "pbe_core"), _pack(comfy, "nodes.comfy_model")
    weights = pbe_core.read_checkpoint(comfy.models / "checkpoints" / "pbe_tiny.safetensors")
    read = {tensor.data_ptr() for tensor in weights.unet.values()}
    unet = comfy_model.build_model(weights).model.diffusion_model
    parameters = list(unet.parameters())
    assert parameters and all(p.data_ptr() in read for p in parameters)
    assert not any(p.is_meta for p in parameters)


def test_vae_is_handed_the_checkpoint_tensors_not_a_copy(comfy):
    pbe_core, comfy_model = _pack(comfy, "pbe_core"), _pack(comfy, "nodes.comfy_model")
    weights = pbe_core.read_checkpoint(comfy.models / "checkpoints" / "pbe_tiny.safetensors")
    read = {tensor.data_ptr() for tensor in weights.vae.values()}
    vae = comfy_model.build_vae(weights)
    parameters = list(vae.first_stage_model.parameters())
    assert parameters and all(p.data_ptr() in read for p in parameters)
    assert next(iter(parameters)).dtype == vae.vae_dtype


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_unet_and_vae_from_a_ckpt_live_in_the_memory_mapped_file(comfy):
    """The authors' .ckpt (12.6 GB with its training state) is mapped, not read: the UNet's and the
    VAE's weights are the file's own pages, and the EMA copies and optimizer state are never touched."""
    path = (comfy.models / "checkpoints" / "pbe_tiny.ckpt").resolve()
    model, vae, _encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.ckpt")
    ranges = _mapped_ranges(path)
    assert ranges, "the checkpoint is not memory-mapped"
    for parameter in [*model.model.diffusion_model.parameters(), *vae.first_stage_model.parameters()]:
        assert any(start <= parameter.data_ptr() < end for start, end in ranges)


def _count_pytorch_attention(monkeypatch, attention):
    calls = []
    original = attention.attention_pytorch

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "attention_pytorch", counted)
    return calls


def _edit(comfy, model, vae, encoder):
    g = torch.Generator().manual_seed(0)
    source, reference = torch.rand(1, 64, 64, 3, generator=g), torch.rand(1, 50, 40, 3, generator=g)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, reference, "stretch")
    return comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, source, mask, 3, 2, 5.0,
                                                        "ddim", "ddim_uniform", 1.0)[1]["samples"]


def test_cpu_attention_is_pytorch_unless_the_user_chose_one(comfy, monkeypatch):
    attention = importlib.import_module("comfy.ldm.modules.attention")
    args = importlib.import_module("comfy.cli_args").args
    mm = importlib.import_module("comfy.model_management")
    if attention.optimized_attention is not attention.attention_sub_quad or mm.get_torch_device().type != "cpu":
        pytest.skip("this ComfyUI does not run attention on a CPU with its sub-quadratic fallback")
    calls = _count_pytorch_attention(monkeypatch, attention)
    loader = comfy.node("PaintByExampleLoader")()

    model, vae, encoder = loader.load("pbe_tiny.safetensors")
    assert "optimized_attention_override" in model.model_options["transformer_options"]
    fast = _edit(comfy, model, vae, encoder)
    assert calls, "PyTorch's attention kernel did not run"

    calls.clear()
    monkeypatch.setattr(args, "use_quad_cross_attention", True)  # as `--use-quad-cross-attention` sets it
    model, vae, encoder = loader.load("pbe_tiny.safetensors")
    assert "optimized_attention_override" not in model.model_options["transformer_options"]
    fallback = _edit(comfy, model, vae, encoder)
    assert not calls, "an explicit attention choice was overridden"
    assert torch.allclose(fast, fallback, rtol=1e-4, atol=1e-4)


def test_graph_cache_serves_the_exemplar_when_only_the_seed_changes(comfy):
    """A new seed re-runs the sampler, while ComfyUI's graph cache serves the loader and Encode: the
    encoder costs nothing on a re-run with the same reference."""
    from test_comfy_nodes import _graph, _scene

    source, mask, reference = _scene(comfy, seed=41)
    executor = comfy.execution.PromptExecutor(comfy.server)
    ran = []
    for seed in (1, 2):
        prompt = _graph(source, mask, reference, seed=seed)
        executor.execute(prompt, f"cache-{seed}", {}, ["7"])
        assert executor.success
        cached = next(data["nodes"] for event, data in executor.status_messages if event == "execution_cached")
        ran.append(set(prompt) - set(cached))
    assert {"1", "5", "6"} <= ran[0]
    assert ran[1] == {"6", "7"}  # only the sampler and the preview after it


def test_a_new_seed_reuses_the_samplers_source_encode(comfy, monkeypatch):
    """Re-rolling the seed does not encode the source again: the Sampler expands into nodes that
    ComfyUI caches (Inpaint Conditioning, as InpaintModelConditioning in core's graph), and gives
    what a fresh executor gives; a new mask is encoded again."""
    from comfyui import _outputs
    from test_comfy_nodes import _graph, _scene

    vae_class = importlib.import_module("comfy.sd").VAE
    encode, encoded = vae_class.encode, []
    monkeypatch.setattr(vae_class, "encode", lambda self, pixels: encoded.append(pixels.shape) or encode(self, pixels))
    source, mask, reference = _scene(comfy, seed=44)
    _source, other_mask, _reference = _scene(comfy, box=(8, 8, 40, 40), seed=45)
    executor = comfy.execution.PromptExecutor(comfy.server)

    def edit(seed: int, mask_name: str) -> tuple[int, torch.Tensor]:
        encoded.clear()
        executor.execute(_graph(source, mask_name, reference, seed=seed), f"reseed-{seed}", {}, ["7"])
        assert executor.success
        return len(encoded), _outputs(executor, "6")[0]

    assert edit(1, mask)[0] == 2  # the masked source and the source, as InpaintModelConditioning does
    count, image = edit(2, mask)
    assert count == 0
    assert torch.equal(image, comfy.run(_graph(source, mask, reference, seed=2), ["6"])["6"][0])
    assert edit(3, other_mask)[0] == 2
    assert edit(4, other_mask)[0] == 0

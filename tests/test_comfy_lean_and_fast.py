"""What keeps the pack lean and fast inside ComfyUI (the figures are in bench/vs_diffusers.py):
the UNet and the VAE are handed the checkpoint's own tensors instead of copies, on a CPU attention runs in
PyTorch's kernel instead of ComfyUI's sub-quadratic fallback, with the same result, and ComfyUI's graph cache
serves what an edit did not change: a re-roll with a new seed encodes neither the exemplar nor the source again,
a new reference encodes only the exemplar (counted calls, not timings)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def test_unet_is_handed_the_checkpoint_tensors_not_a_copy(comfy):
    pbe_core, comfy_model = comfy.pack("pbe_core"), comfy.pack("nodes.comfy_model")
    weights = pbe_core.read_checkpoint(comfy.models / "checkpoints" / "pbe_tiny.safetensors")
    read = {tensor.data_ptr() for tensor in weights.unet.values()}
    unet = comfy_model.build_model(weights).model.diffusion_model
    parameters = list(unet.parameters())
    assert parameters and all(p.data_ptr() in read for p in parameters)
    assert not any(p.is_meta for p in parameters)


def test_vae_is_handed_the_checkpoint_tensors_not_a_copy(comfy):
    pbe_core, comfy_model = comfy.pack("pbe_core"), comfy.pack("nodes.comfy_model")
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


@pytest.fixture
def counted(comfy, monkeypatch):
    """The costly calls of an edit as they happen, by name: VAE encodes and decodes, exemplar encoder
    runs, UNet calls (as ("unet", batch size)), and runs of the Sampler's Source Latent, Encode Source
    and Attach Source."""
    calls = []

    def count(owner, name, label):
        original = getattr(owner, name)

        def counting(*args, **kwargs):
            calls.append(label if label != "unet" else ("unet", args[1].shape[0]))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counting)

    vae = importlib.import_module("comfy.sd").VAE
    count(vae, "encode", "vae_encode")
    count(vae, "decode", "vae_decode")
    count(importlib.import_module("comfy.ldm.modules.diffusionmodules.openaimodel").UNetModel, "forward", "unet")
    count(comfy.pack("nodes.encoder_handle").ExemplarEncoderHandle, "encode", "encoder")
    count(comfy.node("PaintByExampleSourceLatent"), "encode", "source_latent")
    count(comfy.node("PaintByExampleEncodeSource"), "encode", "encode_source")
    count(comfy.node("PaintByExampleAttachSource"), "attach", "attach")
    return calls


def test_what_each_kind_of_edit_costs(comfy, counted):
    """Counted, in one ComfyUI executor (its graph cache on), as an artist works: the first edit
    encodes the reference once and the source twice (the masked source for the model, the source
    itself for the noise mask), a re-roll with a new seed encodes nothing, a new reference runs the
    exemplar encoder and the Sampler's Attach Source but no VAE encode, a new mask encodes only the
    masked source (the source's own latent does not depend on the mask). Every edit is one UNet
    call per step (cond and uncond batched) and one decode, and the cache-served edits give what a
    fresh executor gives."""
    from collections import Counter

    from comfyui import _outputs
    from test_comfy_nodes import _graph, _scene

    source, mask, reference = _scene(comfy, seed=61)
    _source, other_mask, other_reference = _scene(comfy, box=(8, 8, 40, 40), seed=62)
    executor = comfy.execution.PromptExecutor(comfy.server)
    steps = 3

    def edit(seed: int, mask: str, reference: str) -> tuple[Counter, Counter]:
        """(model calls, runs of the Sampler's Encode Source and Attach Source)"""
        counted.clear()
        executor.execute(_graph(source, mask, reference, seed=seed, steps=steps), f"costs-{seed}", {}, ["7"])
        assert executor.success
        nodes = ("source_latent", "encode_source", "attach")
        return Counter(c for c in counted if c not in nodes), Counter(c for c in counted if c in nodes)

    one_edit = {("unet", 2): steps, "vae_decode": 1}
    assert edit(1, mask, reference) == ({**one_edit, "encoder": 1, "vae_encode": 2},
                                        {"source_latent": 1, "encode_source": 1, "attach": 1})
    assert edit(2, mask, reference) == (one_edit, {})  # re-roll
    assert edit(3, mask, other_reference) == ({**one_edit, "encoder": 1}, {"attach": 1})  # new reference
    image = _outputs(executor, "6")[0]
    assert torch.equal(image, comfy.run(_graph(source, mask, other_reference, seed=3, steps=steps), ["6"])["6"][0])
    assert edit(4, other_mask, other_reference) == ({**one_edit, "vae_encode": 1}, {"encode_source": 1, "attach": 1})
    image = _outputs(executor, "6")[0]  # the cached source latent serves the new mask as a fresh one would
    assert torch.equal(image, comfy.run(_graph(source, other_mask, other_reference, seed=4, steps=steps),
                                        ["6"])["6"][0])


def test_without_the_noise_mask_an_edit_encodes_the_source_once(comfy, counted):
    """noise_mask off (the paper's way) needs only the masked source: one VAE encode on a first
    edit, as diffusers' pipeline, and none on a re-roll or a new reference."""
    from test_comfy_nodes import _graph, _scene

    source, mask, reference = _scene(comfy, seed=63)
    _source, _mask, other_reference = _scene(comfy, seed=64)
    executor = comfy.execution.PromptExecutor(comfy.server)
    encodes = []
    for seed, picture in ((1, reference), (2, reference), (3, other_reference)):
        counted.clear()
        executor.execute(_graph(source, mask, picture, seed=seed, noise_mask=False), f"no-noise-mask-{seed}", {},
                         ["7"])
        assert executor.success
        encodes.append((counted.count("vae_encode"), counted.count("source_latent")))
    assert encodes == [(1, 0), (0, 0), (0, 0)]  # the Sampler leaves out Source Latent: nothing of it is used


def test_several_masks_on_one_source_encode_the_source_once(comfy, monkeypatch):
    """One source with three masks: the masked sources are three images, the source itself one, in
    Inpaint Conditioning (the Sampler from Python runs the same) and in Source Latent."""
    from test_comfy_nodes import _load

    batches = []
    vae_class = importlib.import_module("comfy.sd").VAE
    original = vae_class.encode

    def encode(self, pixels, *args, **kwargs):
        batches.append(pixels.shape[0])
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(vae_class, "encode", encode)
    _model, vae, encoder = _load(comfy)
    source, masks = torch.rand(1, 64, 64, 3), torch.zeros(3, 64, 64)
    for i in range(3):
        masks[i, 8 * i:32 + 8 * i, 16:48] = 1
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    _positive, _negative, latent = comfy.node("PaintByExampleInpaintConditioning")().prepare(
        positive, negative, vae, source, masks, True, "noise")
    assert sorted(batches) == [1, 3] and latent["samples"].shape[0] == 3
    batches.clear()
    (source_latent,) = comfy.node("PaintByExampleSourceLatent")().encode(vae, source)
    comfy.node("PaintByExampleEncodeSource")().encode(vae, source, masks, True, "noise", source_latent)
    assert batches == [1, 3]


def test_a_wired_source_latent_runs_only_when_encode_source_uses_it(comfy, counted):
    """Encode Source's source_latent is lazy: with noise_mask off and a pure-noise start nothing of the
    source is kept, so ComfyUI does not run the Source Latent wired to it (no encode for nothing)."""
    from test_comfy_nodes import _scene

    source, mask, _reference = _scene(comfy, seed=65)
    for noise_mask, expected in ((False, (1, 0)), (True, (2, 1))):
        graph = {
            "1": {"class_type": "PaintByExampleLoader", "inputs": {"ckpt_name": "pbe_tiny.safetensors"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": source}},
            "3": {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}},
            "4": {"class_type": "PaintByExampleSourceLatent", "inputs": {"vae": ["1", 1], "source": ["2", 0]}},
            "5": {"class_type": "PaintByExampleEncodeSource", "inputs": {
                "vae": ["1", 1], "source": ["2", 0], "mask": ["3", 0], "noise_mask": noise_mask, "start": "noise",
                "source_latent": ["4", 0]}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 1], "vae": ["1", 1]}},
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},  # ComfyUI runs graphs with an output
        }
        counted.clear()
        out = comfy.run(graph, ["5"])
        assert (counted.count("vae_encode"), counted.count("source_latent")) == expected
        assert ("noise_mask" in out["5"][1]) is noise_mask

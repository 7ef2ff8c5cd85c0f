"""The loaders on every device ComfyUI runs on, in the precision the user picks.

There is no GPU here, so ComfyUI's device decisions are simulated: its own functions choose where
the UNet is built (`unet_inital_load_device`, from its VRAM state and free memory), with
`get_torch_device` answering a second device. That device is `cpu:0`: ComfyUI's placement code
compares it with `torch.device("cpu")` and treats it as the accelerator, while tensors moved there
live in RAM — and every `.to()` onto it makes a new copy, so a weight loaded a second time shows up
as a changed data pointer.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from test_comfy_nodes import _inputs, _sample

ACCELERATOR = torch.device("cpu", 0)


@pytest.fixture
def mm(comfy):
    model_management = importlib.import_module("comfy.model_management")
    model_management.unload_all_models()
    yield model_management
    model_management.unload_all_models()


def _simulate(monkeypatch, mm, vram_state, free_vram=None, free_ram=None):
    """ComfyUI as started on a machine with an accelerator, in the given VRAM state."""
    monkeypatch.setattr(mm, "get_torch_device", lambda: ACCELERATOR)
    monkeypatch.setattr(mm, "vram_state", vram_state)
    if free_vram is not None:
        real = mm.get_free_memory

        def free(dev=None, torch_free_too=False):
            if dev == ACCELERATOR:
                return (free_vram, free_vram) if torch_free_too else free_vram
            if dev == torch.device("cpu"):
                return (free_ram, free_ram) if torch_free_too else free_ram
            return real(dev, torch_free_too)

        monkeypatch.setattr(mm, "get_free_memory", free)


def _registered(mm, patcher) -> bool:
    return any(loaded.model is patcher for loaded in mm.current_loaded_models)


def _pointers(module: torch.nn.Module) -> list[int]:
    return [p.data_ptr() for p in module.parameters()]


ON_THE_ACCELERATOR = {
    "--highvram / --gpu-only": dict(vram_state="HIGH_VRAM"),
    "Apple MPS (shared memory)": dict(vram_state="SHARED"),
    "more free VRAM than free RAM": dict(vram_state="NORMAL_VRAM", free_vram=64 << 30, free_ram=8 << 30),
}


@pytest.mark.parametrize("case", list(ON_THE_ACCELERATOR))
def test_a_unet_built_on_the_accelerator_is_registered_and_loaded_once(comfy, mm, monkeypatch, case):
    settings = dict(ON_THE_ACCELERATOR[case])
    _simulate(monkeypatch, mm, getattr(mm.VRAMState, settings.pop("vram_state")), **settings)
    model, vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors")
    assert model.model.device == ACCELERATOR, "ComfyUI chose to build the UNet on the accelerator"
    assert _registered(mm, model), "a model built on the device must be known to ComfyUI's model management"
    loaded = next(entry for entry in mm.current_loaded_models if entry.model is model)
    assert loaded.model_memory_required(ACCELERATOR) == 0, "ComfyUI would reserve the weights a second time"
    before = _pointers(model.model.diffusion_model)

    source, mask, reference = _inputs()
    image, _latent = _sample(comfy, model, vae, encoder, source, mask, reference, steps=1)
    assert torch.isfinite(image).all()
    assert _pointers(model.model.diffusion_model) == before, "sampling loaded the UNet's weights again"


def test_a_unet_ComfyUI_keeps_in_RAM_shares_the_files_tensors_and_is_not_loaded(comfy, mm, monkeypatch):
    _simulate(monkeypatch, mm, mm.VRAMState.NORMAL_VRAM, free_vram=2 << 30, free_ram=16 << 30)
    pbe_core, comfy_model = comfy.pack("pbe_core"), comfy.pack("nodes.comfy_model")
    weights = pbe_core.read_checkpoint(comfy.models / "checkpoints" / "pbe_tiny.safetensors")
    read = {tensor.data_ptr() for tensor in weights.unet.values()}
    model = comfy_model.build_model(weights)
    assert model.model.device == torch.device("cpu") and model.load_device == ACCELERATOR
    assert not _registered(mm, model), "as ComfyUI's loader: loaded when sampling needs it"
    assert all(pointer in read for pointer in _pointers(model.model.diffusion_model)), "held twice in RAM"


def test_the_real_sd1_width_is_detected_by_ComfyUI(comfy, tmp_path):
    """Where ComfyUI recognises the UNet (SD 1.x's widths), its own detection builds the model."""
    pbe_core, comfy_model = comfy.pack("pbe_core"), comfy.pack("nodes.comfy_model")
    supported_models = importlib.import_module("comfy.supported_models")
    random_checkpoint = importlib.import_module(f"{pbe_core.__name__}.testing.random_checkpoint")
    path = random_checkpoint.write_single_file(tmp_path / "small.safetensors", random_checkpoint.random_weights("small"))
    calls = []
    detection = importlib.import_module("comfy.model_detection")
    real = detection.model_config_from_unet
    try:
        detection.model_config_from_unet = lambda *a, **k: calls.append(1) or real(*a, **k)
        model = comfy_model.build_model(pbe_core.read_checkpoint(path))
        tiny = comfy_model.build_model(pbe_core.read_checkpoint(comfy.models / "checkpoints" / "pbe_tiny.safetensors"))
    finally:
        detection.model_config_from_unet = real
    assert len(calls) == 1, "ComfyUI's detection built the SD 1.x-wide model, the shapes the tiny one"
    assert type(model.model.model_config) is supported_models.SD15 and model.model.model_config.inpaint_model()
    assert tiny.model.model_config.unet_config["model_channels"] == 64
    assert tuple(model.get_model_object("concat_keys")) == comfy_model.PBE_CONCAT_KEYS


# ---------------------------------------------------------------------------- precision


def _unet_weight(model) -> torch.Tensor:
    return model.model.diffusion_model.input_blocks[0][0].weight


EXPECTED_STORAGE = {"default": torch.float32, "fp8_e4m3fn": torch.float8_e4m3fn,
                    "fp8_e4m3fn_fast": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
                    "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("weight_dtype", list(EXPECTED_STORAGE))
def test_each_weight_dtype_loads_and_samples(comfy, mm, monkeypatch, weight_dtype):
    comfy_model = comfy.pack("nodes.comfy_model")
    monkeypatch.setattr(comfy_model, "cpu_has_native_bf16", lambda: False)  # this CPU, whatever it is
    model, vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", weight_dtype=weight_dtype)
    storage = EXPECTED_STORAGE[weight_dtype]
    unet = model.model.diffusion_model
    floating = [p for p in unet.parameters() if p.is_floating_point()]
    assert {p.dtype for p in floating} == {storage}, "every UNet weight is stored in the chosen precision"
    if storage != torch.float32:
        # ComfyUI's policy on a CPU: store in the chosen precision, compute in fp32
        assert model.model.manual_cast_dtype == torch.float32
    assert model.model.model_config.optimizations.get("fp8", False) == (weight_dtype == "fp8_e4m3fn_fast")
    assert vae.vae_dtype == torch.float32, "only a native bf16 device runs the VAE in bf16"
    source, mask, reference = _inputs()
    image, latent = _sample(comfy, model, vae, encoder, source, mask, reference, steps=2)
    assert torch.isfinite(image).all() and torch.isfinite(latent["samples"]).all()
    assert torch.equal(image[0][mask[0] == 0], source[0][mask[0] == 0])


def test_fp8_stores_the_unet_in_a_quarter_of_fp32(comfy, mm):
    loader = comfy.node("PaintByExampleLoader")()
    full = loader.load("pbe_tiny.safetensors")[0].model.diffusion_model
    fp8 = loader.load("pbe_tiny.safetensors", weight_dtype="fp8_e4m3fn")[0].model.diffusion_model
    size = lambda module: sum(p.numel() * p.element_size() for p in module.parameters())  # noqa: E731
    assert size(fp8) * 4 == size(full)


def test_bf16_computes_in_bf16_where_the_cpu_has_it(comfy, mm, monkeypatch):
    comfy_model = comfy.pack("nodes.comfy_model")
    monkeypatch.setattr(comfy_model, "cpu_has_native_bf16", lambda: True)  # AVX512-BF16 or AMX
    model, vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", weight_dtype="bf16")
    assert model.model.manual_cast_dtype is None and _unet_weight(model).dtype == torch.bfloat16
    assert vae.vae_dtype == torch.bfloat16 and next(vae.first_stage_model.parameters()).dtype == torch.bfloat16
    seen = []
    handle = model.model.diffusion_model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].dtype))
    try:
        source, mask, reference = _inputs()
        image, _latent = _sample(comfy, model, vae, encoder, source, mask, reference, steps=1)
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}, "the UNet ran in bf16"
    assert torch.isfinite(image).all()
    # the same choice where ComfyUI's own bf16 policy says no (a CPU without it): stored bf16, computed fp32
    monkeypatch.setattr(comfy_model, "cpu_has_native_bf16", lambda: False)
    model, vae, _encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", weight_dtype="bf16")
    assert model.model.manual_cast_dtype == torch.float32 and vae.vae_dtype == torch.float32


def test_auto_encoder_follows_a_bf16_model_only_where_the_cpu_computes_bf16(comfy, mm, monkeypatch):
    """On a CPU, auto keeps the exemplar encoder in fp32 unless the artist asked for a bf16 model and
    the CPU computes bf16 natively: then the encoder runs in bf16 too, as the UNet and VAE do."""
    comfy_model = comfy.pack("nodes.comfy_model")
    loader = comfy.node("PaintByExampleLoader")()
    dtypes = lambda encoder: {encoder.head.proj_out.weight.dtype,  # noqa: E731
                              next(encoder.tower_patcher.model.parameters()).dtype}
    monkeypatch.setattr(comfy_model, "cpu_has_native_bf16", lambda: True)  # AVX512-BF16 or AMX
    model, vae, encoder = loader.load("pbe_tiny.safetensors", weight_dtype="bf16")
    assert dtypes(encoder) == {torch.bfloat16}
    source, mask, reference = _inputs()
    image, _latent = _sample(comfy, model, vae, encoder, source, mask, reference, steps=1)
    assert torch.isfinite(image).all() and torch.equal(image[0][mask[0] == 0], source[0][mask[0] == 0])
    assert dtypes(loader.load("pbe_tiny.safetensors")[2]) == {torch.float32}, "an fp32 model keeps an fp32 encoder"
    assert dtypes(loader.load("pbe_tiny.safetensors", weight_dtype="fp16")[2]) == {torch.float32}
    explicit = loader.load("pbe_tiny.safetensors", weight_dtype="bf16", encoder_dtype="fp32")[2]
    assert dtypes(explicit) == {torch.float32}, "an explicit encoder_dtype wins"
    monkeypatch.setattr(comfy_model, "cpu_has_native_bf16", lambda: False)  # bf16 emulated: fp32 is faster
    assert dtypes(loader.load("pbe_tiny.safetensors", weight_dtype="bf16")[2]) == {torch.float32}


@pytest.mark.parametrize("value", ["fp32", "FP16", "int8", "", None])
def test_an_unknown_weight_dtype_is_refused_by_name(comfy, value):
    with pytest.raises(ValueError, match="weight_dtype: .* is not a valid choice; use one of default, fp8_e4m3fn, "
                                         "fp8_e4m3fn_fast, fp8_e5m2, fp16, bf16"):
        comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", weight_dtype=value)
    with pytest.raises(ValueError, match="weight_dtype: .* is not a valid choice"):
        comfy.node("PaintByExampleDiffusersLoader")().load("pbe_tiny", weight_dtype=value)


def test_weight_dtype_is_an_optional_input_of_both_loaders(comfy):
    for node_id in ("PaintByExampleLoader", "PaintByExampleDiffusersLoader"):
        spec = comfy.node(node_id).INPUT_TYPES()
        choices, options = spec["optional"]["weight_dtype"]
        assert choices == list(EXPECTED_STORAGE) and options["default"] == "default" and options["tooltip"]


# ---------------------------------------------------------------------------- the CLIP vision route


def test_clip_vision_route_runs_only_the_head(comfy, mm, monkeypatch):
    """Encode from CLIP Vision needs the checkpoint's head alone: the ViT-L tower is never built, loaded
    or moved for it, even on an accelerator."""
    _simulate(monkeypatch, mm, mm.VRAMState.HIGH_VRAM)
    monkeypatch.setattr(importlib.import_module("comfy.cli_args").args, "gpu_only", True)  # encoder on the device
    loaded = []
    real = mm.load_models_gpu
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, *a, **k: loaded.append(list(models)) or real(models, *a, **k))
    _model, _vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors")
    hidden = {"last_hidden_state": torch.randn(2, 257, encoder.clip_width)}
    loaded.clear()
    positive, negative = comfy.node("PaintByExampleEncodeCLIPVision")().encode(encoder, hidden)
    assert positive[0][0].shape == (2, 1, 768)
    assert not encoder.tower_built, "the CLIP vision route built the CLIP tower"
    assert loaded == [[encoder.head_patcher]], "only the head is loaded through ComfyUI"
    assert encoder.head.proj_out.weight.data_ptr() != 0 and encoder.head_patcher.model.device == ACCELERATOR

    # with the tower built and offloaded by an ordinary Encode, the CLIP vision route still leaves it alone
    comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 32, 32, 3), "stretch")
    assert encoder.tower_built
    mm.unload_all_models()
    tower = encoder.tower_patcher.model
    before = _pointers(tower)
    loaded.clear()
    again, _negative = comfy.node("PaintByExampleEncodeCLIPVision")().encode(encoder, hidden)
    assert loaded == [[encoder.head_patcher]] and _pointers(tower) == before
    assert not _registered(mm, encoder.tower_patcher)
    assert torch.equal(again[0][0], positive[0][0])


def _resident_file_bytes(path) -> int:
    """Resident bytes of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:
            inside = line.rstrip().endswith(str(path))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_a_cast_unet_does_not_keep_the_files_pages(comfy, mm, tiny_model, tmp_path):
    """Loading the fp32 .ckpt in fp16 reads each UNet weight once to cast it; the file's pages are then
    handed back, so the UNet is not held twice (its fp16 copy plus the file's fp32 pages)."""
    pbe_core, comfy_model = comfy.pack("pbe_core"), comfy.pack("nodes.comfy_model")
    random_checkpoint = importlib.import_module(f"{pbe_core.__name__}.testing.random_checkpoint")
    unet_bytes = sum(t.numel() * 4 for t in tiny_model.unet.values())
    for weight_dtype, kept in (("default", True), ("fp16", False)):
        path = random_checkpoint.write_single_file(tmp_path / f"model_{weight_dtype}.ckpt", tiny_model).resolve()
        weights = pbe_core.read_checkpoint(path)
        before = _resident_file_bytes(path)
        model = comfy_model.build_model(weights, weight_dtype)
        for p in model.model.diffusion_model.parameters():
            p.sum()  # touch every weight, as sampling would
        grown = _resident_file_bytes(path) - before
        if kept:  # fp32 on a CPU: the model is the file's own pages
            assert grown >= 0.9 * unet_bytes
        else:
            assert grown < 0.1 * unet_bytes, f"{grown} bytes of the file stay resident after the cast"
        del model, weights

"""The pack's nodes inside a real ComfyUI: graphs run in-process with tiny random checkpoints."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from comfyui import ExecutionFailed
from pbe_core import layouts
from pbe_core.testing import random_checkpoint

LATENT_SCALE = 0.18215
CONTRACT = {
    "PaintByExampleLoader": ({"ckpt_name"}, ("MODEL", "VAE", "PBE_ENCODER")),
    "PaintByExampleDiffusersLoader": ({"model_path"}, ("MODEL", "VAE", "PBE_ENCODER")),
    "PaintByExampleEncode": ({"encoder", "reference", "preprocess", "reference_mask"}, ("CONDITIONING", "CONDITIONING")),
    "PaintByExampleMaskJitter": ({"mask", "seed"}, ("MASK",)),
    "PaintByExampleSampler": ({"model", "vae", "positive", "negative", "source", "mask", "seed", "steps", "cfg",
                               "sampler_name", "scheduler", "denoise"}, ("IMAGE", "LATENT")),
    "PaintByExampleInpaintConditioning": ({"positive", "negative", "vae", "source", "mask", "noise_mask", "start"},
                                          ("CONDITIONING", "CONDITIONING", "LATENT")),
    "PaintByExamplePasteBack": ({"vae", "latent", "source", "mask", "blend"}, ("IMAGE",)),
}


# ---------------------------------------------------------------------------- helpers


def _png(comfy, name: str, array: np.ndarray) -> str:
    Image.fromarray(array).save(comfy.scratch / "input" / name)
    return name


def _scene(comfy, height=64, width=96, box=(24, 16, 72, 48), seed=0):
    """A source PNG, a mask PNG (white = edit) and a reference PNG in ComfyUI's input folder."""
    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    reference = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    tag = f"{height}x{width}_{seed}"
    return (_png(comfy, f"source_{tag}.png", source), _png(comfy, f"mask_{tag}.png", mask),
            _png(comfy, f"reference_{tag}.png", reference))


def _graph(source, mask, reference, ckpt="pbe_tiny.safetensors", steps=3, seed=7, **sampler):
    loader = ({"class_type": "PaintByExampleDiffusersLoader", "inputs": {"model_path": ckpt}}
              if not ckpt.endswith((".safetensors", ".ckpt")) else
              {"class_type": "PaintByExampleLoader", "inputs": {"ckpt_name": ckpt}})
    return {
        "1": loader,
        "2": {"class_type": "LoadImage", "inputs": {"image": source}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "5": {"class_type": "PaintByExampleEncode",
              "inputs": {"encoder": ["1", 2], "reference": ["4", 0], "preprocess": "stretch"}},
        "6": {"class_type": "PaintByExampleSampler", "inputs": {
            "model": ["1", 0], "vae": ["1", 1], "positive": ["5", 0], "negative": ["5", 1],
            "source": ["2", 0], "mask": ["3", 0], "seed": seed, "steps": steps, "cfg": 5.0,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0, **sampler}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


def _load(comfy, ckpt="pbe_tiny.safetensors"):
    if ckpt.endswith((".safetensors", ".ckpt")):
        return comfy.node("PaintByExampleLoader")().load(ckpt)
    return comfy.node("PaintByExampleDiffusersLoader")().load(ckpt)


def _inputs(height=64, width=96, box=(24, 16, 72, 48), batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(batch, height, width, 3, generator=g)
    mask = torch.zeros(batch, height, width)
    x0, y0, x1, y1 = box
    mask[:, y0:y1, x0:x1] = 1
    return source, mask, torch.rand(1, 50, 40, 3, generator=g)


def _sample(comfy, model, vae, encoder, source, mask, reference, steps=2, seed=3, **kwargs):
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, reference, "stretch")
    return comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, source, mask, seed, steps,
                                                        5.0, "ddim", "ddim_uniform", 1.0, **kwargs)


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_node_contract_tooltips_and_descriptions(comfy, node_id):
    cls = comfy.node(node_id)
    names, outputs = CONTRACT[node_id]
    spec = cls.INPUT_TYPES()
    inputs = {**spec.get("required", {}), **spec.get("optional", {})}
    assert names <= set(inputs), f"{node_id} lost inputs {names - set(inputs)}"
    assert cls.RETURN_TYPES == outputs
    assert cls.DESCRIPTION.strip()
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(t.strip() for t in cls.OUTPUT_TOOLTIPS)
    for name, (_kind, *options) in inputs.items():
        assert options and options[0].get("tooltip", "").strip(), f"{node_id}.{name} has no tooltip"


def test_encode_defaults_follow_the_authors(comfy):
    spec = comfy.node("PaintByExampleEncode").INPUT_TYPES()["required"]["preprocess"]
    assert spec[1]["default"] == "stretch" and set(spec[0]) == {"stretch", "center_crop", "pad"}
    sampler = comfy.node("PaintByExampleSampler").INPUT_TYPES()["required"]
    assert sampler["steps"][1]["default"] == 50 and sampler["cfg"][1]["default"] == 5.0


# ---------------------------------------------------------------------------- loading


def test_every_layout_gives_the_same_model(comfy):
    layouts_ = ["pbe_tiny.safetensors", "pbe_tiny.ckpt"]
    if (comfy.models / "diffusers" / "pbe_tiny").is_dir():
        layouts_.append("pbe_tiny")
    loaded = [_load(comfy, name) for name in layouts_]
    reference_model, reference_vae, reference_encoder = loaded[0]
    pixels = torch.randn(1, 3, 224, 224)
    for model, vae, encoder in loaded[1:]:
        for ours, theirs in ((model.model.diffusion_model, reference_model.model.diffusion_model),
                             (vae.first_stage_model, reference_vae.first_stage_model)):
            a, b = ours.state_dict(), theirs.state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        # the same weights, bit for bit; the outputs agree to float rounding (oneDNN's kernels may take
        # another path for tensors at other memory alignments, e.g. memory-mapped from a .ckpt)
        for ours, theirs in ((encoder.head, reference_encoder.head),
                             (encoder.tower_patcher.model, reference_encoder.tower_patcher.model)):
            a, b = ours.state_dict(), theirs.state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert torch.allclose(encoder.encode(pixels)[0], reference_encoder.encode(pixels)[0], rtol=0, atol=1e-5)
    fp16_model = _load(comfy, "pbe_tiny_fp16.safetensors")[0].model.diffusion_model.state_dict()
    ref = reference_model.model.diffusion_model.state_dict()
    assert all(torch.allclose(fp16_model[k].float(), ref[k].float(), atol=2e-3) for k in ref)


def test_tiny_widths_are_read_from_the_weights(comfy, tiny_model):
    model, vae, encoder = _load(comfy)
    config = model.model.model_config.unet_config
    assert config["model_channels"] == 64 and config["in_channels"] == 9 and config["context_dim"] == 768
    assert vae.first_stage_model.encoder.conv_in.out_channels == 32
    assert encoder.clip_width == 128 and encoder.head.shape.clip.num_hidden_layers == 9
    sd = model.model.diffusion_model.state_dict()
    assert torch.equal(sd["input_blocks.0.0.weight"].float(), tiny_model.unet["input_blocks.0.0.weight"])


# ---------------------------------------------------------------------------- what the UNet receives


def test_unet_receives_pbe_channel_order_mask_polarity_and_learned_negative(comfy):
    model, vae, encoder = _load(comfy)
    source, mask, reference = _inputs()
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, reference, "stretch")
    captured = []

    def spy(module, args, kwargs):
        captured.append((args[0].detach().clone(), kwargs["context"].detach().clone(),
                         list(kwargs["transformer_options"]["cond_or_uncond"])))

    handle = model.model.diffusion_model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, source, mask, 1, 1, 5.0,
                                                     "ddim", "ddim_uniform", 1.0)
    finally:
        handle.remove()
    unet_input, context, cond_or_uncond = captured[0]
    assert unet_input.shape[1] == 9 and sorted(cond_or_uncond) == [0, 1]

    grey = source.clone()
    grey[mask > 0.5] = 0.5  # the edit region is blanked to mid-grey (0 in [-1, 1]) before encoding
    masked_latent = vae.encode(grey) * LATENT_SCALE
    keep = 1 - F.interpolate(mask[:, None], size=masked_latent.shape[-2:], mode="nearest")
    learned = encoder.head.learnable_vector.detach().float()
    for row, kind in enumerate(cond_or_uncond):
        assert torch.allclose(unet_input[row, 4:8], masked_latent[0], atol=1e-5), "channels 4-7: masked source latent"
        assert torch.equal(unet_input[row, 8], keep[0, 0]), "channel 8: 1 - mask (1 = keep)"
        expected = positive[0][0][0] if kind == 0 else learned[0]
        assert torch.allclose(context[row], expected, atol=1e-6), "cond: exemplar context; uncond: learned vector"
    assert torch.equal(negative[0][0], learned)


# ---------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("ckpt", ["pbe_tiny.safetensors", "pbe_tiny.ckpt", "pbe_tiny_fp16.safetensors", "pbe_tiny"])
def test_basic_edit_graph_in_each_layout(comfy, ckpt):
    if ckpt == "pbe_tiny" and not (comfy.models / "diffusers" / "pbe_tiny").is_dir():
        pytest.skip("diffusers is not installed (pip install --group test): no diffusers folder")
    source, mask, reference = _scene(comfy)
    out = comfy.run(_graph(source, mask, reference, ckpt=ckpt), ["2", "3", "6"])
    image, latent = out["6"]
    original, edit = out["2"][0], out["3"][0] > 0.5
    assert image.shape == original.shape and latent["samples"].shape == (1, 4, 8, 12)
    assert torch.equal(image[0][~edit[0]], original[0][~edit[0]]), "pixels outside the mask are the source's"
    assert (image[0][edit[0]] - original[0][edit[0]]).abs().mean() > 0.01, "the masked region was repainted"


def test_mask_jitter_in_a_graph(comfy):
    source, mask, reference = _scene(comfy)
    graph = _graph(source, mask, reference)
    graph["8"] = {"class_type": "PaintByExampleMaskJitter", "inputs": {
        "mask": ["3", 0], "seed": 5, "extend_min": 0.1, "extend_max": 0.4, "point_jitter": 3,
        "points_per_side": 18, "shape": "bezier", "batch_size": 3}}
    graph["6"]["inputs"]["mask"] = ["8", 0]
    out = comfy.run(graph, ["3", "8", "6"])
    jittered, image = out["8"][0], out["6"][0]
    assert jittered.shape == (3, 64, 96) and image.shape == (3, 64, 96, 3)
    assert (jittered >= out["3"][0]).all(), "jitter never uncovers the artist's mask"
    assert len({tuple(m.flatten().tolist()) for m in jittered}) == 3


def test_batches_follow_the_broadcasting_rules(comfy):
    model, vae, encoder = _load(comfy)
    sources, mask, reference = _inputs(batch=2)
    image, latent = _sample(comfy, model, vae, encoder, sources, mask[:1], reference)  # one mask, two sources
    assert image.shape == (2, 64, 96, 3) and latent["samples"].shape[0] == 2
    for i in range(2):
        assert torch.equal(image[i][mask[0] == 0], sources[i][mask[0] == 0])
    masks = torch.zeros(3, 64, 96)
    for i in range(3):
        masks[i, 8 * i:8 * i + 24, 8:40] = 1
    image, _ = _sample(comfy, model, vae, encoder, sources[:1], masks, reference)  # three masks, one source
    assert image.shape == (3, 64, 96, 3)
    for i in range(3):
        assert torch.equal(image[i][masks[i] == 0], sources[0][masks[i] == 0])
    two_refs = torch.rand(2, 40, 40, 3)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, two_refs, "pad")
    assert positive[0][0].shape == (2, 1, 768)
    image, _ = comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, sources, mask, 1, 2,
                                                            5.0, "ddim", "ddim_uniform", 1.0)
    assert image.shape == (2, 64, 96, 3)


@pytest.mark.parametrize(("height", "width"), [(64, 128), (128, 64), (70, 54), (33, 97)])
def test_any_aspect_ratio_and_sizes_off_the_8_grid(comfy, height, width):
    model, vae, encoder = _load(comfy)
    box = (width - 20, height - 16, width, height)  # touches the bottom-right corner, in the padded cells
    source, mask, reference = _inputs(height, width, box)
    image, latent = _sample(comfy, model, vae, encoder, source, mask, reference)
    assert image.shape == source.shape
    assert latent["samples"].shape[-2:] == (-(-height // 8), -(-width // 8))
    assert torch.equal(image[0][mask[0] == 0], source[0][mask[0] == 0])
    corner = mask[0] > 0
    assert (image[0][corner] - source[0][corner]).abs().mean() > 0.01, "the corner was edited too"


def _tiny_controlnet(comfy, model) -> str:
    """A small random SD1-style ControlNet whose widths match the tiny UNet, in ComfyUI's folder."""
    cldm = importlib.import_module("comfy.cldm.cldm")
    config = dict(model.model.model_config.unet_config)
    for key in ("out_channels", "dtype", "num_heads", "num_head_channels"):
        config.pop(key, None)
    config.update(in_channels=4, hint_channels=3, num_head_channels=64)
    torch.manual_seed(0)
    control = cldm.ControlNet(**config)
    sd = {}
    for name, value in control.state_dict().items():
        scale = 0.02 if value.ndim == 1 else 1 / max(1, value[0].numel()) ** 0.5
        sd["control_model." + name] = torch.randn(value.shape) * scale
    save_file(sd, str(comfy.models / "controlnet" / "tiny_controlnet.safetensors"))
    comfy.clear_folder_caches()
    return "tiny_controlnet.safetensors"


def test_controlnet_chain(comfy):
    model, _vae, _encoder = _load(comfy)
    name = _tiny_controlnet(comfy, model)
    source, mask, reference = _scene(comfy)
    plain = comfy.run(_graph(source, mask, reference), ["6"])["6"][0]
    graph = _graph(source, mask, reference)
    graph["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
    graph["21"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["5", 0], "negative": ["5", 1], "control_net": ["20", 0], "image": ["2", 0],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    graph["6"]["inputs"].update(positive=["21", 0], negative=["21", 1])
    controlled = comfy.run(graph, ["6"])["6"][0]
    assert controlled.shape == plain.shape
    assert (controlled - plain).abs().max() > 1e-3, "the ControlNet changed the edit"


def test_output_feeds_core_upscale_nodes(comfy):
    source, mask, reference = _scene(comfy)
    graph = _graph(source, mask, reference)
    graph["30"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["6", 0], "upscale_method": "bicubic",
                                                             "scale_by": 2.0}}
    graph["31"] = {"class_type": "ImageScale", "inputs": {"image": ["30", 0], "upscale_method": "lanczos",
                                                           "width": 300, "height": 200, "crop": "disabled"}}
    graph["32"] = {"class_type": "PreviewImage", "inputs": {"images": ["31", 0]}}
    out = comfy.run(graph, ["30", "31"])
    assert out["30"][0].shape == (1, 128, 192, 3) and out["31"][0].shape == (1, 200, 300, 3)


# ---------------------------------------------------------------------------- memory management


def test_encoder_is_loaded_and_unloaded_by_comfyui(comfy):
    import comfy.model_management as mm

    _model, _vae, encoder = _load(comfy)
    assert not encoder.tower_built, "the CLIP tower is built when a reference first needs it"
    patchers = (encoder.head_patcher,)
    assert not any(loaded.model in patchers for loaded in mm.current_loaded_models)
    comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 32, 32, 3), "stretch")
    patchers = (encoder.head_patcher, encoder.tower_patcher)
    for patcher in patchers:
        assert any(loaded.model is patcher for loaded in mm.current_loaded_models), "loaded through ComfyUI"
        assert patcher.load_device == mm.text_encoder_device()
        assert patcher.offload_device == mm.text_encoder_offload_device()
    mm.unload_all_models()
    assert not any(loaded.model in patchers for loaded in mm.current_loaded_models), "unloaded"
    for patcher in patchers:
        assert all(p.device == patcher.offload_device for p in patcher.model.parameters())
    positive, _ = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 32, 32, 3), "stretch")
    assert positive[0][0].shape == (1, 1, 768)


def test_encoder_dtype_choice(comfy):
    _model, _vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", encoder_dtype="bf16")
    assert encoder.head.proj_out.weight.dtype == torch.bfloat16
    assert next(encoder.tower_patcher.model.parameters()).dtype == torch.bfloat16
    _model, _vae, encoder = comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors")
    assert encoder.head.proj_out.weight.dtype == torch.float32  # auto on a CPU: never half precision
    with pytest.raises(ValueError, match="encoder_dtype: 'fp64' is not a valid choice; use one of auto, fp32, fp16, bf16"):
        comfy.node("PaintByExampleLoader")().load("pbe_tiny.safetensors", encoder_dtype="fp64")


# ---------------------------------------------------------------------------- errors


def _fails(comfy, graph, *fragments):
    with pytest.raises(ExecutionFailed) as err:
        comfy.run(graph)
    for fragment in fragments:
        assert fragment in err.value.message, err.value.message


def test_non_pbe_checkpoint_in_the_loader(comfy, tiny_model):
    sd = {layouts.UNET_PREFIX + k: v for k, v in tiny_model.unet.items()}
    sd.update({layouts.VAE_PREFIX + k: v for k, v in tiny_model.vae.items()})
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(8, 8)
    save_file(sd, str(comfy.models / "checkpoints" / "sd15_like.safetensors"))
    comfy.clear_folder_caches()
    source, mask, reference = _scene(comfy)
    _fails(comfy, _graph(source, mask, reference, ckpt="sd15_like.safetensors"),
           "ckpt_name:", "sd15_like.safetensors is not a Paint-by-Example model", "Load Checkpoint")


@pytest.mark.parametrize(("mask_value", "message"), [(0, "mask 0 is empty"), (255, "covers the whole source")])
def test_empty_and_full_masks(comfy, mask_value, message):
    source, _mask, reference = _scene(comfy)
    name = _png(comfy, f"flat_{mask_value}.png", np.full((64, 96), mask_value, dtype=np.uint8))
    _fails(comfy, _graph(source, name, reference), "mask:", message)


def test_mask_of_another_size(comfy):
    source, _mask, reference = _scene(comfy)
    name = _png(comfy, "small_mask.png", np.full((32, 32), 255, dtype=np.uint8))
    _fails(comfy, _graph(source, name, reference), "mask: it is 32x32 but the source is 96x64")


def test_batch_mismatch(comfy):
    model, vae, encoder = _load(comfy)
    sources, _mask, reference = _inputs(batch=2)
    masks = torch.zeros(3, 64, 96)
    masks[:, 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="mask: there are 3 masks for 2 source images"):
        _sample(comfy, model, vae, encoder, sources, masks, reference)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(3, 32, 32, 3), "stretch")
    with pytest.raises(ValueError, match="positive: it holds 3 exemplars for 2 images"):
        comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, sources, masks[:1], 1, 1, 5.0,
                                                     "ddim", "ddim_uniform", 1.0)


def test_encoder_from_a_model_of_another_width(comfy):
    wide = random_checkpoint.random_weights("tiny", seed=1, context_dim=1024)
    random_checkpoint.write_single_file(comfy.models / "checkpoints" / "pbe_wide.safetensors", wide)
    comfy.clear_folder_caches()
    model, vae, _encoder = _load(comfy)
    _wide_model, _wide_vae, wide_encoder = _load(comfy, "pbe_wide.safetensors")
    source, mask, reference = _inputs()
    with pytest.raises(ValueError, match="positive: its width is 1024 but the model expects 768.*same Paint-by-Example loader"):
        _sample(comfy, model, vae, wide_encoder, source, mask, reference)


def test_model_wired_as_sd_inpainting_is_refused(comfy):
    model, vae, encoder = _load(comfy)
    rewired = model.clone()
    rewired.add_object_patch("concat_keys", ("mask", "masked_image"))
    source, mask, reference = _inputs()
    with pytest.raises(ValueError, match="model: this 9-channel MODEL is wired as an SD inpainting model"):
        _sample(comfy, rewired, vae, encoder, source, mask, reference)

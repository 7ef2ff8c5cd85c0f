"""The ComfyUI nodes artists put between the loader and the sampler, on the Paint-by-Example MODEL.

One test per core node, each a real graph in ComfyUI with the tiny model: Loader -> node -> Paint-by-
Example Sampler (and, for the caching nodes, also core's InpaintModelConditioning -> KSampler). Each
asserts that the graph runs, that the edit is finite, that the node changes the result when it should
(and leaves it alone when it should not), and that the UNet receives Paint-by-Example's 9 channels in
order — [noisy latent, masked-source latent, 1 - mask] — on every evaluated step. For the caching
nodes, a reused step must equal what the cache's own rule gives on the 4-channel latent.
The README's compatibility table is backed row by row by these tests.
"""

from __future__ import annotations

import importlib
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from comfyui import ExecutionFailed
from test_comfy_nodes import _graph, _png, _tiny_controlnet

LATENT_SCALE = 0.18215
SIZE = 128  # big enough for every node's own size rules (SAG blurs the middle block's attention map)


@pytest.fixture(scope="module")
def scene(comfy):
    rng = np.random.default_rng(11)
    source = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    hard = np.zeros((SIZE, SIZE), np.uint8)
    hard[32:96, 40:104] = 255
    soft = np.zeros((SIZE, SIZE), np.float32)  # a gradient mask, for Differential Diffusion
    soft[24:104, 24:104] = np.linspace(0.2, 1.0, 80)[None, :]
    reference = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    return {"source": _png(comfy, "compat_source.png", source), "mask": _png(comfy, "compat_mask.png", hard),
            "soft_mask": _png(comfy, "compat_soft.png", (soft * 255).round().astype(np.uint8)),
            "reference": _png(comfy, "compat_reference.png", reference)}


class UNetInputs:
    """Records the input of every UNet evaluation (whatever wrapper or compiled module calls it)."""

    def __init__(self, monkeypatch):
        self.calls = []
        unet = importlib.import_module("comfy.ldm.modules.diffusionmodules.openaimodel").UNetModel
        original = unet._forward

        def recorded(module, x, *args, **kwargs):
            self.calls.append(x.detach().float().clone())
            return original(module, x, *args, **kwargs)

        monkeypatch.setattr(unet, "_forward", recorded)

    def check_layout(self, vae, source: torch.Tensor, mask: torch.Tensor) -> None:
        """Every call: 9 channels, the masked source's latent in 4-7 and 1 - mask in 8, on every row."""
        assert self.calls, "the UNet never ran"
        grey = source.clone()
        grey[mask > 0.5] = 0.5
        with torch.inference_mode():  # the VAE's weights were loaded inside ComfyUI's executor (inference mode)
            masked = vae.encode(grey)[0] * LATENT_SCALE
        keep = 1 - F.interpolate((mask > 0.5).float()[:, None], size=masked.shape[-2:], mode="nearest")[0, 0]
        for x in self.calls:
            assert x.shape[1] == 9, f"the UNet received {x.shape[1]} channels"
            for row in x:
                assert torch.allclose(row[4:8], masked, atol=1e-4), "channels 4-7: the masked source's latent"
                assert torch.equal(row[8], keep), "channel 8: 1 - mask"


def _patched(graph: dict, *nodes: dict) -> dict:
    """Loader ("1") -> the given model nodes in a chain -> the Sampler ("6")."""
    previous = ["1", 0]
    for i, node in enumerate(nodes):
        node_id = str(40 + i)
        graph[node_id] = {"class_type": node["class_type"], "inputs": {"model": previous, **node["inputs"]}}
        previous = [node_id, 0]
    graph["6"]["inputs"]["model"] = previous
    return graph


def _core_route(graph: dict, model_link, noise_mask=True) -> dict:
    """Core's InpaintModelConditioning -> KSampler -> VAE Decode on the same inputs."""
    graph.update({
        "10": {"class_type": "InpaintModelConditioning", "inputs": {
            "positive": ["5", 0], "negative": ["5", 1], "vae": ["1", 1], "pixels": ["2", 0], "mask": ["3", 0],
            "noise_mask": noise_mask}},
        "11": {"class_type": "KSampler", "inputs": {
            "model": model_link, "seed": 7, "steps": 8, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["10", 0], "negative": ["10", 1], "latent_image": ["10", 2], "denoise": 1.0}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 1]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}},
    })
    return graph


def _edit(comfy, scene, *nodes, mask="mask", steps=6, sampler="euler", scheduler="normal"):
    graph = _graph(scene["source"], scene[mask], scene["reference"], steps=steps, sampler_name=sampler,
                   scheduler=scheduler)
    return comfy.run(_patched(graph, *nodes), ["1", "2", "3", "6"])


def _check(comfy, scene, monkeypatch, *nodes, changes=True, mask="mask", tolerance=0.0, **run):
    """Run plain and patched; the patched edit is finite, differs (or not) and feeds the UNet right."""
    plain = _edit(comfy, scene, mask=mask, **run)["6"][0]
    inputs = UNetInputs(monkeypatch)
    out = _edit(comfy, scene, *nodes, mask=mask, **run)
    image = out["6"][0]
    assert torch.isfinite(image).all()
    difference = (image - plain).abs().max().item()
    if changes:
        assert difference > 1e-3, f"{nodes[-1]['class_type']} did not change the edit"
    else:
        assert difference <= tolerance, f"{nodes[-1]['class_type']} changed the edit by {difference}"
    _model, vae, _encoder = out["1"]
    inputs.check_layout(vae, out["2"][0], out["3"][0])
    return image


# ---------------------------------------------------------------------------- the nodes


def _tiny_lora(comfy, scene) -> str:
    """A small random SD 1.x UNet LoRA (kohya names) over every attention projection of the tiny UNet."""
    model = comfy.run(_graph(scene["source"], scene["mask"], scene["reference"]), ["1"])["1"][0]
    lora = importlib.import_module("comfy.lora")
    keys = lora.model_lora_keys_unet(model.model, {})
    g = torch.Generator().manual_seed(5)
    sd = {}
    for name, target in keys.items():
        if not (name.startswith("lora_unet_") and isinstance(target, str) and "attn" in target and target.endswith(".weight")):
            continue
        weight = model.model.state_dict()[target]
        if weight.ndim != 2:
            continue
        rank = 4
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=g) * 0.1
        sd[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=g) * 0.1
        sd[f"{name}.alpha"] = torch.tensor(float(rank))
    assert len(sd) > 30, "the LoRA should reach many layers"
    folder = comfy.models / "loras"
    folder.mkdir(exist_ok=True)
    comfy.folder_paths.add_model_folder_path("loras", str(folder), is_default=True)
    save_file(sd, str(folder / "tiny_unet_lora.safetensors"))
    comfy.clear_folder_caches()
    return "tiny_unet_lora.safetensors"


def test_lora_loader_model_only(comfy, scene, monkeypatch):
    name = _tiny_lora(comfy, scene)
    _check(comfy, scene, monkeypatch, {"class_type": "LoraLoaderModelOnly",
                                       "inputs": {"lora_name": name, "strength_model": 1.0}})
    _check(comfy, scene, monkeypatch, {"class_type": "LoraLoaderModelOnly",
                                       "inputs": {"lora_name": name, "strength_model": 0.0}}, changes=False)


def test_freeu(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "FreeU", "inputs": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}})


def test_freeu_v2(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "FreeU_V2", "inputs": {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}})


def test_differential_diffusion_with_a_soft_mask(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "DifferentialDiffusion", "inputs": {"strength": 1.0}},
           mask="soft_mask")


def test_perturbed_attention_guidance(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "PerturbedAttentionGuidance", "inputs": {"scale": 3.0}})


def test_self_attention_guidance(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "SelfAttentionGuidance", "inputs": {"scale": 0.5, "blur_sigma": 2.0}})


def test_rescale_cfg(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "RescaleCFG", "inputs": {"multiplier": 0.7}})


def test_cfg_norm(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "CFGNorm", "inputs": {"strength": 1.0}})


def test_apg(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "APG", "inputs": {"eta": 1.0, "norm_threshold": 5.0,
                                                                       "momentum": -0.5}})


def test_tome_patch_model(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "TomePatchModel", "inputs": {"ratio": 0.5}})


def test_hypertile(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "HyperTile", "inputs": {
        "tile_size": 32, "swap_size": 2, "max_depth": 1, "scale_depth": False}})


def test_patch_model_add_downscale(comfy, scene, monkeypatch):
    _check(comfy, scene, monkeypatch, {"class_type": "PatchModelAddDownscale", "inputs": {
        "block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0, "end_percent": 0.5,
        "downscale_after_skip": True, "downscale_method": "bicubic", "upscale_method": "bicubic"}})


def test_model_sampling_discrete(comfy, scene, monkeypatch):
    # eps is what Paint-by-Example predicts: the node then changes nothing; another prediction type is applied
    _check(comfy, scene, monkeypatch, {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": "eps", "zsnr": False}},
           changes=False)
    _check(comfy, scene, monkeypatch, {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": "eps", "zsnr": True}})


def test_controlnet(comfy, scene, monkeypatch):
    model = comfy.run(_graph(scene["source"], scene["mask"], scene["reference"]), ["1"])["1"][0]
    name = _tiny_controlnet(comfy, model)
    plain = _edit(comfy, scene)["6"][0]
    graph = _graph(scene["source"], scene["mask"], scene["reference"], steps=6, sampler_name="euler", scheduler="normal")
    graph["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
    graph["21"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["5", 0], "negative": ["5", 1], "control_net": ["20", 0], "image": ["2", 0],
        "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    graph["6"]["inputs"].update(positive=["21", 0], negative=["21", 1])
    inputs = UNetInputs(monkeypatch)
    out = comfy.run(graph, ["1", "2", "3", "6"])
    assert torch.isfinite(out["6"][0]).all() and (out["6"][0] - plain).abs().max() > 1e-3
    inputs.check_layout(out["1"][1], out["2"][0], out["3"][0])


# ---------------------------------------------------------------------------- the caching and compiling nodes


class CacheSpy:
    """Records each reused step of core's EasyCache / LazyCache: the tensor the cache's rule was applied
    to and what it returned, and the cached differences at that moment. The random model's predictions
    change too much for the cache's threshold (3 at most in the UI), so the spy raises it on the holder
    each run clones: every step after the first two is then a reused one, which is what is checked."""

    def __init__(self, comfy, monkeypatch, holder_name: str):
        # the module as ComfyUI loaded it (its extras are registered under their file path)
        module = sys.modules[comfy.node("EasyCache").__module__]
        holder = getattr(module, holder_name)
        self.reused = []
        apply, clone = holder.apply_cache_diff, holder.clone

        def always_reuse(cache):
            copy = clone(cache)
            copy.reuse_threshold = float("inf")
            return copy

        monkeypatch.setattr(holder, "clone", always_reuse)

        def spied(cache, x, *args):
            diffs = ({k: v.clone() for k, v in cache.uuid_cache_diffs.items()} if hasattr(cache, "uuid_cache_diffs")
                     else cache.cache_diff.clone())
            before = x.clone()
            out = apply(cache, x, *args)
            self.reused.append((before, out.clone(), diffs, list(args[0]) if args else None))
            return out

        monkeypatch.setattr(holder, "apply_cache_diff", spied)


def _cache_node(name: str) -> dict:
    return {"class_type": name, "inputs": {"reuse_threshold": 3.0, "start_percent": 0.0, "end_percent": 1.0,
                                           "verbose": False}}


def _check_reused_steps(spy: CacheSpy) -> None:
    """LazyCache's rule: a reused step is the sampler's 4-channel latent plus the last computed step's
    (prediction - latent), for the whole batch."""
    assert spy.reused, "the cache never reused a step"
    for before, out, diffs, _uuids in spy.reused:
        assert before.shape[1] == 4, f"the cache's rule was applied to {before.shape[1]} channels, not the latent's 4"
        assert out.shape == before.shape, "a reused step must predict every row of the batch"
        assert torch.allclose(out, before + diffs, atol=1e-6)


@pytest.mark.parametrize("route", ["sampler", "core"])
def test_lazycache(comfy, scene, monkeypatch, route):
    spy = CacheSpy(comfy, monkeypatch, "LazyCacheHolder")
    if route == "sampler":
        _check(comfy, scene, monkeypatch, _cache_node("LazyCache"), steps=10)
    else:
        _core_check(comfy, scene, monkeypatch, _cache_node("LazyCache"))
    _check_reused_steps(spy)


@pytest.mark.parametrize("route", ["sampler", "core"])
def test_easycache_stops_the_run_and_names_lazycache(comfy, scene, route):
    """EasyCache breaks this model (see the next test): in either route the run stops and says what to use."""
    graph = _graph(scene["source"], scene["mask"], scene["reference"])
    graph["40"] = {"class_type": "EasyCache", "inputs": {"model": ["1", 0], **_cache_node("EasyCache")["inputs"]}}
    if route == "sampler":
        graph["6"]["inputs"]["model"] = ["40", 0]
    else:
        graph = _core_route(graph, ["40", 0])
    with pytest.raises(ExecutionFailed) as failed:
        comfy.run(graph)
    assert "EasyCache does not work with Paint-by-Example" in failed.value.message
    assert "use LazyCache instead" in failed.value.message


def test_why_easycache_is_refused(comfy, scene, monkeypatch):
    """Without the pack's check, EasyCache's reused step works on the 9-channel UNet input (it takes the
    concatenated channels for the latent) and returns a prediction for one row of the cond/uncond batch."""
    model_guard = importlib.import_module(f"{comfy.pack_package}.nodes.model_guard")
    spy = CacheSpy(comfy, monkeypatch, "EasyCacheHolder")
    out = comfy.run(_graph(scene["source"], scene["mask"], scene["reference"]), ["1", "2", "3", "5"])
    model, vae, _encoder = out["1"]
    cached = comfy.node("EasyCache").execute(model, 3.0, 0.0, 1.0, False)[0]
    cached.remove_wrappers_with_key(importlib.import_module("comfy.patcher_extension").WrappersMP.OUTER_SAMPLE,
                                    model_guard.KEY)
    positive, negative = out["5"]
    try:
        with torch.inference_mode():  # as inside ComfyUI's executor
            comfy.node("PaintByExampleSampler")().sample(cached, vae, positive, negative, out["2"][0], out["3"][0], 7,
                                                         6, 5.0, "euler", "normal", 1.0)
    except RuntimeError:
        pass  # where the cut-down prediction reaches the CFG sum, the sampler fails outright
    assert spy.reused, "EasyCache reused no step"
    before, returned, _diffs, uuids = spy.reused[0]
    assert before.shape[1] == 9, "the cache's rule was applied to the UNet's 9-channel input"
    assert returned.shape[1] == 4 and returned.shape[0] == before.shape[0] // len(uuids) < before.shape[0]


def _core_check(comfy, scene, monkeypatch, node: dict) -> None:
    """Core's inpaint route with the node on the model: it runs, changes the edit, feeds the UNet right."""
    graph = _graph(scene["source"], scene["mask"], scene["reference"])
    graph["40"] = {"class_type": node["class_type"], "inputs": {"model": ["1", 0], **node["inputs"]}}
    plain = comfy.run(_core_route(dict(graph), ["1", 0]), ["12"])["12"][0]
    inputs = UNetInputs(monkeypatch)
    out = comfy.run(_core_route(graph, ["40", 0]), ["1", "2", "3", "12"])
    assert torch.isfinite(out["12"][0]).all() and (out["12"][0] - plain).abs().max() > 1e-3
    inputs.check_layout(out["1"][1], out["2"][0], out["3"][0])


def test_torch_compile_model(comfy, scene, monkeypatch):
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("this machine has no C compiler, which TorchCompileModel's inductor backend needs on a CPU")
    _check(comfy, scene, monkeypatch, {"class_type": "TorchCompileModel", "inputs": {"backend": "inductor"}},
           changes=False, tolerance=1e-3)


def test_core_ksampler_route_refuses_a_text_prompt(comfy, scene):
    """The MODEL's own check runs in core's KSampler route too: a CLIP Text Encode-style conditioning
    (77 tokens, no Paint-by-Example marker) stops the run with the Sampler's message."""
    graph = _core_route(_graph(scene["source"], scene["mask"], scene["reference"]), ["1", 0])
    text = torch.randn(1, 77, 768)
    clip_text = [[text, {}]]
    conditioning = importlib.import_module("node_helpers").conditioning_set_values
    out = comfy.run(graph, ["10", "1"])
    positive, negative, latent = out["10"]
    model = out["1"][0]
    sample = importlib.import_module("comfy.sample")
    noise = sample.prepare_noise(latent["samples"], 0)
    with pytest.raises(ValueError, match="positive: this is a text prompt's conditioning"):
        with torch.inference_mode():  # comfy.sample.sample is what core's KSampler calls
            sample.sample(model, noise, 2, 5.0, "euler", "normal", conditioning(clip_text, {}), negative,
                          latent["samples"], noise_mask=latent.get("noise_mask"))

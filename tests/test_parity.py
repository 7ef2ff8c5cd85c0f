"""Number-for-number parity with diffusers' PaintByExamplePipeline, an implementation we did not write,
from the pipeline's own start.

The same random weights are written in the authors' single-file layout and loaded with our
loader inside ComfyUI; diffusers gets them through its own converters (UNet, VAE) and its own
PaintByExampleImageEncoder class. Both sides get the same noise tensor as noise: ours from the
Sampler's seed (ComfyUI's prepare_noise), diffusers' as ``latents``, which its pipeline scales by
the scheduler's init_noise_sigma. Conventions that differ are aligned so like is compared with
like (docs/parity.md):
- the masked source is encoded to the VAE posterior's mean on both sides (diffusers samples it);
- the reference is preprocessed once and the same tensor goes to both encoders;
- the trajectory is ComfyUI's Euler sampler on its `simple` schedule (table sigmas from sigma_max,
  so ComfyUI scales the first noise by sqrt(1 + sigma^2), as diffusers' Euler does), run on the
  diffusers side by its EulerDiscreteScheduler with ComfyUI's sigmas;
- denoise 1 and no noise mask (the pipeline has none), masks aligned to the 8-pixel grid.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from pbe_core.testing import random_checkpoint
from pbe_core.reference import prepare_references
from test_comfy_nodes import _load

diffusers = pytest.importorskip("diffusers", reason="parity needs diffusers (pip install --group test)")
pbe_pipeline = importlib.import_module("diffusers.pipelines.deprecated.paint_by_example.pipeline_paint_by_example")

SAMPLER, SCHEDULER = "euler", "simple"
IMAGE_LIMIT = 2e-3


def _diffusers_pipeline(parts, scheduler):
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig

    models = {}
    for name, (cls, config, sd) in parts.items():
        config = {k: v for k, v in config.items() if not k.startswith("_") and k != "random_weights"}
        if name == "image_encoder":
            model = PaintByExampleImageEncoder(CLIPVisionConfig(**config))
            wanted = model.state_dict().keys()  # transformers 5 dropped the "vision_model." level
            sd = {(k if k in wanted else k.replace("model.vision_model.", "model.")): v for k, v in sd.items()}
            model.load_state_dict(sd, strict=True)
        else:  # built empty and handed the tensors: no second copy of a full-size UNet
            with torch.device("meta"):
                model = getattr(diffusers, cls)(**config)
            model.load_state_dict(sd, strict=True, assign=True)
        models[name] = model.eval()
    return pbe_pipeline.PaintByExamplePipeline(
        vae=models["vae"], image_encoder=models["image_encoder"], unet=models["unet"], scheduler=scheduler,
        safety_checker=None, feature_extractor=CLIPImageProcessor(), requires_safety_checker=False)


def _euler_with_sigmas(sigmas):
    """diffusers' Euler scheduler following ComfyUI's sigma schedule exactly."""
    scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 num_train_timesteps=1000, timestep_spacing="leading")
    plain = scheduler.set_timesteps
    scheduler.set_timesteps = lambda num_inference_steps=None, device=None, **kw: plain(
        sigmas=[float(s) for s in sigmas], device=device)
    return scheduler


def _run_both(comfy, model_name, parts, steps, height=64, width=96, box=(24, 16, 72, 48), seed=3, cfg=5.0,
              breaker=None):
    """Run our PaintByExampleSampler and diffusers' pipeline on the same inputs and the same noise;
    return figures."""
    model, vae, encoder = _load(comfy, model_name)
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(1, height, width, 3, generator=g)
    mask = torch.zeros(1, height, width)
    x0, y0, x1, y1 = box
    mask[:, y0:y1, x0:x1] = 1
    reference = torch.rand(1, 60, 50, 3, generator=g)
    pixels = prepare_references(reference, "stretch")
    sample = importlib.import_module("comfy.sample")
    noise = sample.prepare_noise(torch.zeros(1, 4, height // 8, width // 8), seed)  # what the Sampler's seed gives

    # ours, inside ComfyUI; the wrapper records the first model input (x_T in sigma space)
    positive, negative = comfy.pack("nodes.conditioning_roles").marked(*encoder.encode(pixels))
    first_input = []

    def wrapper(apply, args):
        if not first_input:
            first_input.append(args["input"].clone())
        c = dict(args["c"])
        if breaker is not None:
            c["c_concat"] = breaker(c["c_concat"])
        return apply(args["input"], args["timestep"], **c)

    spied = model.clone()
    spied.set_model_unet_function_wrapper(wrapper)
    image, latent = comfy.node("PaintByExampleSampler")().sample(
        spied, vae, positive, negative, source, mask, seed, steps, cfg, SAMPLER, SCHEDULER, 1.0, noise_mask=False)
    sampling = model.get_model_object("model_sampling")
    sigmas = importlib.import_module("comfy.samplers").calculate_sigmas(sampling, SCHEDULER, steps)

    # diffusers, with its own models and pipeline, given the same noise as noise
    scheduler = _euler_with_sigmas(sigmas)
    pipe = _diffusers_pipeline(parts, scheduler)
    context, uncond = pipe.image_encoder(pixels, return_uncond_vector=True)
    scheduler.set_timesteps(steps)
    original = pbe_pipeline.retrieve_latents
    pbe_pipeline.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    try:
        with torch.no_grad():
            theirs_latent = pipe(example_image=pixels, image=source.permute(0, 3, 1, 2) * 2 - 1,
                                 mask_image=mask[:, None], height=height, width=width, num_inference_steps=steps,
                                 guidance_scale=cfg, latents=noise, output_type="latent").images
            theirs_image = pipe.vae.decode(theirs_latent / pipe.vae.config.scaling_factor).sample
    finally:
        pbe_pipeline.retrieve_latents = original
    theirs_image = (theirs_image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    inside = mask[0] > 0.5
    return {
        "context": (positive[0][0] - context).abs().max().item(),
        "uncond": (negative[0][0] - uncond).abs().max().item(),
        # both starts are noise * init_noise_sigma, in diffusers' units (latents are scaled by 0.18215 there)
        "start": (first_input[0][:1] - noise * float(scheduler.init_noise_sigma)).abs().max().item(),
        "latent": (latent["samples"] - theirs_latent / 0.18215).abs().max().item(),
        "image": (image[0][inside] - theirs_image[0][inside]).abs().max().item(),
        "scale": (theirs_latent / 0.18215).abs().max().item(),
    }


def _report(report, label, figures):
    report(f"parity {label}: context {figures['context']:.2e}, uncond {figures['uncond']:.2e}, start "
           f"{figures['start']:.2e}, latent {figures['latent']:.2e} (latent max {figures['scale']:.2f}), image "
           f"{figures['image']:.2e}")


def _parity_holds(figures) -> bool:
    """Final latent within the fp32 floor relative to its scale (the random models' latents grow
    large over a run) and the decoded image within 2e-3."""
    return figures["latent"] <= 1e-5 * max(1.0, figures["scale"]) and figures["image"] <= IMAGE_LIMIT


def test_tiny_parity_from_the_pipelines_own_start(comfy, tiny_model, report):
    parts = random_checkpoint.diffusers_parts(tiny_model)
    one = _run_both(comfy, "pbe_tiny.safetensors", parts, steps=1)
    _report(report, "tiny, 1 step (one classifier-free-guided prediction)", one)
    ten = _run_both(comfy, "pbe_tiny.safetensors", parts, steps=10)
    _report(report, "tiny, 10 steps, cfg 5, denoise 1, no noise mask (full run)", ten)
    for figures in (one, ten):
        assert figures["context"] <= 1e-5 and figures["uncond"] <= 1e-5
        assert figures["start"] <= 1e-5 * 15, "both sides start from the same noise, scaled alike (pure noise)"
    # one guided prediction: x0 = x - sigma * eps at sigma_max (about 14.6), so relative to its scale too
    assert _parity_holds(one), one
    assert _parity_holds(ten), ten


def test_parity_fails_with_the_source_latent_in_the_start(comfy, tiny_model, monkeypatch, report):
    """The control: the start the Sampler had before (the source's latent under the noise, as core's
    InpaintModelConditioning -> KSampler gives at denoise 1) fails the parity check."""
    monkeypatch.setattr(comfy.pack("nodes.sampler"), "_start", lambda denoise: "source")
    figures = _run_both(comfy, "pbe_tiny.safetensors", random_checkpoint.diffusers_parts(tiny_model), steps=10)
    _report(report, "tiny, 10 steps, deliberately reverted start (source latent added)", figures)
    assert figures["start"] > 1e-2, "the source's latent is in the start"
    assert not _parity_holds(figures), figures


BREAKS = {
    "SD-inpainting channel order [x, mask, masked]": lambda cc: torch.cat([cc[:, 4:5], cc[:, :4]], dim=1),
    "mask polarity (1 = edit)": lambda cc: torch.cat([cc[:, :4], 1 - cc[:, 4:5]], dim=1),
}


@pytest.mark.parametrize("break_name", list(BREAKS))
def test_parity_fails_when_the_unet_input_is_wrong(comfy, tiny_model, break_name, report):
    """The comparison is sharp: feeding the UNet a wrong channel order or mask polarity breaks it."""
    figures = _run_both(comfy, "pbe_tiny.safetensors", random_checkpoint.diffusers_parts(tiny_model), steps=1,
                        breaker=BREAKS[break_name])
    _report(report, f"tiny, 1 step, deliberately broken: {break_name}", figures)
    assert figures["latent"] > 1e-2


@pytest.fixture(scope="module")
def full_size(comfy, tmp_path_factory):
    model = random_checkpoint.random_weights("full", seed=0)
    parts = random_checkpoint.diffusers_parts(model)
    path = comfy.models / "checkpoints" / "pbe_full_random.safetensors"
    random_checkpoint.write_single_file(path, model)
    del model
    comfy.clear_folder_caches()
    yield parts
    path.unlink()


def test_full_size_parity_from_the_pipelines_own_start(comfy, full_size, report):
    import comfy.model_management as mm

    try:
        figures = _run_both(comfy, "pbe_full_random.safetensors", full_size, steps=10, height=64, width=64,
                            box=(16, 16, 48, 48))
    finally:
        mm.unload_all_models()  # do not keep a full-size model loaded for the rest of the session
    _report(report, "full size, 10 steps, cfg 5, denoise 1, no noise mask, 64x64", figures)
    assert figures["context"] <= 1e-5 and figures["uncond"] <= 1e-5
    assert figures["start"] <= 1e-5 * 15
    assert _parity_holds(figures), figures

"""Number-for-number parity with diffusers' PaintByExamplePipeline, an implementation we did not write.

The same random weights are written in the authors' single-file layout and loaded with our
loader inside ComfyUI; diffusers gets them through its own converters (UNet, VAE) and its own
PaintByExampleImageEncoder class. Conventions that differ are aligned so like is compared with
like (README, "Parity with diffusers"):
- the masked source is encoded to the VAE posterior's mean on both sides (diffusers samples it);
- the reference is preprocessed once and the same tensor goes to both encoders;
- the trajectory is ComfyUI's `ddim` + `ddim_uniform` (Euler in sigma space, ending on the x0
  prediction), run on the diffusers side by its EulerDiscreteScheduler with ComfyUI's sigmas;
- no noise mask (the pipeline has none) and masks aligned to the 8-pixel grid (resizes agree).
"""

from __future__ import annotations

import importlib
import pytest
import torch

from pbe_core import random_checkpoint
from pbe_core.reference import prepare_references
from test_comfy_nodes import _load

diffusers = pytest.importorskip("diffusers", reason="parity needs diffusers (pip install --group test)")
pbe_pipeline = importlib.import_module("diffusers.pipelines.deprecated.paint_by_example.pipeline_paint_by_example")


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
    """Run our PaintByExampleSampler and diffusers' pipeline on the same inputs; return figures."""
    model, vae, encoder = _load(comfy, model_name)
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(1, height, width, 3, generator=g)
    mask = torch.zeros(1, height, width)
    x0, y0, x1, y1 = box
    mask[:, y0:y1, x0:x1] = 1
    reference = torch.rand(1, 60, 50, 3, generator=g)
    pixels = prepare_references(reference, "stretch")

    # ours, inside ComfyUI; the wrapper records the first model input (x_T in sigma space)
    positive, negative = encoder.encode(pixels)
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
        spied, vae, [[positive, {}]], [[negative, {}]], source, mask, seed, steps, cfg, "ddim", "ddim_uniform", 1.0,
        noise_mask=False)
    sampling = model.get_model_object("model_sampling")
    sigmas = importlib.import_module("comfy.samplers").calculate_sigmas(sampling, "ddim_uniform", steps)

    # diffusers, with its own models and pipeline
    scheduler = _euler_with_sigmas(sigmas)
    pipe = _diffusers_pipeline(parts, scheduler)
    context, uncond = pipe.image_encoder(pixels, return_uncond_vector=True)
    scheduler.set_timesteps(steps)
    latents = first_input[0][:1] / scheduler.init_noise_sigma
    original = pbe_pipeline.retrieve_latents
    pbe_pipeline.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    try:
        with torch.no_grad():
            theirs_latent = pipe(example_image=pixels, image=source.permute(0, 3, 1, 2) * 2 - 1,
                                 mask_image=mask[:, None], height=height, width=width, num_inference_steps=steps,
                                 guidance_scale=cfg, latents=latents, output_type="latent").images
            theirs_image = pipe.vae.decode(theirs_latent / pipe.vae.config.scaling_factor).sample
    finally:
        pbe_pipeline.retrieve_latents = original
    theirs_image = (theirs_image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    inside = mask[0] > 0.5
    return {
        "context": (positive - context).abs().max().item(),
        "uncond": (negative - uncond).abs().max().item(),
        "latent": (latent["samples"] - theirs_latent / 0.18215).abs().max().item(),
        "image": (image[0][inside] - theirs_image[0][inside]).abs().max().item(),
        "scale": (theirs_latent / 0.18215).abs().max().item(),
    }


def _report(report, label, figures):
    report(f"parity {label}: context {figures['context']:.2e}, uncond {figures['uncond']:.2e}, "
          f"latent {figures['latent']:.2e} (latent max {figures['scale']:.2f}), image {figures['image']:.2e}")


def test_tiny_parity_one_step_and_ten_steps(comfy, tiny_model, report):
    parts = random_checkpoint.diffusers_parts(tiny_model)
    one = _run_both(comfy, "pbe_tiny.safetensors", parts, steps=1)
    _report(report, "tiny, 1 step (one classifier-free-guided prediction)", one)
    ten = _run_both(comfy, "pbe_tiny.safetensors", parts, steps=10)
    _report(report, "tiny, 10 steps (full run)", ten)
    for figures in (one, ten):
        assert figures["context"] <= 1e-5 and figures["uncond"] <= 1e-5
    assert one["latent"] <= 1e-4, "one guided prediction (x0 = x - sigma * eps, at the first sigma)"
    # the random model's latents grow large over 10 steps: the fp32 noise floor is relative to them
    assert ten["latent"] <= 1e-5 * max(1.0, ten["scale"]) and ten["image"] <= 2e-3


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


def test_full_size_parity_one_step(comfy, full_size, report):
    import comfy.model_management as mm

    figures = _run_both(comfy, "pbe_full_random.safetensors", full_size, steps=1, height=64, width=64,
                        box=(16, 16, 48, 48))
    mm.unload_all_models()  # do not keep a full-size model loaded for the rest of the session
    _report(report, "full size, 1 step at 64x64", figures)
    assert figures["context"] <= 1e-5 and figures["uncond"] <= 1e-5
    assert figures["latent"] <= 1e-4

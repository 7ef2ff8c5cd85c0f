"""Sampling a LATENT with ComfyUI's library functions, as core's KSampler node does.

The Sampler node hands its sampling to core's KSampler node inside ComfyUI's executor; this is
for calls from Python outside an executor (scripts, tests), where there is no graph to expand.
"""

from __future__ import annotations

import comfy.sample
import comfy.utils
import latent_preview


def sample_latent(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str, positive, negative,
                  latent: dict, denoise: float) -> dict:
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    samples = comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=denoise,
        noise_mask=latent.get("noise_mask"), callback=latent_preview.prepare_callback(model, steps),
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return {**latent, "samples": samples}

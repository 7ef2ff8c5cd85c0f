"""The one-node edit: Inpaint Conditioning -> core's KSampler -> Paste Back, as a node expansion.

Inside ComfyUI's executor the Sampler checks its inputs and expands into those steps, wired to its
own input links, with Inpaint Conditioning in its parts: Source Latent (the source's own encode,
when the noise mask keeps it), Encode Source (the masked source's encode) and Attach Source (the
masked source onto the conditioning, no model call). ComfyUI then caches each node like any other,
so a re-roll with only a new seed (or new sampling settings) serves them all from the cache, a new
reference re-runs Attach Source but no VAE encode, and a new mask re-encodes only the masked
source. Called from Python outside an executor, it runs the same steps in turn.
"""

from __future__ import annotations

import comfy.samplers
from comfy_execution.graph_utils import GraphBuilder, is_link

from . import inputs
from .comfy_model import PBE_CONCAT_KEYS
from .inpaint_conditioning import NOISE_MASK_TOOLTIP_SAMPLER, check_inputs, inpaint_conditioning
from .paste_back import (BLEND_MODE_TOOLTIP, BLEND_MODES, BLEND_TOOLTIP, COLOR_MATCH_TOOLTIP, COLOR_MATCHES,
                         check_blend_options, paste_back)
from .sampling import sample_latent
from .source_latent import needs_source_latent

# The optional inputs' defaults (today's behaviour), for an API prompt that leaves them out.
OPTIONAL_DEFAULTS = {"noise_mask": True, "blend": 0, "blend_mode": "linear", "color_match": "off"}


class PaintByExampleSampler:
    DESCRIPTION = ("Paints the exemplar into the masked region of the source, in one node: Paint-by-Example Inpaint "
                   "Conditioning (the masked source encoded with the VAE; at denoise 1 the masked region starts from "
                   "pure noise, as in the paper), core's KSampler (cfg pushes the edit away from what the model paints "
                   "with no reference), then Paint-by-Example Paste Back (pixels outside the mask and its blend band stay "
                   "exactly the source's; blend, blend_mode and color_match go to Paste Back). A re-run with only a "
                   "new seed, new sampling or new blend settings takes the encoding from ComfyUI's cache; a new "
                   "reference re-encodes only the reference, and a new mask only the masked source.")
    CATEGORY = "sampling/paint by example"
    RETURN_TYPES = ("IMAGE", "LATENT")
    RETURN_NAMES = ("image", "latent")
    OUTPUT_TOOLTIPS = (
        "The source with the edit composited in through the mask: unmasked pixels are unchanged.",
        "The sampled latent (with its noise mask), e.g. for a second pass.",
    )
    FUNCTION = "edit"
    # ComfyUI would run an expanding node once per list item, each expansion over the whole list:
    # the Sampler takes its inputs whole and refuses lists (see _one_each).
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL from a Paint-by-Example loader (LoRAs or patches on it are fine)."}),
                "vae": ("VAE", {"tooltip": "The VAE from the same loader."}),
                "positive": ("CONDITIONING", {"tooltip": "The exemplar conditioning from Paint-by-Example Encode."}),
                "negative": ("CONDITIONING", {"tooltip": "The negative of Paint-by-Example Encode (the model's 'no reference' input)."}),
                "source": ("IMAGE", {"tooltip": "The image to edit. Any size; sides that are not multiples of 8 are "
                                                "padded internally and cropped back."}),
                "mask": ("MASK", {"tooltip": "White (1) where the exemplar goes: values at or above 0.5 are repainted, "
                                             "softer values blend the edit in. One mask for all sources, one per "
                                             "source, or several masks for one source."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "The noise seed."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 10000, "tooltip": "Denoising steps (the authors used 50)."}),
                "cfg": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Guidance scale: how strongly the exemplar is followed (the authors used "
                                             "5; 1 is twice as fast but follows the reference less)."}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "ddim", "tooltip": "The sampling algorithm."}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "ddim_uniform",
                                                                   "tooltip": "The noise schedule."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 repaints the masked region from pure noise, as in the paper; less "
                                                 "starts from the source re-noised, keeping some of its structure."}),
            },
            "optional": {
                "noise_mask": ("BOOLEAN", {"default": True, "tooltip": NOISE_MASK_TOOLTIP_SAMPLER}),
                "blend": ("INT", {"default": 0, "min": 0, "max": 512, "step": 1, "tooltip": BLEND_TOOLTIP}),
                "blend_mode": (list(BLEND_MODES), {"default": "linear", "tooltip": BLEND_MODE_TOOLTIP}),
                "color_match": (list(COLOR_MATCHES), {"default": "off", "tooltip": COLOR_MATCH_TOOLTIP}),
            },
            "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"},
        }

    def edit(self, **given):
        """ComfyUI's entry point: check, then expand into the three nodes."""
        given = _one_each(given)
        dynprompt, unique_id = given.pop("dynprompt", None), given.pop("unique_id", None)
        if dynprompt is None or unique_id is None:  # not inside ComfyUI's executor: nothing to expand into
            return self.sample(**given)
        settings = {**OPTIONAL_DEFAULTS, **given}
        _check(**settings)
        return _expansion(dynprompt.get_node(unique_id)["inputs"], settings)

    def sample(self, model, vae, positive, negative, source, mask, seed, steps, cfg, sampler_name, scheduler,
               denoise, noise_mask=True, blend=0, blend_mode="linear", color_match="off"):
        """The same edit from Python, step by step (no executor, so no cache)."""
        source, mask = _check(model, positive, negative, source, mask, seed, steps, cfg, denoise, blend=blend,
                              blend_mode=blend_mode, color_match=color_match)
        positive, negative, latent = inpaint_conditioning(positive, negative, vae, source, mask, noise_mask,
                                                          _start(denoise))
        latent = sample_latent(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise)
        return paste_back(vae, latent, source, mask, blend, blend_mode, color_match), latent


def _start(denoise: float) -> str:
    """The paper's pure-noise start for a full repaint; the source, re-noised, below that."""
    return "noise" if denoise >= 1.0 else "source"


def _check(model, positive, negative, source, mask, seed, steps, cfg, denoise, blend, blend_mode, color_match,
           **_settings):
    _check_model(model)
    check_blend_options(blend, blend_mode, color_match)
    inputs.check_range("steps", steps, 1, 10000)
    inputs.check_range("cfg", cfg, 0.0, 100.0)
    inputs.check_range("denoise", denoise, 0.0, 1.0)
    inputs.check_range("seed", seed, 0, 0xFFFFFFFFFFFFFFFF)
    source, mask = check_inputs(positive, negative, source, mask)
    context_dim = model.model.model_config.unet_config.get("context_dim")
    inputs.conditioning_batch(positive, "positive", source.shape[0], context_dim)
    inputs.conditioning_batch(negative, "negative", source.shape[0], context_dim)
    return source, mask


def _expansion(links: dict, s: dict) -> dict:
    """Inpaint Conditioning in its parts, KSampler and Paste Back, fed from the Sampler's own input
    links. ComfyUI's cache keys each node on its own inputs: Source Latent on the source and VAE
    alone, so a new mask does not encode the source itself again; Encode Source (the masked
    source) on the source, mask and VAE, so neither a new seed nor a new reference encodes again;
    Attach Source (no model runs) on the conditioning."""
    def wired(name):
        return links[name] if is_link(links.get(name)) else s[name]

    graph = GraphBuilder()
    start = _start(s["denoise"])
    whole = {}  # no Source Latent node where nothing of the source is kept: it would cost an encode for nothing
    if needs_source_latent(s["noise_mask"], start):
        whole["source_latent"] = graph.node("PaintByExampleSourceLatent", vae=wired("vae"),
                                            source=wired("source")).out(0)
    encoded = graph.node("PaintByExampleEncodeSource", vae=wired("vae"), source=wired("source"), mask=wired("mask"),
                         noise_mask=s["noise_mask"], start=start, **whole)
    attached = graph.node("PaintByExampleAttachSource", positive=wired("positive"), negative=wired("negative"),
                          masked_source=encoded.out(0))
    sampled = graph.node("KSampler", model=wired("model"), seed=s["seed"], steps=s["steps"], cfg=s["cfg"],
                         sampler_name=s["sampler_name"], scheduler=s["scheduler"], positive=attached.out(0),
                         negative=attached.out(1), latent_image=encoded.out(1), denoise=s["denoise"])
    pasted = graph.node("PaintByExamplePasteBack", vae=wired("vae"), latent=sampled.out(0), source=wired("source"),
                        mask=wired("mask"), blend=s["blend"], blend_mode=s["blend_mode"], color_match=s["color_match"])
    return {"result": (pasted.out(0), sampled.out(0)), "expand": graph.finalize()}


def _one_each(given: dict) -> dict:
    for name, values in given.items():
        if not values:
            raise ValueError(f"{name}: an empty list reached the Sampler; check the node that makes it")
        if len(values) != 1:
            raise ValueError(
                f"{name}: a list of {len(values)} reached the Sampler, which edits batches, not lists. Make the list "
                "one batch, or use Paint-by-Example Inpaint Conditioning -> KSampler -> Paint-by-Example Paste Back, "
                "which run once per item of a list."
            )
    return {name: values[0] for name, values in given.items()}


def _check_model(model) -> None:
    config = getattr(getattr(model, "model", None), "model_config", None)
    in_channels = config.unet_config.get("in_channels") if config is not None else None
    if in_channels != 9:
        raise ValueError(
            f"model: this MODEL's UNet takes {in_channels} input channels, not Paint-by-Example's 9. Load the model "
            "with the Paint-by-Example Loader."
        )
    if tuple(model.get_model_object("concat_keys")) != PBE_CONCAT_KEYS:
        raise ValueError(
            "model: this 9-channel MODEL is wired as an SD inpainting model (it was probably loaded with Load "
            "Checkpoint). Load Paint-by-Example with the Paint-by-Example Loader."
        )

"""What the Paint-by-Example MODEL checks at the start of every sampling run, in every route.

The loader puts one OUTER_SAMPLE wrapper on the MODEL (ComfyUI's own patcher-extension hook), so
it runs wherever this model samples: the Paint-by-Example Sampler, core's KSampler, SamplerCustom
and any guider. A run that would quietly paint noise stops instead, with a message that names the
cause and what to use:

- conditioning that is not Paint-by-Example's (a text prompt, ConditioningZeroOut, positive and
  negative swapped): see nodes/conditioning_roles.py;
- core's EasyCache. It wraps the diffusion model and caches `output - input` per conditioning,
  assuming the input is the 4-channel latent; on this model the input is [latent, masked-source
  latent, keep-mask], so it subtracts the wrong channels, and on a reused step it adds the cached
  difference of every conditioning to every row of the batch (`x += diff` broadcasts), so the
  exemplar and the unconditional prediction come out equal and guidance is lost. LazyCache caches
  on the sampler's 4-channel latent and one prediction per step, and works (tests/test_comfy_compat.py).
"""

from __future__ import annotations

import comfy.model_patcher
import comfy.patcher_extension as extension

from . import conditioning_roles

KEY = "paint_by_example"
# The keys core's caching nodes register their wrappers under (comfy_extras/nodes_easycache.py).
_EASYCACHE = "easycache"

EASYCACHE_MESSAGE = (
    "EasyCache does not work with Paint-by-Example in this version of ComfyUI: it takes the model's 9-channel input "
    "for the 4-channel latent, and on the steps it skips it gives the edit with the reference and the one without it the "
    "same value, so the reference is lost. Remove the EasyCache node, or use LazyCache instead (same kind of "
    "speed-up, tested with Paint-by-Example)."
)


def install(patcher: comfy.model_patcher.ModelPatcher) -> None:
    patcher.add_wrapper_with_key(extension.WrappersMP.OUTER_SAMPLE, KEY, _outer_sample)


def _outer_sample(executor, *args, **kwargs):
    guider = executor.class_obj
    check_patches(guider.model_options)
    check_conditioning(getattr(guider, "original_conds", {}))
    return executor(*args, **kwargs)


def check_patches(model_options: dict) -> None:
    wrappers = model_options.get("transformer_options", {}).get("wrappers", {})
    if _EASYCACHE in wrappers.get(extension.WrappersMP.DIFFUSION_MODEL, {}):
        raise ValueError(f"model: {EASYCACHE_MESSAGE}")


def check_conditioning(conds: dict) -> None:
    """A guider's conditioning ({"positive": [...], "negative": [...]}, as ComfyUI converted it)
    must be Paint-by-Example's; a guider without a negative (cfg-free guiders) is checked on its
    positive alone."""
    positive, negative = _as_conditioning(conds.get("positive")), _as_conditioning(conds.get("negative"))
    if positive is None:
        return
    conditioning_roles.check(positive, negative)


def _as_conditioning(converted):
    """ComfyUI's converted conds (dicts holding "cross_attn") -> CONDITIONING entries [tensor, options]."""
    if converted is None:
        return None
    return [[entry.get("cross_attn"), entry] for entry in converted]

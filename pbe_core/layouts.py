"""Key layouts of Paint-by-Example weights: the authors' single file and the diffusers folder.

pbe_core's encoder naming is the authors' own, minus their ``cond_stage_model.`` prefix:
``transformer.*`` (CLIP, transformers-5 names), ``mapper.resblocks.{i}.*``, ``final_ln.*``,
``proj_out.*`` and ``learnable_vector``. UNet and VAE weights are handed on untouched, in the
naming of their file (LDM for the single file, diffusers for the folder).
"""

from __future__ import annotations

import re

import torch

from .clip_vision import canonical_clip_keys, transformers_v4_keys

# Authors' single file
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
TEXT_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
MAPPER_PREFIX = "cond_stage_model.mapper."
FINAL_LN_PREFIX = "cond_stage_model.final_ln."
PROJ_OUT_PREFIX = "proj_out."
UNCOND_KEY = "learnable_vector"

SINGLE_FILE_PARTS = {
    "UNet (model.diffusion_model.*)": UNET_PREFIX,
    "VAE (first_stage_model.*)": VAE_PREFIX,
    "CLIP image tower (cond_stage_model.transformer.*)": CLIP_PREFIX,
    "exemplar mapper (cond_stage_model.mapper.*)": MAPPER_PREFIX,
    "mapper layer norm (cond_stage_model.final_ln.*)": FINAL_LN_PREFIX,
    "context projection (proj_out.*)": PROJ_OUT_PREFIX,
    "learned unconditional vector (learnable_vector)": UNCOND_KEY,
}


def is_single_file_weight(key: str) -> bool:
    """Keys worth reading from the authors' file (skips EMA copies, schedules, training state)."""
    return key == UNCOND_KEY or key.startswith((UNET_PREFIX, VAE_PREFIX, "cond_stage_model.", PROJ_OUT_PREFIX))


def missing_single_file_parts(sd: dict[str, torch.Tensor]) -> list[str]:
    missing = []
    for name, prefix in SINGLE_FILE_PARTS.items():
        if prefix == UNCOND_KEY:
            found = UNCOND_KEY in sd
        elif prefix == CLIP_PREFIX:
            found = any(k.startswith(prefix) and not k.startswith(TEXT_CLIP_PREFIX) for k in sd)
        else:
            found = any(k.startswith(prefix) for k in sd)
        if not found:
            missing.append(name)
    return missing


def split_single_file(sd: dict[str, torch.Tensor]):
    """Authors' flat state dict -> (unet, vae, encoder) dicts (LDM, LDM, pbe_core naming)."""
    unet, vae, encoder = {}, {}, {}
    for key, value in sd.items():
        if key.startswith(UNET_PREFIX):
            unet[key[len(UNET_PREFIX):]] = value
        elif key.startswith(VAE_PREFIX):
            vae[key[len(VAE_PREFIX):]] = value
        elif key.startswith(CLIP_PREFIX):
            encoder["transformer." + key[len(CLIP_PREFIX):]] = value
        elif key.startswith(MAPPER_PREFIX):
            encoder["mapper." + key[len(MAPPER_PREFIX):]] = value
        elif key.startswith(FINAL_LN_PREFIX):
            encoder["final_ln." + key[len(FINAL_LN_PREFIX):]] = value
        elif key.startswith(PROJ_OUT_PREFIX):
            encoder[key] = value
        elif key == UNCOND_KEY:
            encoder[key] = value
    return unet, vae, canonical_encoder_keys(encoder)


def join_single_file(unet, vae, encoder) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_single_file`, writing CLIP under transformers-4 names as the authors did."""
    out = {UNET_PREFIX + k: v for k, v in unet.items()}
    out.update({VAE_PREFIX + k: v for k, v in vae.items()})
    clip = {k[len("transformer."):]: v for k, v in encoder.items() if k.startswith("transformer.")}
    out.update({CLIP_PREFIX + k: v for k, v in transformers_v4_keys(clip).items()})
    for key, value in encoder.items():
        if key.startswith("mapper."):
            out["cond_stage_model." + key] = value
        elif key.startswith("final_ln."):
            out["cond_stage_model." + key] = value
        elif key.startswith("proj_out.") or key == UNCOND_KEY:
            out[key] = value
    return out


def canonical_encoder_keys(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    clip = canonical_clip_keys({k[len("transformer."):]: v for k, v in encoder.items() if k.startswith("transformer.")})
    out = {"transformer." + k: v for k, v in clip.items()}
    out.update({k: v for k, v in encoder.items() if not k.startswith("transformer.")})
    return out


# diffusers PaintByExampleImageEncoder
_DIFFUSERS_BLOCK = re.compile(r"^mapper\.blocks\.(\d+)\.(.+)$")
_DIFFUSERS_TO_OURS = {
    "norm1.": "ln_1.",
    "attn1.to_out.0.": "attn.c_proj.",
    "norm3.": "ln_2.",
    "ff.net.0.proj.": "mlp.c_fc.",
    "ff.net.2.": "mlp.c_proj.",
}
_QKV = ("attn1.to_q.", "attn1.to_k.", "attn1.to_v.")


def encoder_from_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ``image_encoder`` weights -> pbe_core naming (``c_qkv`` = cat(to_q, to_k, to_v))."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.startswith("model."):
            out["transformer." + key[len("model."):]] = value
        elif key.startswith("final_layer_norm."):
            out["final_ln." + key[len("final_layer_norm."):]] = value
        elif key.startswith("proj_out."):
            out[key] = value
        elif key == "uncond_vector":
            out[UNCOND_KEY] = value
        elif m := _DIFFUSERS_BLOCK.match(key):
            block, rest = m.groups()
            for part in _QKV:
                if rest.startswith(part):
                    qkv.setdefault((block, rest[len(part):]), {})[part] = value
                    break
            else:
                for theirs, ours in _DIFFUSERS_TO_OURS.items():
                    if rest.startswith(theirs):
                        out[f"mapper.resblocks.{block}.{ours}{rest[len(theirs):]}"] = value
                        break
    for (block, param), parts in qkv.items():
        if len(parts) == 3:
            out[f"mapper.resblocks.{block}.attn.c_qkv.{param}"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return canonical_encoder_keys(out)


def encoder_to_diffusers(encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pbe_core naming -> diffusers ``image_encoder`` weights (CLIP under transformers-4 names)."""
    ours_to_theirs = {v: k for k, v in _DIFFUSERS_TO_OURS.items()}
    clip = {k[len("transformer."):]: v for k, v in encoder.items() if k.startswith("transformer.")}
    out = {"model." + k: v for k, v in transformers_v4_keys(clip).items()}
    for key, value in encoder.items():
        if key.startswith("final_ln."):
            out["final_layer_norm." + key[len("final_ln."):]] = value
        elif key.startswith("proj_out."):
            out[key] = value
        elif key == UNCOND_KEY:
            out["uncond_vector"] = value
        elif m := re.match(r"^mapper\.resblocks\.(\d+)\.(.+)$", key):
            block, rest = m.groups()
            if rest.startswith("attn.c_qkv."):
                param = rest[len("attn.c_qkv."):]
                for part, chunk in zip(_QKV, value.chunk(3, dim=0)):
                    out[f"mapper.blocks.{block}.{part}{param}"] = chunk.contiguous()
            else:
                for ours, theirs in ours_to_theirs.items():
                    if rest.startswith(ours):
                        out[f"mapper.blocks.{block}.{theirs}{rest[len(ours):]}"] = value
                        break
    return out

"""The exemplar encoder computes exactly the authors' CLIP + bottleneck math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pbe_core import build_encoder, read_checkpoint
from pbe_core.clip_vision import transformers_v4_keys


def _layer_norm(x, sd, name, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def reference_context(sd: dict[str, torch.Tensor], pixels: torch.Tensor, clip_heads: int) -> torch.Tensor:
    """The whole encoder written out from raw tensors with plain torch ops (no transformers)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = pixels.double()
    patch = sd["transformer.embeddings.patch_embedding.weight"]
    x = F.conv2d(x, patch, stride=patch.shape[-1]).flatten(2).transpose(1, 2)  # (B, N, W)
    cls = sd["transformer.embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["transformer.embeddings.position_embedding.weight"]
    x = _layer_norm(x, sd, "transformer.pre_layrnorm")
    layer = 0
    while f"transformer.encoder.layers.{layer}.mlp.fc1.weight" in sd:
        p = f"transformer.encoder.layers.{layer}"
        h = _layer_norm(x, sd, f"{p}.layer_norm1")
        b, n, w = h.shape
        q, k, v = (_linear(h, sd, f"{p}.self_attn.{t}_proj").view(b, n, clip_heads, -1).transpose(1, 2) for t in "qkv")
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // clip_heads), dim=-1)
        x = x + _linear((att @ v).transpose(1, 2).reshape(b, n, w), sd, f"{p}.self_attn.out_proj")
        h = _linear(_layer_norm(x, sd, f"{p}.layer_norm2"), sd, f"{p}.mlp.fc1")
        x = x + _linear(h * torch.sigmoid(1.702 * h), sd, f"{p}.mlp.fc2")  # quick_gelu
        layer += 1
    z = _layer_norm(x[:, 0], sd, "transformer.post_layernorm")[:, None]  # pooler_output
    block = 0
    while f"mapper.resblocks.{block}.ln_1.weight" in sd:
        p = f"mapper.resblocks.{block}"
        qkv = _linear(_layer_norm(z, sd, f"{p}.ln_1"), sd, f"{p}.attn.c_qkv")
        q, k, v = qkv.chunk(3, dim=-1)  # one head
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        z = z + _linear(att @ v, sd, f"{p}.attn.c_proj")
        h = _linear(_layer_norm(z, sd, f"{p}.ln_2"), sd, f"{p}.mlp.c_fc")
        z = z + _linear(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), sd, f"{p}.mlp.c_proj")  # exact GELU
        block += 1
    return _linear(_layer_norm(z, sd, "final_ln"), sd, "proj_out")


def test_context_equals_independent_computation(tiny_model):
    encoder = build_encoder(tiny_model.encoder)
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encoder(pixels)
    expected = reference_context(tiny_model.encoder, pixels, clip_heads=2)
    assert ours.shape == (3, 1, 768)
    assert torch.allclose(ours.double(), expected, atol=1e-5), (ours.double() - expected).abs().max()
    # the three references are different, and so are their contexts
    assert (ours[0] - ours[1]).abs().max() > 1e-2


def test_unconditional_is_the_learned_vector(tiny_model):
    encoder = build_encoder(tiny_model.encoder)
    uncond = encoder.unconditional(4)
    assert uncond.shape == (4, 1, 768)
    assert torch.equal(uncond[2], tiny_model.encoder["learnable_vector"][0])


def test_mapper_attention_over_one_token_is_its_value_projection(tiny_model):
    """A single-token attention returns c_proj(v): q and k must not matter (DESIGN §1)."""
    encoder = build_encoder(tiny_model.encoder)
    block = encoder.mapper.resblocks[0]
    x = torch.randn(2, 1, encoder.shape.clip_width)
    width = x.shape[-1]
    with torch.no_grad():
        v = F.linear(x, block.attn.c_qkv.weight[2 * width:], block.attn.c_qkv.bias[2 * width:])
        assert torch.allclose(block.attn(x), block.attn.c_proj(v), atol=1e-6)


@pytest.mark.parametrize("layout", ["v4", "v5", "v4_with_position_ids"])
def test_transformers_4_and_5_key_layouts_load_the_same(tiny_model, layout):
    sd = dict(tiny_model.encoder)
    clip = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
    rest = {k: v for k, v in sd.items() if not k.startswith("transformer.")}
    if layout.startswith("v4"):
        clip = transformers_v4_keys(clip)
    if layout == "v4_with_position_ids":
        clip["vision_model.embeddings.position_ids"] = torch.arange(257)[None]
    encoder = build_encoder({**{"transformer." + k: v for k, v in clip.items()}, **rest})
    reference = build_encoder(tiny_model.encoder)
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(encoder(pixels), reference(pixels))


def test_sizes_come_from_the_weights(tiny_model):
    encoder = build_encoder(tiny_model.encoder)
    assert encoder.shape.clip_width == 128
    assert encoder.shape.clip.num_hidden_layers == 9
    assert encoder.shape.clip.num_attention_heads == 2
    assert encoder.shape.mapper_layers == 2
    assert encoder.image_size == 224
    assert encoder.context_dim == 768


def test_encoder_dtype_is_chosen_by_the_caller(tiny_model):
    encoder = build_encoder(tiny_model.encoder, dtype=torch.bfloat16)
    assert encoder.proj_out.weight.dtype == torch.bfloat16
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = encoder(pixels)
        exact = build_encoder(tiny_model.encoder)(pixels)
    assert out.dtype == torch.bfloat16
    # bf16 keeps about 3 significant digits: close to fp32, but not equal
    assert 0 < (out.float() - exact).abs().max() < 0.05 * exact.abs().max()


def test_matches_diffusers_image_encoder(checkpoints):
    """diffusers' PaintByExampleImageEncoder, an implementation we did not write, agrees."""
    if "diffusers" not in checkpoints:
        pytest.skip("diffusers is not installed (pip install -e .[test])")
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    folder = checkpoints["diffusers"]
    config = read_checkpoint(folder).encoder_config
    config = {k: v for k, v in config.items() if k not in ("_class_name", "random_weights")}
    theirs = PaintByExampleImageEncoder(CLIPVisionConfig(**config))
    sd = load_file(folder / "image_encoder" / "model.safetensors")
    # transformers 5 dropped the "vision_model." level that the file (and diffusers' class) carry
    wanted = theirs.state_dict().keys()
    sd = {(k if k in wanted else k.replace("model.vision_model.", "model.")): v for k, v in sd.items()}
    theirs.load_state_dict(sd, strict=True)
    ours = read_checkpoint(folder).build_encoder()
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, uncond = theirs(pixels, return_uncond_vector=True)
        assert (a - ours(pixels)).abs().max() < 1e-5
        assert torch.equal(uncond, ours.unconditional(1))

"""The tensor shapes (LDM naming) of a UNet, VAE and exemplar encoder of given sizes, for making
random checkpoints in the real layouts (:mod:`.random_checkpoint`). The loaders never need them:
they read every size from the weights."""

from __future__ import annotations

from dataclasses import dataclass

from ..architecture import UNetShape, VAEShape


@dataclass(frozen=True)
class EncoderSizes:
    """CLIP vision tower + bottleneck mapper sizes (ViT-L/14 and the authors' 5-block mapper)."""

    clip_width: int = 1024
    clip_layers: int = 24
    clip_intermediate: int = 4096
    patch_size: int = 14
    image_size: int = 224
    mapper_layers: int = 5
    context_dim: int = 768


def unet_tensor_shapes(s: UNetShape) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    mc, emb = s.model_channels, s.model_channels * 4
    _linear(shapes, "time_embed.0", mc, emb)
    _linear(shapes, "time_embed.2", emb, emb)
    _conv(shapes, "input_blocks.0.0", s.in_channels, mc, 3)
    skips, ch, idx = [mc], mc, 1
    last = len(s.channel_mult) - 1
    for level, mult in enumerate(s.channel_mult):
        for _ in range(s.num_res_blocks):
            _resblock(shapes, f"input_blocks.{idx}.0", ch, mult * mc, emb)
            ch = mult * mc
            if level in s.attention_levels:
                _transformer(shapes, f"input_blocks.{idx}.1", ch, s)
            skips.append(ch)
            idx += 1
        if level != last:
            _conv(shapes, f"input_blocks.{idx}.0.op", ch, ch, 3)
            skips.append(ch)
            idx += 1
    _resblock(shapes, "middle_block.0", ch, ch, emb)
    _transformer(shapes, "middle_block.1", ch, s)
    _resblock(shapes, "middle_block.2", ch, ch, emb)
    idx = 0
    for level, mult in reversed(list(enumerate(s.channel_mult))):
        for i in range(s.num_res_blocks + 1):
            _resblock(shapes, f"output_blocks.{idx}.0", ch + skips.pop(), mult * mc, emb)
            ch = mult * mc
            layer = 1
            if level in s.attention_levels:
                _transformer(shapes, f"output_blocks.{idx}.1", ch, s)
                layer = 2
            if level and i == s.num_res_blocks:
                _conv(shapes, f"output_blocks.{idx}.{layer}.conv", ch, ch, 3)
            idx += 1
    _norm(shapes, "out.0", ch)
    _conv(shapes, "out.2", mc, s.out_channels, 3)
    return shapes


def vae_tensor_shapes(s: VAEShape) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    last = len(s.ch_mult) - 1
    # encoder
    _conv(shapes, "encoder.conv_in", s.in_channels, s.ch, 3)
    block_in = s.ch
    for i, mult in enumerate(s.ch_mult):
        for j in range(s.num_res_blocks):
            _vae_resnet(shapes, f"encoder.down.{i}.block.{j}", block_in, s.ch * mult)
            block_in = s.ch * mult
        if i != last:
            _conv(shapes, f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    _vae_mid(shapes, "encoder.mid", block_in)
    _norm(shapes, "encoder.norm_out", block_in)
    _conv(shapes, "encoder.conv_out", block_in, 2 * s.z_channels, 3)
    # decoder
    block_in = s.ch * s.ch_mult[-1]
    _conv(shapes, "decoder.conv_in", s.z_channels, block_in, 3)
    _vae_mid(shapes, "decoder.mid", block_in)
    for i in reversed(range(len(s.ch_mult))):
        for j in range(s.num_res_blocks + 1):
            _vae_resnet(shapes, f"decoder.up.{i}.block.{j}", block_in, s.ch * s.ch_mult[i])
            block_in = s.ch * s.ch_mult[i]
        if i != 0:
            _conv(shapes, f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    _norm(shapes, "decoder.norm_out", block_in)
    _conv(shapes, "decoder.conv_out", block_in, s.out_ch, 3)
    _conv(shapes, "quant_conv", 2 * s.z_channels, 2 * s.embed_dim, 1)
    _conv(shapes, "post_quant_conv", s.embed_dim, s.z_channels, 1)
    return shapes


def encoder_tensor_shapes(s: EncoderSizes) -> dict[str, tuple[int, ...]]:
    """pbe_core encoder naming (CLIP under transformers-5 names)."""
    w, shapes = s.clip_width, {}
    grid = s.image_size // s.patch_size
    shapes["transformer.embeddings.class_embedding"] = (w,)
    shapes["transformer.embeddings.patch_embedding.weight"] = (w, 3, s.patch_size, s.patch_size)
    shapes["transformer.embeddings.position_embedding.weight"] = (grid * grid + 1, w)
    _layer_norm(shapes, "transformer.pre_layrnorm", w)
    for i in range(s.clip_layers):
        p = f"transformer.encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(shapes, f"{p}.self_attn.{proj}", w, w)
        _layer_norm(shapes, f"{p}.layer_norm1", w)
        _linear(shapes, f"{p}.mlp.fc1", w, s.clip_intermediate)
        _linear(shapes, f"{p}.mlp.fc2", s.clip_intermediate, w)
        _layer_norm(shapes, f"{p}.layer_norm2", w)
    _layer_norm(shapes, "transformer.post_layernorm", w)
    for i in range(s.mapper_layers):
        p = f"mapper.resblocks.{i}"
        _layer_norm(shapes, f"{p}.ln_1", w)
        _linear(shapes, f"{p}.attn.c_qkv", w, 3 * w)
        _linear(shapes, f"{p}.attn.c_proj", w, w)
        _layer_norm(shapes, f"{p}.ln_2", w)
        _linear(shapes, f"{p}.mlp.c_fc", w, 4 * w)
        _linear(shapes, f"{p}.mlp.c_proj", 4 * w, w)
    _layer_norm(shapes, "final_ln", w)
    _linear(shapes, "proj_out", w, s.context_dim)
    shapes["learnable_vector"] = (1, 1, s.context_dim)
    return shapes


def _linear(shapes, name, fan_in, fan_out, bias=True):
    shapes[f"{name}.weight"] = (fan_out, fan_in)
    if bias:
        shapes[f"{name}.bias"] = (fan_out,)


def _conv(shapes, name, cin, cout, k):
    shapes[f"{name}.weight"] = (cout, cin, k, k)
    shapes[f"{name}.bias"] = (cout,)


def _norm(shapes, name, ch):
    shapes[f"{name}.weight"] = (ch,)
    shapes[f"{name}.bias"] = (ch,)


_layer_norm = _norm


def _resblock(shapes, p, cin, cout, emb):
    _norm(shapes, f"{p}.in_layers.0", cin)
    _conv(shapes, f"{p}.in_layers.2", cin, cout, 3)
    _linear(shapes, f"{p}.emb_layers.1", emb, cout)
    _norm(shapes, f"{p}.out_layers.0", cout)
    _conv(shapes, f"{p}.out_layers.3", cout, cout, 3)
    if cin != cout:
        _conv(shapes, f"{p}.skip_connection", cin, cout, 1)


def _transformer(shapes, p, ch, s: UNetShape):
    _norm(shapes, f"{p}.norm", ch)
    _conv(shapes, f"{p}.proj_in", ch, ch, 1)
    for d in range(s.transformer_depth):
        b = f"{p}.transformer_blocks.{d}"
        for attn, ctx in (("attn1", ch), ("attn2", s.context_dim)):
            _linear(shapes, f"{b}.{attn}.to_q", ch, ch, bias=False)
            _linear(shapes, f"{b}.{attn}.to_k", ctx, ch, bias=False)
            _linear(shapes, f"{b}.{attn}.to_v", ctx, ch, bias=False)
            _linear(shapes, f"{b}.{attn}.to_out.0", ch, ch)
        _linear(shapes, f"{b}.ff.net.0.proj", ch, ch * 4 * 2)  # GEGLU
        _linear(shapes, f"{b}.ff.net.2", ch * 4, ch)
        for n in ("norm1", "norm2", "norm3"):
            _layer_norm(shapes, f"{b}.{n}", ch)
    _conv(shapes, f"{p}.proj_out", ch, ch, 1)


def _vae_resnet(shapes, p, cin, cout):
    _norm(shapes, f"{p}.norm1", cin)
    _conv(shapes, f"{p}.conv1", cin, cout, 3)
    _norm(shapes, f"{p}.norm2", cout)
    _conv(shapes, f"{p}.conv2", cout, cout, 3)
    if cin != cout:
        _conv(shapes, f"{p}.nin_shortcut", cin, cout, 1)


def _vae_mid(shapes, p, ch):
    _vae_resnet(shapes, f"{p}.block_1", ch, ch)
    _norm(shapes, f"{p}.attn_1.norm", ch)
    for n in ("q", "k", "v", "proj_out"):
        _conv(shapes, f"{p}.attn_1.{n}", ch, ch, 1)
    _vae_resnet(shapes, f"{p}.block_2", ch, ch)

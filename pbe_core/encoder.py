"""The exemplar encoder: CLIP ViT image embedding -> bottleneck mapper -> one 768-d context token.

Mirrors the authors' ``FrozenCLIPImageEmbedder`` + ``proj_out`` + ``learnable_vector``
(Paint-by-Example, ldm/modules/encoders/modules.py and ldm/models/diffusion/ddpm.py).
Parameter names follow the authors' file so their weights load with prefix changes only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transformers import CLIPVisionConfig

from .clip_vision import build_clip_vision, canonical_clip_keys, clip_config_from_weights, clip_keys_for_model
from .errors import CheckpointError
from .file_pages import cast_releasing_pages


class _FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, as the authors' mapper does (stable under fp16/bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        y = nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return y.to(x.dtype)


class _QKVAttention(nn.Module):
    """GLIDE-style multi-head attention with a fused qkv projection (authors' ``xf.py``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.c_qkv(x)
        batch, tokens, width3 = qkv.shape
        channels = width3 // self.heads // 3
        # The authors scale q and k by channels**-0.25 each and split per head after the view.
        scale = 1.0 / math.sqrt(math.sqrt(channels))
        q, k, v = torch.split(qkv.view(batch, tokens, self.heads, -1), channels, dim=-1)
        weight = torch.einsum("bthc,bshc->bhts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = torch.einsum("bhts,bshc->bthc", weight, v).reshape(batch, tokens, -1)
        return self.c_proj(out)


class _MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(x)))  # exact (erf) GELU, as nn.GELU()


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, hidden: int, heads: int):
        super().__init__()
        self.ln_1 = _FloatLayerNorm(width)
        self.attn = _QKVAttention(width, heads)
        self.ln_2 = _FloatLayerNorm(width)
        self.mlp = _MLP(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class BottleneckMapper(nn.Module):
    """The authors' ``Transformer(n_ctx=1, width, layers=5, heads=1)`` over the single CLS token."""

    def __init__(self, width: int, layers: int, hidden: int, heads: int = 1):
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualBlock(width, hidden, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


@dataclass(frozen=True)
class EncoderShape:
    """Sizes of an exemplar encoder, read from its weights."""

    clip: CLIPVisionConfig
    mapper_layers: int
    mapper_hidden: int
    context_dim: int

    @property
    def clip_width(self) -> int:
        return self.clip.hidden_size

    @property
    def image_size(self) -> int:
        return self.clip.image_size


class ExemplarTower(nn.Module):
    """The CLIP ViT image tower: preprocessed references (B, 3, S, S) -> the final-layer class token
    (B, clip_width), before CLIP's post-layernorm (which the head applies).

    A plain ``nn.Module`` holding the transformers model, so a host's model manager can manage it (a
    ``PreTrainedModel`` refuses the ``.device`` attribute ComfyUI's ModelPatcher assigns).
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    @property
    def dtype(self) -> torch.dtype:
        return next(self.clip.parameters()).dtype

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected preprocessed references of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        return self.clip(pixel_values=pixels.to(self.dtype)).last_hidden_state[:, 0]


class ExemplarHead(nn.Module):
    """Everything after the CLIP tower: CLIP's post-layernorm, the bottleneck mapper, the final layer
    norm, the projection to the UNet's context width, and the learned unconditional vector. It is
    small (about 5 % of the encoder), so it can run on CLIP hidden states from another
    implementation of the same frozen tower without loading this checkpoint's tower at all."""

    def __init__(self, shape: EncoderShape):
        super().__init__()
        width = shape.clip_width
        self.shape = shape
        self.post_layernorm = nn.LayerNorm(width, eps=shape.clip.layer_norm_eps)  # CLIP's own, plain dtype
        self.mapper = BottleneckMapper(width, shape.mapper_layers, shape.mapper_hidden)
        self.final_ln = _FloatLayerNorm(width)
        self.proj_out = nn.Linear(width, shape.context_dim)
        self.learnable_vector = nn.Parameter(torch.zeros(1, 1, shape.context_dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj_out.weight.dtype

    def embedding(self, class_token: torch.Tensor) -> torch.Tensor:
        """CLIP's pooled image embedding (its ``pooler_output``) from the final-layer class token."""
        return self.post_layernorm(class_token.to(self.dtype))

    def context_from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """Mapper -> final layer norm -> projection; (B, clip_width) -> (B, 1, context_dim)."""
        z = self.mapper(embedding.to(self.dtype)[:, None, :])
        return self.proj_out(self.final_ln(z))

    def forward(self, class_token: torch.Tensor) -> torch.Tensor:
        """The final-layer class token (B, clip_width) -> the context (B, 1, context_dim)."""
        return self.context_from_embedding(self.embedding(class_token))

    def unconditional(self, batch: int = 1) -> torch.Tensor:
        """The learned unconditional context used for classifier-free guidance, (batch, 1, dim)."""
        return self.learnable_vector.expand(batch, -1, -1)


class ExemplarEncoder(nn.Module):
    """Turns preprocessed references (B, 3, S, S) into PbE contexts (B, 1, context_dim): the CLIP
    tower, then the head."""

    def __init__(self, tower: ExemplarTower, head: ExemplarHead):
        super().__init__()
        self.tower = tower
        self.head = head

    @property
    def shape(self) -> EncoderShape:
        return self.head.shape

    @property
    def image_size(self) -> int:
        return self.shape.image_size

    @property
    def context_dim(self) -> int:
        return self.shape.context_dim

    @property
    def mapper(self) -> BottleneckMapper:
        return self.head.mapper

    @property
    def proj_out(self) -> nn.Linear:
        return self.head.proj_out

    @property
    def learnable_vector(self) -> nn.Parameter:
        return self.head.learnable_vector

    def image_embedding(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP's post-layernorm CLS token (``pooler_output``), (B, clip_width)."""
        return self.head.embedding(self.tower(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.tower(pixels))

    def unconditional(self, batch: int = 1) -> torch.Tensor:
        return self.head.unconditional(batch)


def encoder_shape_from_weights(sd: dict[str, torch.Tensor], clip_heads: int | None = None) -> EncoderShape:
    """Infer every size from tensor shapes (``sd`` in pbe_core's encoder naming)."""
    layers = 0
    while f"mapper.resblocks.{layers}.ln_1.weight" in sd:
        layers += 1
    if layers == 0:
        raise CheckpointError("the exemplar encoder has no mapper blocks (mapper.resblocks.0.* is missing)")
    for key in ("mapper.resblocks.0.mlp.c_fc.weight", "proj_out.weight", "final_ln.weight", "learnable_vector"):
        if key not in sd:
            raise CheckpointError(f"the exemplar encoder is incomplete ({key} is missing)")
    return EncoderShape(
        clip=clip_config_from_weights(_sub(sd, "transformer."), heads=clip_heads),
        mapper_layers=layers,
        mapper_hidden=sd["mapper.resblocks.0.mlp.c_fc.weight"].shape[0],
        context_dim=sd["proj_out.weight"].shape[0],
    )


def build_encoder(
    sd: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    clip_heads: int | None = None,
) -> ExemplarEncoder:
    """Build an :class:`ExemplarEncoder` (tower and head) from weights in pbe_core's naming.

    ``dtype`` defaults to the weights' own dtype. Modules are built on the meta device and handed
    the weights, so no random initialisation runs and no second copy is made where no cast is needed.
    """
    shape = encoder_shape_from_weights(sd, clip_heads=clip_heads)
    return ExemplarEncoder(build_tower(sd, dtype, shape=shape), build_head(sd, dtype, shape=shape))


def build_tower(sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None, clip_heads: int | None = None,
                shape: EncoderShape | None = None) -> ExemplarTower:
    """The CLIP tower alone, from weights in pbe_core's naming (``transformer.*``)."""
    shape = shape or encoder_shape_from_weights(sd, clip_heads=clip_heads)
    dtype = dtype or sd["proj_out.weight"].dtype
    with torch.device("meta"):
        tower = ExemplarTower(build_clip_vision(shape.clip))
    clip_sd = clip_keys_for_model(tower.clip, _sub(sd, "transformer."))
    _load(tower, {f"clip.{k}": v for k, v in clip_sd.items()}, dtype, "the CLIP image tower")
    return tower


def check_tower(sd: dict[str, torch.Tensor], clip_heads: int | None = None) -> None:
    """Raise :class:`CheckpointError` unless the tower's weights fit a CLIP vision tower exactly:
    checked on the meta device, so no weight is read or copied."""
    shape = encoder_shape_from_weights(sd, clip_heads=clip_heads)
    with torch.device("meta"):
        clip = build_clip_vision(shape.clip)
    expected = {k for k in clip.state_dict() if not k.endswith("position_ids")}
    given = set(clip_keys_for_model(clip, _sub(sd, "transformer.")))
    _check_keys(sorted(expected - given), sorted(given - expected), "the CLIP image tower")


def build_head(sd: dict[str, torch.Tensor], dtype: torch.dtype | None = None, clip_heads: int | None = None,
               shape: EncoderShape | None = None) -> ExemplarHead:
    """The head alone (post-layernorm, mapper, final layer norm, projection, unconditional vector)."""
    shape = shape or encoder_shape_from_weights(sd, clip_heads=clip_heads)
    dtype = dtype or sd["proj_out.weight"].dtype
    with torch.device("meta"):
        head = ExemplarHead(shape)
    clip = canonical_clip_keys(_sub(sd, "transformer."))
    # the head keeps its own copy of CLIP's tiny post-layernorm (2 x width values), so it never shares a
    # parameter with the tower: each can be loaded and offloaded on its own
    weights = {k: v.clone() for k, v in clip.items() if k.startswith("post_layernorm.")}
    weights.update({k: v for k, v in sd.items() if not k.startswith("transformer.")})
    _load(head, weights, dtype, "the exemplar mapper")
    return head


def _load(module: nn.Module, weights: dict[str, torch.Tensor], dtype: torch.dtype, what: str) -> None:
    weights = cast_releasing_pages(weights, dtype)
    missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    _check_keys([k for k in missing if not k.endswith("position_ids")], unexpected, what)
    _materialize_buffers(module, dtype)
    module.eval().requires_grad_(False)


def _check_keys(missing: list[str], unexpected: list[str], what: str) -> None:
    if missing or unexpected:
        raise CheckpointError(
            f"the weights of {what} do not fit the Paint-by-Example encoder: "
            f"missing {_short(missing)}, unexpected {_short(unexpected)}"
        )


def _materialize_buffers(module: nn.Module, dtype: torch.dtype) -> None:
    """Non-persistent buffers (e.g. CLIP's position_ids) are not in any state dict: rebuild them."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                if name == "position_ids":
                    sub._buffers[name] = torch.arange(buf.shape[-1]).expand(buf.shape).clone()
                else:
                    raise CheckpointError(f"internal: buffer {name} was not loaded")


def _sub(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _short(keys: list[str], limit: int = 5) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more

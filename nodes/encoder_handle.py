"""PBE_ENCODER: the exemplar encoder as ComfyUI sees it, loaded and offloaded by ComfyUI.

It is two ComfyUI-managed models: the CLIP tower (about 95 % of the weights) and the small head
(post-layernorm, mapper, projection, unconditional vector). Encoding a reference image needs both;
encoding from another CLIP vision model's output needs only the head, so the tower is built on the
first reference image that needs it and never loaded for the CLIP vision route.
"""

from __future__ import annotations

from typing import Callable

import comfy.model_management as mm
import comfy.model_patcher
import torch


class ExemplarEncoderHandle:
    """What flows along a PBE_ENCODER link."""

    def __init__(self, head, build_tower: Callable[[], torch.nn.Module], source: str):
        self.head_patcher = _managed(head)
        self._build_tower = build_tower
        self._tower_patcher = None
        self.source = source

    @property
    def head(self):
        return self.head_patcher.model

    @property
    def tower_patcher(self) -> comfy.model_patcher.ModelPatcher:
        """The CLIP tower under ComfyUI's management, built on first use (the CLIP vision route never
        needs it). Building shares the checkpoint's tensors where no cast is needed."""
        if self._tower_patcher is None:
            self._tower_patcher = _managed(self._build_tower())
        return self._tower_patcher

    @property
    def tower_built(self) -> bool:
        return self._tower_patcher is not None

    @property
    def context_dim(self) -> int:
        return self.head.shape.context_dim

    @property
    def clip_width(self) -> int:
        return self.head.shape.clip_width

    @property
    def image_size(self) -> int:
        return self.head.shape.image_size

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed references (B, 3, S, S) -> (contexts, unconditional), each (B, 1, dim),
        on ComfyUI's intermediate device."""
        tower = self.tower_patcher
        _load(tower, self.head_patcher)
        with torch.no_grad():
            class_token = tower.model(pixels.to(tower.load_device))
        return self._head_outputs(class_token)

    def encode_hidden_states(self, last_hidden_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`encode`, from another CLIP tower's final hidden states (B, tokens, width): only
        this encoder's head runs (and is loaded)."""
        _load(self.head_patcher)
        return self._head_outputs(last_hidden_state[:, 0])

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP's pooled image embedding (B, clip_width) of preprocessed images, in float32 on
        ComfyUI's intermediate device: what the tower and the head's post-layernorm give."""
        tower = self.tower_patcher
        _load(tower, self.head_patcher)
        with torch.no_grad():
            embedding = self.head.embedding(tower.model(pixels.to(tower.load_device)).to(self.head_patcher.load_device))
        return embedding.to(mm.intermediate_device(), torch.float32)

    def _head_outputs(self, class_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.head
        with torch.no_grad():
            context = head(class_token.to(self.head_patcher.load_device))
            uncond = head.unconditional(class_token.shape[0])
        out = mm.intermediate_device()
        return context.to(out, torch.float32), uncond.to(out, torch.float32)

    def __repr__(self) -> str:
        return f"PaintByExampleEncoder({self.source}, context {self.context_dim})"


def _managed(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.text_encoder_device(),
                                            offload_device=mm.text_encoder_offload_device())


def _load(*patchers: comfy.model_patcher.ModelPatcher) -> None:
    # Plain torch layers cannot be partially loaded, hence the full load; ComfyUI may offload them later.
    mm.load_models_gpu(list(patchers), force_full_load=True)

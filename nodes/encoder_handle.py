"""PBE_ENCODER: the exemplar encoder as ComfyUI sees it, loaded and offloaded by ComfyUI."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import torch


class ExemplarEncoderHandle:
    """What flows along a PBE_ENCODER link: a ModelPatcher around pbe_core's ExemplarEncoder."""

    def __init__(self, patcher: comfy.model_patcher.ModelPatcher, source: str):
        self.patcher = patcher
        self.source = source

    @property
    def encoder(self):
        return self.patcher.model

    @property
    def context_dim(self) -> int:
        return self.encoder.context_dim

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed references (B, 3, S, S) -> (contexts, unconditional), each (B, 1, dim),
        on ComfyUI's intermediate device."""
        return self._run(lambda encoder, device: encoder(pixels.to(device)), pixels.shape[0])

    def encode_hidden_states(self, last_hidden_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`encode`, from another CLIP tower's final hidden states (B, tokens, width):
        this encoder's post-layernorm, mapper and projection run on them."""
        def compute(encoder, device):
            return encoder.context_from_embedding(encoder.embedding_from_hidden_states(last_hidden_state.to(device)))
        return self._run(compute, last_hidden_state.shape[0])

    def _run(self, compute, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        # ComfyUI loads the encoder first (plain torch layers cannot be partially loaded, hence the
        # full load) and may offload it afterwards.
        mm.load_models_gpu([self.patcher], force_full_load=True)
        with torch.no_grad():
            context = compute(self.encoder, self.patcher.load_device)
            uncond = self.encoder.unconditional(batch)
        out = mm.intermediate_device()
        return context.to(out, torch.float32), uncond.to(out, torch.float32)

    def __repr__(self) -> str:
        return f"PaintByExampleEncoder({self.source}, context {self.context_dim})"

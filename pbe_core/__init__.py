"""Paint-by-Example model code, independent of ComfyUI: checkpoint reading for every layout, the
exemplar encoder, reference preprocessing, masks and mask jitter, and the UNet/VAE sizes the
loaders read. Needs torch, transformers, safetensors and numpy only.

Random checkpoints for tests, benchmarks and demos live apart, in :mod:`pbe_core.testing`, which
the model code never imports."""

from .architecture import UNetShape, VAEShape, vae_shape_from_weights
from .checkpoint import PaintByExampleWeights, read_checkpoint
from .encoder import ExemplarEncoder, ExemplarHead, ExemplarTower, build_encoder, build_head, build_tower
from .errors import CheckpointError
from .mask_jitter import JitterSettings, jitter_masks
from .masks import binarize, bounding_box, feather, grow
from .reference import MODES as PREPROCESS_MODES
from .reference import prepare_references

__all__ = [
    "CheckpointError", "ExemplarEncoder", "ExemplarHead", "ExemplarTower", "JitterSettings", "PREPROCESS_MODES",
    "PaintByExampleWeights", "UNetShape", "VAEShape", "binarize", "bounding_box", "build_encoder", "build_head",
    "build_tower", "feather", "grow", "jitter_masks", "prepare_references", "read_checkpoint",
    "vae_shape_from_weights",
]

"""Paint-by-Example model code, independent of ComfyUI: the exemplar encoder, checkpoint reading
for every layout, reference preprocessing, mask jitter and mask utilities, and a maker of small
random checkpoints for tests and demos. Needs torch, transformers, safetensors and numpy only."""

from .architecture import EncoderSizes, UNetShape, VAEShape, vae_shape_from_weights
from .checkpoint import PaintByExampleWeights, read_checkpoint
from .encoder import ExemplarEncoder, ExemplarHead, ExemplarTower, build_encoder, build_head, build_tower
from .errors import CheckpointError
from .mask_jitter import JitterSettings, jitter_masks
from .masks import binarize, bounding_box, feather, grow
from .random_checkpoint import make_random_checkpoint, random_weights
from .reference import MODES as PREPROCESS_MODES
from .reference import prepare_references

__all__ = [
    "CheckpointError", "EncoderSizes", "ExemplarEncoder", "ExemplarHead", "ExemplarTower", "JitterSettings", "PREPROCESS_MODES",
    "PaintByExampleWeights", "UNetShape", "VAEShape", "binarize", "bounding_box", "build_encoder", "build_head",
    "build_tower",
    "feather", "grow", "jitter_masks", "make_random_checkpoint", "prepare_references", "random_weights",
    "read_checkpoint", "vae_shape_from_weights",
]

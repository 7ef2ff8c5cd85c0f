"""Test machinery, not the model: small random Paint-by-Example checkpoints in the authors' real file
layouts (the single ``.safetensors`` / ``.ckpt`` file and the diffusers folder), for tests,
benchmarks and demos. Their weights are random: such a model paints noise, never a real edit.

The model code (the rest of ``pbe_core``) never imports this package; it may import the model code.
"""

from .random_checkpoint import (RandomPaintByExample, make_random_checkpoint, random_weights, write_diffusers_folder,
                                write_single_file)
from .tensor_shapes import EncoderSizes

__all__ = ["EncoderSizes", "RandomPaintByExample", "make_random_checkpoint", "random_weights",
           "write_diffusers_folder", "write_single_file"]

"""The maker of random checkpoints: deterministic, real layouts, real full-size architecture."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

from pbe_core.architecture import UNetShape, VAEShape, vae_shape_from_weights
from pbe_core.testing.random_checkpoint import make_random_checkpoint, random_weights
from pbe_core.testing.tensor_shapes import EncoderSizes, encoder_tensor_shapes, unet_tensor_shapes, vae_tensor_shapes


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = random_weights("tiny", 3), random_weights("tiny", 3), random_weights("tiny", 4)
    for part in ("unet", "vae", "encoder"):
        pa, pb, pc = getattr(a, part), getattr(b, part), getattr(c, part)
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        assert not torch.equal(pa["proj_out.weight" if part == "encoder" else next(iter(pa))],
                               pc["proj_out.weight" if part == "encoder" else next(iter(pc))])


def _count(shapes):
    return sum(math.prod(s) for s in shapes.values())


def test_full_size_matches_the_real_architecture():
    """Against independent definitions: diffusers' UNet/VAE and transformers' CLIP ViT-L/14."""
    diffusers = pytest.importorskip("diffusers")
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(in_channels=9, cross_attention_dim=768, attention_head_dim=8)
        vae = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                num_attention_heads=16, patch_size=14, image_size=224))
    assert _count(unet_tensor_shapes(UNetShape())) == sum(p.numel() for p in unet.parameters()) == 859_535_364
    assert _count(vae_tensor_shapes(VAEShape())) == sum(p.numel() for p in vae.parameters())
    ours = {k[len("transformer."):]: v for k, v in encoder_tensor_shapes(EncoderSizes()).items()
            if k.startswith("transformer.")}
    theirs = {k.replace("vision_model.", ""): tuple(v.shape) for k, v in clip.state_dict().items()
              if "position_ids" not in k}
    assert ours == theirs
    mapper = _count({k: v for k, v in encoder_tensor_shapes(EncoderSizes()).items() if k.startswith("mapper.")})
    assert mapper == 5 * (4 * 1024 + 1024 * 3072 + 3072 + 1024 * 1024 + 1024 + 2 * 1024 * 4096 + 4096 + 1024)


def test_tiny_diffusers_folder_loads_into_diffusers_models(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from safetensors.torch import load_file

    folder = make_random_checkpoint(tmp_path / "tiny", layout="diffusers")
    for part, cls in (("unet", diffusers.UNet2DConditionModel), ("vae", diffusers.AutoencoderKL)):
        config = json.loads((folder / part / "config.json").read_text())
        config.pop("_class_name")
        model = cls(**config)
        model.load_state_dict(load_file(folder / part / "diffusion_pytorch_model.safetensors"), strict=True)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "PaintByExamplePipeline"


def test_vae_sizes_are_read_back_from_weights(tiny_model):
    assert vae_shape_from_weights(tiny_model.vae) == tiny_model.vae_shape
    full = {k: torch.empty(s, device="meta") for k, s in vae_tensor_shapes(VAEShape()).items()}
    assert vae_shape_from_weights(full) == VAEShape()


def test_files_are_marked_as_random(tmp_path):
    path = make_random_checkpoint(tmp_path / "random.safetensors")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["random_weights"] == "true"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtypes(tmp_path, dtype):
    path = make_random_checkpoint(tmp_path / "half.safetensors", dtype=dtype)
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("learnable_vector").dtype == dtype


def test_unknown_layout_and_size():
    with pytest.raises(ValueError, match="layout must be"):
        make_random_checkpoint("x", layout="onnx")
    with pytest.raises(ValueError, match="size must be one of tiny, small, full"):
        random_weights("huge")

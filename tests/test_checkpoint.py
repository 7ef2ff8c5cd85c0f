"""Reading every checkpoint layout, and a clear error for every bad one."""

from __future__ import annotations

import json
import random
import shutil
import sys
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

from pbe_core import CheckpointError, read_checkpoint
from pbe_core import layouts

SINGLE_FILES = ["safetensors", "ckpt", "safetensors_fp16", "safetensors_bf16"]
DTYPES = {"safetensors_fp16": torch.float16, "safetensors_bf16": torch.bfloat16}


@pytest.mark.parametrize("layout", SINGLE_FILES)
def test_single_files_load_the_same_weights(checkpoints, tiny_model, layout):
    weights = read_checkpoint(checkpoints[layout])
    dtype = DTYPES.get(layout, torch.float32)
    assert weights.layout == "single_file" and weights.weights_format == "ldm"
    for part in ("unet", "vae", "encoder"):
        ours, original = getattr(weights, part), getattr(tiny_model, part)
        assert ours.keys() == original.keys(), part
        for key, value in original.items():
            assert ours[key].dtype == dtype
            assert torch.equal(ours[key], value.to(dtype)), key


def _fingerprints(sd):
    return sorted((v.numel(), v.flatten()[0].item(), v.flatten()[-1].item(), v.double().sum().item()) for v in sd.values())


@pytest.mark.parametrize("layout", ["diffusers", "diffusers_bin"])
def test_diffusers_folders_load_the_same_weights(checkpoints, tiny_model, layout):
    if layout not in checkpoints:
        pytest.skip("diffusers is not installed (pip install -e .[test]): no diffusers folder to read")
    weights = read_checkpoint(checkpoints[layout])
    assert weights.layout == "diffusers" and weights.weights_format == "diffusers"
    assert weights.encoder.keys() == tiny_model.encoder.keys()
    for key, value in tiny_model.encoder.items():
        assert torch.equal(weights.encoder[key], value), key
    # UNet and VAE stay in diffusers naming for the host's converters: same tensors, other names
    assert _fingerprints(weights.unet) == _fingerprints(tiny_model.unet)
    assert _fingerprints(weights.vae) == _fingerprints(tiny_model.vae)
    assert weights.unet_config["in_channels"] == 9
    assert weights.unet_in_channels == 9


def test_training_state_and_ema_copies_are_ignored(checkpoints, tiny_model):
    raw = torch.load(checkpoints["ckpt"], weights_only=True)
    assert "optimizer_states" in raw and any(k.startswith("model_ema.") for k in raw["state_dict"])
    weights = read_checkpoint(checkpoints["ckpt"])
    assert len(weights.unet) == len(tiny_model.unet)
    assert not any("ema" in k or k in ("betas", "alphas_cumprod") for k in weights.encoder)


def test_pickles_are_memory_mapped(checkpoints, monkeypatch):
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    read_checkpoint(checkpoints["ckpt"])
    assert seen["weights_only"] is True and seen["mmap"] is True


def test_lightning_callback_classes_in_the_checkpoint_are_accepted(tmp_path, tiny_model):
    """The authors' model.ckpt keys its callback state by Lightning's ModelCheckpoint class."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    fake = {name: types.ModuleType(name) for name in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    fake[names[-1]].ModelCheckpoint = cls
    sd = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    sys.modules.update(fake)
    try:
        torch.save({"state_dict": sd, "callbacks": {cls: {"best_model_score": None, "monitor": "val/loss"}}},
                   tmp_path / "model.ckpt")
    finally:
        for name in names:
            del sys.modules[name]
    weights = read_checkpoint(tmp_path / "model.ckpt")
    assert torch.equal(weights.encoder["learnable_vector"], tiny_model.encoder["learnable_vector"])


# ---------------------------------------------------------------------------- bad files


def _sd15_like(tiny_model) -> dict[str, torch.Tensor]:
    """A plain SD 1.x checkpoint: 4-channel UNet, VAE and a text encoder, no exemplar encoder."""
    sd = {layouts.UNET_PREFIX + k: v for k, v in tiny_model.unet.items()}
    sd[layouts.UNET_PREFIX + "input_blocks.0.0.weight"] = torch.zeros(64, 4, 3, 3)
    sd.update({layouts.VAE_PREFIX + k: v for k, v in tiny_model.vae.items()})
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 8)
    return sd


def test_plain_sd15_checkpoint_is_named_as_such(tmp_path, tiny_model):
    path = tmp_path / "v1-5-pruned-emaonly.safetensors"
    save_file(_sd15_like(tiny_model), str(path))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "v1-5-pruned-emaonly.safetensors is not a Paint-by-Example model" in message
    assert "exemplar mapper" in message and "learned unconditional vector" in message
    assert "Stable Diffusion 1.x" in message and "Load Checkpoint" in message


def test_unet_with_four_input_channels_is_refused(tmp_path, tiny_model):
    sd = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    sd[layouts.UNET_PREFIX + "input_blocks.0.0.weight"] = torch.zeros(64, 4, 3, 3)
    save_file(sd, str(tmp_path / "four.safetensors"))
    with pytest.raises(CheckpointError, match="4 input channels.*takes 9.*not a Paint-by-Example model"):
        read_checkpoint(tmp_path / "four.safetensors")


def test_file_with_no_model_weights(tmp_path):
    save_file({"lora_unet_down.alpha": torch.ones(1)}, str(tmp_path / "some_lora.safetensors"))
    with pytest.raises(CheckpointError, match="some_lora.safetensors holds no Stable Diffusion"):
        read_checkpoint(tmp_path / "some_lora.safetensors")


@pytest.mark.parametrize("layout", ["safetensors", "ckpt"])
def test_truncated_files(checkpoints, tmp_path, layout):
    data = checkpoints[layout].read_bytes()
    path = tmp_path / f"truncated.{layout}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.(safetensors|ckpt).*truncated or corrupt.*download it again"):
        read_checkpoint(path)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt", ".bin"])
def test_corrupt_files(tmp_path, suffix, seed):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError, match="garbage.*(truncated or corrupt)"):
        read_checkpoint(path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.ckpt is empty.*get the file again"):
        read_checkpoint(tmp_path / "empty.ckpt")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("name", ["model.onnx", "model.gguf", "model.zip"])
def test_unsupported_extension(tmp_path, name):
    (tmp_path / name).write_bytes(b"x" * 64)
    with pytest.raises(CheckpointError, match=r"not a model file this pack reads.*\.safetensors"):
        read_checkpoint(tmp_path / name)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.marker))


def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, tiny_model):
    marker = tmp_path / "payload_ran"
    sd = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    torch.save({"state_dict": sd, "hyper_parameters": _RunsCode(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt contains Python objects besides weights.*could run code"):
        read_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    # the payload is real: plain unpickling would have run it
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------- diffusers folders


def _copy_folder(checkpoints, tmp_path):
    if "diffusers" not in checkpoints:
        pytest.skip("diffusers is not installed (pip install -e .[test]): no diffusers folder to damage")
    return shutil.copytree(checkpoints["diffusers"], tmp_path / "pbe_copy")


@pytest.mark.parametrize("part", ["unet", "vae", "image_encoder"])
def test_diffusers_folder_missing_a_part(checkpoints, tmp_path, part):
    folder = _copy_folder(checkpoints, tmp_path)
    shutil.rmtree(folder / part)
    with pytest.raises(CheckpointError, match=f"has no {part}/ subfolder.*incomplete"):
        read_checkpoint(folder)


def test_diffusers_folder_missing_weights(checkpoints, tmp_path):
    folder = _copy_folder(checkpoints, tmp_path)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="vae has no weights file.*incomplete"):
        read_checkpoint(folder)


def test_stable_diffusion_folder_is_named_as_such(checkpoints, tmp_path):
    folder = _copy_folder(checkpoints, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="holds a StableDiffusionPipeline, not a Paint-by-Example model"):
        read_checkpoint(folder)


def test_plain_clip_as_image_encoder_is_refused(checkpoints, tmp_path):
    folder = _copy_folder(checkpoints, tmp_path)
    path = folder / "image_encoder" / "model.safetensors"
    save_file({k: v for k, v in load_file(path).items() if k.startswith("model.")}, str(path))
    with pytest.raises(CheckpointError, match="not a Paint-by-Example image encoder"):
        read_checkpoint(folder)


def test_sharded_diffusers_part(checkpoints, tmp_path, tiny_model):
    folder = _copy_folder(checkpoints, tmp_path)
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(path)
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: sd[k] for k in part}, str(folder / "unet" / name))
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: name for name, part in shards.items() for k in part}}))
    path.unlink()
    weights = read_checkpoint(folder)
    assert weights.unet.keys() == sd.keys()
    assert all(torch.equal(weights.unet[k], sd[k]) for k in keys)

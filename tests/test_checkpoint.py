"""Reading every checkpoint layout, and a clear error for every bad one."""

from __future__ import annotations

import errno
import json
import pickletools
import random
import shutil
import sys
import types
import zipfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from pbe_core import CheckpointError, read_checkpoint
from pbe_core import layouts, safe_unpickle

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
    with torch.serialization.safe_globals(safe_unpickle.allowed_objects()):
        raw = torch.load(checkpoints["ckpt"], weights_only=True, mmap=True)
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
def test_random_bytes_are_named_as_no_model_format(tmp_path, suffix, seed):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError, match="garbage.* is not a .*first bytes match no model file format.*"
                                              "download it again"):
        read_checkpoint(path)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("start", "message"), [
    (b"PK\x03\x04", "zip directory is missing.*truncated or corrupt; download it again"),
    (b"\x80\x02", "(pickle data ends early.*truncated or corrupt|starts like a legacy PyTorch pickle but could not "
                  "be read.*damaged or not a model file)"),
])
def test_damaged_checkpoints_behind_a_valid_signature(tmp_path, seed, start, message):
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(start + random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError, match=f"damaged.ckpt.*{message}"):
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


# ---------------------------------------------------------------------------- every torch version

READING_MODES = ["safe_globals", "add_safe_globals", "restricted_unpickler"]


@pytest.fixture(params=READING_MODES)
def torch_reading_mode(request, monkeypatch):
    """Simulate the torch versions: 2.5+ (scoped safe_globals), 2.4 (only the process-wide
    add_safe_globals), 2.1-2.3 (no allow-list API: the restricted pickle module)."""
    serialization = torch.serialization
    mode = request.param
    if mode == "safe_globals":
        yield mode
        return
    monkeypatch.delattr(serialization, "safe_globals")
    if mode == "add_safe_globals":
        monkeypatch.setattr(safe_unpickle, "torch_version", lambda: (2, 4))
        monkeypatch.setattr(safe_unpickle, "_registered", False)
        before = list(serialization.get_safe_globals())
        yield mode
        serialization.clear_safe_globals()  # undo the process-wide registration for the other tests
        serialization.add_safe_globals(before)
        return
    monkeypatch.delattr(serialization, "add_safe_globals")
    monkeypatch.setattr(safe_unpickle, "torch_version", lambda: (2, 3))
    yield mode


def _spy_on_torch_load(monkeypatch) -> list[dict]:
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_authors_ckpt_loads_on_every_torch_version(checkpoints, tiny_model, torch_reading_mode, monkeypatch):
    """The fixture holds what the real model.ckpt holds: Lightning's ModelCheckpoint class, numpy
    scalars under numpy 1.x's names, EMA copies, optimizer and scheduler state."""
    calls = _spy_on_torch_load(monkeypatch)
    weights = read_checkpoint(checkpoints["ckpt"])
    for part in ("unet", "vae", "encoder"):
        original = getattr(tiny_model, part)
        assert getattr(weights, part).keys() == original.keys()
        assert all(torch.equal(getattr(weights, part)[k], v) for k, v in original.items())
    (call,) = calls
    assert call["mmap"] is True
    if torch_reading_mode == "restricted_unpickler":
        assert call["weights_only"] is False and call["pickle_module"] is safe_unpickle.RESTRICTED_PICKLE
    else:
        assert call["weights_only"] is True and "pickle_module" not in call
    if torch_reading_mode == "add_safe_globals":
        registered = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
                      if not isinstance(g, tuple)}
        assert {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
                "numpy.core.multiarray.scalar"} <= registered


def test_legacy_pickle_checkpoints_load_on_every_torch_version(tmp_path, tiny_model, torch_reading_mode):
    path = tmp_path / "legacy.ckpt"
    sd = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=False)
    weights = read_checkpoint(path)
    assert torch.equal(weights.encoder["learnable_vector"], tiny_model.encoder["learnable_vector"])


def test_pickle_that_would_run_code_is_refused_on_every_torch_version(tmp_path, tiny_model, torch_reading_mode):
    marker = tmp_path / "payload_ran"
    sd = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    for name, legacy in (("evil.ckpt", False), ("evil_legacy.ckpt", True)):
        torch.save({"state_dict": sd, "hyper_parameters": _RunsCode(str(marker))}, tmp_path / name,
                   _use_new_zipfile_serialization=not legacy)
        with pytest.raises(CheckpointError, match=f"{name} contains Python objects besides weights.*"
                                                  "shutil.*could run code, so it is refused"):
            read_checkpoint(tmp_path / name)
        assert not marker.exists()


def test_torch_older_than_2_1_is_named_not_blamed_on_the_file(checkpoints, monkeypatch):
    monkeypatch.setattr(safe_unpickle, "torch_version", lambda: (2, 0))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(checkpoints["ckpt"])
    message = str(err.value)
    assert "model.ckpt cannot be read" in message
    assert f"PyTorch {torch.__version__} is installed" in message and "needs PyTorch 2.1 or newer" in message
    assert "corrupt" not in message and "download" not in message


def test_the_fixture_has_the_real_training_checkpoint_shape(checkpoints, tiny_model):
    path = checkpoints["ckpt"]
    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    names = {arg for op, arg, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    assert {"pytorch_lightning.callbacks.model_checkpoint ModelCheckpoint", "numpy.core.multiarray scalar",
            "numpy dtype", "_codecs encode"} <= names
    with torch.serialization.safe_globals(safe_unpickle.allowed_objects()):
        raw = torch.load(path, weights_only=True, mmap=True)
    state = raw["state_dict"]
    unet_keys = [layouts.UNET_PREFIX + k for k in tiny_model.unet]
    for key in unet_keys:  # LDM's LitEma names: the name after "model.", dots removed
        ema = "model_ema." + key[len("model."):].replace(".", "")
        assert torch.equal(state[ema], state[key]), ema
    assert {"model_ema.decay", "model_ema.num_updates", "betas", "alphas_cumprod",
            "posterior_mean_coef2"} <= state.keys()
    (callback_key, callback), = raw["callbacks"].items()
    assert f"{callback_key.__module__}.{callback_key.__qualname__}" == \
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    assert callback["monitor"] and isinstance(callback["best_model_score"], torch.Tensor)
    assert type(callback["current_score"]).__name__ == "float64"
    trained = [k for k in state if not k.startswith("model_ema.") and (
        k.startswith(("model.", "cond_stage_model.mapper.", "cond_stage_model.final_ln.", "proj_out."))
        or k == "learnable_vector")]
    (adamw,) = raw["optimizer_states"]
    assert len(adamw["state"]) == len(trained) == len(adamw["param_groups"][0]["params"])
    assert all(v["exp_avg"].shape == state[k].shape for k, v in zip(trained, adamw["state"].values()))
    (scheduler,) = raw["lr_schedulers"]
    assert scheduler["last_epoch"] == raw["global_step"] and "lr_lambdas" in scheduler
    assert raw["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == raw["global_step"]
    assert raw["pytorch-lightning_version"] and raw["epoch"] >= 0


def test_optimizer_state_can_be_left_out(tmp_path, tiny_model):
    from pbe_core.testing import random_checkpoint
    path = random_checkpoint.write_single_file(tmp_path / "lean.ckpt", tiny_model, optimizer_state=False)
    with torch.serialization.safe_globals(safe_unpickle.allowed_objects()):
        assert torch.load(path, weights_only=True, mmap=True)["optimizer_states"] == []
    assert path.stat().st_size < 0.6 * random_checkpoint.write_single_file(tmp_path / "full.ckpt", tiny_model).stat().st_size
    assert torch.equal(read_checkpoint(path).encoder["learnable_vector"], tiny_model.encoder["learnable_vector"])


# ---------------------------------------------------------------------------- honest errors


def _member_data_offset(path, suffix):
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    return info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")


def test_zip_member_failing_its_checksum_is_called_corrupt(checkpoints, tmp_path):
    path = tmp_path / "flipped.ckpt"
    data = bytearray(checkpoints["ckpt"].read_bytes())
    offset = _member_data_offset(checkpoints["ckpt"], "/data.pkl")
    data[offset:offset + 2] = b"\xff\xff"  # the pickle's first opcode
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.ckpt is damaged: its member .*data.pkl fails its checksum.*"
                                              "truncated or corrupt; download it again"):
        read_checkpoint(path)


def test_complete_checkpoint_that_fails_to_load_is_not_called_corrupt(checkpoints, tmp_path):
    """A zip whose structure and checksums are intact cannot be a damaged download."""
    path = tmp_path / "odd.ckpt"
    with zipfile.ZipFile(checkpoints["ckpt"]) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = b"\x80\x02I1\n." if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info.filename, data)  # INT: an opcode torch's weights-only unpickler lacks
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "odd.ckpt could not be read" in message and "the file is complete" in message
    assert "downloading it again will not help" in message and torch.__version__ in message
    assert "corrupt" not in message


def test_zip_that_is_no_checkpoint(tmp_path):
    path = tmp_path / "pbe.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pbe/unet/config.json", "{}")
    with pytest.raises(CheckpointError, match="pbe.ckpt is a zip archive but not a PyTorch checkpoint .*no data.pkl"):
        read_checkpoint(path)


@pytest.mark.parametrize("layout", ["safetensors", "ckpt"])
def test_safetensors_and_zip_cut_in_the_header(checkpoints, tmp_path, layout):
    data = checkpoints[layout].read_bytes()
    path = tmp_path / f"cut.{layout}"
    path.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match=r"cut\.(safetensors|ckpt) is damaged.*truncated or corrupt"):
        read_checkpoint(path)


def test_safetensors_with_a_broken_header(checkpoints, tmp_path):
    data = bytearray(checkpoints["safetensors"].read_bytes())
    data[9] = 0xFF  # inside the JSON
    path = tmp_path / "broken.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="broken.safetensors is damaged: its header is not valid.*truncated or corrupt"):
        read_checkpoint(path)


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes"),
])
def test_out_of_memory_says_so(checkpoints, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(safe_unpickle, "load", fail)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(checkpoints["ckpt"])
    message = str(err.value)
    size = checkpoints["ckpt"].stat().st_size / 1e9
    assert f"not enough free memory to read model.ckpt ({size:.1f} GB on disk" in message
    assert "Close other programs" in message and "python -m pbe_core.convert model.ckpt" in message
    assert "fp16" in message and "corrupt" not in message


def test_out_of_memory_reading_safetensors(checkpoints, monkeypatch):
    import pbe_core.tensor_files as tensor_files

    def fail(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(tensor_files, "safe_open", fail)
    with pytest.raises(CheckpointError, match="not enough free memory to read pbe.safetensors"):
        read_checkpoint(checkpoints["safetensors"])


@pytest.mark.parametrize(("error", "message"), [
    (PermissionError(errno.EACCES, "Permission denied"), "cannot be opened: permission denied.*read access"),
    (OSError(errno.EIO, "Input/output error"), "could not be read from the disk \\(Input/output error\\).*Check the disk"),
])
def test_disk_errors_are_not_blamed_on_the_file(checkpoints, monkeypatch, error, message):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(safe_unpickle, "load", fail)
    with pytest.raises(CheckpointError, match=f"model.ckpt {message}") as err:
        read_checkpoint(checkpoints["ckpt"])
    assert "corrupt" not in str(err.value)


def _html(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf\n  <!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>")
    return path


def _lfs(tmp_path, name):
    path = tmp_path / name
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 12600000000\n")
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda c, t: shutil.copy(c["ckpt"], t / "paint_by_example.safetensors"),
     "paint_by_example.safetensors is a PyTorch checkpoint \\(a zip archive.*not a .safetensors file.*"
     "Rename it back to .ckpt, or convert it with `python -m pbe_core.convert paint_by_example.safetensors"),
    (lambda c, t: torch.save({"w": torch.ones(2)}, t / "legacy.safetensors", _use_new_zipfile_serialization=False)
     or t / "legacy.safetensors",
     "legacy.safetensors is a legacy PyTorch pickle, not a .safetensors file.*Rename it back to .ckpt"),
    (lambda c, t: shutil.copy(c["safetensors"], t / "model.ckpt"),
     "model.ckpt is a .safetensors file with a '.ckpt' name: rename it to model.safetensors"),
    (lambda c, t: shutil.copy(c["safetensors"], t / "model.bin"),
     "model.bin is a .safetensors file with a '.bin' name"),
    (lambda c, t: _html(t, "paint_by_example.safetensors"),
     "paint_by_example.safetensors is an HTML page saved by a browser, not the model: the download failed.*"
     "Download the file itself"),
    (lambda c, t: _html(t, "model.ckpt"), "model.ckpt is an HTML page saved by a browser"),
    (lambda c, t: _lfs(t, "model.ckpt"), "model.ckpt is a Git LFS pointer.*`git lfs pull`.*download the file itself"),
    (lambda c, t: _lfs(t, "pbe.safetensors"), "pbe.safetensors is a Git LFS pointer"),
], ids=["ckpt_renamed_safetensors", "legacy_pickle_renamed", "safetensors_renamed_ckpt", "safetensors_renamed_bin",
        "html_safetensors", "html_ckpt", "lfs_ckpt", "lfs_safetensors"])
def test_content_that_does_not_match_the_extension_is_named(checkpoints, tmp_path, make, message):
    path = make(checkpoints, tmp_path)
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(path)
    assert "corrupt" not in str(err.value) and "truncated" not in str(err.value)

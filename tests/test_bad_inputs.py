"""Every bad or hostile input gets a specific, readable error naming the input, raised by the
pack's own checks (not a traceback from deep inside torch); inputs are never modified in place."""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pbe_core import layouts
from pbe_core.testing import random_checkpoint
from test_comfy_nodes import _load

ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 96


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.marker))


@pytest.fixture(scope="module")
def kit(comfy, tiny_model, tmp_path_factory):
    """Loaded tiny model, good default inputs, and bad files in ComfyUI's model folders."""
    model, vae, encoder = _load(comfy)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    checkpoints = comfy.models / "checkpoints"
    good = (checkpoints / "pbe_tiny.safetensors").read_bytes()
    (checkpoints / "bad_truncated.safetensors").write_bytes(good[: len(good) // 3])
    ckpt = (checkpoints / "pbe_tiny.ckpt").read_bytes()
    (checkpoints / "bad_truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 3])
    (checkpoints / "bad_empty.safetensors").write_bytes(b"")
    (checkpoints / "bad_corrupt.ckpt").write_bytes(bytes(range(256)) * 64)
    shutil.copy(checkpoints / "pbe_tiny.ckpt", checkpoints / "bad_renamed_ckpt.safetensors")
    (checkpoints / "bad_html.safetensors").write_bytes(b"\n<!DOCTYPE html><html><body>Sign in</body></html>")
    (checkpoints / "bad_lfs.ckpt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    (checkpoints / "bad_model.onnx").write_bytes(b"onnx" * 100)
    sd = {layouts.UNET_PREFIX + k: v for k, v in tiny_model.unet.items()}
    sd.update({layouts.VAE_PREFIX + k: v for k, v in tiny_model.vae.items()})
    sd["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"] = torch.zeros(8, 8)
    save_file(sd, str(checkpoints / "bad_sd15.safetensors"))
    four = layouts.join_single_file(tiny_model.unet, tiny_model.vae, tiny_model.encoder)
    four[layouts.UNET_PREFIX + "input_blocks.0.0.weight"] = torch.zeros(64, 4, 3, 3)
    save_file(four, str(checkpoints / "bad_four_channels.safetensors"))
    marker = tmp_path_factory.mktemp("payload") / "payload_ran"
    torch.save({"state_dict": {"x": torch.ones(1)}, "hyper_parameters": _Payload(str(marker))},
               checkpoints / "bad_pickle_code.ckpt")
    diffusers = comfy.models / "diffusers"
    if (diffusers / "pbe_tiny").is_dir():
        for name, damage in (("bad_no_encoder", lambda f: shutil.rmtree(f / "image_encoder")),
                             ("bad_no_vae_weights", lambda f: (f / "vae" / "diffusion_pytorch_model.safetensors").unlink()),
                             ("bad_sd_pipeline", lambda f: (f / "model_index.json").write_text(
                                 json.dumps({"_class_name": "StableDiffusionPipeline"})))):
            folder = shutil.copytree(diffusers / "pbe_tiny", diffusers / name, dirs_exist_ok=True)
            damage(folder)
    comfy.clear_folder_caches()
    wide = random_checkpoint.random_weights("tiny", seed=1, context_dim=1024)
    random_checkpoint.write_single_file(checkpoints / "pbe_wide_bad.safetensors", wide)
    wide_encoder = _load(comfy, "pbe_wide_bad.safetensors")[2]
    rewired = model.clone()
    rewired.add_object_patch("concat_keys", ("mask", "masked_image"))
    source = torch.rand(1, H, W, 3)
    mask = torch.zeros(1, H, W)
    mask[:, 16:48, 24:72] = 1
    return dict(model=model, vae=vae, encoder=encoder, positive=positive, negative=negative, source=source,
                mask=mask, marker=marker, wide_encoder=wide_encoder, rewired=rewired, comfy=comfy)


def _node(kit, node_id):
    return kit["comfy"].node(node_id)()


def _load_file(name):
    return lambda k: _node(k, "PaintByExampleLoader").load(name)


def _load_folder(name):
    def run(k):
        if not (k["comfy"].models / "diffusers" / name).is_dir():
            pytest.skip("diffusers is not installed: no diffusers folder to damage")
        return _node(k, "PaintByExampleDiffusersLoader").load(name)
    return run


def _encode(reference=None, **kwargs):
    def run(k):
        ref = torch.rand(1, 40, 40, 3) if reference is None else reference
        args = {"preprocess": "stretch", **kwargs}
        return _node(k, "PaintByExampleEncode").encode(k["encoder"], ref, **args)
    return run


def _jitter(mask=None, **kwargs):
    def run(k):
        args = dict(seed=0, extend_min=0.0, extend_max=0.4, point_jitter=5, points_per_side=18, shape="bezier")
        args.update(kwargs)
        return _node(k, "PaintByExampleMaskJitter").jitter(k["mask"] if mask is None else mask, **args)
    return run


def _sample(source=None, mask=None, model=None, positive=None, encoder=None, **kwargs):
    def run(k):
        pos, neg = k["positive"], k["negative"]
        if encoder is not None:
            pos, neg = _node(k, "PaintByExampleEncode").encode(k[encoder], torch.rand(1, 40, 40, 3), "stretch")
        if positive is not None:
            pos = positive(k)
        args = dict(seed=1, steps=1, cfg=5.0, sampler_name="ddim", scheduler="ddim_uniform", denoise=1.0)
        args.update(kwargs)
        src = k["source"] if source is None else source(k) if callable(source) else source
        msk = k["mask"] if mask is None else mask(k) if callable(mask) else mask
        return _node(k, "PaintByExampleSampler").sample(k[model or "model"], k["vae"], pos, neg, src, msk, **args)
    return run


def _crop(source=None, mask=None, **kwargs):
    def run(k):
        args = dict(context=2.0, resolution=128, blend=8)
        args.update(kwargs)
        return _node(k, "PaintByExampleCrop").crop(k["source"] if source is None else source,
                                                   k["mask"] if mask is None else mask, **args)
    return run


def _stitch(edited):
    def run(k):
        info = _crop()(k)[0]
        return _node(k, "PaintByExampleStitch").stitch(info, edited)
    return run


def _regions(mask_2):
    def run(k):
        return _node(k, "PaintByExampleRegions").combine(k["negative"], exemplar_1=k["positive"], mask_1=k["mask"],
                                                         exemplar_2=k["positive"], mask_2=mask_2)
    return run


def _mask(value=None, shape=(1, H, W), box=None):
    m = torch.zeros(shape) if value is None else torch.full(shape, float(value))
    if box is not None:
        x0, y0, x1, y1 = box
        m[..., y0:y1, x0:x1] = 1
    return m


NAN_MASK = _mask(box=(10, 10, 30, 30))
NAN_MASK[0, 0, 0] = float("nan")
NAN_SOURCE = torch.rand(1, H, W, 3)
NAN_SOURCE[0, 5, 5, 1] = float("nan")
TRANSPARENT = torch.zeros(1, 30, 30, 4)

# (case id, action, the input named, what the message must say)
CASES = [
    # loaders: damaged, foreign, hostile files
    ("truncated_safetensors", _load_file("bad_truncated.safetensors"), "ckpt_name", "truncated or corrupt"),
    ("truncated_ckpt", _load_file("bad_truncated.ckpt"), "ckpt_name", "truncated or corrupt"),
    ("empty_file", _load_file("bad_empty.safetensors"), "ckpt_name", "is empty (0 bytes)"),
    ("corrupt_ckpt", _load_file("bad_corrupt.ckpt"), "ckpt_name", "first bytes match no model file format"),
    ("ckpt_renamed_safetensors", _load_file("bad_renamed_ckpt.safetensors"), "ckpt_name",
     "is a PyTorch checkpoint (a zip archive"),
    ("html_page_saved", _load_file("bad_html.safetensors"), "ckpt_name", "is an HTML page saved by a browser"),
    ("git_lfs_pointer", _load_file("bad_lfs.ckpt"), "ckpt_name", "git lfs pull"),
    ("wrong_extension", _load_file("bad_model.onnx"), "ckpt_name", "not a model file this pack reads"),
    ("missing_file", _load_file("nowhere.safetensors"), "ckpt_name", "is not in ComfyUI's checkpoints folder"),
    ("plain_sd15", _load_file("bad_sd15.safetensors"), "ckpt_name", "is not a Paint-by-Example model"),
    ("four_channel_unet", _load_file("bad_four_channels.safetensors"), "ckpt_name", "4 input channels"),
    ("pickle_running_code", _load_file("bad_pickle_code.ckpt"), "ckpt_name", "could run code, so it is refused"),
    ("diffusers_no_encoder", _load_folder("bad_no_encoder"), "model_path", "has no image_encoder/ subfolder"),
    ("diffusers_no_vae_weights", _load_folder("bad_no_vae_weights"), "model_path", "has no weights file"),
    ("diffusers_sd_pipeline", _load_folder("bad_sd_pipeline"), "model_path", "holds a StableDiffusionPipeline"),
    ("diffusers_missing_folder", lambda k: _node(k, "PaintByExampleDiffusersLoader").load("nowhere"), "model_path",
     "is not a folder in ComfyUI's diffusers folder"),
    # references
    ("reference_nan", _encode(torch.full((1, 8, 8, 3), float("nan"))), "reference", "NaN"),
    ("reference_5_channels", _encode(torch.rand(1, 8, 8, 5)), "reference", "1 to 4 channels"),
    ("reference_empty", _encode(torch.rand(1, 0, 8, 3)), "reference", "empty"),
    ("reference_mask_size", _encode(reference_mask=torch.ones(1, 10, 10)), "reference", "reference mask is 10x10"),
    ("reference_mask_empty", _encode(reference_mask=torch.zeros(1, 40, 40)), "reference", "reference mask 0 is empty"),
    ("reference_mask_batch", _encode(torch.rand(2, 40, 40, 3), reference_mask=torch.ones(3, 40, 40)), "reference",
     "3 reference masks for 2 references"),
    ("reference_transparent", _encode(TRANSPARENT), "reference", "fully transparent"),
    ("reference_margin_api", _encode(margin=-5), "margin", "out of range"),
    ("reference_preprocess_api", _encode(preprocess="zoom"), "preprocess", "is not one of"),
    # mask jitter
    ("jitter_empty_mask", _jitter(_mask()), "mask", "is empty"),
    ("jitter_nan_mask", _jitter(NAN_MASK), "mask", "NaN"),
    ("jitter_min_over_max", _jitter(extend_min=0.5, extend_max=0.1), "mask", "0 <= min <= max <= 1"),
    ("jitter_negative_points", _jitter(point_jitter=-3), "mask", "point jitter"),
    ("jitter_no_points", _jitter(points_per_side=0), "mask", "points per side"),
    ("jitter_bad_shape", _jitter(shape="star"), "mask", "shape must be one of"),
    ("jitter_batch_of_masks", _jitter(_mask(shape=(2, H, W), box=(0, 0, 9, 9)), batch_size=3), "batch_size",
     "variants of one mask"),
    ("jitter_negative_seed_api", _jitter(seed=-1), "seed", "out of range"),
    # sampler
    ("sampler_empty_mask", _sample(mask=_mask()), "mask", "mask 0 is empty"),
    ("sampler_full_mask", _sample(mask=_mask(1.0)), "mask", "covers the whole source"),
    ("sampler_soft_mask", _sample(mask=_mask(0.3)), "mask", "nothing at or above 0.5"),
    ("sampler_nan_mask", _sample(mask=NAN_MASK), "mask", "NaN"),
    ("sampler_mask_size", _sample(mask=_mask(shape=(1, 32, 32), box=(0, 0, 8, 8))), "mask", "it is 32x32"),
    ("sampler_mask_batch", _sample(source=torch.rand(2, H, W, 3), mask=_mask(shape=(3, H, W), box=(0, 0, 9, 9))),
     "mask", "3 masks for 2 source images"),
    ("sampler_exemplar_batch", _sample(source=torch.rand(2, H, W, 3),
                                       positive=lambda k: [[torch.rand(3, 1, 768), {"pbe_role": "exemplar"}]]),
     "positive", "3 exemplars for 2 images"),
    ("sampler_encoder_of_other_width", _sample(encoder="wide_encoder"), "positive", "its width is 1024"),
    ("sampler_sd_inpaint_model", _sample(model="rewired"), "model", "wired as an SD inpainting model"),
    ("sampler_nan_source", _sample(source=NAN_SOURCE), "source", "NaN"),
    ("sampler_source_shape", _sample(source=torch.rand(H, W)), "source", "expected an IMAGE"),
    ("sampler_steps_api", _sample(steps=0), "steps", "out of range"),
    ("sampler_cfg_api", _sample(cfg=-2.0), "cfg", "out of range"),
    ("sampler_denoise_api", _sample(denoise=1.5), "denoise", "out of range"),
    # crop & stitch
    ("crop_context_api", _crop(context=0.5), "context", "out of range"),
    ("crop_resolution_api", _crop(resolution=500), "context", "multiple of 8"),
    ("crop_blend_api", _crop(blend=-1), "blend", "out of range"),
    ("crop_mask_size", _crop(mask=_mask(shape=(1, 10, 10), box=(0, 0, 5, 5))), "mask", "it is 10x10"),
    ("stitch_wrong_size", _stitch(torch.rand(1, 64, 64, 3)), "edited", "but the crop is 128x128"),
    ("stitch_wrong_count", _stitch(torch.rand(3, 128, 128, 3)), "edited", "3 images for 1 crops"),
    # several exemplars
    ("regions_mask_size", _regions(_mask(shape=(1, 8, 8), box=(0, 0, 4, 4))), "mask_2", "it is 8x8 but mask_1"),
    ("regions_empty_mask", _regions(_mask()), "mask_2", "it is empty"),
    ("blend_all_zero", lambda k: _node(k, "PaintByExampleBlend").blend(
        exemplar_1=k["positive"], weight_1=0.0, exemplar_2=k["positive"], weight_2=0.0), "weight", "all weights are 0"),
    ("blend_negative_weight", lambda k: _node(k, "PaintByExampleBlend").blend(
        exemplar_1=k["positive"], weight_1=-1.0, exemplar_2=k["positive"], weight_2=1.0), "weight", "0 or more"),
    ("strength_api", lambda k: _node(k, "PaintByExampleStrength").apply(k["positive"], k["negative"], -1.0),
     "strength", "out of range"),
    ("clip_vision_of_other_width", lambda k: _node(k, "PaintByExampleEncodeCLIPVision").encode(
        k["encoder"], {"last_hidden_state": torch.rand(1, 257, 1280)}), "clip_vision_output", "1280 wide"),
]


def test_there_are_at_least_40_cases(report):
    report(f"bad-input cases: {len(CASES)}")
    assert len(CASES) >= 40


@pytest.mark.parametrize(("action", "input_name", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_early_error(kit, action, input_name, message):
    with pytest.raises(ValueError) as err:
        action(kit)
    text = str(err.value)
    assert text.startswith(f"{input_name}:"), f"the message must name the input first: {text}"
    assert message in text, text
    # raised by the pack's own checks, not from deep inside torch or ComfyUI
    origin = traceback.extract_tb(err.tb)[-1].filename
    assert str(ROOT) in origin and "/site-packages/" not in origin, f"raised in {origin}"


def test_the_pickle_payload_never_ran(kit):
    with pytest.raises(ValueError):
        _load_file("bad_pickle_code.ckpt")(kit)
    assert not kit["marker"].exists()


@pytest.mark.parametrize("reference", [torch.rand(1, 30, 20, 4), torch.rand(1, 30, 20, 1), torch.rand(1, 1, 1, 3),
                                       torch.rand(1, 3000, 2000, 3)], ids=["rgba", "grayscale", "1x1", "very_large"])
def test_unusual_references_work(kit, reference):
    positive, _ = _encode(reference)(kit)
    assert positive[0][0].shape == (1, 1, 768) and torch.isfinite(positive[0][0]).all()


@pytest.mark.parametrize(("height", "width"), [(8, 8), (12, 20), (61, 67)])
def test_tiny_and_off_grid_sources_work(kit, height, width):
    mask = _mask(shape=(1, height, width), box=(width // 4, height // 4, width // 2 + 1, height // 2 + 1))
    image, _ = _sample(source=torch.rand(1, height, width, 3), mask=mask)(kit)
    assert image.shape == (1, height, width, 3)


# ---------------------------------------------------------------------------- inputs stay as they were


def _snapshot(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    return value


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b) or (a.isnan().any() and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return True


def test_no_node_modifies_its_inputs(kit):
    comfy = kit["comfy"]
    reference = torch.rand(1, 50, 40, 4)
    reference_mask = torch.rand(50, 40)
    source = torch.rand(1, H, W, 3) * 1.2 - 0.1  # values outside 0..1 too
    mask = _mask(box=(24, 16, 72, 48)) * 0.9
    second = _mask(box=(0, 0, 40, 40))
    args = {"reference": reference, "reference_mask": reference_mask, "source": source, "mask": mask,
            "second": second, "positive": kit["positive"], "negative": kit["negative"]}
    before = _snapshot(args)
    positive, negative = comfy.node("PaintByExampleEncode")().encode(kit["encoder"], reference, "pad",
                                                                    reference_mask=reference_mask)
    comfy.node("PaintByExampleMaskJitter")().jitter(mask, 3, 0.1, 0.3, 4, 18, "random", batch_size=2)
    image, _ = comfy.node("PaintByExampleSampler")().sample(kit["model"], kit["vae"], positive, negative, source,
                                                            mask, 1, 1, 5.0, "ddim", "ddim_uniform", 1.0)
    info, cropped, cropped_mask = comfy.node("PaintByExampleCrop")().crop(source, mask, 2.0, 64, 4)
    edited = cropped.clone()
    comfy.node("PaintByExampleStitch")().stitch(info, edited)
    assert torch.equal(edited, cropped)
    regional = comfy.node("PaintByExampleRegions")().combine(kit["negative"], exemplar_1=kit["positive"], mask_1=mask,
                                                             exemplar_2=positive, mask_2=second)[0]
    comfy.node("PaintByExampleBlend")().blend(exemplar_1=kit["positive"], weight_1=1.0, exemplar_2=positive,
                                              weight_2=2.0)
    comfy.node("PaintByExampleStrength")().apply(kit["positive"], kit["negative"], 0.5)
    assert len(regional) == 3
    for name, value in before.items():
        assert _same(args[name], value), f"{name} was modified"

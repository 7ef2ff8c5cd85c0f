"""Paint-by-Example Score inside a real ComfyUI: known rankings with the checkpoint's own tower and with
models from ComfyUI's CLIP vision loading, the x100 scale, batch-order independence, one model call
per batch, every error, and saving the best images with their scores in the file names."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors.torch import save_file

from pbe_core import prepare_references
from pbe_core import score as scoring
from pbe_core.clip_vision import transformers_v4_keys
from pbe_core.testing.random_checkpoint import _fill
from test_comfy_nodes import _load
from test_score import likeness_scene

NODE = "PaintByExampleScore"


def _score(comfy, images, mask, reference, top_k=0, margin=10, preprocess="stretch", **models):
    return comfy.node(NODE)().score(images, mask, reference, top_k, margin, preprocess, **models)


def _calls(module: torch.nn.Module) -> list[int]:
    """Batch sizes of every forward call of ``module`` from now on."""
    calls = []
    module.register_forward_hook(lambda _m, args, kwargs, _out: calls.append(
        (args[0] if args else kwargs["pixel_values"]).shape[0]), with_kwargs=True)
    return calls


def _fp32_text_encoders(monkeypatch):
    monkeypatch.setattr(importlib.import_module("comfy.cli_args").args, "fp32_text_enc", True)


def _clip_vision_from_config(comfy, config: dict, sd: dict):
    """ComfyUI's own ClipVisionModel built from a config file, holding ``sd``."""
    clip_vision = importlib.import_module("comfy.clip_vision")
    path = comfy.scratch / f"clip_vision_{config['model_type']}_{config['hidden_size']}.json"
    path.write_text(json.dumps(config))
    model = clip_vision.ClipVisionModel(str(path))
    missing, unexpected = model.load_sd(sd)
    assert not missing and not unexpected
    return model


def _tiny_clip_vision(comfy, tiny_model):
    """The tiny checkpoint's CLIP tower as a ComfyUI CLIP vision model whose projection is the identity,
    so its image_embeds are exactly the pooled embedding the encoder route scores with."""
    width = tiny_model.encoder_sizes.clip_width
    config = {"hidden_size": width, "intermediate_size": tiny_model.encoder_sizes.clip_intermediate,
              "num_hidden_layers": tiny_model.encoder_sizes.clip_layers, "num_attention_heads": 2, "patch_size": 14,
              "image_size": 224, "projection_dim": width, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
              "num_channels": 3, "model_type": "clip_vision_model"}
    clip = {k[len("transformer."):]: v for k, v in tiny_model.encoder.items() if k.startswith("transformer.")}
    sd = transformers_v4_keys(clip)
    sd["visual_projection.weight"] = torch.eye(width)
    return _clip_vision_from_config(comfy, config, sd)


def _random_weights_for(module: torch.nn.Module, seed: int) -> dict:
    return _fill({k: tuple(v.shape) for k, v in module.state_dict().items()}, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ rankings


def test_the_reference_itself_ranks_first_with_the_checkpoints_own_tower(comfy, report):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, best = likeness_scene()
    calls = _calls(encoder.tower_patcher.model)
    sorted_images, sorted_mask, scores, text, names = _score(comfy, images, mask, reference, encoder=encoder)
    report("Score, checkpoint's tower (tiny random): noise/flat/reference/other = "
           + " / ".join(f"{s:.2f}" for s in _in_batch_order(scores, text)))
    assert calls == [len(images) + 1], "one tower call for every region and the reference"
    assert torch.equal(sorted_images[0], images[best]) and torch.equal(sorted_mask[0], mask)
    assert scores == sorted(scores, reverse=True) and all(-100 <= s <= 100 for s in scores)
    assert text.splitlines()[2].split()[:2] == ["1", str(best)] and names[0].startswith(f"rank1_batch{best}_score")


def test_the_reference_itself_ranks_first_with_a_clip_vision_model(comfy, tiny_model, monkeypatch):
    _fp32_text_encoders(monkeypatch)
    _model, _vae, encoder = _load(comfy)
    clip_vision = _tiny_clip_vision(comfy, tiny_model)
    images, mask, reference, best = likeness_scene()
    calls = _calls(clip_vision.model)
    by_clip_vision = _score(comfy, images, mask, reference, clip_vision=clip_vision, encoder=encoder)
    assert calls == [len(images) + 1], "one call, and clip_vision wins over encoder when both are connected"
    assert torch.equal(by_clip_vision[0][0], images[best])
    # the same tower with an identity projection: both routes score the same (up to ComfyUI's 8-bit rounding)
    by_encoder = _score(comfy, images, mask, reference, encoder=encoder)
    assert torch.allclose(torch.tensor(by_clip_vision[2]), torch.tensor(by_encoder[2]), atol=0.05)
    assert "Load CLIP Vision" in by_clip_vision[3] and "own CLIP tower" in by_encoder[3]


def test_a_clip_vision_file_through_comfyuis_own_loader(comfy, tiny_model, report):
    """A real CLIP ViT-L/14 vision file (random weights, fp16 as distributed) in a clip_vision folder,
    loaded by core's Load CLIP Vision with ComfyUI's default precision."""
    folder_paths = comfy.folder_paths
    folder = comfy.models / "clip_vision"
    folder.mkdir(exist_ok=True)
    folder_paths.add_model_folder_path("clip_vision", str(folder), is_default=True)
    comfy.clear_folder_caches()
    path = folder / "clip_vit_l_random.safetensors"
    if not path.exists():
        # ComfyUI's own model class names the tensors, so the file holds exactly what its loader expects
        config = json.loads((comfy.root / "comfy" / "clip_vision_config_vitl.json").read_text())
        shapes = _on_meta(importlib.import_module("comfy.clip_model").CLIPVisionModelProjection, config)
        save_file({k: v.half() for k, v in _random_weights_for(shapes, 3).items()}, str(path))
    clip_vision = comfy.node("CLIPVisionLoader")().load_clip(path.name)[0]
    images, mask, reference, best = likeness_scene()
    calls = _calls(clip_vision.model)
    out = _score(comfy, images[[1, 2, 3]], mask, reference, clip_vision=clip_vision)
    report("Score, ViT-L/14 file via Load CLIP Vision (random, fp16): flat/reference/other = "
           + " / ".join(f"{s:.2f}" for s in _in_batch_order(out[2], out[3])))
    assert calls == [4]
    assert torch.equal(out[0][0], images[best])


def test_dinov2_scores_with_its_class_token(comfy, monkeypatch):
    """ComfyUI's DINOv2 gives the layer-normed class token as image_embeds (the DINO score's embedding)."""
    _fp32_text_encoders(monkeypatch)
    dino2 = importlib.import_module("comfy.image_encoders.dino2")
    config = json.loads((comfy.root / "comfy" / "image_encoders" / "dino2_large.json").read_text())
    config.update(hidden_size=64, num_attention_heads=2, num_hidden_layers=2)
    shapes = _on_meta(dino2.Dinov2Model, config)
    clip_vision = _clip_vision_from_config(comfy, config, _random_weights_for(shapes, 4))
    squares = torch.rand(2, 518, 518, 3)
    output = clip_vision.encode_image(squares, crop=False)
    assert torch.equal(output["image_embeds"], output["last_hidden_state"][:, 0])
    images, mask, reference, best = likeness_scene()
    out = _score(comfy, images, mask, reference, clip_vision=clip_vision)
    assert torch.equal(out[0][0], images[best]) and "DINOv2" in out[3]


def test_siglip_token_embeddings_are_averaged(comfy, monkeypatch):
    _fp32_text_encoders(monkeypatch)
    clip_model = importlib.import_module("comfy.clip_model")
    config = json.loads((comfy.root / "comfy" / "clip_vision_siglip_384.json").read_text())
    config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    shapes = _on_meta(clip_model.CLIPVisionModelProjection, config)
    clip_vision = _clip_vision_from_config(comfy, config, _random_weights_for(shapes, 5))
    images, mask, reference, _best = likeness_scene()
    out = _score(comfy, images, mask, reference, clip_vision=clip_vision)
    assert len(out[2]) == 4 and "SigLIP" in out[3] and all(-100 <= s <= 100 for s in out[2])


# ------------------------------------------------------------------------------------------ the score itself


def test_identical_images_score_100(comfy):
    _model, _vae, encoder = _load(comfy)
    reference = torch.rand(1, 60, 80, 3, generator=torch.Generator().manual_seed(3))
    everything = torch.ones(1, 60, 80)  # the region is the whole image: the same pixels as the reference
    _images, _mask, scores, _text, _names = _score(comfy, reference, everything, reference, encoder=encoder)
    assert scores[0] == pytest.approx(100.0, abs=1e-3)


def test_scores_are_100_times_the_cosine_of_the_towers_embeddings(comfy):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, _best = likeness_scene()
    _images, _mask, scores, text, _names = _score(comfy, images, mask, reference, margin=4, encoder=encoder)
    regions = scoring.region_squares(images, scoring.region_boxes(mask[None].expand(4, -1, -1), 4), 224)
    edits = encoder.image_embeddings(scoring.normalize(regions))
    ref = encoder.image_embeddings(prepare_references(reference, "stretch", 224))
    expected = sorted((100 * torch.nn.functional.cosine_similarity(edits, ref)).tolist(), reverse=True)
    assert scores == pytest.approx(expected, abs=1e-3)


def test_scores_do_not_depend_on_the_batch_order(comfy):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, _best = likeness_scene()
    first = _score(comfy, images, mask, reference, encoder=encoder)
    permutation = [3, 1, 0, 2]
    second = _score(comfy, images[permutation], mask, reference, encoder=encoder)
    assert second[2] == pytest.approx(first[2], abs=1e-4)
    for a, b in zip(first[0], second[0]):
        assert torch.equal(a, b)
    again = _score(comfy, images, mask, reference, encoder=encoder)
    assert again[2] == first[2], "deterministic"


def test_ties_keep_batch_order_and_top_k_cuts(comfy):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, best = likeness_scene()
    doubled = torch.cat([images, images])  # every score twice: the earlier copy comes first
    out = _score(comfy, doubled, mask, reference, top_k=3, encoder=encoder)
    assert out[0].shape[0] == 3 and out[1].shape[0] == 3 and len(out[2]) == 3 and len(out[4]) == 3
    assert out[4][0].startswith(f"rank1_batch{best}_") and out[4][1].startswith(f"rank2_batch{best + 4}_")
    assert out[2][0] == pytest.approx(out[2][1], abs=1e-4)
    assert len(out[3].splitlines()) == 2 + 3
    everything = _score(comfy, images, mask, reference, top_k=100, encoder=encoder)
    assert everything[0].shape[0] == 4


def test_masks_and_references_per_image(comfy):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, best = likeness_scene()
    masks = mask.expand(4, -1, -1).clone()
    masks[0, :10, :10] = 1  # a different region for image 0 only
    references = reference.expand(4, -1, -1, -1)
    out = _score(comfy, images, masks, references, encoder=encoder)
    assert torch.equal(out[0][0], images[best])
    rank_of_image_0 = next(rank for rank, name in enumerate(out[4]) if "_batch0_" in name)
    assert torch.equal(out[1][rank_of_image_0], masks[0]), "each image keeps its own mask"


def test_the_encoder_is_retried_in_halves_when_memory_runs_out(comfy, monkeypatch):
    mm = importlib.import_module("comfy.model_management")
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, _best = likeness_scene()
    expected = _score(comfy, images, mask, reference, encoder=encoder)[2]
    real, calls = encoder.image_embeddings, []

    def small_memory(pixels):
        calls.append(pixels.shape[0])
        if pixels.shape[0] > 2:
            raise mm.OOM_EXCEPTION("out of memory")
        return real(pixels)

    monkeypatch.setattr(encoder, "image_embeddings", small_memory)
    assert _score(comfy, images, mask, reference, encoder=encoder)[2] == pytest.approx(expected, abs=1e-4)
    assert calls[0] == 5


# ------------------------------------------------------------------------------------------ errors and contract


def test_errors_name_the_input(comfy):
    _model, _vae, encoder = _load(comfy)
    images, mask, reference, _best = likeness_scene()
    cases = [
        (dict(mask=torch.cat([mask[None], torch.zeros(1, 96, 128)])[[0, 1, 0, 0]]), "mask: mask 1 is empty"),
        (dict(mask=torch.ones(1, 64, 64)), "mask: it is 64x64 but the images are 128x96"),
        (dict(mask=mask.expand(3, -1, -1)), "mask: there are 3 masks for 4 images"),
        (dict(reference=reference.expand(2, -1, -1, -1)), "reference: there are 2 references for 4 images"),
        (dict(encoder=None), "encoder: nothing to score with.*Load CLIP Vision"),
        (dict(top_k=-1), "top_k"),
        (dict(margin=9999), "margin"),
        (dict(preprocess="squash"), "preprocess"),
        (dict(reference_mask=torch.zeros(1, 80, 60)), "reference: .*empty"),
        (dict(encoder="not an encoder"), "encoder: expected"),
        (dict(clip_vision="not a model"), "clip_vision: expected"),
    ]
    for change, message in cases:
        args = dict(images=images, mask=mask, reference=reference, top_k=0, margin=10, preprocess="stretch",
                    encoder=encoder)
        args.update(change)
        with pytest.raises(ValueError, match=message):
            comfy.node(NODE)().score(**args)


def test_contract_tooltips_and_outputs(comfy):
    cls = comfy.node(NODE)
    spec = cls.INPUT_TYPES()
    inputs = {**spec["required"], **spec["optional"]}
    assert {"images", "mask", "reference", "top_k", "margin", "preprocess"} <= set(spec["required"])
    assert {"encoder", "clip_vision", "reference_mask"} <= set(spec["optional"])
    assert all(options[1]["tooltip"] for options in inputs.values())
    assert "clip_vision is used" in inputs["encoder"][1]["tooltip"]
    assert "Wins over encoder" in inputs["clip_vision"][1]["tooltip"]
    assert cls.RETURN_TYPES == ("IMAGE", "MASK", "FLOAT", "STRING", "STRING")
    assert cls.RETURN_NAMES == ("images", "mask", "scores", "report", "names")
    assert cls.OUTPUT_IS_LIST == (False, False, True, False, True)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) and all(cls.OUTPUT_TOOLTIPS)
    # in an artist's words: the scale, the models it takes, and that scores of different models differ
    assert "100" in cls.DESCRIPTION and "DINOv2" in cls.DESCRIPTION and "not comparable" in cls.DESCRIPTION
    assert comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS[NODE] == "Paint-by-Example Score (exemplar likeness)"


def test_the_best_two_are_saved_with_their_scores_in_the_file_names(comfy):
    """Core nodes only after the score: Rebatch Images splits the kept batch into single images, which
    ComfyUI pairs with the names list, one Save Image run per image."""
    import numpy as np
    from PIL import Image

    images, mask, reference, best = likeness_scene()
    inputs = comfy.scratch / "input"
    for i, image in enumerate(images):
        Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(inputs / f"score_edit_{i}.png")
    Image.fromarray((mask.numpy() * 255).astype(np.uint8)).save(inputs / "score_mask.png")
    Image.fromarray((reference[0].numpy() * 255).round().astype(np.uint8)).save(inputs / "score_reference.png")
    prompt = {
        "loader": {"class_type": "PaintByExampleLoader", "inputs": {"ckpt_name": "pbe_tiny.safetensors"}},
        **{f"edit{i}": {"class_type": "LoadImage", "inputs": {"image": f"score_edit_{i}.png"}} for i in range(4)},
        "b01": {"class_type": "ImageBatch", "inputs": {"image1": ["edit0", 0], "image2": ["edit1", 0]}},
        "b012": {"class_type": "ImageBatch", "inputs": {"image1": ["b01", 0], "image2": ["edit2", 0]}},
        "batch": {"class_type": "ImageBatch", "inputs": {"image1": ["b012", 0], "image2": ["edit3", 0]}},
        "mask": {"class_type": "LoadImageMask", "inputs": {"image": "score_mask.png", "channel": "red"}},
        "reference": {"class_type": "LoadImage", "inputs": {"image": "score_reference.png"}},
        "score": {"class_type": NODE, "inputs": {"images": ["batch", 0], "mask": ["mask", 0],
                                                 "reference": ["reference", 0], "top_k": 2, "margin": 10,
                                                 "preprocess": "stretch", "encoder": ["loader", 2]}},
        "prefix": {"class_type": "StringConcatenate", "inputs": {"string_a": "pbe_best/", "string_b": ["score", 4],
                                                                 "delimiter": ""}},
        "single": {"class_type": "RebatchImages", "inputs": {"images": ["score", 0], "batch_size": 1}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["single", 0], "filename_prefix": ["prefix", 0]}},
    }
    comfy.run(prompt)
    saved = sorted(p.name for p in (comfy.scratch / "output" / "pbe_best").iterdir())
    assert len(saved) == 2
    assert saved[0].startswith(f"rank1_batch{best}_score") and saved[1].startswith("rank2_batch")
    assert float(saved[0].split("_score")[1].split("_")[0]) >= float(saved[1].split("_score")[1].split("_")[0])
    kept = Image.open(comfy.scratch / "output" / "pbe_best" / saved[0])
    assert np.array_equal(np.asarray(kept), np.asarray(Image.open(inputs / f"score_edit_{best}.png")))


def _on_meta(model_class, config: dict) -> torch.nn.Module:
    """A ComfyUI model built on the meta device, only to read its parameter names and shapes."""
    ops = importlib.import_module("comfy.ops").manual_cast
    with torch.device("meta"):
        return model_class(config, torch.float32, "meta", ops)


def _in_batch_order(scores, text):
    rows = [line.split() for line in text.splitlines()[2:]]
    by_index = {int(index): float(value) for _rank, index, value in rows}
    return [by_index[i] for i in sorted(by_index)]

"""No node keeps state between runs: reuse comes from ComfyUI's own cache (the Sampler expands into
ordinary nodes), never from the node objects, which hold nothing. And lists, which ComfyUI cannot
map an expanding node over, are refused with a way out."""

from __future__ import annotations

import pytest
import torch

from comfyui import ExecutionFailed
from test_comfy_crop_stitch import _crop_graph, _large_scene
from test_comfy_nodes import _graph, _scene


def _node_objects(cache):
    """Every node object ComfyUI's executor keeps, subgraphs (node expansions) included."""
    yield from cache.cache.values()
    for subcache in cache.subcaches.values():
        yield from _node_objects(subcache)


def test_no_node_class_of_the_pack_has_an_init(comfy):
    classes = comfy.pack_classes()
    assert {"PaintByExampleSampler", "PaintByExampleInpaintConditioning", "PaintByExamplePasteBack"} <= set(classes)
    for node_id, cls in classes.items():
        assert cls.__init__ is object.__init__, f"{node_id} has an __init__: nodes keep no state"


def test_node_objects_hold_nothing_after_running_graphs(comfy):
    executor = comfy.execution.PromptExecutor(comfy.server)
    source, mask, reference = _scene(comfy, seed=51)
    large = _large_scene(comfy, height=512, width=640, box=(400, 100, 470, 160))
    prompts = [_graph(source, mask, reference, seed=1), _graph(source, mask, reference, seed=2),
               _crop_graph(*large, resolution=128)]
    for i, prompt in enumerate(prompts):
        executor.execute(prompt, f"state-{i}", {}, ["7"])
        assert executor.success
    classes = set(comfy.pack_classes().values())
    kept = [obj for obj in _node_objects(executor.caches.objects) if type(obj) in classes]
    names = {type(obj).__name__ for obj in kept}
    assert {"PaintByExampleSampler", "PaintByExampleSourceLatent", "PaintByExampleEncodeSource",
            "PaintByExampleAttachSource", "PaintByExamplePasteBack", "PaintByExampleCrop", "PaintByExampleStitch", "PaintByExampleEncode"} <= names
    for obj in kept:
        assert not vars(obj), f"{type(obj).__name__} keeps {sorted(vars(obj))} between runs"


def test_a_new_seed_serves_the_source_encode_from_comfyuis_cache(comfy, monkeypatch):
    """The Sampler's expansion: on a re-roll ComfyUI serves Encode Source (and so both VAE encodes)
    and Attach Source from its cache and runs only KSampler and Paste Back again."""
    ran = []
    encode_and_attach = ["PaintByExampleEncodeSource", "PaintByExampleAttachSource"]
    for node_id in (*encode_and_attach, "PaintByExamplePasteBack"):
        cls = comfy.node(node_id)
        plain = getattr(cls, cls.FUNCTION)
        monkeypatch.setattr(cls, cls.FUNCTION, lambda self, *a, _plain=plain, _id=node_id, **k: ran.append(_id)
                            or _plain(self, *a, **k))
    source, mask, reference = _scene(comfy, seed=52)
    executor = comfy.execution.PromptExecutor(comfy.server)
    for seed in (1, 2, 3):
        ran.clear()
        executor.execute(_graph(source, mask, reference, seed=seed), f"expand-{seed}", {}, ["7"])
        assert executor.success
        assert ran == (encode_and_attach if seed == 1 else []) + ["PaintByExamplePasteBack"]
    ran.clear()
    executor.execute(_graph(source, mask, reference, seed=3, denoise=0.8), "expand-denoise", {}, ["7"])
    assert ran == [*encode_and_attach, "PaintByExamplePasteBack"], "below denoise 1: a new start"


def _list_of_two(graph: dict) -> dict:
    graph["20"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 2}}
    graph["21"] = {"class_type": "RebatchImages", "inputs": {"images": ["20", 0], "batch_size": 1}}
    return graph


def test_a_list_into_the_sampler_is_refused_with_a_way_out(comfy):
    source, mask, reference = _scene(comfy, seed=53)
    graph = _list_of_two(_graph(source, mask, reference))
    graph["6"]["inputs"]["source"] = ["21", 0]
    with pytest.raises(ExecutionFailed) as err:
        comfy.run(graph)
    assert "source: a list of 2 reached the Sampler" in err.value.message
    assert "Inpaint Conditioning -> KSampler -> Paint-by-Example Paste Back" in err.value.message


def test_the_three_node_route_runs_once_per_list_item(comfy):
    source, mask, reference = _scene(comfy, seed=54)
    graph = _list_of_two(_graph(source, mask, reference))
    del graph["6"]
    graph.update({
        "30": {"class_type": "PaintByExampleInpaintConditioning", "inputs": {
            "positive": ["5", 0], "negative": ["5", 1], "vae": ["1", 1], "source": ["21", 0], "mask": ["3", 0],
            "noise_mask": True, "start": "noise"}},
        "31": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
            "positive": ["30", 0], "negative": ["30", 1], "latent_image": ["30", 2], "denoise": 1.0}},
        "32": {"class_type": "PaintByExamplePasteBack", "inputs": {
            "vae": ["1", 1], "latent": ["31", 0], "source": ["21", 0], "mask": ["3", 0], "blend": 0}},
    })
    graph["7"]["inputs"]["images"] = ["32", 0]
    executor = comfy.execution.PromptExecutor(comfy.server)
    executor.execute(graph, "list-route", {}, ["7"])
    assert executor.success
    images = executor.caches.outputs.get("32")[0]
    original = executor.caches.outputs.get("2")[0][0]
    edit = executor.caches.outputs.get("3")[0][0][0] > 0.5
    assert len(images) == 2
    for image in images:
        assert image.shape == original.shape and torch.equal(image[0][~edit], original[0][~edit])


def test_the_sampler_called_from_python_equals_the_expanded_graph(comfy):
    """Outside an executor the Sampler runs the same three steps itself (with ComfyUI's sampling
    functions instead of core's KSampler node): the same latent and image."""
    source, mask, reference = _scene(comfy, seed=55)
    graph = _graph(source, mask, reference, seed=9, steps=3)
    out = comfy.run(graph, ["1", "2", "3", "5", "6"])
    model, vae, _encoder = out["1"]
    positive, negative = out["5"]
    with torch.inference_mode():  # as the executor runs nodes (its outputs are inference tensors)
        image, latent = comfy.node("PaintByExampleSampler")().sample(
            model, vae, positive, negative, out["2"][0], out["3"][0], 9, 3, 5.0, "ddim", "ddim_uniform", 1.0)
    assert torch.equal(latent["samples"], out["6"][1]["samples"])
    assert torch.equal(image, out["6"][0])

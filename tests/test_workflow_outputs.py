"""What the issue-18 example workflows give, run headless with the tiny model: the best 2 of 8 edits saved with
their ranks and scores in the file names, and the seamless large-image edit with every pixel outside the mask and
the Crop's band kept."""

from __future__ import annotations

import json

import torch

from pbe_core.masks import paste_alpha
from test_workflows import FAST, ROOT, workflow_files  # noqa: F401  (a fixture)


def _prompt(name):
    prompt = json.loads((ROOT / "workflows" / "api" / f"{name}.json").read_text())
    for node in prompt.values():
        node["inputs"].update({k: v for k, v in FAST.items() if k in node["inputs"]})
    return prompt


def _node(prompt, class_type):
    (node_id,) = [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]
    return node_id


def test_the_best_2_of_8_are_saved_with_their_scores_in_the_names(comfy, workflow_files):  # noqa: F811
    prompt = _prompt("Paint-by-Example - best 2 of 8 seeds")
    folder = comfy.scratch / "output" / "pbe_best"
    before = set(folder.iterdir()) if folder.exists() else set()
    score, sampler = _node(prompt, "PaintByExampleScore"), _node(prompt, "PaintByExampleSampler")
    valid, error, saving, _node_errors = comfy.validate(prompt)
    assert valid, error
    executor = comfy.execution.PromptExecutor(comfy.server)
    executor.execute(prompt, "best-of-8", {}, list(saving) + [score, sampler])
    assert executor.success

    def outputs(node_id):  # whole lists (scores and names are lists)
        entry = executor.caches.outputs.get(node_id)
        return entry.outputs if hasattr(entry, "outputs") else entry

    (images,), _mask, scores, (report,), names = outputs(score)
    edits = outputs(sampler)[0][0]
    assert edits.shape[0] == 8 and images.shape[0] == 2 and len(scores) == 2 and scores[0] >= scores[1]
    assert len({tuple(edit.flatten()[::97].tolist()) for edit in edits}) == 8, "eight different edits"
    saved = sorted(path.name for path in set(folder.iterdir()) - before)
    assert len(saved) == 2, saved
    for rank, (file_name, name, value) in enumerate(zip(saved, names, scores), start=1):
        assert file_name.startswith(f"{name}_") and name.startswith(f"rank{rank}_batch")
        assert abs(float(name.split("_score")[1]) - value) < 0.01
    assert len(report.splitlines()) == 2 + 2


def test_the_seamless_large_edit_keeps_every_pixel_outside_the_band(comfy, workflow_files):  # noqa: F811
    prompt = _prompt("Paint-by-Example - large image (seamless blend)")
    sampler, stitch = _node(prompt, "PaintByExampleSampler"), _node(prompt, "PaintByExampleStitch")
    (load,) = [node_id for node_id, node in prompt.items()
               if node["class_type"] == "LoadImage" and node["inputs"]["image"] == "pbe_large_source.png"]
    settings = prompt[sampler]["inputs"]
    assert settings["blend"] > 0 and settings["blend_mode"] == "multiband" and settings["color_match"] == "local"
    assert prompt[stitch]["inputs"]["blend_mode"] == "multiband"
    out = comfy.run(prompt, [load, stitch])
    source, mask = out[load]
    image = out[stitch][0]
    assert image.shape == source.shape == (1, 768, 1024, 3)
    alpha = paste_alpha(mask[0], 16)
    assert torch.equal(image[0][alpha == 0], source[0][alpha == 0])
    assert (image[0][mask[0] >= 0.5] - source[0][mask[0] >= 0.5]).abs().mean() > 0.01, "the region was edited"

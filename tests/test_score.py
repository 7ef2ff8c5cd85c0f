"""Exemplar likeness scores (pbe_core.score): regions, preprocessing, cosine x100, ranking, report.
The model-backed rankings run inside ComfyUI in test_comfy_score.py; here the tiny checkpoint's own
CLIP tower is built with pbe_core alone."""

from __future__ import annotations

import pytest
import torch

from pbe_core import build_encoder, prepare_references
from pbe_core import score
from pbe_core.reference import resize


def _mask(height, width, box, batch=1):
    x0, y0, x1, y1 = box
    mask = torch.zeros(batch, height, width)
    mask[:, y0:y1, x0:x1] = 1
    return mask


# ------------------------------------------------------------------------------------------ regions


def test_region_boxes_grow_by_the_margin_and_stay_inside_the_image():
    masks = torch.cat([_mask(50, 60, (20, 10, 30, 40)), _mask(50, 60, (0, 45, 5, 50)), _mask(50, 60, (3, 3, 57, 47))])
    assert score.region_boxes(masks, 10) == [(10, 0, 40, 50), (0, 35, 15, 50), (0, 0, 60, 50)]
    assert score.region_boxes(masks, 0) == [(20, 10, 30, 40), (0, 45, 5, 50), (3, 3, 57, 47)]


def test_region_boxes_follow_the_repainted_part_of_soft_masks():
    mask = torch.zeros(1, 40, 40)
    mask[0, 5:35, 5:35] = 0.3  # feathered, not repainted
    mask[0, 10:20, 12:30] = 0.5  # repainted (the >= 0.5 rule)
    assert score.region_boxes(mask, 2) == [(10, 8, 32, 22)]


def test_an_empty_mask_is_named():
    masks = torch.cat([_mask(20, 20, (2, 2, 8, 8)), torch.full((1, 20, 20), 0.49)])
    with pytest.raises(ValueError, match="mask: mask 1 is empty"):
        score.region_boxes(masks, 10)
    with pytest.raises(ValueError, match="margin"):
        score.region_boxes(masks[:1], -1)


def test_region_squares_squash_the_region_as_references_are_squashed():
    images = torch.rand(2, 50, 70, 3, generator=torch.Generator().manual_seed(0))
    boxes = [(10, 5, 40, 45), (0, 0, 70, 50)]
    squares = score.region_squares(images, boxes, 32)
    assert squares.shape == (2, 3, 32, 32)
    assert torch.equal(squares[0], resize(images[0, 5:45, 10:40].movedim(-1, 0), 32, 32))
    # the whole image as a region is exactly the reference preprocessing of that image ("stretch")
    assert torch.allclose(score.normalize(squares[1:]), prepare_references(images[1:], "stretch", 32), atol=1e-6)


def test_reference_squares_are_the_encoders_preprocessing_before_normalisation():
    reference = torch.rand(2, 40, 30, 4, generator=torch.Generator().manual_seed(1))  # RGBA: alpha marks the object
    for mode in ("stretch", "center_crop", "pad"):
        squares = score.reference_squares(reference, mode, 48)
        assert squares.shape == (2, 3, 48, 48) and squares.min() >= 0 and squares.max() <= 1
        assert torch.allclose(score.normalize(squares), prepare_references(reference, mode, 48), atol=1e-5)


# ------------------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(("images", "mask", "reference", "message"), [
    (torch.rand(2, 32, 32), _mask(32, 32, (1, 1, 9, 9)), torch.rand(1, 8, 8, 3), "images: expected an IMAGE"),
    (torch.rand(0, 32, 32, 3), _mask(32, 32, (1, 1, 9, 9)), torch.rand(1, 8, 8, 3), "images: the batch is empty"),
    (torch.rand(2, 32, 32, 3), _mask(32, 40, (1, 1, 9, 9)), torch.rand(1, 8, 8, 3),
     "mask: it is 40x32 but the images are 32x32"),
    (torch.rand(3, 32, 32, 3), _mask(32, 32, (1, 1, 9, 9), batch=2), torch.rand(1, 8, 8, 3),
     "mask: there are 2 masks for 3 images"),
    (torch.rand(3, 32, 32, 3), _mask(32, 32, (1, 1, 9, 9)), torch.rand(2, 8, 8, 3),
     "reference: there are 2 references for 3 images"),
    (torch.full((1, 32, 32, 3), float("nan")), _mask(32, 32, (1, 1, 9, 9)), torch.rand(1, 8, 8, 3), "images: .*NaN"),
])
def test_input_errors_name_the_input(images, mask, reference, message):
    with pytest.raises(ValueError, match=message):
        score.check_inputs(images, mask, reference)


def test_one_mask_serves_every_image_and_channels_become_rgb():
    rgb, masks = score.check_inputs(torch.rand(3, 16, 24, 1), _mask(16, 24, (2, 2, 6, 6))[0], torch.rand(3, 8, 8, 3))
    assert rgb.shape == (3, 16, 24, 3) and masks.shape == (3, 16, 24)
    assert torch.equal(rgb[..., 0], rgb[..., 2])


# ------------------------------------------------------------------------------------------ scores and ranking


def test_cosine_scores_are_the_papers_x100_scale():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-2.0, -4.0, -6.0]])
    reference = torch.tensor([[1.0, 2.0, 3.0]])
    scores = score.cosine_scores(a, reference)
    assert scores.dtype == torch.float64
    assert scores[0].item() == pytest.approx(100.0, abs=1e-9), "the same direction scores 100"
    assert scores[3].item() == pytest.approx(-100.0, abs=1e-9), "the opposite direction scores -100"
    assert scores[1].item() == pytest.approx(100 / 14 ** 0.5, abs=1e-9)
    assert torch.equal(score.cosine_scores(a * 7.5, reference), scores), "the length of an embedding does not count"
    per_edit = score.cosine_scores(a[:2], torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
    assert per_edit.tolist() == pytest.approx([100.0, 0.0], abs=1e-9)
    with pytest.raises(ValueError):
        score.cosine_scores(a, torch.ones(2, 3))


def test_ranking_is_best_first_keeps_ties_in_batch_order_and_cuts_at_top_k():
    scores = [50.0, 90.0, 70.0, 90.0, 10.0, 70.0]
    assert score.ranking(scores) == [1, 3, 2, 5, 0, 4]
    assert score.ranking(scores, 2) == [1, 3]
    assert score.ranking(scores, 99) == [1, 3, 2, 5, 0, 4]
    with pytest.raises(ValueError, match="top_k"):
        score.ranking(scores, -1)


def test_report_and_names():
    scores = [12.5, 87.314, -3.0]
    order = score.ranking(scores, 2)
    text = score.report_text(order, scores, "some model")
    lines = text.splitlines()
    assert "some model" in lines[0] and "3 images" in lines[0] and "best 2" in lines[0]
    assert lines[2].split() == ["1", "1", "87.31"] and lines[3].split() == ["2", "0", "12.50"]
    assert len(lines) == 4
    assert score.score_names(order, scores) == ["rank1_batch1_score87.31", "rank2_batch0_score12.50"]
    assert "all kept" in score.report_text(score.ranking(scores), scores, "m")


def test_embed_all_makes_one_call_and_halves_only_when_out_of_memory():
    calls = []

    def embed(x):
        calls.append(x.shape[0])
        return x.flatten(1) * 2

    pixels = torch.rand(9, 3, 4, 4)
    assert torch.equal(score.embed_all(embed, pixels, (MemoryError,)), pixels.flatten(1) * 2)
    assert calls == [9]

    calls.clear()

    def small_memory(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise MemoryError("out of memory")
        return x.flatten(1) * 2

    assert torch.equal(score.embed_all(small_memory, pixels, (MemoryError,)), pixels.flatten(1) * 2)
    assert calls[:3] == [9, 4, 2] and sum(c for c in calls if c <= 2) == 9  # halves until it fits
    with pytest.raises(MemoryError):
        score.embed_all(lambda x: (_ for _ in ()).throw(MemoryError()), pixels, (MemoryError,))
    with pytest.raises(RuntimeError):  # other errors are not retried
        score.embed_all(lambda x: (_ for _ in ()).throw(RuntimeError()), pixels, (MemoryError,))


def test_pooled_averages_per_token_embeddings():
    tokens = torch.rand(2, 5, 8)
    assert torch.allclose(score.pooled(tokens), tokens.mean(dim=1))
    assert torch.equal(score.pooled(tokens[:, 0]), tokens[:, 0])
    with pytest.raises(ValueError):
        score.pooled(torch.rand(8))


# ------------------------------------------------------------------------------------------ with the tiny tower


def test_the_tiny_towers_scores_rank_the_reference_first(tiny_model):
    encoder = build_encoder(tiny_model.encoder)

    def embed(pixels):
        with torch.no_grad():
            return encoder.head.embedding(encoder.tower(pixels))

    images, mask, reference, best = likeness_scene()
    rgb, masks = score.check_inputs(images, mask, reference)
    regions = score.region_squares(rgb, score.region_boxes(masks, 10), 224)
    references = score.reference_squares(reference, "stretch", 224)
    embeddings = embed(score.normalize(torch.cat([regions, references])))
    scores = score.cosine_scores(embeddings[:-1], embeddings[-1:])
    assert score.ranking(scores.tolist())[0] == best
    assert scores.abs().max() <= 100


def likeness_scene(height=96, width=128, seed=0):
    """Four edits of one source: the reference itself resized into the mask's box (index 2), noise,
    a flat colour, and another picture. Returns (images, mask, reference, index of the best)."""
    g = torch.Generator().manual_seed(seed)

    def picture(h, w, cells):
        coarse = torch.rand(1, 3, cells, cells, generator=g)
        return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)

    source = picture(height, width, 5).movedim(0, -1)
    reference = picture(80, 60, 3)  # (3, H, W)
    other = picture(70, 90, 8)
    x0, y0, x1, y1 = 40, 20, 88, 84
    mask = _mask(height, width, (x0, y0, x1, y1))[0]
    contents = [torch.rand(3, y1 - y0, x1 - x0, generator=g),
                torch.tensor([204, 64, 77])[:, None, None].expand(3, y1 - y0, x1 - x0) / 255,  # 8-bit exact
                resize(reference, y1 - y0, x1 - x0),
                resize(other, y1 - y0, x1 - x0)]
    images = source.expand(len(contents), -1, -1, -1).clone()
    for image, content in zip(images, contents):
        image[y0:y1, x0:x1] = content.movedim(0, -1)
    return images, mask, reference.movedim(0, -1)[None], 2

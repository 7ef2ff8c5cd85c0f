"""Pick the best of a batch of edits by exemplar likeness (the paper's CLIP score)."""

from __future__ import annotations

from typing import Callable, NamedTuple

import comfy.model_management as mm
import torch

from ..pbe_core import PREPROCESS_MODES
from ..pbe_core import score as scoring
from .inputs import check_range, user_error

MAX_TOP_K = 4096


class PaintByExampleScore:
    DESCRIPTION = (
        "Scores each edit of a batch by how much its repainted region looks like the reference, and sorts the batch "
        "best first. The score is the one the Paint-by-Example paper reports (CLIP score): how alike an image "
        "model finds the reference and the mask's box (plus a margin) cut from the edit, from -100 to 100; higher = "
        "more alike. It uses the reference reader already in the Paint-by-Example checkpoint (the loader's encoder: "
        "nothing to download), or any model from Load CLIP Vision (CLIP ViT-L/H/G, or DINOv2 for the 'DINO score' "
        "later exemplar papers report). Scores from different models are not comparable with each other. Render "
        "several seeds in one batch, score, keep the best.")
    CATEGORY = "image/paint by example"
    RETURN_TYPES = ("IMAGE", "MASK", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("images", "mask", "scores", "report", "names")
    OUTPUT_IS_LIST = (False, False, True, False, True)
    OUTPUT_TOOLTIPS = (
        "The edits, best first (only the best top_k when top_k is above 0).",
        "Their masks in the same order.",
        "Their scores in the same order, as a list (-100 to 100; 100 = the same image embedding).",
        "A readable table: rank, batch index (counted from 0) and score of each image kept.",
        "One label per image kept, like rank1_batch3_score87.31: link it to Save Image's filename_prefix (after "
        "Rebatch Images with batch_size 1) to put the score in the file name.",
    )
    FUNCTION = "score"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The edits to compare, as one batch (e.g. the Sampler run with several "
                                                "seeds, or with several jittered masks)."}),
                "mask": ("MASK", {"tooltip": "The mask the edits were made with: one for all images, or one per "
                                             "image. Its white (repainted) part is what gets compared."}),
                "reference": ("IMAGE", {"tooltip": "The exemplar the edits should look like: one for all images, or "
                                                   "one per image."}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": MAX_TOP_K, "step": 1,
                                  "tooltip": "How many of the best images to keep; 0 keeps them all (sorted)."}),
                "margin": ("INT", {"default": 10, "min": 0, "max": 512, "step": 1,
                                   "tooltip": "Pixels kept around the mask's box when the region is cut from each edit "
                                              "(and around the object when a reference mask is given). The model "
                                              "was trained on object crops with 10."}),
                "preprocess": (list(PREPROCESS_MODES), {
                    "default": "stretch",
                    "tooltip": "How the reference becomes a square, as in Paint-by-Example Encode: stretch (the "
                               "authors' way, and how the edit regions are always cut), center_crop or pad."}),
            },
            "optional": {
                "encoder": ("PBE_ENCODER", {
                    "tooltip": "Score with the Paint-by-Example checkpoint's own CLIP tower (from the loader; "
                               "nothing else to download). Connect this or clip_vision; if both are connected, "
                               "clip_vision is used."}),
                "clip_vision": ("CLIP_VISION", {
                    "tooltip": "Score with a model from Load CLIP Vision instead (CLIP ViT-L/H/G, or DINOv2 for a DINO "
                               "score). Wins over encoder when both are connected."}),
                "reference_mask": ("MASK", {
                    "tooltip": "Marks the object in the reference, as in Paint-by-Example Encode: the background is "
                               "painted white and the reference is cut to the object plus the margin."}),
            },
        }

    def score(self, images, mask, reference, top_k, margin, preprocess, encoder=None, clip_vision=None,
              reference_mask=None):
        check_range("top_k", top_k, 0, MAX_TOP_K)
        check_range("margin", margin, 0, 512)
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess: {preprocess!r} is not one of {', '.join(PREPROCESS_MODES)}")
        tower = _tower(encoder, clip_vision)
        rgb, masks = scoring.check_inputs(images, mask, reference)
        regions = scoring.region_squares(rgb, scoring.region_boxes(masks, margin), tower.size)
        with user_error("reference"):
            references = scoring.reference_squares(reference, preprocess, tower.size, reference_mask, margin)
        # one model call for every region and reference (halved only if it runs out of memory)
        embeddings = scoring.embed_all(tower.embed, torch.cat([regions, references]), (mm.OOM_EXCEPTION,))
        scores = scoring.cosine_scores(embeddings[:len(regions)], embeddings[len(regions):]).tolist()
        order = scoring.ranking(scores, top_k)
        index = torch.tensor(order, dtype=torch.long)
        return (images[index], masks[index], [scores[i] for i in order],
                scoring.report_text(order, scores, tower.description), scoring.score_names(order, scores))


class _Tower(NamedTuple):
    """One image tower behind a common face."""

    size: int  # the side of the squares it takes
    embed: Callable[[torch.Tensor], torch.Tensor]  # (B, 3, size, size) in 0..1 -> (B, width)
    description: str  # for the report


def _tower(encoder, clip_vision) -> _Tower:
    if clip_vision is not None:
        if not callable(getattr(clip_vision, "encode_image", None)):
            raise ValueError("clip_vision: expected a model from Load CLIP Vision")
        return _Tower(int(getattr(clip_vision, "image_size", 224)),
                      lambda squares: _clip_vision_embed(clip_vision, squares), _describe(clip_vision))
    if encoder is not None:
        if not callable(getattr(encoder, "image_embeddings", None)):
            raise ValueError("encoder: expected the encoder output of a Paint-by-Example loader")
        return _Tower(encoder.image_size, lambda squares: encoder.image_embeddings(scoring.normalize(squares)),
                      "the checkpoint's own CLIP tower, pooled embedding")
    raise ValueError("encoder: nothing to score with. Connect the encoder of a Paint-by-Example loader, or a model "
                     "from Load CLIP Vision to clip_vision")


def _clip_vision_embed(clip_vision, squares: torch.Tensor) -> torch.Tensor:
    # The squares already have the model's size, so encode_image only rounds to 8 bits and normalises
    # with the model's own mean and std (ImageNet's for DINOv2); crop=False keeps the whole square.
    output = clip_vision.encode_image(squares.movedim(1, -1), crop=False)
    return scoring.pooled(output["image_embeds"])


def _describe(clip_vision) -> str:
    kind = type(getattr(clip_vision, "model", None)).__name__.lower()
    if "dino" in kind:
        return "DINOv2 from Load CLIP Vision, class token"
    if getattr(clip_vision, "return_all_hidden_states", False):
        return "SigLIP from Load CLIP Vision, mean of its tokens"
    return "CLIP vision from Load CLIP Vision, image embedding"

"""ComfyUI nodes of the pack: thin adapters between ComfyUI and pbe_core."""

from __future__ import annotations

import importlib
import importlib.util
import logging

log = logging.getLogger(__name__)

# module -> {node id: display name}. Node ids are a public contract: never rename or remove one.
_NODES = {
    "loaders": {"PaintByExampleLoader": "Paint-by-Example Loader",
                "PaintByExampleDiffusersLoader": "Paint-by-Example Loader (diffusers folder)"},
    "encode": {"PaintByExampleEncode": "Paint-by-Example Encode (exemplar)"},
    "mask_jitter": {"PaintByExampleMaskJitter": "Paint-by-Example Mask Jitter"},
    "sampler": {"PaintByExampleSampler": "Paint-by-Example Sampler"},
    "inpaint_conditioning": {"PaintByExampleInpaintConditioning": "Paint-by-Example Inpaint Conditioning",
                             "PaintByExampleEncodeSource": "Paint-by-Example Encode Source",
                             "PaintByExampleAttachSource": "Paint-by-Example Attach Source"},
    "source_latent": {"PaintByExampleSourceLatent": "Paint-by-Example Source Latent"},
    "paste_back": {"PaintByExamplePasteBack": "Paint-by-Example Paste Back (decode into source)"},
    "crop_stitch": {"PaintByExampleCrop": "Paint-by-Example Crop (around mask)",
                    "PaintByExampleStitch": "Paint-by-Example Stitch (back into source)"},
    "exemplars": {"PaintByExampleRegions": "Paint-by-Example Regions (several exemplars)",
                  "PaintByExampleBlend": "Paint-by-Example Blend Exemplars",
                  "PaintByExampleStrength": "Paint-by-Example Exemplar Strength",
                  "PaintByExampleEncodeCLIPVision": "Paint-by-Example Encode (from CLIP Vision output)"},
    "score": {"PaintByExampleScore": "Paint-by-Example Score (exemplar likeness)"},
}

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

# Imported outside ComfyUI (a test runner collecting the pack, a linter): register nothing, quietly.
_IN_COMFYUI = importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None

for _module, _names in _NODES.items() if _IN_COMFYUI else ():
    try:
        _loaded = importlib.import_module(f".{_module}", __name__)
    except Exception:  # one broken module must not take the whole pack down
        log.exception("Paint-by-Example: the nodes %s could not be loaded", ", ".join(_names))
        continue
    for _id, _display in _names.items():
        NODE_CLASS_MAPPINGS[_id] = getattr(_loaded, _id)
        NODE_DISPLAY_NAME_MAPPINGS[_id] = _display

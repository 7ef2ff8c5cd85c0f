"""One rule for soft masks in the Sampler, Paste Back and Stitch: values at or above 0.5 are repainted
(blanked for the model, regenerated); the paste-back alpha is max(mask, feather(mask >= 0.5, blend)),
so the repainted region takes the edit whole and softer values blend it in by their value; where
the alpha is 0 the source's pixel is kept bit for bit."""

from __future__ import annotations

import torch

from pbe_core.crop import plan_crop, stitch
from pbe_core.masks import binarize, feather, paste_alpha
from test_comfy_nodes import _load

H, W = 64, 96


def _soft_mask(height=H, width=W):
    """A core at 1, a ring at 0.7 (repainted), a ring at 0.3 (blended) and a far patch at 0.2."""
    mask = torch.zeros(height, width)
    mask[8:56, 16:80] = 0.3
    mask[16:48, 24:72] = 0.7
    mask[24:40, 32:64] = 1.0
    mask[2:5, 88:92] = 0.2
    return mask


def test_paste_alpha_follows_the_rule():
    mask = _soft_mask()
    alpha = paste_alpha(mask)
    assert torch.equal(alpha[mask >= 0.5], torch.ones(int((mask >= 0.5).sum()))), "repainted: the edit, whole"
    assert torch.equal(alpha[mask < 0.5], mask[mask < 0.5]), "softer: blended by the mask's own value"
    wide = paste_alpha(mask, 6)
    assert (wide >= alpha).all() and torch.equal(wide, torch.maximum(mask, feather(binarize(mask), 6)))
    assert (wide[mask == 0.3] > 0.3).any(), "the blend band ramps out from the repainted region"
    assert torch.equal(wide[mask == 0], torch.zeros(int((mask == 0).sum()))), "beyond the band and the mask: 0"


def test_the_sampler_repaints_at_0_5_and_blends_below(comfy):
    model, vae, encoder = _load(comfy)
    source, mask = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(4)), _soft_mask()[None]
    positive, negative = comfy.node("PaintByExampleEncode")().encode(encoder, torch.rand(1, 40, 40, 3), "stretch")
    prepared_positive, _negative, prepared = comfy.node("PaintByExampleInpaintConditioning")().prepare(
        positive, negative, vae, source, mask)
    repainted = (mask >= 0.5).float()[:, None]
    assert torch.equal(prepared_positive[0][1]["concat_mask"], repainted), "the model's mask: >= 0.5"
    assert torch.equal(prepared["noise_mask"], repainted), "the sampler's mask: >= 0.5"

    image, latent = comfy.node("PaintByExampleSampler")().sample(model, vae, positive, negative, source, mask, 2, 2,
                                                                 5.0, "ddim", "ddim_uniform", 1.0)
    decoded = vae.decode(latent["samples"])[..., :3]
    m = mask[0]
    assert torch.equal(image[0][m == 0], source[0][m == 0]), "alpha 0: the source, bit for bit"
    assert torch.equal(image[0][m >= 0.5], decoded[0][m >= 0.5]), "repainted: the edit, whole"
    soft = (m > 0) & (m < 0.5)
    blended = source[0] * (1 - m[..., None]) + decoded[0] * m[..., None]
    assert torch.allclose(image[0][soft], blended[soft], atol=1e-6), "softer values blend by their value"

    pasted = comfy.node("PaintByExamplePasteBack")().paste(vae, latent, source, mask, 0)[0]
    assert torch.equal(pasted, image), "Paste Back after KSampler gives the Sampler's image"
    wide = comfy.node("PaintByExamplePasteBack")().paste(vae, latent, source, mask, 12)[0]
    alpha = paste_alpha(m, 12)  # reaches 4 pixels past the 0.3 ring
    assert torch.equal(wide[0][alpha == 0], source[0][alpha == 0])
    assert (wide[0][(alpha > 0) & (m == 0)] != source[0][(alpha > 0) & (m == 0)]).any(), "the band blends outward"


def test_stitch_follows_the_same_rule():
    mask = torch.zeros(400, 400)
    mask[100:300, 100:300] = 0.3
    mask[150:250, 150:250] = 1.0
    source, white = torch.zeros(400, 400, 3), torch.ones(256, 256, 3)
    box = plan_crop(mask, 2.0, 256, blend=10)
    out = stitch(source, white, mask, box, blend=10)[..., 0]
    alpha = paste_alpha(mask, 10)
    inside = torch.zeros(400, 400, dtype=torch.bool)
    ix0, iy0, ix1, iy1 = box.inside(400, 400)
    inside[iy0:iy1, ix0:ix1] = True
    assert torch.equal(out[alpha == 0], torch.zeros(int((alpha == 0).sum()))), "alpha 0: the source, bit for bit"
    assert torch.allclose(out[inside], alpha[inside], atol=1e-6), "white over black shows the alpha itself"
    assert torch.allclose(out[120, 110], torch.tensor(0.3)), "a soft value far from the repainted region blends"

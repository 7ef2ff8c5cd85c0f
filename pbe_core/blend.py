"""Seamless paste-back: a multi-band blend over the feather band, and a colour match.

Both work through the paste-back alpha (``masks.paste_alpha``): 1 over the repainted region, a
ramp down to 0 over ``band`` pixels outside it. Where alpha is 0 the result is the source's pixel,
bit for bit; where it is 1 it is the edit's (after the colour match, when one is asked for).

- The multi-band blend splits the difference between edit and source into frequency bands and
  gives each band its own ramp: fine detail switches from edit to source over a few pixels in the
  middle of the band (no ghosted, washed-out double texture), while broad colour and shading
  fade over the whole band. Every ramp lies inside the band, so nothing outside it moves.
- The colour match undoes the VAE's colour shift: the decoded edit should equal the source just
  outside the mask, so the difference measured on that ring is the shift; the edit is moved by
  it (one offset per channel, or a smooth offset field that follows the ring), and the seam goes.
  It needs the edit as decoded, before any paste-back (a pasted edit has no shift left to measure).

Images are float (H, W, C) or (B, H, W, C); alpha is (H, W) or (B, H, W) in 0..1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BLENDS = ("linear", "multiband")
COLOUR_MATCHES = ("off", "mean", "local")
# The ring that measures the colour shift is at least this wide, so a zero-width band still has one.
MIN_RING = 4


def paste(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor, band: int, blend: str = "linear",
          colour_match: str = "off") -> torch.Tensor:
    """The edit over the source through ``alpha`` (whose ramp is ``band`` pixels wide): the
    ``blend`` ("linear": the feather itself; "multiband") after the ``colour_match`` ("off", "mean",
    "local"). Pixels where alpha is 0 are the source's, bit for bit."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    if colour_match not in COLOUR_MATCHES:
        raise ValueError(f"colour_match must be one of {', '.join(COLOUR_MATCHES)}, got {colour_match!r}")

    def work(s, e, a):
        if colour_match != "off":
            e = _match_region(s, e, a, band, colour_match)
        return _multiband_region(s, e, a, band) if blend == "multiband" else _linear_region(s, e, a)

    return _composite_in_support(source, edit, alpha, _context(band, blend, colour_match), work)


def linear_blend(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``source * (1 - alpha) + edit * alpha``; the source's own pixel where alpha is 0."""
    return _composite_in_support(source, edit, alpha, 0, _linear_region)


def multiband_blend(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor, band: int) -> torch.Tensor:
    """Blend ``edit`` into ``source`` band by band (a Laplacian stack of their difference): detail at
    scale s (2, 4, 8, ... pixels, below the band's width) switches over s pixels in the middle of the
    band, coarser content follows ``alpha`` itself. Pixels where alpha is 0 are the source's exactly,
    pixels where alpha is 1 the edit's."""
    return _composite_in_support(source, edit, alpha, _context(band, "multiband", "off"),
                                 lambda s, e, a: _multiband_region(s, e, a, band))


def match_colours(source: torch.Tensor, edit: torch.Tensor, alpha: torch.Tensor, band: int,
                  mode: str = "mean") -> torch.Tensor:
    """The edit moved so that its colour on the ring just outside the repainted region (where alpha
    is 1), ``band`` pixels wide (at least ``MIN_RING``), matches the source's there. "mean": one offset
    per channel; "local": a smooth offset field that follows the ring (for shifts that vary along the
    edge), filled in over the inside. Without a ring (the mask covers everything) the edit is kept.
    The edit is moved around the region alpha covers (the rest of it is never pasted)."""
    if mode not in ("mean", "local"):
        raise ValueError(f"colour match must be 'mean' or 'local', got {mode!r}")
    src, edt, a, unbatch = _batched(source, edit, alpha)
    out = edt.clone()
    for i in range(src.shape[0]):  # each image on its own region, so an image's result never depends on its batch
        box = _support(a[i], _context(band, "linear", mode))
        if box is not None:
            y0, y1, x0, x1 = box
            s, e = _region(src[i], y0, y1, x0, x1), _region(edt[i], y0, y1, x0, x1)
            out[i, y0:y1, x0:x1] = _match_region(s, e, a[i, None, None, y0:y1, x0:x1].float(), band, mode)[0].movedim(
                0, -1).to(edt.dtype)
    return out[0] if unbatch else out


# ------------------------------------------------------------------------------------------ internals


def _composite_in_support(source, edit, alpha, pad, work):
    """Run ``work(source, edit, alpha)`` (channels-first float regions of one image) on the box around
    alpha > 0 only (grown by ``pad`` for context), and keep the source's own pixels wherever alpha is 0."""
    src, edt, a, unbatch = _batched(source, edit, alpha)
    out = src.clone()
    for i in range(src.shape[0]):  # each image on its own region, so an image's result never depends on its batch
        box = _support(a[i], pad)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        w = a[i, None, None, y0:y1, x0:x1].float()
        result = work(_region(src[i], y0, y1, x0, x1), _region(edt[i], y0, y1, x0, x1), w)
        region = src[i, y0:y1, x0:x1]
        out[i, y0:y1, x0:x1] = torch.where(w[0].movedim(0, -1) == 0, region, result[0].movedim(0, -1).to(src.dtype))
    return out[0] if unbatch else out


def _region(image, y0, y1, x0, x1):
    """(H, W, C) -> the box as (1, C, h, w) float."""
    return image[y0:y1, x0:x1].float().movedim(-1, 0)[None]


def _context(band: int, blend: str, colour_match: str) -> int:
    """How far outside alpha > 0 the work needs to see: the colour ring, and the coarsest detail scale."""
    pad = max(int(band), MIN_RING) if colour_match != "off" else 0
    if blend == "multiband":
        pad = max(pad, 2 * _scale(_levels(band)))
    return pad


def _linear_region(s, e, w):
    return s * (1 - w) + e * w


def _multiband_region(s, e, w, band):
    lows = _low_passes(e - s, _levels(band))
    blended = w * lows[-1]  # the coarsest content follows alpha over the whole band
    for level in range(len(lows) - 1):
        blended += _level_weight(w, band, level) * (lows[level] - lows[level + 1])
    return torch.where(w >= 1, e, (s + blended).clamp(0, 1))


def _match_region(s, e, w, band, mode):
    width = max(int(band), MIN_RING)
    inside = (w >= 1).float()
    ring = (_dilate(inside, width) - inside).clamp(0, 1)
    difference = (s - e) * ring
    counts = ring.sum(dim=(2, 3), keepdim=True)
    if mode == "mean":
        offset = difference.sum(dim=(2, 3), keepdim=True) / counts.clamp(min=1)
    else:
        offset = _fill_from_ring(difference, ring, width)
    offset = torch.where(counts > 0, offset, torch.zeros_like(offset))
    return (e + offset).clamp(0, 1)


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a (B, 1, H, W) mask by a square of radius ``pixels`` (as ``masks.grow``), in two 1-D passes."""
    k = 2 * pixels + 1
    mask = F.max_pool2d(mask, (1, k), stride=1, padding=(0, pixels))
    return F.max_pool2d(mask, (k, 1), stride=1, padding=(pixels, 0))


def _batched(source, edit, alpha):
    if source.ndim not in (3, 4) or source.shape != edit.shape:
        raise ValueError(f"source and edit must be images of the same shape, got {tuple(source.shape)} and "
                         f"{tuple(edit.shape)}")
    unbatch = source.ndim == 3
    src, edt = (source[None], edit[None]) if unbatch else (source, edit)
    a = alpha[None] if alpha.ndim == 2 else alpha
    if a.shape[-2:] != src.shape[1:3] or a.shape[0] not in (1, src.shape[0]):
        raise ValueError(f"alpha {tuple(alpha.shape)} does not fit the images {tuple(source.shape)}")
    return src, edt, a.clamp(0, 1).expand(src.shape[0], -1, -1), unbatch


def _levels(band: int) -> int:
    """Detail levels that get a ramp sharper than the band: scales 2, 4, 8, ... below ``band``."""
    band = int(band)
    return 0 if band <= 2 else math.ceil(math.log2(band)) - 1


def _scale(level: int) -> int:
    """The size of the detail at a level (and the width of its ramp), in pixels."""
    return 2 ** (level + 1)


def _level_weight(alpha: torch.Tensor, band: int, level: int) -> torch.Tensor:
    """alpha ramps linearly across the band; this level's ramp is as wide as its detail, centred."""
    steepness = max(1.0, band / _scale(level))
    return ((alpha - 0.5) * steepness + 0.5).clamp(0, 1)


def _low_passes(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[x, then x low-passed at scales 2, 4, ...] at full size: halve ``levels`` times (antialiased),
    scale each back up. Consecutive differences are the detail bands; they sum back to x exactly."""
    out, small = [x], x
    size = x.shape[-2:]
    for _ in range(levels):
        small = _halve(small)
        out.append(F.interpolate(small, size=size, mode="bilinear", align_corners=False))
    return out


def _halve(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(max(1, (h + 1) // 2), max(1, (w + 1) // 2)), mode="bilinear", antialias=True,
                         align_corners=False)


def _support(alpha: torch.Tensor, pad: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1): the box around every pixel of a (H, W) alpha above 0, grown by ``pad`` for
    context and kept inside the image; None where alpha is 0 everywhere."""
    on = alpha > 0
    rows, cols = torch.nonzero(on.any(dim=1)).flatten(), torch.nonzero(on.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    height, width = on.shape
    return (max(0, int(rows[0]) - pad), min(height, int(rows[-1]) + 1 + pad),
            max(0, int(cols[0]) - pad), min(width, int(cols[-1]) + 1 + pad))


def _fill_from_ring(values: torch.Tensor, ring: torch.Tensor, width: int) -> torch.Tensor:
    """A smooth field that equals the ring's local mean of ``values`` (given only on the ring, 0
    elsewhere) and is filled in smoothly away from it (pull-push: average over ever coarser cells,
    then blend the coarse answer back in where a cell holds little ring). It stops at cells about
    half the ring's width, so pixel-level texture differences on the ring do not leak in."""
    sizes, sums, weights = [values.shape[-2:]], [values], [ring]
    while max(sums[-1].shape[-2:]) > 1:
        sums.append(_halve_area(sums[-1]))
        weights.append(_halve_area(weights[-1]))
        sizes.append(sums[-1].shape[-2:])
    finest = min(len(sums) - 1, max(0, math.ceil(math.log2(width)) - 1))  # cells about half the ring's width
    field = sums[-1] / weights[-1].clamp(min=1e-12)
    for level in range(len(sums) - 2, finest - 1, -1):
        coarse = F.interpolate(field, size=sizes[level], mode="bilinear", align_corners=False)
        local = sums[level] / weights[level].clamp(min=1e-12)
        confidence = (4 * weights[level]).clamp(0, 1)  # a quarter of a cell on the ring is enough to trust it
        field = confidence * local + (1 - confidence) * coarse
    return F.interpolate(field, size=sizes[0], mode="bilinear", align_corners=False)


def _halve_area(x: torch.Tensor) -> torch.Tensor:
    """Means over 2x2 cells (the last row or column alone where a side is odd)."""
    return F.avg_pool2d(x, 2, ceil_mode=True)

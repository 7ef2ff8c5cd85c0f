"""The paper's arbitrary-shape training masks (Paint-by-Example §3.2), built from a mask's box.

Paint-by-Example was trained on masks that are either the object's box pushed outward, or a
polygon of four quadratic Bezier curves bulging from the box toward that extended box, with
jittered points. An artist's tight mask is off-distribution; jittering it the same way gives the
model the freedom to re-pose the exemplar, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .masks import as_batch, bounding_box

SHAPES = ("bezier", "box", "random")


@dataclass(frozen=True)
class JitterSettings:
    """``extend_min``/``extend_max``: how far each side of the box moves outward, as a fraction
    of the free space between it and the image border (authors: 0 to 0.4). ``point_jitter``: the
    largest random offset of each curve point, in pixels (authors: 5). ``points_per_side``: curve
    points per side (authors: 18). ``shape``: "bezier", "box", or "random" (the authors' 50/50)."""

    extend_min: float = 0.0
    extend_max: float = 0.4
    point_jitter: int = 5
    points_per_side: int = 18
    shape: str = "bezier"

    def validate(self) -> None:
        if not 0.0 <= self.extend_min <= self.extend_max <= 1.0:
            raise ValueError(
                f"extension range must satisfy 0 <= min <= max <= 1, got min={self.extend_min}, max={self.extend_max}"
            )
        if self.point_jitter < 0:
            raise ValueError(f"point jitter must be 0 or more pixels, got {self.point_jitter}")
        if self.points_per_side < 1:
            raise ValueError(f"points per side must be at least 1, got {self.points_per_side}")
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")


def jitter_masks(masks: torch.Tensor, seed: int, settings: JitterSettings = JitterSettings()) -> torch.Tensor:
    """Jitter each mask of a batch (B, H, W); item ``i`` uses seed ``seed + i``, so a batch made
    with seed s holds exactly the masks single runs with seeds s, s+1, ... would give.

    The result always contains the mask's bounding box (the authors' polygon can clip the box's
    corners by a few pixels; nothing the artist masked is left out) and stays inside the image.
    """
    settings.validate()
    if int(seed) < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    batch = as_batch(masks)
    out = torch.empty_like(batch)
    for i, mask in enumerate(batch):
        box = bounding_box(mask)
        if box is None:
            raise ValueError(f"mask {i} of the batch is empty: paint the region to edit before jittering it")
        rng = np.random.default_rng(int(seed) + i)
        out[i] = torch.from_numpy(_jittered(box, mask.shape[-2], mask.shape[-1], rng, settings))
    return out.reshape(masks.shape).to(masks.dtype if masks.is_floating_point() else torch.float32)


def extended_box(box, height: int, width: int, rng: np.random.Generator, settings: JitterSettings):
    """Push each side outward by a random share of its free space (authors' ``extended_bbox``)."""
    x0, y0, x1, y1 = box

    def push(free: int) -> int:
        low = int(np.ceil(settings.extend_min * free))
        high = int(np.floor(settings.extend_max * free))
        return int(rng.integers(low, max(low, high) + 1))

    return x0 - push(x0), y0 - push(y0), x1 + push(width - x1), y1 + push(height - y1)


def _jittered(box, height: int, width: int, rng: np.random.Generator, settings: JitterSettings) -> np.ndarray:
    ext = extended_box(box, height, width, rng, settings)
    shape = settings.shape
    if shape == "random":
        shape = "bezier" if rng.random() < 0.5 else "box"
    out = np.zeros((height, width), dtype=np.float32)
    if shape == "box":
        ex0, ey0, ex1, ey1 = ext
        out[ey0:ey1, ex0:ex1] = 1.0
        return out
    points = bezier_polygon(box, ext, settings.points_per_side)
    if settings.point_jitter:
        points = points + rng.integers(-settings.point_jitter, settings.point_jitter + 1, size=points.shape)
    out = fill_polygon(points, height, width)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = 1.0
    return out


def bezier_polygon(box, ext, points_per_side: int) -> np.ndarray:
    """The four quadratic curves from corner to corner, each bulging toward the extended box,
    sampled at t = i / (n + 2) for i = 1..n (n = 18 gives the authors' t = 0.05 .. 0.90)."""
    x0, y0, x1, y1 = box
    ex0, ey0, ex1, ey1 = ext
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    curves = [
        ((x0, y0), (mx, ey0), (x1, y0)),  # top, left to right
        ((x1, y0), (ex1, my), (x1, y1)),  # right, top to bottom
        ((x1, y1), (mx, ey1), (x0, y1)),  # bottom, right to left
        ((x0, y1), (ex0, my), (x0, y0)),  # left, bottom to top
    ]
    t = np.arange(1, points_per_side + 1, dtype=np.float64)[:, None] / (points_per_side + 2)
    pts = []
    for p0, p1, p2 in curves:
        p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
        pts.append((1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t ** 2 * p2)
    return np.concatenate(pts)


def fill_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Even-odd fill of a closed polygon (x, y vertices, pixel edges at integers), sampled at
    pixel centres, one scanline per row."""
    out = np.zeros((height, width), dtype=np.float32)
    xs, ys = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    rows = np.arange(max(0, int(np.floor(ys.min()))), min(height, int(np.ceil(ys.max())) + 1))
    centers_x = np.arange(width) + 0.5
    for row in rows:
        cy = row + 0.5
        crossing = (ys <= cy) != (yn <= cy)
        if not crossing.any():
            continue
        xa, ya, xb, yb = xs[crossing], ys[crossing], xn[crossing], yn[crossing]
        cross_x = np.sort(xa + (cy - ya) * (xb - xa) / (yb - ya))
        inside = (np.searchsorted(cross_x, centers_x, side="right") % 2) == 1
        out[row, inside] = 1.0
    return out

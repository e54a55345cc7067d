"""A pixel-level judge of toy pictures, independent of any CLIP: what shape, where, what colour.

The background is the median colour of the picture's border; the shape is every pixel far
from it (more than half the way to the farthest pixels). A circle fills pi/4 of its bounding
box, a square all of it, a triangle half of it: the shape is the one whose fill is nearest.
The position is the nearest of the five named centres to the shape's centroid, and the
colour the nearest of the eight named colours to the shape's median colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from farm.toy.world import POSITIONS, nearest_colour

FILL = {"triangle": 0.5, "circle": math.pi / 4, "square": 1.0}


@dataclass(frozen=True)
class Verdict:
    shape: str
    position: str
    colour: str
    background: str
    fill: float  # the shape's share of its bounding box
    area: float  # the shape's share of the picture


def foreground(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> (mask of the shape, background colour)."""
    pixels = image.astype(np.float64)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    distance = np.sqrt(((pixels - background) ** 2).sum(-1))
    far = np.percentile(distance, 99)
    return distance > max(far / 2, 30.0), background


def judge(image: np.ndarray) -> Verdict | None:
    """What the picture shows, or None when nothing stands out from the background."""
    mask, background = foreground(image)
    if mask.sum() < 0.005 * mask.size:
        return None
    ys, xs = np.nonzero(mask)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = float(mask.sum() / box)
    shape = min(FILL, key=lambda name: abs(FILL[name] - fill))
    height, width = mask.shape
    cx, cy = (xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height
    position = min(POSITIONS, key=lambda name: (POSITIONS[name][1] - cx) ** 2 + (POSITIONS[name][2] - cy) ** 2)
    colour = nearest_colour(np.median(image[mask].astype(np.float64), axis=0))
    return Verdict(shape, position, colour, nearest_colour(background), fill, float(mask.mean()))

"""In-between pictures and a smooth teacher score, for the toy CLIP's distillation phase.

The renderer's pictures on the way from one prompt to the next are in-between pictures: any
colour in the RGB cube, a shape anywhere (or the generator's blend of shapes at the named places),
blends of shapes. A CLIP trained on named pictures alone scores them as it likes, and its gradient
need not lead to the prompt (docs/TOY.md). The teacher scores every picture against every full
caption ("a red circle on the left on a black background") by how far the picture's attributes
are from the caption's, smoothly:

    teacher(picture, caption) = -|shape colour - named colour|^2 / s_colour^2
                                -|background colour - named background|^2 / s_colour^2
                                -|centroid of the shape - named place|^2 / s_place^2
                                -shape_weight x (1 - the picture's weight of the named shape)

(colours in [0, 1]^3, places as fractions of the side), and the CLIP's logits are distilled onto
it (scripts/toy_training/clip.py): between the captions for every picture, and between the
pictures for every caption, which is what the renderer climbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from farm.toy.generator import CODE, PALETTE, draw_codes, weights
from farm.toy.world import COLOURS, POSITIONS, SHAPES, Picture, pixel_centres, shape_mask

NAMED = PALETTE / 255  # (8, 3), COLOURS' order
PLACES = np.array([(x, y) for _, x, y in POSITIONS.values()])  # (5, 2), POSITIONS' order


@dataclass
class Scales:
    colour: float = 0.25
    place: float = 0.15
    shape: float = 3.0


@dataclass
class InBetween:
    images: np.ndarray  # (N, H, W, 3) uint8
    colour: np.ndarray  # (N, 3) in [0, 1]: the shape's colour
    background: np.ndarray  # (N, 3)
    centroid: np.ndarray  # (N, 2): (x, y) of the shape's mask, as fractions of the side
    shapes: np.ndarray  # (N, 3): weights of circle, square, triangle, summing to 1


def in_between(rng: np.random.Generator, n: int, size: int, coded: float = 0.5, noise: float = 12.0) -> InBetween:
    """``n`` in-between pictures: a share ``coded`` are the toy generator's codes drawn exactly
    (standard normal logits times 0.3-2.5: blends to near-named pictures), the rest one shape
    (or a blend of the three at one place) of any colour, anywhere, of any size, sometimes blurred."""
    m = int(round(n * coded))
    codes = rng.normal(size=(m, len(CODE))) * rng.uniform(0.3, 2.5, (m, 1))
    pictures, masks = draw_codes(codes, size, masks=True)
    w = weights(codes)
    colour, background, shapes = w["colour"] @ NAMED, w["background"] @ NAMED, w["shapes"]
    xs, ys = pixel_centres(size)
    free = []
    for _ in range(n - m):
        fg = rng.uniform(0, 1, 3)
        bg = rng.uniform(0, 1, 3)
        while np.linalg.norm(fg - bg) < 0.3:
            bg = rng.uniform(0, 1, 3)
        x, y, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.09, 0.23)
        blend = np.eye(3)[rng.integers(3)] if rng.random() < 0.5 else rng.dirichlet(np.ones(3))
        mask = sum(b * shape_mask(s, xs, ys, x, y, r) for b, s in zip(blend, SHAPES)).astype(np.float32)
        if rng.random() < 0.3:
            mask = gaussian_filter(mask, sigma=rng.uniform(0.5, 2.0) * size / 64)
        free.append((mask, fg, bg, blend))
    if free:
        fmasks = np.stack([f[0] for f in free])
        fg, bg = np.stack([f[1] for f in free]), np.stack([f[2] for f in free])
        drawn = fmasks[..., None] * fg[:, None, None] + (1 - fmasks[..., None]) * bg[:, None, None]
        pictures, masks = np.concatenate([pictures, drawn]), np.concatenate([masks, fmasks])
        colour, background = np.concatenate([colour, fg]), np.concatenate([background, bg])
        shapes = np.concatenate([shapes, np.stack([f[3] for f in free])])
    total = masks.sum((1, 2)).clip(1e-6)
    centroid = np.stack([(masks * xs).sum((1, 2)) / total, (masks * ys).sum((1, 2)) / total], 1)
    images = pictures * 255 + rng.normal(0, 1, pictures.shape) * rng.uniform(0, noise, (n, 1, 1, 1))
    order = rng.permutation(n)
    return InBetween(images.clip(0, 255).round().astype(np.uint8)[order], colour[order], background[order],
                     centroid[order], shapes[order])


def attribute_scores(p: InBetween, scales: Scales) -> dict[str, np.ndarray]:
    """Each attribute's part of the teacher score against each named value: colour (N, 8),
    background (N, 8), position (N, 5), shape (N, 3)."""
    def colour_term(rgb):
        return -((rgb[:, None] - NAMED[None]) ** 2).sum(-1) / scales.colour ** 2
    return {"colour": colour_term(p.colour), "background": colour_term(p.background),
            "position": -((p.centroid[:, None] - PLACES[None]) ** 2).sum(-1) / scales.place ** 2,
            "shape": -scales.shape * (1 - p.shapes)}


VALUES = {"colour": list(COLOURS), "background": list(COLOURS), "position": list(POSITIONS), "shape": list(SHAPES)}


def caption_of(values: dict[str, str]) -> str:
    return Picture(values["colour"], values["shape"], values["position"], "small", values["background"]).caption(
        size=False)


def caption_pool(p: InBetween, scales: Scales, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Captions to distil on and the teacher's scores (N, P): for every picture the caption nearest
    to it, and that caption with one attribute changed."""
    parts = attribute_scores(p, scales)
    chosen = []
    for i in range(len(p.images)):
        best = {a: int(np.argmax(parts[a][i])) for a in parts}
        if best["background"] == best["colour"]:
            best["background"] = int(np.argsort(parts["background"][i])[-2])
        chosen.append(dict(best))
        attribute = list(parts)[rng.integers(4)]
        other = dict(best)
        while other == best or other["colour"] == other["background"]:
            other = dict(best)
            other[attribute] = int(rng.integers(len(VALUES[attribute])))
        chosen.append(other)
    unique = list({tuple(sorted(c.items())): c for c in chosen}.values())
    captions = [caption_of({a: VALUES[a][k] for a, k in c.items()}) for c in unique]
    scores = sum(parts[a][:, [c[a] for c in unique]] for a in parts)
    return captions, scores

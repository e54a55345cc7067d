"""A toy world: procedural pictures of one coloured shape, each with a caption.

"a small red circle at the top on a blue background": a shape (circle, square,
triangle) of one of eight colours, at one of five positions, small or big, on a
background of another colour, with a little noise. Seeded and endless: the same
seed gives the same pictures, and there is always another batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.ndimage import gaussian_filter

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "orange": (245, 135, 20),
    "purple": (135, 40, 180),
}
SHAPES = ("circle", "square", "triangle")
# Position name -> (phrase, centre x, centre y) as fractions of the side.
POSITIONS = {
    "left": ("on the left", 0.25, 0.5),
    "right": ("on the right", 0.75, 0.5),
    "top": ("at the top", 0.5, 0.25),
    "bottom": ("at the bottom", 0.5, 0.75),
    "centre": ("in the centre", 0.5, 0.5),
}
# Size name -> radius range as a fraction of the side.
SIZES = {"small": (0.10, 0.14), "big": (0.17, 0.22)}
WORDS = sorted({w for c in COLOURS for w in c.split()} | set(SHAPES) | set(SIZES)
               | {w for phrase, _, _ in POSITIONS.values() for w in phrase.split()}
               | {"a", "on", "background", "center", "middle"})


@dataclass(frozen=True)
class Picture:
    colour: str
    shape: str
    position: str
    size: str
    background: str

    def caption(self, size: bool = True, position: bool = True, background: bool = True) -> str:
        words = ["a"] + ([self.size] if size else []) + [self.colour, self.shape]
        if position:
            words.append(POSITIONS[self.position][0])
        if background:
            words.append(f"on a {self.background} background")
        return " ".join(words)


@dataclass
class Batch:
    images: np.ndarray  # (N, H, W, 3) uint8
    pictures: list[Picture]
    captions: list[str]
    negatives: list[str]  # per picture, a caption worded alike that is wrong in one attribute


class ToyWorld:
    """An endless, seeded source of captioned pictures."""

    def __init__(self, seed: int, size: int = 64, noise: float = 12.0, partial_captions: bool = True,
                 wide_colours: float = 0.0, soft_edges: float = 0.0, wide_radius: float = 0.0) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.size = size
        self.noise = noise
        self.partial_captions = partial_captions
        # Shares of pictures whose colours lie anywhere in their name's region of the RGB cube (the
        # named colours' nearest-colour regions), and whose shape has a blurred edge: what a
        # generator's pictures look like on the way to a prompt.
        self.wide_colours = wide_colours
        self.wide_radius = wide_radius
        self.soft_edges = soft_edges
        self.xs, self.ys = pixel_centres(size)

    def pictures(self, n: int, group: int = 1, same_place: float = 0.0) -> list[Picture]:
        """``n`` random pictures; runs of ``group`` share colour and background (hard negatives for
        training), and with probability ``same_place`` a run also shares position and size and
        shows the shapes in turn, so that only the shape tells its pictures apart."""
        rng = self.rng
        colours = list(COLOURS)
        out = []
        for i in range(n):
            if i % group == 0:
                colour = colours[rng.integers(len(colours))]
                background = colour
                while background == colour:
                    background = colours[rng.integers(len(colours))]
                fixed = rng.random() < same_place
                position, size = list(POSITIONS)[rng.integers(len(POSITIONS))], list(SIZES)[rng.integers(len(SIZES))]
                first_shape = int(rng.integers(len(SHAPES)))
            if fixed:
                out.append(Picture(colour, SHAPES[(first_shape + i % group) % len(SHAPES)], position, size, background))
            else:
                out.append(Picture(colour, SHAPES[rng.integers(len(SHAPES))],
                                   list(POSITIONS)[rng.integers(len(POSITIONS))],
                                   list(SIZES)[rng.integers(len(SIZES))], background))
        return out

    def draw(self, pictures: list[Picture]) -> np.ndarray:
        """Pictures -> (N, H, W, 3) uint8: exact shape, jittered placement, size and colours, noise."""
        rng = self.rng
        n, s = len(pictures), self.size
        images = np.empty((n, s, s, 3), np.float32)
        for i, p in enumerate(pictures):
            _, cx, cy = POSITIONS[p.position]
            low, high = SIZES[p.size]
            r = rng.uniform(low, high)
            cx, cy = cx + rng.uniform(-0.05, 0.05), cy + rng.uniform(-0.05, 0.05)
            mask = shape_mask(p.shape, self.xs, self.ys, cx, cy, r).astype(np.float32)
            if self.soft_edges and rng.random() < self.soft_edges:
                mask = gaussian_filter(mask, sigma=rng.uniform(0.5, 2.0) * s / 64)
            fg, bg = self.colour(p.colour), self.colour(p.background)
            images[i] = mask[..., None] * fg + (1 - mask[..., None]) * bg
        images += (rng.normal(0, 1, images.shape).astype(np.float32)
                   * rng.uniform(0, self.noise, (n, 1, 1, 1)).astype(np.float32))
        return images.clip(0, 255).round().astype(np.uint8)

    def colour(self, name: str) -> np.ndarray:
        """An RGB colour for a colour name: the named colour jittered a little, or (a share
        ``wide_colours`` of the time) any colour whose nearest named colour is this one (and,
        with ``wide_radius``, no farther from it than that)."""
        rng = self.rng
        if self.wide_colours and rng.random() < self.wide_colours:
            named = np.array(COLOURS[name], np.float64)
            radius = self.wide_radius or np.inf
            low, high = np.clip(named - radius, 0, 255), np.clip(named + radius, 0, 255)
            while True:
                rgb = rng.uniform(low, high)
                if np.linalg.norm(rgb - named) <= radius and nearest_colour(rgb) == name:
                    return rgb.astype(np.float32)
        return np.array(COLOURS[name], np.float32) + rng.normal(0, 10, 3)

    def batch(self, n: int, group: int = 1, same_place: float = 0.0) -> Batch:
        pictures = self.pictures(n, group, same_place)
        images = self.draw(pictures)
        rng = self.rng
        captions, negatives = [], []
        for p in pictures:
            keep = rng.random(3)
            parts = dict(size=keep[0] < 0.4, position=keep[1] < 0.75, background=keep[2] < 0.75)
            if not self.partial_captions:
                parts = dict(size=True, position=True, background=True)
            wrong = self.wrong_in_one_attribute(p, parts["position"])
            caption, negative = p.caption(**parts), wrong.caption(**parts)
            if self.partial_captions and p.position == "centre" and rng.random() < 0.4:
                caption = caption.replace("in the centre", ["in the center", "in the middle"][rng.integers(2)])
            captions.append(caption)
            negatives.append(negative)
        return Batch(images, pictures, captions, negatives)

    def wrong_in_one_attribute(self, p: Picture, position: bool) -> Picture:
        """The picture with its colour (often swapped with the background's), shape or position changed."""
        rng = self.rng
        attribute = ("colour", "shape", "position")[rng.integers(3 if position else 2)]
        if attribute == "colour" and rng.random() < 0.5:
            return Picture(p.background, p.shape, p.position, p.size, p.colour)
        values = {"colour": list(COLOURS), "shape": list(SHAPES), "position": list(POSITIONS)}[attribute]
        others = [v for v in values if v != getattr(p, attribute)]
        return Picture(**{**p.__dict__, attribute: others[rng.integers(len(others))]})

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.batch(64)


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every pixel's centre as fractions of the side, each (size, size) float32."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return (xs + 0.5) / size, (ys + 0.5) / size


def nearest_colour(rgb) -> str:
    """The named colour nearest to an RGB colour (0..255), by distance in the RGB cube."""
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(COLOURS[name], float) - rgb) ** 2)))


def shape_mask(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean mask of a shape of 'radius' r centred at (cx, cy); areas roughly alike."""
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    if shape == "square":
        half = r * 0.886  # same area as the circle
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    if shape == "triangle":  # pointing up, apex at the top
        top, bottom = cy - 1.1 * r, cy + 0.8 * r
        t = (ys - top) / (bottom - top)
        return (t >= 0) & (t <= 1) & (np.abs(xs - cx) <= 1.15 * r * t)
    raise ValueError(f"unknown shape {shape!r}")

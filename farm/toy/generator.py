"""The toy generator: the tiny BigGAN class trained on the toy world's pictures, so Big Sleep can
draw toy pictures, not random textures.

It draws, from the first ``len(CODE)`` values of Big Sleep's first latent row (the code), the
picture the code stands for (:func:`meaning`, :func:`draw_codes`): mixes of the named colours
for the shape and the background, and the three shapes at the five named places and two named
sizes, blended. It is trained (scripts/train_toy.py, with scripts/toy_training/generator.py)
by regression from random latents to those exact drawings, through farm's own Big Sleep forward
pass (:func:`farm.render.biggan.generate`), so every latent Big Sleep starts from is a picture.
Every other latent value and the class mix have no effect: the class embedding, the blocks'
conditional batch-norm gains and biases and ``gen_z``'s weights on the other inputs are zero and
frozen. BigGAN's batch norms use their stored statistics (zero mean,
unit variance here) in training and rendering alike. The spectral norm is folded into plain
weights before training; the weights ship in fp16 with their config.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from farm.errors import ModelError
from farm.render.biggan import biggan_config, fold_spectral_norm, generate, latent_rows, new_biggan, state_dict_mismatch
from farm.toy.common import float_state, half_state
from farm.toy.world import COLOURS, POSITIONS, SHAPES, SIZES, pixel_centres, shape_mask

WEIGHTS = Path(__file__).with_name("weights") / "toy_biggan.pt"
# 64 pixels (what the toy CLIP sees), 16 channels per width unit (8, like `tiny`, learnt too slowly);
# self-attention at 32x32. A 128-pixel generator cost three times as much a training step.
TOY_BIGGAN = dict(size=64, channels=16, attention=32)


def build_toy_biggan(config: dict = TOY_BIGGAN) -> nn.Module:
    """The BigGAN class for the toy generator, spectral norm folded, class embedding zero and frozen."""
    model = new_biggan(biggan_config(config["size"], config["channels"], config["attention"]))
    fold_spectral_norm(model)
    # It listens to its code only: the class embedding and the blocks' conditional batch-norm
    # gains and biases are zero and frozen, and so are gen_z's weights on every input but the code.
    frozen = [model.embeddings] + [m for name, m in model.named_modules() if name.endswith((".scale", ".offset"))]
    for module in frozen:
        nn.init.zeros_(module.weight)
        module.requires_grad_(False)
    listens = torch.zeros_like(model.generator.gen_z.weight)
    listens[:, :len(CODE)] = 1
    with torch.no_grad():
        model.generator.gen_z.weight.mul_(listens)
    model.generator.gen_z.weight.register_hook(lambda grad: grad * listens)
    return model


def decode(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """z (B, rows, z_dim) -> pictures (B, 3, S, S) in [0, 1] through Big Sleep's forward pass."""
    classes = torch.zeros(*z.shape[:2], model.config.num_classes)
    return generate(model, z, classes, 1.0)


# The code: the first len(CODE) values of the first latent row, standard normal samples. Softmaxes of
# its logits (times SHARPNESS) mix the eight named colours of the shape and of the background, and
# weigh the three shapes, the five named places and the two named sizes: the picture is the shape
# masks drawn at the named places and sizes (their centres and mean radii in the toy world), blended
# by those weights. Every code is a picture, the picture changes smoothly with the code, and a code
# whose logits agree is a toy-world picture. (A code for a continuous place and radius was tried
# first: the generator drew blobs; docs/TOY.md.)
COLOUR_NAMES, SHARPNESS = tuple(COLOURS), 2.5
PLACES, SIZE_NAMES = tuple(POSITIONS), tuple(SIZES)
RADII = tuple((low + high) / 2 for low, high in SIZES.values())
CODE = (tuple(f"shape {c}" for c in COLOUR_NAMES) + tuple(f"background {c}" for c in COLOUR_NAMES)
        + SHAPES + PLACES + SIZE_NAMES)
PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], np.float64)
_N = len(COLOUR_NAMES)
_PARTS = {"colour": slice(0, _N), "background": slice(_N, 2 * _N), "shapes": slice(2 * _N, 2 * _N + 3),
          "places": slice(2 * _N + 3, 2 * _N + 8), "sizes": slice(2 * _N + 8, 2 * _N + 10)}


@dataclass(frozen=True)
class CodedPicture:
    """What a code means: colours (0..255) and the weights of each shape, place and size."""

    colour: tuple[float, float, float]
    background: tuple[float, float, float]
    shapes: dict[str, float]  # each set of weights sums to 1
    places: dict[str, float]
    sizes: dict[str, float]

    @property
    def shape(self) -> str:
        return max(self.shapes, key=self.shapes.get)

    @property
    def position(self) -> str:
        return max(self.places, key=self.places.get)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of SHARPNESS x logits along the last axis."""
    e = np.exp(SHARPNESS * (logits - logits.max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


def weights(codes: np.ndarray) -> dict[str, np.ndarray]:
    """(B, len(CODE)) codes -> each part's softmax weights, (B, its length)."""
    codes = np.asarray(codes, np.float64)
    return {part: softmax(codes[:, where]) for part, where in _PARTS.items()}


def meaning(code: np.ndarray) -> CodedPicture:
    """A code (len(CODE),) of standard normal values -> the picture it stands for."""
    w = {part: v[0] for part, v in weights(np.asarray(code)[None]).items()}
    return CodedPicture(colour=tuple(w["colour"] @ PALETTE), background=tuple(w["background"] @ PALETTE),
                        shapes=dict(zip(SHAPES, w["shapes"].tolist())), places=dict(zip(PLACES, w["places"].tolist())),
                        sizes=dict(zip(SIZE_NAMES, w["sizes"].tolist())))


@functools.lru_cache(maxsize=4)
def templates(size: int) -> np.ndarray:
    """(shapes, places, sizes, size, size) float32: every shape's mask at every named place and size."""
    xs, ys = pixel_centres(size)
    return np.array([[[shape_mask(shape, xs, ys, POSITIONS[place][1], POSITIONS[place][2], radius) for radius in RADII]
                      for place in PLACES] for shape in SHAPES], np.float32)


def draw_codes(codes: np.ndarray, size: int, masks: bool = False):
    """(B, len(CODE)) codes -> (B, size, size, 3) float32 pictures in [0, 1], drawn exactly: the
    templates blended by their shape, place and size weights, the colours mixed (and, with
    ``masks``, the blended (B, size, size) masks)."""
    w = weights(codes)
    fg, bg = (w["colour"] @ PALETTE / 255).astype(np.float32), (w["background"] @ PALETTE / 255).astype(np.float32)
    blended = np.einsum("bs,bp,bk,spkhw->bhw", w["shapes"], w["places"], w["sizes"], templates(size)).astype(np.float32)
    pictures = blended[..., None] * fg[:, None, None] + (1 - blended[..., None]) * bg[:, None, None]
    return (pictures, blended) if masks else pictures


def save_toy_biggan(path: Path, model: nn.Module, config: dict, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dict(config), "state": half_state(model), "info": info}, path)


def load_toy_biggan(path: Path | str = WEIGHTS, size: int | None = None) -> nn.Module:
    """The trained toy generator (float32, on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"models.biggan: the toy generator's weights are missing ({path}); run scripts/train_toy.py")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    if size is not None and size != config["size"]:
        raise ModelError(f"video.size: {size} is not a size the toy generator can make (it makes {config['size']})")
    model = build_toy_biggan(config)
    state = float_state(saved["state"])
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ModelError(f"models.biggan: {path} does not hold the toy generator's weights ({problem})")
    model.load_state_dict(state, strict=True)
    return model.eval()


def drawn_in_batches(model: nn.Module, z: torch.Tensor, batch: int = 20):
    """What the generator draws for latents z, ``batch`` at a time: (codes (b, len(CODE)),
    pictures (b, S, S, 3) in [0, 1])."""
    for start in range(0, len(z), batch):
        chunk = z[start:start + batch]
        yield chunk[:, 0, :len(CODE)].numpy(), decode(model, chunk).permute(0, 2, 3, 1).clamp(0, 1).numpy()


def as_uint8(picture: np.ndarray) -> np.ndarray:
    """A picture in [0, 1] as the judge reads pictures: uint8."""
    return (picture * 255).round().astype(np.uint8)


@torch.no_grad()
def drawing_fidelity(model: nn.Module, seed: int, n: int = 200) -> dict[str, float]:
    """On ``n`` random latents: how often the pixel judge reads, in what the generator draws, the
    shape and the place (nearest of the five named places) that the code stands for, and the
    root-mean-square pixel error against the exact drawing."""
    from farm.toy.judge import judge

    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_rows(model), model.config.z_dim, generator=generator)
    size = model.config.output_dim
    right, squared = {"shape": 0, "position": 0}, 0.0
    for codes, drawn in drawn_in_batches(model, z):
        exact = draw_codes(codes, size)
        squared += float(((drawn - exact) ** 2).sum())
        for image, truth in zip(drawn, exact):
            verdict, expected = judge(as_uint8(image)), judge(as_uint8(truth))
            for attribute in right:
                right[attribute] += int(verdict is not None and expected is not None
                                        and getattr(verdict, attribute) == getattr(expected, attribute))
    return {**{a: r / n for a, r in right.items()}, "rmse": math.sqrt(squared / (n * size * size * 3))}


@torch.no_grad()
def clear_shape_fidelity(model: nn.Module, seed: int, n: int = 1200, clear: float = 0.8) -> tuple[float, int]:
    """Of ``n`` random latents, those whose code clearly stands for one shape, place and size (each
    weight at least ``clear``; a blend has no one right shape): how often the pixel judge reads the
    code's shape in the drawing, and how many there were."""
    from farm.toy.judge import judge

    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, latent_rows(model), model.config.z_dim, generator=generator)
    w = weights(z[:, 0, :len(CODE)].numpy())
    clearly = (w["shapes"].max(1) >= clear) & (w["places"].max(1) >= clear) & (w["sizes"].max(1) >= clear)
    chosen = z[torch.from_numpy(clearly)]
    right = 0
    for codes, drawn in drawn_in_batches(model, chosen):
        for image, code in zip(drawn, codes):
            verdict = judge(as_uint8(image))
            right += int(verdict is not None and verdict.shape == meaning(code).shape)
    return right / max(len(chosen), 1), len(chosen)

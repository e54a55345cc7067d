"""The toy generator: the tiny BigGAN class trained on the toy world's pictures, so Big Sleep can
draw toy pictures, not random textures.

It draws, from the first ``len(CODE)`` values of Big Sleep's first latent row (the code), the
picture the code stands for (:func:`meaning`, :func:`draw_codes`): mixes of the named colours
for the shape and the background, a blend of the three shapes, a place and a size. It is
trained by regression from random latents to those exact drawings, through farm's own Big
Sleep forward pass (:func:`farm.render.generator.generate`), so every latent Big Sleep starts
from is a picture. Every other latent value and the class mix have no effect: the class
embedding, the blocks' conditional batch-norm gains and biases and ``gen_z``'s weights on the
other inputs are zero and frozen. BigGAN's batch norms use their stored statistics (zero mean,
unit variance here) in training and rendering alike. The spectral norm is folded into plain
weights before training; the weights ship in fp16 with their config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from farm.errors import ModelError
from farm.render.generator import generate
from farm.render.models import biggan_config, fold_spectral_norm, latent_rows, new_biggan, state_dict_mismatch
from farm.toy.common import float_state, half_state, set_warmup_cosine_lr
from farm.toy.world import COLOURS, SHAPES, shape_mask

WEIGHTS = Path(__file__).with_name("weights") / "toy_biggan.pt"
# 128 pixels, 8 channels per width unit like `tiny`; self-attention at 32x32 (the published
# models put it at 64x64, where it costs three quarters of a training step on a CPU).
TOY_BIGGAN = dict(size=128, channels=8, attention=32)


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
# its logits mix the eight named colours of the shape and of the background, and blend the three
# shapes; the normal CDF maps the last three onto the place and the size. Every code is a picture,
# the picture changes smoothly with the code, and a code whose logits agree is a toy-world picture.
COLOUR_NAMES, SHARPNESS = tuple(COLOURS), 2.5  # logits are multiplied by SHARPNESS before the softmax
CODE = (tuple(f"shape {c}" for c in COLOUR_NAMES) + tuple(f"background {c}" for c in COLOUR_NAMES)
        + SHAPES + ("x", "y", "radius"))
X_RANGE, Y_RANGE, RADIUS_RANGE = (0.2, 0.8), (0.2, 0.8), (0.08, 0.24)
PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], np.float64)


@dataclass(frozen=True)
class CodedPicture:
    """What a code means: colours (0..255), how much of each shape, place and size."""

    colour: tuple[float, float, float]
    background: tuple[float, float, float]
    shapes: dict[str, float]  # weights summing to 1
    x: float
    y: float
    radius: float

    @property
    def shape(self) -> str:
        return max(self.shapes, key=self.shapes.get)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(SHARPNESS * (logits - logits.max()))
    return e / e.sum()


def meaning(code: np.ndarray) -> CodedPicture:
    """A code (len(CODE),) of standard normal values -> the picture it stands for."""
    code = np.asarray(code, np.float64)
    n = len(COLOUR_NAMES)
    u = [0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in code[2 * n + 3: 2 * n + 6]]
    return CodedPicture(colour=tuple(softmax(code[:n]) @ PALETTE), background=tuple(softmax(code[n:2 * n]) @ PALETTE),
                        shapes=dict(zip(SHAPES, softmax(code[2 * n:2 * n + 3]).tolist())),
                        x=X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * u[0], y=Y_RANGE[0] + (Y_RANGE[1] - Y_RANGE[0]) * u[1],
                        radius=RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * u[2])


def draw_codes(codes: np.ndarray, size: int, masks: bool = False):
    """(B, len(CODE)) codes -> (B, size, size, 3) float pictures in [0, 1], drawn exactly: the
    shapes' masks blended by their weights, the colours mixed (and, with ``masks``, the blended
    (B, size, size) masks)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    xs, ys = (xs + 0.5) / size, (ys + 0.5) / size
    out = np.empty((len(codes), size, size, 3), np.float32)
    blended = np.empty((len(codes), size, size), np.float32)
    for i, code in enumerate(codes):
        p = meaning(code)
        blended[i] = sum(w * shape_mask(s, xs, ys, p.x, p.y, p.radius) for s, w in p.shapes.items())
        fg, bg = np.array(p.colour, np.float32) / 255, np.array(p.background, np.float32) / 255
        out[i] = blended[i][..., None] * fg + (1 - blended[i][..., None]) * bg
    return (out, blended) if masks else out


@dataclass
class GeneratorRecipe:
    seed: int = 0
    steps: int = 5000
    batch: int = 16
    learning_rate: float = 1e-3
    warmup: int = 50
    shape_weight: float = 5.0  # the squared error on the shape's pixels counts this many times
    threads: int = 2


def train_generator(recipe: GeneratorRecipe, config: dict = TOY_BIGGAN, log=print,
                    checkpoint=None) -> tuple[nn.Module, dict]:
    """Teach the generator to draw, from any standard normal latents, the picture its code stands for
    (every latent value outside the code is drawn at random, so the generator learns to ignore it)."""
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = build_toy_biggan(config).train()
    rows, size = latent_rows(model), config["size"]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=recipe.learning_rate)
    start = time.monotonic()
    history = []
    for step in range(recipe.steps):
        lr = set_warmup_cosine_lr(optimizer, recipe.learning_rate, step, recipe.warmup, recipe.steps)
        z = torch.randn(recipe.batch, rows, model.config.z_dim, generator=generator)
        target, masks = draw_codes(z[:, 0, :len(CODE)].numpy(), size, masks=True)
        target = torch.from_numpy(target).permute(0, 3, 1, 2)
        # The shape covers a few per cent of the picture: its pixels weigh more, or the
        # background's error would drown the shape's outline.
        weights = 1 + (recipe.shape_weight - 1) * torch.from_numpy(masks)[:, None]
        loss = (weights * (decode(model, z) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 50 == 0 or step == 0:
            history.append({"step": step + 1, "weighted_rmse": loss.sqrt().item()})
            log(f"step {step + 1}/{recipe.steps} weighted rmse {loss.sqrt().item():.3f} lr {lr:.2e} "
                f"{time.monotonic() - start:.0f}s")
            if checkpoint is not None and (step + 1) % 500 == 0:
                checkpoint(model)
    model.eval()
    return model, {"seconds": time.monotonic() - start, "history": history}


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
    for start in range(0, n, 20):
        batch = z[start:start + 20]
        drawn = decode(model, batch).permute(0, 2, 3, 1).clamp(0, 1).numpy()
        exact = draw_codes(batch[:, 0, :len(CODE)].numpy(), size)
        squared += float(((drawn - exact) ** 2).sum())
        for image, truth in zip(drawn, exact):
            verdict, expected = judge((image * 255).round().astype(np.uint8)), judge((truth * 255).round().astype(np.uint8))
            for attribute in right:
                right[attribute] += int(verdict is not None and expected is not None
                                        and getattr(verdict, attribute) == getattr(expected, attribute))
    return {**{a: r / n for a, r in right.items()}, "rmse": math.sqrt(squared / (n * size * size * 3))}

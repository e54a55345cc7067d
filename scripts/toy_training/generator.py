"""Training of the toy generator (farm/toy/generator.py): regression from random latents to the
exact drawings of their codes, in two phases, with the loss weighted on the shape's surroundings
and where the shapes' masks disagree.

Deterministic from its seed on a given machine and thread count: the latents come from a seeded
``torch.Generator``, the weights from ``torch.manual_seed``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from farm.render.biggan import latent_rows
from farm.toy.common import float_state, half_state
from farm.toy.generator import CODE, PLACES, RADII, TOY_BIGGAN, build_toy_biggan, decode, draw_codes, templates, weights
from farm.toy.world import POSITIONS, pixel_centres, shape_mask

from .schedule import set_warmup_cosine_lr

SURROUND = 1.6


@functools.lru_cache(maxsize=4)
def surroundings(size: int) -> np.ndarray:
    """(places, sizes, size, size) float32: around every named place and size, a square holding every
    shape with a margin (half-side 1.6 x 0.886 = 1.42 radii; the triangle reaches 1.15 sideways, 1.1 up)."""
    xs, ys = pixel_centres(size)
    return np.array([[shape_mask("square", xs, ys, POSITIONS[place][1], POSITIONS[place][2], SURROUND * radius)
                      for radius in RADII] for place in PLACES], np.float32)


def surrounding(codes: np.ndarray, size: int) -> np.ndarray:
    """(B, size, size): the code's surroundings, weighted as the code weighs its places and sizes."""
    w = weights(codes)
    return np.einsum("bp,bk,pkhw->bhw", w["places"], w["sizes"], surroundings(size)).astype(np.float32)


def disagreement(codes: np.ndarray, size: int) -> np.ndarray:
    """(B, size, size): where the three shapes' masks disagree (1 inside some but not all of them),
    at the code's places and sizes, weighted as the code weighs them: the pixels that tell shapes apart."""
    w, masks = weights(codes), templates(size)
    apart = masks.max(0) - masks.min(0)  # (places, sizes, size, size)
    return np.einsum("bp,bk,pkhw->bhw", w["places"], w["sizes"], apart).astype(np.float32)


@dataclass
class GeneratorRecipe:
    seed: int = 0
    steps: int = 10000
    batch: int = 16
    learning_rate: float = 1e-3
    warmup: int = 50
    shape_weight: float = 5.0  # the squared error on the shape's pixels counts this many times
    # ... where "the shape's pixels" are its own mask ("shape": then an uncertain edge pixel costs
    # more drawn as background than as shape, and the shapes come out fuller) or its surroundings,
    # shape and background alike ("surround").
    weighting: str = "shape"
    disagree_weight: float = 4.0  # ... and 1 + this many times more where the shapes' masks disagree
    # Phase 2: from phase 1's weights rounded to fp16 (as they ship), more steps on latents drawn
    # from seed + 1, weighing the shapes' surroundings rather than their masks. 0 steps: no phase 2.
    finetune_steps: int = 3000
    finetune_learning_rate: float = 5e-4
    finetune_disagree_weight: float = 4.0
    finetune_weighting: str = "surround"
    threads: int = 1
    finetune_threads: int = 2  # the results are bit-for-bit the same only at the same thread counts


def train_generator(recipe: GeneratorRecipe, config: dict = TOY_BIGGAN, log=print,
                    checkpoint=None) -> tuple[nn.Module, dict]:
    """Teach the generator to draw, from any standard normal latents, the picture its code stands for
    (every latent value outside the code is drawn at random, so the generator learns to ignore it)."""
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    model = build_toy_biggan(config).train()
    start = time.monotonic()
    history = fit(model, recipe.seed, recipe.steps, recipe.learning_rate, recipe.disagree_weight, recipe.weighting,
                  recipe, log, checkpoint)
    info = {"seconds": time.monotonic() - start, "history": history}
    if recipe.finetune_steps:
        model, phase2 = finetune_generator(model, recipe, config, log, checkpoint)
        info.update(phase1_seconds=info["seconds"], seconds=info["seconds"] + phase2["seconds"],
                    finetune_history=phase2["history"])
    model.eval()
    return model, info


def finetune_generator(model: nn.Module, recipe: GeneratorRecipe, config: dict = TOY_BIGGAN, log=print,
                       checkpoint=None) -> tuple[nn.Module, dict]:
    """Phase 2, from ``model``'s weights rounded to fp16: ``recipe.finetune_steps`` more steps."""
    torch.set_num_threads(recipe.finetune_threads)
    torch.manual_seed(recipe.seed + 1)
    tuned = build_toy_biggan(config)
    tuned.load_state_dict(float_state(half_state(model)))
    tuned.train()
    start = time.monotonic()
    history = fit(tuned, recipe.seed + 1, recipe.finetune_steps, recipe.finetune_learning_rate,
                  recipe.finetune_disagree_weight, recipe.finetune_weighting, recipe, log, checkpoint)
    tuned.eval()
    return tuned, {"seconds": time.monotonic() - start, "history": history}


def fit(model: nn.Module, seed: int, steps: int, learning_rate: float, disagree_weight: float, weighting: str,
        recipe: GeneratorRecipe, log, checkpoint) -> list[dict]:
    """Adam on the weighted squared error against the exact drawings of random latents' codes."""
    generator = torch.Generator().manual_seed(seed)
    rows, size = latent_rows(model), model.config.output_dim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    start = time.monotonic()
    history = []
    for step in range(steps):
        lr = set_warmup_cosine_lr(optimizer, learning_rate, step, recipe.warmup, steps)
        z = torch.randn(recipe.batch, rows, model.config.z_dim, generator=generator)
        codes = z[:, 0, :len(CODE)].numpy()
        target, masks = draw_codes(codes, size, masks=True)
        target = torch.from_numpy(target).permute(0, 3, 1, 2)
        # The shape covers a few per cent of the picture: its pixels weigh more, or the
        # background's error would drown the shape's outline; and the pixels where the shapes
        # differ weigh more again, or their outlines would be drawn as one blob.
        region = masks if weighting == "shape" else surrounding(codes, size)
        weighing = 1 + (recipe.shape_weight - 1) * torch.from_numpy(region)[:, None]
        if disagree_weight:
            weighing = weighing * (1 + disagree_weight * torch.from_numpy(disagreement(codes, size))[:, None])
        loss = (weighing * (decode(model, z) - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 50 == 0 or step == 0:
            history.append({"step": step + 1, "weighted_rmse": loss.sqrt().item()})
            log(f"step {step + 1}/{steps} weighted rmse {loss.sqrt().item():.3f} lr {lr:.2e} "
                f"{time.monotonic() - start:.0f}s")
            if checkpoint is not None and (step + 1) % 500 == 0:
                checkpoint(model)
    return history

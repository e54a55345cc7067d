"""Contrastive training of the toy CLIP (farm/toy/clip.py) on the toy world.

Deterministic from its seed on a given machine and thread count: the pictures come
from a seeded :class:`ToyWorld`, the weights from ``torch.manual_seed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from farm.toy.clip import TOY_CLIP, ToyTokenizer, build_toy_clip, to_clip_input, zero_shot_accuracy
from farm.toy.common import float_state, half_state
from farm.toy.world import SHAPES, WORDS, ToyWorld

from .schedule import set_warmup_cosine_lr
from .teacher import Scales, caption_pool, in_between


@dataclass
class Recipe:
    seed: int = 0
    steps: int = 4000
    batch: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 50
    hard_negatives: str = "shape"  # NegCLIP: each picture also scored against a caption wrong in one attribute
    # ("any": colour, shape or place; "shape": the shape word swapped for another)
    group: int = 2  # pictures per batch sharing colour and background, differing in shape, place, size
    same_place: float = 0.0  # share of those groups that also share place and size, differing in shape only
    temperature: float = 0.07  # initial softmax temperature (CLIP's 0.07); learnt from there
    # Shares of pictures with colours anywhere in their name's region of the RGB cube, and with
    # blurred edges: so that the CLIP reads the generator's pictures on the way to a prompt too.
    wide_colours: float = 0.0
    soft_edges: float = 0.0
    # The second phase: from the first phase's weights (as shipped, fp16), pictures of wide colours
    # (within finetune_wide_radius of the named colour; 0: anywhere in its region) and soft edges,
    # at a lower rate, so the CLIP reads the in-between pictures an optimisation passes through
    # (docs/TOY.md). 0 steps: none.
    finetune_steps: int = 1500
    finetune_learning_rate: float = 1e-3
    finetune_wide_colours: float = 0.4
    finetune_wide_radius: float = 35.0
    finetune_soft_edges: float = 0.15
    # The third phase: from the second's weights as shipped, the same contrastive loss plus the
    # distillation of the logits on in-between pictures onto a smooth teacher score
    # (scripts/toy_training/teacher.py), so that the CLIP's gradient leads from any picture to any
    # prompt. 0 steps: none.
    distill_steps: int = 0
    distill_learning_rate: float = 1e-3
    distill_weight: float = 1.0
    distill_batch: int = 64
    distill_scales: Scales = field(default_factory=Scales)
    crop_min: float = 0.8  # random crops of this fraction of the side or more, like the renderer's cutouts
    threads: int = 1
    config: dict = field(default_factory=lambda: dict(TOY_CLIP))


def random_crops(x: torch.Tensor, crop_min: float, generator: torch.Generator) -> torch.Tensor:
    """One random square crop per image (side in [crop_min, 1] of the image), resized back."""
    n = x.shape[0]
    scale = crop_min + (1 - crop_min) * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def contrastive_loss(model: nn.Module, images: torch.Tensor, tokenizer: ToyTokenizer, captions: list[str],
                     negatives: list[str] | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy; pairs with the same caption all count as matches.

    With ``negatives`` (NegCLIP's hard negatives: a caption per picture wrong in one
    attribute), the image-to-text direction also scores every picture against them."""
    texts = captions + (negatives or [])
    image_features, text_features, logit_scale = model(images, tokenizer(texts))[:3]
    logits = logit_scale * image_features @ text_features.T  # (N, N [+ N])
    n = len(captions)
    index = {c: i for i, c in enumerate(dict.fromkeys(texts))}
    ids = torch.tensor([index[c] for c in texts])
    same = (ids[:n, None] == ids[None, :]).float()  # a negative that happens to be another picture's true caption
    targets = same / same.sum(dim=1, keepdim=True)
    image_to_text = torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
    targets_t = same[:, :n].T / same[:, :n].T.sum(dim=1, keepdim=True)
    text_to_image = torch.sum(-targets_t * F.log_softmax(logits[:, :n].T, 1), 1).mean()
    return (image_to_text + text_to_image) / 2


def distillation_loss(model: nn.Module, images: torch.Tensor, tokenizer: ToyTokenizer, captions: list[str],
                      scores: np.ndarray) -> torch.Tensor:
    """The CLIP's logits (N pictures x P captions) distilled onto the teacher's ``scores``: the
    cross-entropy of its softmaxes against the teacher's, over the captions for each picture and
    over the pictures for each caption (the renderer climbs the latter), less the teacher's own
    entropy (a KL divergence: 0 when they agree)."""
    image_features, text_features, logit_scale = model(images, tokenizer(captions))[:3]
    logits = logit_scale * image_features @ text_features.T
    teacher = torch.from_numpy(scores).float()
    total = 0.0
    for dim in (1, 0):
        target = F.softmax(teacher, dim)
        total = total + (target * (torch.log(target.clamp_min(1e-12)) - F.log_softmax(logits, dim))).sum(dim).mean()
    return total / 2


def hard_negatives(batch, kind: str, generator: torch.Generator) -> list[str] | None:
    if kind == "any":
        return batch.negatives
    if kind == "shape":
        picks = torch.randint(1, len(SHAPES), (len(batch.captions),), generator=generator).tolist()
        return [caption.replace(f" {p.shape}", f" {SHAPES[(SHAPES.index(p.shape) + k) % len(SHAPES)]}", 1)
                for caption, p, k in zip(batch.captions, batch.pictures, picks)]
    return None


def train(recipe: Recipe, log=print, evaluate_every: int = 500,
          checkpoint=None) -> tuple[nn.Module, ToyTokenizer, dict]:
    """Train from scratch; ``checkpoint(model, tokenizer)`` is called after every evaluation.

    ``steps`` on the recipe's pictures, then, with ``finetune_steps``, a second run of the same
    loss from those weights as shipped (fp16), on pictures of wide colours and soft edges drawn
    from seed + 1, meant to teach the CLIP the in-between pictures an optimisation passes through
    without losing what it learnt."""
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    tokenizer = ToyTokenizer.for_words(WORDS, recipe.config["context_length"])
    model = build_toy_clip(recipe.config, tokenizer.vocab_size)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / recipe.temperature))
    start = time.monotonic()
    phases = [(recipe.seed, recipe.steps, recipe.learning_rate, recipe.wide_colours, recipe.soft_edges, 0.0, False)]
    if recipe.finetune_steps:
        phases.append((recipe.seed + 1, recipe.finetune_steps, recipe.finetune_learning_rate,
                       recipe.finetune_wide_colours, recipe.finetune_soft_edges, recipe.finetune_wide_radius, False))
    if recipe.distill_steps:
        phases.append((recipe.seed + 2, recipe.distill_steps, recipe.distill_learning_rate,
                       recipe.finetune_wide_colours, recipe.finetune_soft_edges, recipe.finetune_wide_radius, True))
    history = []
    for number, (seed, steps, learning_rate, wide, soft, radius, distill) in enumerate(phases, 1):
        if number > 1:
            model.load_state_dict(float_state(half_state(model)))
            torch.manual_seed(seed)
        world = ToyWorld(seed=seed, size=recipe.config["image_size"], wide_colours=wide, soft_edges=soft,
                         wide_radius=radius)
        history += contrastive_phase(model, tokenizer, world, recipe, steps, learning_rate, seed,
                                     lambda line, n=number: log(f"phase {n}: {line}" if len(phases) > 1 else line),
                                     evaluate_every, checkpoint, start, distill)
    model.eval()
    return model, tokenizer, {"seconds": time.monotonic() - start, "history": history}


def contrastive_phase(model: nn.Module, tokenizer: ToyTokenizer, world: ToyWorld, recipe: Recipe, steps: int,
                      learning_rate: float, seed: int, log, evaluate_every: int, checkpoint,
                      start: float, distill: bool = False) -> list[dict]:
    """``steps`` steps of AdamW (warm-up, then cosine decay from ``learning_rate``) on the world's pictures
    (and, with ``distill``, the distillation onto the teacher on in-between pictures)."""
    generator = torch.Generator().manual_seed(seed)
    pictures = np.random.Generator(np.random.PCG64(seed + 7)) if distill else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=learning_rate)
    history = []
    kl = torch.zeros(())
    for step in range(steps):
        lr = set_warmup_cosine_lr(optimizer, learning_rate, step, recipe.warmup, steps)
        batch = world.batch(recipe.batch, recipe.group, recipe.same_place)
        images = random_crops(to_clip_input(batch.images), recipe.crop_min, generator)
        model.train()
        loss = contrastive_loss(model, images, tokenizer, batch.captions,
                                hard_negatives(batch, recipe.hard_negatives, generator))
        if distill:
            others = in_between(pictures, recipe.distill_batch, recipe.config["image_size"])
            captions, scores = caption_pool(others, recipe.distill_scales, pictures)
            between = random_crops(to_clip_input(others.images), recipe.crop_min, generator)
            kl = distillation_loss(model, between, tokenizer, captions, scores)
            loss = loss + recipe.distill_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % 50 == 0 or step == 0:
            distilled = f" (kl {kl.item():.3f})" if distill else ""
            log(f"step {step + 1}/{steps} loss {loss.item():.3f}{distilled} lr {lr:.2e} "
                f"scale {model.logit_scale.exp().item():.1f} {time.monotonic() - start:.0f}s")
        if evaluate_every and (step + 1) % evaluate_every == 0 and step + 1 < steps:
            accuracy = zero_shot_accuracy(model, tokenizer, seed=10_000 + step, n=200)
            history.append({"step": step + 1, **accuracy})
            log(f"  held-out zero-shot at step {step + 1}: {fmt(accuracy)}")
            if checkpoint is not None:
                checkpoint(model, tokenizer)
    return history


def fmt(accuracy: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.1%}" for k, v in accuracy.items())

"""Big Sleep's loss, term by term, as published (lucidrains/big-sleep, ``big_sleep.py``).

    loss = latent_loss(z) + class_loss(class vectors) + clip_loss(cutouts, prompts)

Each function is one term; ``tests/test_losses.py`` checks each against numbers worked
out by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The class term squares 50 x every class weight but the strongest of each latent row.
CLASS_LOSS_SCALE = 50.0
# The latent term's magnitude part: 4 x max(mean(z^2), 1).
LATENT_MAGNITUDE_WEIGHT, LATENT_MAGNITUDE_FLOOR = 4.0, 1.0


def latent_loss(z: torch.Tensor) -> torch.Tensor:
    """Keep every latent row (L, Z) a standard normal sample.

    |1 - std| and |mean| per row (std unbiased, as torch.std), 4 x max(mean(z^2), 1) over all,
    and per row the absolute skew and excess kurtosis of its z-scores (biased std), averaged
    over rows.
    """
    rows = z.shape[0]
    loss = (1 - torch.std(z, dim=1)).abs().mean() + torch.mean(z, dim=1).abs().mean()
    loss = loss + LATENT_MAGNITUDE_WEIGHT * torch.clamp(z.square().mean(), min=LATENT_MAGNITUDE_FLOOR)
    diffs = z - z.mean(dim=1, keepdim=True)
    scores = diffs / diffs.pow(2).mean(dim=1, keepdim=True).sqrt()  # biased std
    skews = scores.pow(3).mean(dim=1)
    kurtoses = scores.pow(4).mean(dim=1) - 3.0
    return loss + (kurtoses.abs() / rows).sum() + (skews.abs() / rows).sum()


def class_loss(class_vectors: torch.Tensor) -> torch.Tensor:
    """(L, C) class weights: every weight but each row's largest, times 50, squared, averaged."""
    weakest = torch.topk(class_vectors, k=class_vectors.shape[1] - 1, dim=1, largest=False).values
    return (CLASS_LOSS_SCALE * weakest).pow(2).mean()


def differentiable_topk(logits: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """(L, C) logits -> (L, C) with exactly ``k`` non-zero entries per row.

    k rounds: take the largest softmax(x / temperature) entry at its softmax value, then
    remove that class (-inf) and renormalise over the rest. The values keep their gradient.
    """
    picked = torch.zeros_like(logits)
    x = logits
    for round_ in range(k):
        values, indices = (x / temperature).softmax(dim=-1).topk(1, dim=-1)
        picked = picked + torch.zeros_like(logits).scatter(-1, indices, values)
        if round_ < k - 1:
            x = x.scatter(-1, indices, float("-inf"))
    return picked


def class_vectors(logits: torch.Tensor, max_classes: int | None, temperature: float) -> torch.Tensor:
    """The class mix BigGAN is conditioned on: sigmoid of every logit, or a top-k of softmaxes."""
    if max_classes is None:
        return torch.sigmoid(logits)
    return differentiable_topk(logits, max_classes, temperature)


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weights: torch.Tensor,
              clip_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-clip_weight x sum over prompts of weight x mean cosine similarity over cutouts.

    image_embeds (K, D) of the cutouts, text_embeds (P, D), weights (P,) (negative: push away).
    Returns the loss and the per-prompt mean similarities (P,).
    """
    similarity = F.cosine_similarity(image_embeds[:, None, :], text_embeds[None, :, :], dim=-1).mean(dim=0)
    return -clip_weight * (weights * similarity).sum(), similarity

"""The renderer's BigGAN: a worker's models' BigGAN driven the Big Sleep way (one latent row
per generator block, :func:`farm.render.biggan.generate`), and its pictures as frames.
"""

from __future__ import annotations

import numpy as np
import torch

from farm.render.biggan import generate
from farm.render.losses import class_vectors
from farm.render.models import Models


def synthesize(models: Models, z: torch.Tensor, classes: torch.Tensor, truncation: float) -> torch.Tensor:
    """z (B, L, Z) and class weights (B, L, C) -> image (B, 3, H, W) in [0, 1]."""
    return generate(models.biggan, z, classes, truncation, models.memory_format)


def image_of(models: Models, z: torch.Tensor, logits: torch.Tensor, truncation: float,
             max_classes: int | None, class_temperature: float) -> torch.Tensor:
    """One latent set, z (L, Z) and class logits (L, C) -> image (1, 3, H, W), no gradients."""
    with torch.no_grad():
        vectors = class_vectors(logits, max_classes, class_temperature)
        return synthesize(models, z[None], vectors[None], truncation).float()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()

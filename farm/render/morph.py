"""Morph transitions: BigGAN images along the slerp from one scene's latents to the next's.

Forward passes only (no CLIP, no gradients), so a bridge costs a few generator calls.
"""

from __future__ import annotations

import numpy as np
import torch

from farm.render.bigsleep import Latents
from farm.render.generator import image_of, to_uint8
from farm.render.models import Models


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of every row of a and b (L, N); rows that point the same way
    are interpolated linearly. t = 0 gives a, t = 1 gives b, exactly."""
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True))
    omega = torch.arccos(cos.clamp(-1, 1))
    sin = torch.sin(omega)
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype)


def bridge_frames(models: Models, start: Latents, end: Latents, count: int, truncation: float,
                  max_classes: int | None = None, class_temperature: float = 2.0) -> list[np.ndarray]:
    """``count`` (H, W, 3) uint8 images from the image of ``start`` to that of ``end``
    (both included, at t = i / (count - 1)), z and class logits slerped row by row."""
    if count < 1:
        return []
    device = models.device
    a = Latents(start.z.to(device).float(), start.classes.to(device).float())
    b = Latents(end.z.to(device).float(), end.classes.to(device).float())
    frames = []
    for i in range(count):
        t = 0.0 if count == 1 else i / (count - 1)
        z, classes = slerp(a.z, b.z, t), slerp(a.classes, b.classes, t)
        # One image per call, as a scene's own frames are drawn: the ends match them bit for bit.
        frames.append(to_uint8(image_of(models, z, classes, truncation, max_classes, class_temperature)))
    return frames

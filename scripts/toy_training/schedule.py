"""What both toy trainers share: their learning-rate schedule."""

from __future__ import annotations

import math

import torch


def set_warmup_cosine_lr(optimizer: torch.optim.Optimizer, base: float, step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps times a cosine decay over ``steps``; sets and returns the rate."""
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr

"""What the toy CLIP and the toy generator share: their learning-rate schedule and their fp16 weights files."""

from __future__ import annotations

import math

import torch


def set_warmup_cosine_lr(optimizer: torch.optim.Optimizer, base: float, step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps times a cosine decay over ``steps``; sets and returns the rate."""
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as shipped: floating-point tensors in fp16."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Shipped weights back in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

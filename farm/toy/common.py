"""The toy models' weights files, shared by the toy CLIP and the toy generator: fp16 as shipped."""

from __future__ import annotations

import torch


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as shipped: floating-point tensors in fp16."""
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Shipped weights back in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

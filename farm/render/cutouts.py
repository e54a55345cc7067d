"""Random square cutouts of the generated image, resized to CLIP's input in one batched operation.

big-sleep draws each cutout's side as ``int(width x clip(normal(0.8, 0.3), 0.5, 0.95))``,
places it uniformly (or around the centre), and resizes it with ``F.interpolate`` in a
Python loop, one call per cutout. Here the boxes are drawn as tensors and every cutout is
resampled at once: a resize of a crop is separable, so each output row (column) reads one
(nearest), two (bilinear) or a box of (area) source rows (columns) at offsets we compute,
exactly as ``F.interpolate`` does for that crop alone.
"""

from __future__ import annotations

import torch

from farm.spec import RenderSpec


def cutout_boxes(settings: RenderSpec, count: int, side: int, rng: torch.Generator) -> torch.Tensor:
    """(count, 3) int64 boxes (top, left, size) inside a ``side`` x ``side`` image."""
    fractions = (settings.cutout_size_mean + settings.cutout_size_std * torch.randn(count, generator=rng))
    sizes = (side * fractions.clamp(settings.cutout_size_min, settings.cutout_size_max)).long().clamp(min=1)
    free = (side - sizes).unsqueeze(1)  # (count, 1): offsets lie in [0, free]
    uniform = (torch.rand(count, 2, generator=rng) * (free + 1)).long().clamp(max=free)
    if not settings.center_bias:
        return torch.cat([uniform, sizes[:, None]], dim=1)
    centre = free / 2
    gauss = (centre + (centre / settings.center_focus) * torch.randn(count, 2, generator=rng)).long()
    inside = (gauss >= 0) & (gauss <= free)
    return torch.cat([torch.where(inside, gauss, uniform), sizes[:, None]], dim=1)


def take_cutouts(image: torch.Tensor, boxes: torch.Tensor, out: int, mode: str) -> torch.Tensor:
    """image (1, C, H, W), boxes (K, 3) -> (K, C, out, out), as ``F.interpolate`` of each crop."""
    boxes = boxes.to(image.device)
    tops, lefts, sizes = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    img = image[0]  # (C, H, W)
    if mode == "nearest":
        rows = tops[:, None] + _nearest(sizes, out)  # (K, out)
        cols = lefts[:, None] + _nearest(sizes, out)
        return img[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (K, C, out, out)
    if mode == "bilinear":
        r0, r1, rw = _linear(sizes, out)
        c0, c1, cw = _linear(sizes, out)
        r0, r1, c0, c1 = r0 + tops[:, None], r1 + tops[:, None], c0 + lefts[:, None], c1 + lefts[:, None]
        # Rows first: (C, K, out, W), then columns: (C, K, out, out).
        rowed = img[:, r0] * (1 - rw)[None, :, :, None] + img[:, r1] * rw[None, :, :, None]
        k = torch.arange(len(boxes), device=img.device)[:, None, None]
        i = torch.arange(out, device=img.device)[None, :, None]
        cut = (rowed[:, k, i, c0[:, None, :]] * (1 - cw)[None, :, None, :]
               + rowed[:, k, i, c1[:, None, :]] * cw[None, :, None, :])
        return cut.permute(1, 0, 2, 3)
    if mode == "area":
        height, width = img.shape[-2:]
        rows = _box_matrix(tops, sizes, out, height, img.dtype)  # (K, out, H)
        cols = _box_matrix(lefts, sizes, out, width, img.dtype)  # (K, out, W)
        return rows[:, None] @ img[None] @ cols[:, None].transpose(-1, -2)
    raise ValueError(f"unknown cutout resampling {mode!r}")


def _nearest(sizes: torch.Tensor, out: int) -> torch.Tensor:
    """F.interpolate(mode='nearest'): source index floor(i x in/out) in float32, capped at in-1."""
    scale = sizes.to(torch.float32)[:, None] / out
    index = (torch.arange(out, device=sizes.device, dtype=torch.float32)[None] * scale).floor().long()
    return torch.minimum(index, sizes[:, None] - 1)


def _linear(sizes: torch.Tensor, out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F.interpolate(mode='bilinear', align_corners=False) along one axis: two taps and the weight."""
    scale = sizes.to(torch.float32)[:, None] / out
    source = ((torch.arange(out, device=sizes.device, dtype=torch.float32)[None] + 0.5) * scale - 0.5).clamp(min=0)
    low = source.long()
    high = torch.where(low < sizes[:, None] - 1, low + 1, low)
    return low, high, source - low


def _box_matrix(offsets: torch.Tensor, sizes: torch.Tensor, out: int, length: int, dtype: torch.dtype) -> torch.Tensor:
    """F.interpolate(mode='area') (adaptive average pooling) along one axis as a (K, out, length) matrix:
    output i averages source [floor(i x in/out), ceil((i + 1) x in/out))."""
    i = torch.arange(out, device=sizes.device)[None]
    n = sizes[:, None]
    start = torch.div(i * n, out, rounding_mode="floor") + offsets[:, None]
    end = -torch.div(-(i + 1) * n, out, rounding_mode="floor") + offsets[:, None]
    positions = torch.arange(length, device=sizes.device)[None, None]
    inside = (positions >= start[..., None]) & (positions < end[..., None])
    return inside.to(dtype) / (end - start)[..., None].to(dtype)

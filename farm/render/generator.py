"""BigGAN driven the Big Sleep way: one latent row per generator block.

pytorch-pretrained-biggan's own forward feeds the same condition vector to every
block; Big Sleep gives each block its own row of (z, class embedding), so the
forward pass is spelled out here over the library's modules.
"""

from __future__ import annotations

import numpy as np
import torch

from farm.render.losses import class_vectors
from farm.render.models import Models


def synthesize(models: Models, z: torch.Tensor, classes: torch.Tensor, truncation: float) -> torch.Tensor:
    """z (B, L, Z) and class weights (B, L, C) -> image (B, 3, H, W) in [0, 1]."""
    return generate(models.biggan, z, classes, truncation, models.memory_format)


def generate(biggan, z: torch.Tensor, classes: torch.Tensor, truncation: float,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The forward pass of :func:`synthesize` for a bare BigGAN (the toy generator trains through it)."""
    gen = biggan.generator
    cond = torch.cat([z, biggan.embeddings(classes)], dim=-1)  # (B, L, Z + E)
    x = gen.gen_z(cond[:, 0])
    # The library's weights follow TensorFlow's (B, H, W, C) layout at the first block.
    x = x.view(-1, 4, 4, 16 * gen.config.channel_width).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=memory_format)
    row = 1
    for layer in gen.layers:
        if layer.__class__.__name__ == "GenBlock":
            x = layer(x, cond[:, row], truncation)
            row += 1
        else:
            x = self_attention(layer, x)
    x = gen.relu(gen.bn(x, truncation))
    x = torch.tanh(gen.conv_to_rgb(x)[:, :3])
    return (x + 1) / 2


def self_attention(layer, x: torch.Tensor) -> torch.Tensor:
    """The library's SelfAttn, x + gamma o_conv(g softmax(theta^T phi)^T), with the product taken as
    (softmax(theta^T phi) g^T)^T: the same sums, but the (HW, HW/4) attention map is never
    transposed, so its gradient needs no strided copy before the softmax's backward."""
    batch, channels, height, width = x.shape
    theta = layer.snconv1x1_theta(x).view(batch, channels // 8, height * width)
    phi = layer.maxpool(layer.snconv1x1_phi(x)).view(batch, channels // 8, height * width // 4)
    attention = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (B, HW, HW/4)
    g = layer.maxpool(layer.snconv1x1_g(x)).view(batch, channels // 2, height * width // 4)
    attended = torch.bmm(attention, g.transpose(1, 2)).transpose(1, 2).reshape(batch, channels // 2, height, width)
    return x + layer.gamma * layer.snconv1x1_o_conv(attended)


def image_of(models: Models, z: torch.Tensor, logits: torch.Tensor, truncation: float,
             max_classes: int | None, class_temperature: float) -> torch.Tensor:
    """One latent set, z (L, Z) and class logits (L, C) -> image (1, 3, H, W), no gradients."""
    with torch.no_grad():
        vectors = class_vectors(logits, max_classes, class_temperature)
        return synthesize(models, z[None], vectors[None], truncation).float()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()

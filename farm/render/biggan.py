"""BigGAN-deep (pytorch-pretrained-biggan's classes): built at any width, loaded strictly from files,
and driven the Big Sleep way, one latent row per generator block.

The renderer (farm.render.models, farm.render.generator) and the toy generator (farm.toy) both
build on this module; it needs nothing of farm but its errors.

pytorch-pretrained-biggan's own forward feeds the same condition vector to every block; Big Sleep
gives each block its own row of (z, class embedding), so :func:`generate` spells the forward pass
out over the library's modules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook

from farm.errors import ModelError, first_line

# The pytorch-pretrained-biggan BigGAN class with 8 channels per width unit (the real ones use 128).
TINY_BIGGAN_CHANNELS = 8
TINY_WEIGHTS_SEED = 20210410  # fixed so every worker builds the same random networks

# --- building ----------------------------------------------------------------------------------


def biggan_layers(size: int) -> list[tuple[bool, int, int]]:
    """Generator blocks for a BigGAN-deep making ``size`` pixels: pairs of (keep, up-sample)
    blocks from 4x4, channel multipliers halving as the image grows."""
    ups = int(math.log2(size // 4))
    mults = {4: [16, 8, 4, 2, 1], 5: [16, 16, 8, 4, 2, 1], 6: [16, 16, 8, 8, 4, 2, 1],
             7: [16, 16, 8, 8, 4, 2, 1, 1]}[ups]
    layers = []
    for a, b in zip(mults, mults[1:]):
        layers += [(False, a, a), (True, a, b)]
    return layers


def fold_spectral_norm(model: nn.Module) -> None:
    """Replace every spectral-normed weight by its value: weight_orig / sigma from the stored
    power-iteration vectors. That is exactly what an eval-mode forward computes, at every call,
    for every layer; the weights are frozen, so once is enough."""
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            trainable = module.weight_orig.requires_grad
            nn.utils.remove_spectral_norm(module)
            module.weight.requires_grad_(trainable)  # a new Parameter: keep the frozen frozen
            # torch leaves the load hook behind (it is wrapped, so remove_spectral_norm misses it);
            # it would turn a later load's plain `weight` back into weight_orig and fail.
            for key, hook in list(module._load_state_dict_pre_hooks.items()):
                if isinstance(getattr(hook, "hook", hook), SpectralNormLoadStateDictPreHook):
                    del module._load_state_dict_pre_hooks[key]


def build_tiny_biggan(size: int) -> nn.Module:
    return build_biggan(size, TINY_BIGGAN_CHANNELS)


def biggan_config(size: int, channels: int, attention: int = 64):
    """The BigGAN-deep config for ``size`` pixels at ``channels`` per width unit (128 in the
    published models), with self-attention at the ``attention`` x ``attention`` stage (64 in the
    published models)."""
    from pytorch_pretrained_biggan import BigGANConfig

    layers = biggan_layers(size)
    # The library puts the attention layer before the block at this index.
    position = next(i for i, (up, _, _) in enumerate(layers)
                    if up and 4 * 2 ** sum(u for u, _, _ in layers[: i + 1]) == attention) + 1
    return BigGANConfig(output_dim=size, z_dim=128, class_embed_dim=128, channel_width=channels,
                        num_classes=1000, layers=layers, attention_layer_position=position)


def build_biggan(size: int, channels: int) -> nn.Module:
    """The BigGAN-deep architecture for ``size`` pixels at ``channels`` per width unit, with random
    weights drawn from a fixed seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHTS_SEED)
        return new_biggan(biggan_config(size, channels))


def new_biggan(config) -> nn.Module:
    """The library's BigGAN for ``config``, every weight initialised, spectral norms settled
    (random weights from torch's global generator)."""
    from pytorch_pretrained_biggan import BigGAN

    model = BigGAN(config)
    # The library leaves the last (unconditional) batch norm's affine parameters
    # uninitialised, since pretrained weights always overwrite them.
    nn.init.ones_(model.generator.bn.weight)
    nn.init.zeros_(model.generator.bn.bias)
    settle_spectral_norm(model)
    return model


def latent_rows(biggan: nn.Module) -> int:
    """Big Sleep's latent rows for this BigGAN: one for gen_z plus one per generator block."""
    return 1 + sum(1 for layer in biggan.generator.layers if layer.__class__.__name__ == "GenBlock")


def settle_spectral_norm(model: nn.Module) -> None:
    """Random spectral-norm vectors give a random scale to every layer; a few power
    iterations (what a forward pass in train mode does) make them true estimates."""
    model.train()
    with torch.no_grad():
        for _ in range(10):
            for module in model.modules():
                if hasattr(module, "weight_orig"):
                    module(torch.zeros(1, *_probe_shape(module)))


def _probe_shape(module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, nn.Conv2d):
        return (module.in_channels, module.kernel_size[0], module.kernel_size[1])
    if isinstance(module, nn.Linear):
        return (module.in_features,)
    raise AssertionError(f"unexpected spectral-normed module {module!r}")


# --- loading -----------------------------------------------------------------------------------


def biggan_from_files(config_file: Path, weights_file: Path, size: int) -> nn.Module:
    """The library's BigGAN class from its config and weights, every weight accounted for
    (the library's own loader accepts any state dict, wrong model or not)."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    try:
        config = BigGANConfig.from_dict(json.loads(Path(config_file).read_text()))
        output_dim = config.output_dim
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ModelError(f"models.biggan: {config_file} is not a BigGAN config ({exc})") from exc
    if output_dim != size:
        raise ModelError(f"video.size: {size} is not a size this BigGAN can make (it makes {output_dim})")
    model = BigGAN(config)
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"models.biggan: {weights_file} does not hold the weights of this BigGAN "
                         f"(unreadable: {first_line(exc, with_type=True)[:300]})") from exc
    problem = state_dict_mismatch(model, state)
    if problem:
        raise ModelError(f"models.biggan: {weights_file} does not hold the weights of this BigGAN ({problem})")
    model.load_state_dict(state, strict=True)
    return model


def state_dict_mismatch(model: nn.Module, state: object) -> str:
    """What keeps ``state`` from being exactly ``model``'s weights, in a few words; empty if nothing."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a state dict"
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    wrong = [k for k in mine if k in state and getattr(state[k], "shape", None) != mine[k].shape]
    parts = [f"{len(keys)} {what}, e.g. {keys[0]}" for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)) if keys]
    return "; ".join(parts)


# --- the forward pass, one latent row per block ---------------------------------------------------


def generate(biggan, z: torch.Tensor, classes: torch.Tensor, truncation: float,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """z (B, L, Z) and class weights (B, L, C) -> image (B, 3, H, W) in [0, 1], through a bare
    BigGAN (the renderer's :func:`farm.render.generator.synthesize`; the toy generator trains through it)."""
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


def self_attention(layer, x: torch.Tensor, fused: Optional[bool] = None) -> torch.Tensor:
    """The library's SelfAttn, x + gamma o_conv(attend(theta, maxpool(phi), maxpool(g))): attention
    of every pixel over the 2x2-pooled ones, unscaled (scale 1), with C/8 channels for queries and
    keys and C/2 for values. ``fused``: through torch's scaled_dot_product_attention (the map is
    never materialised) or as the explicit product and softmax; by default whichever
    :func:`fused_attention_wins` says is faster here."""
    batch, channels, height, width = x.shape
    theta = layer.snconv1x1_theta(x).view(batch, channels // 8, height * width)
    phi = layer.maxpool(layer.snconv1x1_phi(x)).view(batch, channels // 8, height * width // 4)
    g = layer.maxpool(layer.snconv1x1_g(x)).view(batch, channels // 2, height * width // 4)
    if fused is None:
        fused = fused_attention_wins(x, channels // 2)
    attended = attend(theta, phi, g, fused).reshape(batch, channels // 2, height, width)
    return x + layer.gamma * layer.snconv1x1_o_conv(attended)


def attend(theta: torch.Tensor, phi: torch.Tensor, g: torch.Tensor, fused: bool) -> torch.Tensor:
    """queries theta (B, Dk, N), keys phi (B, Dk, M), values g (B, Dv, M) -> (B, Dv, N):
    out[:, :, n] = sum_m softmax_m(theta[:, :, n] . phi[:, :, m]) g[:, :, m], no 1/sqrt(Dk) scale."""
    if not fused:
        # (softmax(theta^T phi) g^T)^T: the library's sums, but the (N, M) map is never transposed,
        # so its gradient needs no strided copy before the softmax's backward.
        attention = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (B, N, M)
        return torch.bmm(attention, g.transpose(1, 2)).transpose(1, 2)
    # (B, N|M, D), channels last in memory, as the fused kernels want them.
    query, key, value = (t.transpose(1, 2).contiguous() for t in (theta, phi, g))
    if query.device.type == "cpu":
        # torch's CPU flash kernel wants one width for queries, keys and values: zero channels
        # added to queries and keys leave every dot product as it was.
        extra = value.shape[-1] - query.shape[-1]
        query, key = F.pad(query, (0, extra)), F.pad(key, (0, extra))
    out = F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)  # (B, 1, N, Dv)
    return out[:, 0].transpose(1, 2)


# Measured (docs/BENCHMARKS.md, scripts/bench_attention.py): on a CPU the fused kernel, with queries
# and keys padded to the values' width, takes half the explicit product's time at 64x64 pixels and
# values of up to 64 channels (the tiny preset's generator); it is slower for wider values (the
# padding quadruples the query-key product) and no faster at 32x32 (the toy generator's), where the
# map is small.
CPU_FUSED_MAX_VALUE_CHANNELS = 64
CPU_FUSED_MIN_PIXELS = 64 * 64


def fused_attention_wins(x: torch.Tensor, value_channels: int) -> bool:
    """Whether SDPA beats the explicit product for the attention over ``x`` (B, C, H, W): on a GPU
    (flash or memory-efficient kernels) except in deterministic mode, where the explicit product
    keeps every step repeatable; on a CPU for large maps of narrow values only."""
    if x.device.type == "cuda":
        return not torch.are_deterministic_algorithms_enabled()
    pixels = x.shape[-2] * x.shape[-1]
    return (x.device.type == "cpu" and value_channels <= CPU_FUSED_MAX_VALUE_CHANNELS
            and pixels >= CPU_FUSED_MIN_PIXELS)

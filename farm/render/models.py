"""CLIP (open_clip) and BigGAN (pytorch-pretrained-biggan): pretrained, staged, or tiny.

Pretrained weights load through the libraries' own loaders, or from files a
user staged in advance (clusters are often offline). ``tiny`` builds the same
model classes at small widths with random weights drawn from a fixed seed, so
every worker holds identical models and tests run on a CPU in seconds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from farm.errors import ModelError
from farm.spec import PRETRAINED_BIGGAN, ModelsSpec

# Small but real: the open_clip CLIP class with 2 narrow transformer layers per tower.
TINY_CLIP = dict(embed_dim=64, image_size=64, patch_size=16, vision_width=64, vision_layers=2,
                 text_width=64, text_heads=2, text_layers=2)
# The pytorch-pretrained-biggan BigGAN class with 8 channels per width unit (the real ones use 128).
TINY_BIGGAN_CHANNELS = 8
TINY_WEIGHTS_SEED = 20210410  # fixed so every worker builds the same random networks


@dataclass
class Models:
    """Everything a Big Sleep optimisation needs, loaded once per worker."""

    clip: nn.Module
    tokenizer: object
    biggan: nn.Module
    clip_size: int  # CLIP's input side in pixels
    clip_mean: torch.Tensor  # (1, 3, 1, 1)
    clip_std: torch.Tensor  # (1, 3, 1, 1)
    resolution: int  # BigGAN's output side in pixels
    num_latents: int  # one latent row for gen_z plus one per generator block
    z_dim: int
    num_classes: int
    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format  # channels_last on request


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("render.device: 'cuda' was asked for but this worker has no CUDA GPU")
    return torch.device(name)


def load_models(spec: ModelsSpec, size: int, device: torch.device) -> Models:
    clip, clip_size = load_clip(spec)
    biggan = load_biggan(spec, size)
    resolution = biggan.config.output_dim
    if resolution != size:
        raise ModelError(f"video.size: {size} is not a size {spec.biggan} can make (it makes {resolution})")
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    blocks = sum(1 for layer in biggan.generator.layers if layer.__class__.__name__ == "GenBlock")
    for module in (clip, biggan):
        module.eval().requires_grad_(False).to(device)
    return Models(
        clip=clip,
        # tiny reuses ViT-B-32's tokenizer: the BPE vocabulary CLIP ships with.
        tokenizer=open_clip.get_tokenizer("ViT-B-32" if spec.clip == "tiny" else spec.clip),
        biggan=biggan,
        clip_size=clip_size,
        clip_mean=mean.to(device),
        clip_std=std.to(device),
        resolution=resolution,
        num_latents=1 + blocks,
        z_dim=biggan.config.z_dim,
        num_classes=biggan.config.num_classes,
        device=device,
    )


# --- CLIP ------------------------------------------------------------------------------------


def load_clip(spec: ModelsSpec) -> tuple[nn.Module, int]:
    import open_clip

    if spec.clip == "tiny":
        return build_tiny_clip(), TINY_CLIP["image_size"]
    if spec.clip not in open_clip.list_models():
        raise ModelError(f"models.clip: {spec.clip!r} is not an open_clip model (see open_clip.list_models())")
    pretrained = spec.clip_pretrained
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise ModelError(f"models.clip_pretrained: no weights file at {pretrained}")
    try:
        model = open_clip.create_model(spec.clip, pretrained=pretrained or None, cache_dir=spec.cache_dir)
    except Exception as exc:  # the hub, the network or a bad file: all one line for the user
        raise ModelError(
            f"models.clip_pretrained: could not load {pretrained!r} weights for {spec.clip} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "offline clusters stage the file and give its path"
        ) from exc
    size = model.visual.image_size
    return model, size[0] if isinstance(size, (tuple, list)) else int(size)


def build_tiny_clip() -> nn.Module:
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    c = TINY_CLIP
    vision = CLIPVisionCfg(layers=c["vision_layers"], width=c["vision_width"], head_width=32,
                           patch_size=c["patch_size"], image_size=c["image_size"])
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=c["text_width"],
                       heads=c["text_heads"], layers=c["text_layers"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHTS_SEED)
        return open_clip.CLIP(embed_dim=c["embed_dim"], vision_cfg=vision, text_cfg=text)


# --- BigGAN ----------------------------------------------------------------------------------


def biggan_layers(size: int) -> list[tuple[bool, int, int]]:
    """Generator blocks for a BigGAN-deep making ``size`` pixels: pairs of (keep, up-sample)
    blocks from 4x4, channel multipliers halving as the image grows."""
    ups = int(math.log2(size // 4))
    mults = {5: [16, 16, 8, 4, 2, 1], 6: [16, 16, 8, 8, 4, 2, 1], 7: [16, 16, 8, 8, 4, 2, 1, 1]}[ups]
    layers = []
    for a, b in zip(mults, mults[1:]):
        layers += [(False, a, a), (True, a, b)]
    return layers


def build_tiny_biggan(size: int) -> nn.Module:
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    layers = biggan_layers(size)
    # Self-attention where the real models put it: at the 64x64 stage.
    attention = next(i for i, (up, _, _) in enumerate(layers) if up and 4 * 2 ** sum(u for u, _, _ in layers[: i + 1]) == 64) + 1
    config = BigGANConfig(output_dim=size, z_dim=128, class_embed_dim=128, channel_width=TINY_BIGGAN_CHANNELS,
                          num_classes=1000, layers=layers, attention_layer_position=attention)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_WEIGHTS_SEED)
        model = BigGAN(config)
        # The library leaves the last (unconditional) batch norm's affine parameters
        # uninitialised, since pretrained weights always overwrite them.
        nn.init.ones_(model.generator.bn.weight)
        nn.init.zeros_(model.generator.bn.bias)
        # Random spectral-norm vectors give a random scale to every layer; a few power
        # iterations (what a forward pass in train mode does) make them true estimates.
        model.train()
        with torch.no_grad():
            for _ in range(10):
                for module in model.modules():
                    if hasattr(module, "weight_orig"):
                        module(torch.zeros(1, *_probe_shape(module)))
    return model


def _probe_shape(module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, nn.Conv2d):
        return (module.in_channels, module.kernel_size[0], module.kernel_size[1])
    if isinstance(module, nn.Linear):
        return (module.in_features,)
    raise AssertionError(f"unexpected spectral-normed module {module!r}")


def load_biggan(spec: ModelsSpec, size: int) -> nn.Module:
    from pytorch_pretrained_biggan import BigGAN

    name = spec.biggan
    if name == "tiny":
        return build_tiny_biggan(size)
    if name not in PRETRAINED_BIGGAN:
        folder = Path(name)
        missing = [f for f in ("config.json", "pytorch_model.bin") if not (folder / f).is_file()]
        if missing:
            raise ModelError(f"models.biggan: {name!r} is neither {', '.join(PRETRAINED_BIGGAN)} nor a folder "
                             f"holding config.json and pytorch_model.bin (missing {', '.join(missing)})")
        try:
            output_dim = json.loads((folder / "config.json").read_text())["output_dim"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"models.biggan: {folder / 'config.json'} is not a BigGAN config ({exc})") from exc
        if output_dim != size:
            raise ModelError(f"video.size: {size} is not a size {name} can make (it makes {output_dim})")
    try:
        return BigGAN.from_pretrained(name, cache_dir=spec.cache_dir)
    except Exception as exc:
        raise ModelError(
            f"models.biggan: could not load {name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); offline clusters stage the folder and give its path"
        ) from exc


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".bin", ".safetensors", ".pth"))

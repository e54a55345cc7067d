"""CLIP (open_clip) and BigGAN (pytorch-pretrained-biggan): pretrained, staged, tiny or toy.

Pretrained weights load through the libraries' own loaders, or from files a
user staged in advance (clusters are often offline). ``tiny`` builds the same
model classes at small widths with random weights drawn from a fixed seed, so
every worker holds identical models and tests run on a CPU in seconds. ``toy``
loads the models farm/toy ships. BigGAN itself is built, loaded from files and
driven in :mod:`farm.render.biggan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from farm.errors import ModelError, first_line
from farm.render.biggan import (
    TINY_WEIGHTS_SEED,
    biggan_from_files,
    build_tiny_biggan,
    fold_spectral_norm,
    latent_rows,
)
from farm.spec import PRETRAINED_BIGGAN, ModelsSpec

# Small but real: the open_clip CLIP class with 2 narrow transformer layers per tower.
TINY_CLIP = dict(embed_dim=64, image_size=64, patch_size=16, vision_width=64, vision_layers=2,
                 text_width=64, text_heads=2, text_layers=2)


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


def load_models(spec: ModelsSpec, size: int, device: torch.device, preset: str = "draft") -> Models:
    """CLIP and BigGAN as ``spec`` names them, on ``device``; ``preset`` only words the advice
    given when weights are missing."""
    if spec.clip == "toy":  # trained here on procedural pictures, with its own compact tokenizer
        from farm.toy.clip import load_toy_clip
        clip, toy_tokenizer, clip_size = load_toy_clip()
    else:
        clip, clip_size = load_clip(spec, preset)
    biggan = load_biggan(spec, size, preset)
    resolution = biggan.config.output_dim
    if resolution != size:
        raise ModelError(f"video.size: {size} is not a size {spec.biggan} can make (it makes {resolution})")
    import open_clip

    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    fold_spectral_norm(biggan.eval())
    for module in (clip, biggan):
        module.eval().requires_grad_(False).to(device)
    return Models(
        clip=clip,
        # tiny reuses ViT-B-32's tokenizer: the BPE vocabulary CLIP ships with.
        tokenizer=(toy_tokenizer if spec.clip == "toy"
                   else open_clip.get_tokenizer("ViT-B-32" if spec.clip == "tiny" else spec.clip)),
        biggan=biggan,
        clip_size=clip_size,
        clip_mean=mean.to(device),
        clip_std=std.to(device),
        resolution=resolution,
        num_latents=latent_rows(biggan),
        z_dim=biggan.config.z_dim,
        num_classes=biggan.config.num_classes,
        device=device,
    )


# --- CLIP ------------------------------------------------------------------------------------


def load_clip(spec: ModelsSpec, preset: str = "draft") -> tuple[nn.Module, int]:
    import open_clip

    from farm.render import weights as w

    if spec.clip == "tiny":
        return build_tiny_clip(), TINY_CLIP["image_size"]
    if spec.clip not in open_clip.list_models():
        raise ModelError(f"models.clip: {spec.clip!r} is not an open_clip model (see open_clip.list_models())")
    located = w.clip_weights(spec)
    if located.kind == "builtin":  # no pretrained weights asked for: the architecture at random
        model = open_clip.create_model(spec.clip, pretrained=None)
    else:
        if located.kind == "file" and not located.present:
            raise ModelError(f"models.clip_pretrained: no weights file at {located.path}")
        if located.kind == "tag" and not located.present:
            w.ensure_reachable(located, preset)
            located.path = w.fetch_clip(spec)
        # A file path, cached or staged: open_clip loads it with no network call.
        model = open_clip.create_model(spec.clip, pretrained=None)
        try:
            open_clip.load_checkpoint(model, str(located.path))
        except Exception as exc:
            raise ModelError(f"models.clip_pretrained: {located.path} does not hold {spec.clip} weights "
                             f"({first_line(exc, with_type=True)[:300]})") from exc
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


def load_biggan(spec: ModelsSpec, size: int, preset: str = "draft") -> nn.Module:
    from farm.render import weights as w

    if spec.biggan == "tiny":
        return build_tiny_biggan(size)
    if spec.biggan == "toy":  # trained here on procedural pictures (farm/toy)
        from farm.toy.generator import load_toy_biggan
        return load_toy_biggan(size=size)
    located = w.biggan_weights(spec)
    if located.kind == "folder":
        folder = located.path
        missing = [f for f in w.BIGGAN_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelError(f"models.biggan: {spec.biggan!r} is neither {', '.join(PRETRAINED_BIGGAN)} nor a folder "
                             f"holding config.json and pytorch_model.bin (missing {', '.join(missing)})")
        files = {role: folder / role for role in w.BIGGAN_FILES}
    elif located.present:
        files = w.biggan_cached_files(spec)
    else:
        w.ensure_reachable(located, preset)
        files = w.fetch_biggan(spec)
    return biggan_from_files(files["config.json"], files["pytorch_model.bin"], size)

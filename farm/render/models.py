"""CLIP (open_clip) and BigGAN (pytorch-pretrained-biggan): pretrained, staged, or tiny.

Pretrained weights load through the libraries' own loaders, or from files a
user staged in advance (clusters are often offline). ``tiny`` builds the same
model classes at small widths with random weights drawn from a fixed seed, so
every worker holds identical models and tests run on a CPU in seconds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNormLoadStateDictPreHook

from farm.errors import ModelError, first_line
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
        tokenizer=toy_tokenizer if spec.clip == "toy" else open_clip.get_tokenizer("ViT-B-32" if spec.clip == "tiny" else spec.clip),
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


def biggan_layers(size: int) -> list[tuple[bool, int, int]]:
    """Generator blocks for a BigGAN-deep making ``size`` pixels: pairs of (keep, up-sample)
    blocks from 4x4, channel multipliers halving as the image grows."""
    ups = int(math.log2(size // 4))
    mults = {4: [16, 8, 4, 2, 1], 5: [16, 16, 8, 4, 2, 1], 6: [16, 16, 8, 8, 4, 2, 1], 7: [16, 16, 8, 8, 4, 2, 1, 1]}[ups]
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
    position = next(i for i, (up, _, _) in enumerate(layers) if up and 4 * 2 ** sum(u for u, _, _ in layers[: i + 1]) == attention) + 1
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

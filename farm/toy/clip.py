"""The toy CLIP: the real ``open_clip.CLIP`` class at small widths, trained on the toy world.

Tokenization goes through open_clip's own tokenizer (ViT-B-32's BPE, vocabulary
49408), then a lookup maps the few BPE ids the toy world uses onto a compact
vocabulary (every other id becomes ``<unk>``). A full 49408-row token embedding
would be most of the model; the compact one is a few dozen rows. The open_clip
text tower pools at the highest token id (argmax), so ``<end_of_text>`` keeps the
highest compact id, and padding stays 0.

It is trained by scripts/train_toy.py (scripts/toy_training/clip.py); :func:`zero_shot_accuracy`
measures it on freshly drawn pictures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from farm.errors import ModelError
from farm.toy.common import float_state, half_state
from farm.toy.world import COLOURS, POSITIONS, SHAPES, Picture, ToyWorld

WEIGHTS = Path(__file__).with_name("weights") / "toy_clip.pt"
# Architecture of the shipped toy CLIP (also stored in the weights file): open_clip's ModifiedResNet
# image tower (as in CLIP RN50) at width 8. A small ViT learnt colour but never shape or position
# (docs/TOY.md); convolutions see edges at once.
TOY_CLIP = dict(embed_dim=64, image_size=64, vision_layers=[1, 1, 1, 1], vision_width=8,
                text_width=64, text_heads=2, text_layers=2, context_length=16)
SOT, EOT = 49406, 49407  # open_clip's start/end-of-text ids
MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)  # open_clip.OPENAI_DATASET_MEAN
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


class ToyTokenizer:
    """open_clip's BPE tokenizer followed by a map onto the toy vocabulary."""

    def __init__(self, bpe_ids: list[int], context_length: int) -> None:
        import open_clip

        self.bpe = open_clip.get_tokenizer("ViT-B-32")
        self.context_length = context_length
        self.bpe_ids = list(bpe_ids)
        lookup = torch.full((49408,), 1, dtype=torch.long)  # <unk>
        lookup[0] = 0  # padding
        for i, bpe_id in enumerate(self.bpe_ids):
            lookup[bpe_id] = 2 + i
        lookup[SOT] = 2 + len(self.bpe_ids)
        lookup[EOT] = 3 + len(self.bpe_ids)
        self.lookup = lookup
        self.vocab_size = 4 + len(self.bpe_ids)

    @classmethod
    def for_words(cls, words: list[str], context_length: int) -> "ToyTokenizer":
        import open_clip

        bpe = open_clip.get_tokenizer("ViT-B-32")
        ids = sorted({int(t) for t in bpe(list(words), context_length=8).flatten().tolist()} - {0, SOT, EOT})
        return cls(ids, context_length)

    def __call__(self, texts, context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.bpe(list(texts), context_length=context_length or self.context_length)
        return self.lookup[tokens]


def build_toy_clip(config: dict, vocab_size: int) -> nn.Module:
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    c = config
    if isinstance(c["vision_layers"], (list, tuple)):  # open_clip's ModifiedResNet (as in CLIP RN50)
        vision = CLIPVisionCfg(layers=tuple(c["vision_layers"]), width=c["vision_width"], image_size=c["image_size"])
    else:
        vision = CLIPVisionCfg(layers=c["vision_layers"], width=c["vision_width"], head_width=c["vision_head_width"],
                               patch_size=c["patch_size"], image_size=c["image_size"])
    text = CLIPTextCfg(context_length=c["context_length"], vocab_size=vocab_size, width=c["text_width"],
                       heads=c["text_heads"], layers=c["text_layers"])
    return open_clip.CLIP(embed_dim=c["embed_dim"], vision_cfg=vision, text_cfg=text)


def save_toy_clip(path: Path, model: nn.Module, tokenizer: ToyTokenizer, config: dict, info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "bpe_ids": tokenizer.bpe_ids, "state": half_state(model), "info": info}, path)


def load_toy_clip(path: Path | str = WEIGHTS) -> tuple[nn.Module, ToyTokenizer, int]:
    """The trained toy CLIP (float32 on the CPU), its tokenizer and its input side in pixels."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"models.clip: the toy CLIP weights are missing ({path}); run scripts/train_toy.py")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    config = saved["config"]
    tokenizer = ToyTokenizer(saved["bpe_ids"], config["context_length"])
    model = build_toy_clip(config, tokenizer.vocab_size)
    model.load_state_dict(float_state(saved["state"]))
    return model.eval(), tokenizer, config["image_size"]


def to_clip_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) normalised as open_clip expects."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - MEAN) / STD


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, tokenizer: ToyTokenizer, seed: int, n: int = 1000,
                       full_captions: bool = True) -> dict[str, float]:
    """Zero-shot accuracy per attribute on freshly drawn pictures.

    For every picture and attribute (colour, shape, position), CLIP picks among the
    captions that differ from the true one in that attribute only; with
    ``full_captions=False`` the captions are the short "a red circle" form (no
    position, size, background), so only colour and shape are scored.
    """
    model.eval()
    side = model.visual.image_size
    world = ToyWorld(seed=seed, size=side[0] if isinstance(side, (tuple, list)) else int(side), partial_captions=False)
    batch = world.batch(n)
    image_features = F.normalize(model.encode_image(to_clip_input(batch.images)), dim=-1)
    cache: dict[str, torch.Tensor] = {}

    def embed(captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in cache]
        if missing:
            for c, e in zip(missing, F.normalize(model.encode_text(tokenizer(missing)), dim=-1)):
                cache[c] = e
        return torch.stack([cache[c] for c in captions])

    options = {"colour": list(COLOURS), "shape": list(SHAPES), "position": list(POSITIONS)}
    if not full_captions:
        del options["position"]
    right = {a: 0 for a in options}
    for i, p in enumerate(batch.pictures):
        for attribute, values in options.items():
            candidates = [Picture(**{**p.__dict__, attribute: v}) for v in values]
            texts = [c.caption() if full_captions else c.caption(size=False, position=False, background=False)
                     for c in candidates]
            scores = embed(texts) @ image_features[i]
            right[attribute] += int(values[int(scores.argmax())] == getattr(p, attribute))
    return {a: right[a] / n for a in options}

"""Big Sleep: CLIP-guided optimisation of BigGAN latents, one scene at a time. No Ray here.

Per step:
  latents (L, Z) + class logits (L, C) -> BigGAN, one latent row per generator block
  -> image (1, 3, H, W) -> K random cutouts resized to CLIP's input (K, 3, S, S)
  -> CLIP image embeddings, cosine similarity with the prompt's text embedding
  -> loss = -similarity + latent regulariser + class sparsity -> Adam
  -> exponential moving average (EMA) of latents and class logits.
Every ``steps_per_frame`` steps a frame is drawn from the EMA, so a scene's
frames are its optimisation trajectory.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from farm.render.models import Models
from farm.spec import RenderSpec

# Class logits start low so sigmoid(class) is a faint mix of many ImageNet classes.
CLASS_INIT_MEAN, CLASS_INIT_STD = -3.9, 0.3
# Weight of the class-sparsity term: pushes all but the strongest class towards zero.
CLASS_SPARSITY_WEIGHT = 50.0
# Cutout sides as a fraction of the image: normal(0.8, 0.3) clipped to [0.5, 0.95].
CUTOUT_MEAN, CUTOUT_STD, CUTOUT_MIN, CUTOUT_MAX = 0.8, 0.3, 0.5, 0.95


def derive_seed(film_seed: int, scene_index: int, rendering_pass: int = 0) -> int:
    """Scene seeds are derived, never global: the same (film, scene, pass) gives the same seed anywhere."""
    digest = hashlib.sha256(f"farm:{film_seed}:{scene_index}:{rendering_pass}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Latents:
    """What a scene's image is made of; a later scene can start from it."""

    z: torch.Tensor  # (L, Z) one noise row per generator block
    classes: torch.Tensor  # (L, C) class logits; sigmoid gives the class mix

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {"z": self.z.detach().cpu().numpy(), "classes": self.classes.detach().cpu().numpy()}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray], device: torch.device) -> "Latents":
        return cls(torch.as_tensor(arrays["z"], device=device), torch.as_tensor(arrays["classes"], device=device))


@dataclass
class Frame:
    index: int  # position in the scene, from 0
    image: np.ndarray  # (H, W, 3) uint8
    loss: float  # the loss of the last optimisation step before this frame
    similarity: float  # CLIP cosine similarity of that step's cutouts with the prompt

    def png(self) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def synthesize(models: Models, z: torch.Tensor, classes: torch.Tensor, truncation: float) -> torch.Tensor:
    """BigGAN with one latent row per block. z (B, L, Z), classes (B, L, C) -> image (B, 3, H, W) in [0, 1]."""
    biggan = models.biggan
    gen = biggan.generator
    cond = torch.cat([z, biggan.embeddings(torch.sigmoid(classes))], dim=-1)  # (B, L, 2Z)
    x = gen.gen_z(cond[:, 0])
    # The library's weights follow TensorFlow's (B, H, W, C) layout at the first block.
    x = x.view(-1, 4, 4, 16 * gen.config.channel_width).permute(0, 3, 1, 2).contiguous()
    row = 1
    for layer in gen.layers:
        if layer.__class__.__name__ == "GenBlock":
            x = layer(x, cond[:, row], truncation)
            row += 1
        else:  # self-attention
            x = layer(x)
    x = gen.relu(gen.bn(x, truncation))
    x = torch.tanh(gen.conv_to_rgb(x)[:, :3])
    return (x + 1) / 2


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image[0].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()


class BigSleep:
    """One scene's optimisation: built from a prompt and a seed, advanced step by step."""

    def __init__(self, models: Models, settings: RenderSpec, prompt: str, seed: int,
                 init: Optional[Latents] = None) -> None:
        self.models = models
        self.settings = settings
        device = models.device
        self.rng = torch.Generator(device="cpu").manual_seed(seed)
        with torch.no_grad():
            tokens = models.tokenizer([prompt]).to(device)
            self.text_embed = F.normalize(models.clip.encode_text(tokens).float(), dim=-1)  # (1, D)
        if init is None:
            z = torch.randn(models.num_latents, models.z_dim, generator=self.rng)
            classes = CLASS_INIT_MEAN + CLASS_INIT_STD * torch.randn(models.num_latents, models.num_classes, generator=self.rng)
        else:
            z, classes = init.z.detach().cpu().clone(), init.classes.detach().cpu().clone()
        self.z = z.to(device).requires_grad_(True)
        self.classes = classes.to(device).requires_grad_(True)
        self.ema = Latents(self.z.detach().clone(), self.classes.detach().clone())
        self.optimizer = torch.optim.Adam([self.z, self.classes], lr=settings.learning_rate)
        self.steps = 0

    # 1. cutouts
    def make_cutouts(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) -> (K, 3, S, S): random square crops, resized to CLIP's input and normalised."""
        side = image.shape[-1]
        size = self.models.clip_size
        fractions = (CUTOUT_MEAN + CUTOUT_STD * torch.randn(self.settings.cutouts, generator=self.rng)).clamp(CUTOUT_MIN, CUTOUT_MAX)
        offsets = torch.rand(self.settings.cutouts, 2, generator=self.rng)
        pieces = []
        for fraction, (fx, fy) in zip(fractions.tolist(), offsets.tolist()):
            crop = max(1, int(side * fraction))
            x, y = int(fx * (side - crop + 1)), int(fy * (side - crop + 1))
            piece = image[:, :, y:y + crop, x:x + crop]
            pieces.append(F.interpolate(piece, size=(size, size), mode="bilinear", align_corners=False))
        cutouts = torch.cat(pieces)
        return (cutouts - self.models.clip_mean) / self.models.clip_std

    # 2. loss terms
    def losses(self) -> dict[str, torch.Tensor]:
        image = synthesize(self.models, self.z[None], self.classes[None], self.settings.truncation)
        image_embed = F.normalize(self.models.clip.encode_image(self.make_cutouts(image)).float(), dim=-1)  # (K, D)
        similarity = (image_embed @ self.text_embed.T).mean()
        return {
            "similarity": similarity,
            "latent": latent_regulariser(self.z),
            "classes": class_sparsity(self.classes),
        }

    # 3. one step: loss -> Adam -> EMA
    def step(self) -> dict[str, float]:
        terms = self.losses()
        loss = -terms["similarity"] + terms["latent"] + terms["classes"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        decay = self.settings.ema_decay
        with torch.no_grad():
            self.ema.z.mul_(decay).add_(self.z.detach(), alpha=1 - decay)
            self.ema.classes.mul_(decay).add_(self.classes.detach(), alpha=1 - decay)
        self.steps += 1
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}

    # 4. a frame from the EMA latents
    @torch.no_grad()
    def frame_image(self) -> np.ndarray:
        image = synthesize(self.models, self.ema.z[None], self.ema.classes[None], self.settings.truncation)
        return to_uint8(image)


def latent_regulariser(z: torch.Tensor) -> torch.Tensor:
    """Keep every latent row close to a standard normal: mean 0, std 1, no skew, no excess kurtosis."""
    mean = z.mean(dim=1, keepdim=True)
    std = z.std(dim=1, keepdim=True)
    scores = (z - mean) / std
    skew = scores.pow(3).mean(dim=1)
    kurtosis = scores.pow(4).mean(dim=1) - 3
    moments = (1 - std).abs().mean() + mean.abs().mean() + 4 * torch.clamp(z.pow(2).mean(), min=1.0)
    return moments + (skew.abs() + kurtosis.abs()).mean()


def class_sparsity(classes: torch.Tensor) -> torch.Tensor:
    """All but the strongest class of every row pushed towards zero, so one class leads."""
    weights = torch.sigmoid(classes)
    weakest = torch.topk(weights, k=weights.shape[1] - 1, dim=1, largest=False).values
    return (CLASS_SPARSITY_WEIGHT * weakest).pow(2).mean()


def render_scene(models: Models, settings: RenderSpec, prompt: str, seed: int, frames: int,
                 init: Optional[Latents] = None) -> Iterator[Frame]:
    """Yield a scene's ``frames`` frames, one every ``steps_per_frame`` steps after the warm-up.

    The optimiser ends where the last frame was drawn; ``BigSleep.ema`` then holds the
    latents a following scene may start from (see :func:`render_scene_with_state`).
    """
    yield from render_scene_with_state(models, settings, prompt, seed, frames, init)[1]


def render_scene_with_state(models: Models, settings: RenderSpec, prompt: str, seed: int, frames: int,
                            init: Optional[Latents] = None) -> tuple[BigSleep, Iterator[Frame]]:
    sleeper = BigSleep(models, settings, prompt, seed, init)

    def frames_of() -> Iterator[Frame]:
        stats = {"loss": float("nan"), "similarity": float("nan")}
        for _ in range(settings.warmup_steps):
            stats = sleeper.step()
        for index in range(frames):
            for _ in range(settings.steps_per_frame):
                stats = sleeper.step()
            yield Frame(index, sleeper.frame_image(), stats["loss"], stats["similarity"])

    return sleeper, frames_of()

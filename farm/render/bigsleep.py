"""Big Sleep: CLIP-guided optimisation of BigGAN latents, one scene at a time. No Ray here.

Per step (big-sleep's ``train_step``, term by term; see docs/SPEC.md for every knob):
  1. latents z (L, Z) + class logits (L, C) -> class vectors (sigmoid, or a top-k)
     -> BigGAN, one latent row per generator block -> image (1, 3, H, W)
  2. K random cutouts resized to CLIP's input (K, 3, S, S) -> CLIP image embeddings
  3. loss = latent_loss(z) + class_loss(classes) - clip_weight x sum_p w_p cos(image, prompt_p)
     (``gradient_accumulation`` passes with fresh cutouts, each loss divided by their number)
  4. Adam step, then the exponential moving average (EMA) of z and the class logits
  5. every ``reseed_every`` steps, optionally, fresh noise mixed into z.
Every ``steps_per_frame`` steps (after ``warmup_steps``) a frame is drawn from the EMA,
so a scene's frames are its optimisation trajectory.
"""

from __future__ import annotations

import io
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from farm.errors import SpecError, first_line
from farm.render.cutouts import cutout_boxes, take_cutouts
from farm.render.device import prepare_device
from farm.render.generator import image_of, synthesize, to_uint8
from farm.render.losses import class_loss, class_vectors, clip_loss, latent_loss
from farm.render.models import Models
from farm.spec import RenderSpec

# big-sleep's initial class logits: sigmoid(-3.9) ~ 0.02, a faint mix of every class.
CLASS_INIT_MEAN, CLASS_INIT_STD = -3.9, 0.3
# Starting candidates (render.init_candidates) scored in one forward pass at a time.
CANDIDATE_BATCH = 16


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Big Sleep's loss from its terms: latent + classes + CLIP."""
    return terms["latent"] + terms["classes"] + terms["clip"]


@dataclass
class Latents:
    """What a scene's image is made of; a later scene can start from it."""

    z: torch.Tensor  # (L, Z) one noise row per generator block
    classes: torch.Tensor  # (L, C) class logits

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
    similarity: float  # mean CLIP cosine similarity of that step's cutouts with the main prompt
    state: Optional[dict[str, np.ndarray]] = None  # what continues the scene after this frame

    def png(self) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


class EMA:
    """Exponential moving average of (z, classes).

    ``zero`` (big-sleep): a biased average that starts at zero, divided by 1 - decay^(t+1);
    it is first updated with the starting latents, so the average starts exactly there and
    forgets it at the optimiser's pace. ``initial``: starts at the starting latents, uncorrected.
    """

    def __init__(self, start: Latents, decay: float, mode: str) -> None:
        self.decay, self.mode = decay, mode
        if mode == "zero":
            self.biased = Latents(torch.zeros_like(start.z), torch.zeros_like(start.classes))
            self.accum = 1.0
            self.update(start)
        else:
            self.biased = Latents(start.z.detach().clone(), start.classes.detach().clone())
            self.accum = 0.0  # no correction: 1 - 0 = 1

    @torch.no_grad()
    def update(self, current: Latents) -> None:
        if self.mode == "zero":
            self.accum *= self.decay
        for mine, theirs in ((self.biased.z, current.z), (self.biased.classes, current.classes)):
            mine.mul_(self.decay).add_(theirs.detach(), alpha=1 - self.decay)

    @property
    def average(self) -> Latents:
        scale = 1.0 - self.accum
        return Latents(self.biased.z / scale, self.biased.classes / scale)


class BigSleep:
    """One scene's optimisation: built from prompts and a seed, advanced step by step."""

    def __init__(self, models: Models, settings: RenderSpec, prompt: str | list[tuple[str, float]], seed: int,
                 init: Optional[Latents] = None) -> None:
        self.models = models
        self.settings = settings
        device = models.device
        prepare_device(models, settings)
        prompts = [(prompt, 1.0)] if isinstance(prompt, str) else list(prompt)
        self.rng = torch.Generator(device="cpu").manual_seed(seed)
        # Re-seeding noise has its own stream, so switching it on leaves the cutouts alone.
        self.noise_rng = torch.Generator(device="cpu").manual_seed(seed ^ 0x5EED)
        with torch.no_grad():
            tokens = models.tokenizer([text for text, _ in prompts]).to(device)
            self.text_embeds = F.normalize(models.clip.encode_text(tokens).float(), dim=-1)  # (P, D)
        self.prompt_weights = torch.tensor([w for _, w in prompts], dtype=torch.float32, device=device)  # (P,)
        if init is None:
            z, classes = self.random_latents()
        else:
            z, classes = init.z.detach().cpu().float().clone(), init.classes.detach().cpu().float().clone()
        self.z = z.to(device).requires_grad_(True)
        self.classes = classes.to(device).requires_grad_(True)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if settings.precision == "bf16"
                         else nullcontext())
        self.loss_fn = torch.compile(self.loss_terms) if settings.compile else self.loss_terms
        if init is None and settings.init_candidates > 1:
            self.pick_start(settings.init_candidates)
        self.ema = EMA(Latents(self.z, self.classes), settings.ema_decay, settings.ema_start)
        self.optimizer = torch.optim.Adam([self.z, self.classes], lr=settings.learning_rate)
        self.steps = 0
        self.frames_done = 0
        self.first: Optional[Latents] = None  # the EMA latents of the scene's first frame

    def random_latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """big-sleep's random start: standard normal z, class logits around -3.9."""
        m = self.models
        z = torch.randn(m.num_latents, m.z_dim, generator=self.rng)
        classes = CLASS_INIT_MEAN + CLASS_INIT_STD * torch.randn(m.num_latents, m.num_classes, generator=self.rng)
        return z, classes

    @torch.no_grad()
    def pick_start(self, candidates: int) -> None:
        """Draw ``candidates - 1`` more random starts and keep the one whose loss (latent and
        class terms plus the CLIP term, on one set of cutouts shared by all) is lowest, scoring
        ``CANDIDATE_BATCH`` at a time. The EMA and the optimiser are built from the winner."""
        boxes = cutout_boxes(self.settings, self.settings.cutouts, self.models.resolution, self.rng)
        starts = [(self.z.detach().clone(), self.classes.detach().clone())]
        starts += [tuple(t.to(self.z.device) for t in self.random_latents()) for _ in range(candidates - 1)]
        losses: list[float] = []
        for first in range(0, candidates, CANDIDATE_BATCH):
            chunk = starts[first:first + CANDIDATE_BATCH]
            terms = self.loss_fn(torch.stack([z for z, _ in chunk]), torch.stack([c for _, c in chunk]), boxes)
            losses += total_loss(terms).tolist()
        z, classes = starts[int(np.argmin(losses))]
        self.z.copy_(z)
        self.classes.copy_(classes)

    # 1-2. image, cutouts
    def cutouts(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) and (K, 3) boxes -> (K, 3, S, S) cutouts normalised for CLIP."""
        pieces = take_cutouts(image, boxes, self.models.clip_size, self.settings.cutout_resample)
        pieces = (pieces - self.models.clip_mean) / self.models.clip_std
        return pieces.contiguous(memory_format=self.models.memory_format)

    # 3. the loss, term by term
    def loss_terms(self, z: torch.Tensor, classes: torch.Tensor, boxes: torch.Tensor,
                   texts: Optional[list[tuple[torch.Tensor, torch.Tensor]]] = None) -> dict[str, torch.Tensor]:
        """The terms for B latent sets, z (B, L, Z) and class logits (B, L, C): each term (B,).

        ``boxes``: (K, 3), the same cutouts for every set, or (B, K, 3), each set its own.
        ``texts``: each set's (prompt embeddings, prompt weights); by default this scene's.
        One BigGAN pass makes the B images and one CLIP pass scores their B x K cutouts.
        """
        s = self.settings
        per_set = boxes if boxes.dim() == 3 else boxes.expand(len(z), *boxes.shape)
        texts = texts if texts is not None else [(self.text_embeds, self.prompt_weights)] * len(z)
        with self.autocast:
            vectors = class_vectors(classes.flatten(0, 1), s.max_classes, s.class_temperature).view_as(classes)
            images = synthesize(self.models, z, vectors, s.truncation)
            embeds = self.models.clip.encode_image(
                torch.cat([self.cutouts(image[None], box) for image, box in zip(images, per_set)]))
        embeds = embeds.float().reshape(len(z), per_set.shape[1], -1)
        clip = [clip_loss(e, text, weights, s.clip_weight) for e, (text, weights) in zip(embeds, texts)]
        return {
            "latent": torch.stack([latent_loss(rows) for rows in z]),
            "classes": torch.stack([class_loss(v.float()) for v in vectors]),
            "clip": torch.stack([loss for loss, _ in clip]),
            "similarity": torch.stack([similarity[0] for _, similarity in clip]),
        }

    def draw_boxes(self) -> torch.Tensor:
        """This scene's next random cutouts, from its own generator."""
        return cutout_boxes(self.settings, self.settings.cutouts, self.models.resolution, self.rng)

    def losses(self, boxes: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """The loss terms at the current latents, with random cutouts unless ``boxes`` are given."""
        if boxes is None:
            boxes = self.draw_boxes()
        terms = {name: term[0] for name, term in self.loss_fn(self.z[None], self.classes[None], boxes).items()}
        terms["loss"] = total_loss(terms)
        return terms

    # 4-5. one step: loss -> Adam -> EMA -> re-seed
    def step(self) -> dict[str, float]:
        return step_together([self])[0]

    def batch_key(self) -> tuple:
        """What scenes must share to be stepped in one batch: the settings their loss is made with."""
        s = self.settings
        return (id(self.models), s.cutouts, s.cutout_resample, s.max_classes, s.class_temperature, s.truncation,
                s.clip_weight, s.gradient_accumulation, s.precision, s.channels_last, s.compile, s.deterministic)

    def finish_step(self) -> None:
        """After the gradients: Adam, the EMA, the step count and the re-seed, this scene's alone."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(Latents(self.z, self.classes))
        self.steps += 1
        if self.settings.reseed_every and self.steps % self.settings.reseed_every == 0:
            self.reseed()

    @torch.no_grad()
    def reseed(self) -> None:
        """z <- (1 - f) z + f noise: keeps a long scene moving without starting it over."""
        f = self.settings.reseed_fraction
        noise = torch.randn(self.z.shape, generator=self.noise_rng).to(self.z.device)
        self.z.mul_(1 - f).add_(noise, alpha=f)

    # a frame from the EMA latents
    def frame_image(self, latents: Optional[Latents] = None) -> np.ndarray:
        """The picture of ``latents``, by default the current average."""
        s = self.settings
        latents = latents if latents is not None else self.ema.average
        return to_uint8(image_of(self.models, latents.z, latents.classes, s.truncation, s.max_classes,
                                 s.class_temperature))

    # state: everything needed to continue bit for bit elsewhere
    def state_dict(self) -> dict[str, np.ndarray]:
        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().copy()

        state = {
            "z": arr(self.z), "classes": arr(self.classes),
            "ema_z": arr(self.ema.biased.z), "ema_classes": arr(self.ema.biased.classes),
            "ema_accum": np.array(self.ema.accum, dtype=np.float64),
            "rng": arr(self.rng.get_state()), "noise_rng": arr(self.noise_rng.get_state()),
            "steps": np.array(self.steps, dtype=np.int64), "frames_done": np.array(self.frames_done, dtype=np.int64),
        }
        if self.first is not None:
            state["first_z"], state["first_classes"] = arr(self.first.z), arr(self.first.classes)
        for index, slot in self.optimizer.state_dict()["state"].items():
            for key, value in slot.items():
                state[f"adam_{index}_{key}"] = arr(value) if torch.is_tensor(value) else np.array(value)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        device = self.models.device

        def tensor(name: str) -> torch.Tensor:
            return torch.from_numpy(np.array(state[name])).to(device)

        with torch.no_grad():
            self.z.copy_(tensor("z"))
            self.classes.copy_(tensor("classes"))
        self.ema.biased = Latents(tensor("ema_z"), tensor("ema_classes"))
        self.ema.accum = float(state["ema_accum"])
        self.rng.set_state(torch.from_numpy(np.array(state["rng"])))
        self.noise_rng.set_state(torch.from_numpy(np.array(state["noise_rng"])))
        self.steps, self.frames_done = int(state["steps"]), int(state["frames_done"])
        if "first_z" in state:
            self.first = Latents(tensor("first_z"), tensor("first_classes"))
        optimizer_state = self.optimizer.state_dict()
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for name in state:
            if name.startswith("adam_"):
                _, index, key = name.split("_", 2)
                value = torch.from_numpy(np.array(state[name]))
                slots.setdefault(int(index), {})[key] = value if key == "step" else value.to(device)
        optimizer_state["state"] = slots
        self.optimizer.load_state_dict(optimizer_state)


def step_together(sleepers: list[BigSleep]) -> list[dict[str, float]]:
    """One optimisation step of several scenes at once: for each pass one BigGAN forward and
    backward over their latent sets and one CLIP pass over all their cutouts. Each scene keeps
    its own prompts, cutouts (drawn from its own generator, in the order it draws them alone),
    Adam state, EMA and re-seeding. Their losses are summed for the backward pass, so each
    scene's gradient is its own loss's. Scenes must share ``batch_key()``. Returns each scene's
    terms (averaged over the passes), as ``BigSleep.step`` does for one."""
    lead = sleepers[0]
    assert all(s.batch_key() == lead.batch_key() for s in sleepers), "scenes of other settings in one batch"
    passes = lead.settings.gradient_accumulation
    totals: list[dict[str, float]] = [{} for _ in sleepers]
    texts = [(s.text_embeds, s.prompt_weights) for s in sleepers]
    for _ in range(passes):
        boxes = torch.stack([s.draw_boxes() for s in sleepers])
        try:
            terms = lead.loss_fn(torch.stack([s.z for s in sleepers]), torch.stack([s.classes for s in sleepers]),
                                 boxes, texts)
            terms["loss"] = total_loss(terms)
            (terms["loss"].sum() / passes).backward()
        except RuntimeError as exc:
            if lead.settings.deterministic and "deterministic" in str(exc):
                op = first_line(exc)[:200]
                raise SpecError("render.deterministic",
                                f"this device has no deterministic version of an operation the render needs "
                                f"({op}); set it to false") from exc
            raise
        values = {key: term.detach().tolist() for key, term in terms.items()}  # one read for all scenes
        for i, total in enumerate(totals):
            for key, column in values.items():
                total[key] = total.get(key, 0.0) + column[i] / passes
    for sleeper in sleepers:
        sleeper.finish_step()
    return totals


@dataclass
class Finished:
    """A scene's last event: the latents a following scene may start from."""

    latents: Latents  # the EMA latents after the scene's last step
    first: Optional[Latents]  # those of its first frame (None for a scene of no frames)


class SceneRun:
    """One scene's optimisation and where it stands: what it needs next, a step or a frame."""

    def __init__(self, sleeper: BigSleep, frames: int, state_every: int = 0) -> None:
        self.sleeper, self.frames, self.state_every = sleeper, frames, state_every
        self.stats = {"loss": math.nan, "similarity": math.nan}  # the last step's
        self.done = False

    def target(self) -> int:
        """The step count at which the next frame (or, after the last, the scene's end) is due."""
        s = self.sleeper.settings
        if self.sleeper.frames_done < self.frames:
            return s.warmup_steps + (self.sleeper.frames_done + 1) * s.steps_per_frame
        return s.warmup_steps

    def needs_step(self) -> bool:
        return not self.done and self.sleeper.steps < self.target()

    def stepped(self, stats: dict[str, float]) -> None:
        self.stats = stats

    def events(self) -> list[Frame | Finished]:
        """Whatever is due without another step: a frame, or the scene's end."""
        out: list[Frame | Finished] = []
        sleeper = self.sleeper
        while not self.done and not self.needs_step():
            if sleeper.frames_done < self.frames:
                index = sleeper.frames_done
                average = sleeper.ema.average  # new tensors, which the optimiser does not touch
                image = sleeper.frame_image(average)
                if index == 0:
                    sleeper.first = average
                sleeper.frames_done = index + 1
                every = self.state_every
                keep = every > 0 and ((index + 1) % every == 0 or index == self.frames - 1)
                out.append(Frame(index, image, self.stats["loss"], self.stats["similarity"],
                                 sleeper.state_dict() if keep else None))
            else:
                self.done = True
                out.append(Finished(sleeper.ema.average, sleeper.first))
        return out


def start_run(models: Models, settings: RenderSpec, prompt: str | list[tuple[str, float]], seed: int, frames: int,
              init: Optional[Latents] = None, resume: Optional[dict[str, np.ndarray]] = None,
              state_every: int = 0) -> SceneRun:
    """A scene's optimiser, from its seed (or ``init``) or from a frame's state (``resume``)."""
    sleeper = BigSleep(models, settings, prompt, seed, init)
    if resume is not None:
        sleeper.load_state_dict(resume)
    return SceneRun(sleeper, frames, state_every)


def render_scene(models: Models, settings: RenderSpec, prompt: str | list[tuple[str, float]], seed: int, frames: int,
                 init: Optional[Latents] = None) -> Iterator[Frame]:
    """Yield a scene's ``frames`` frames, one every ``steps_per_frame`` steps after the warm-up."""
    yield from render_scene_with_state(models, settings, prompt, seed, frames, init)[1]


def render_scene_with_state(models: Models, settings: RenderSpec, prompt: str | list[tuple[str, float]], seed: int,
                            frames: int, init: Optional[Latents] = None, resume: Optional[dict[str, np.ndarray]] = None,
                            state_every: int = 0) -> tuple[BigSleep, Iterator[Frame]]:
    """The scene's optimiser and its frames.

    ``resume``: a state a frame carried (``Frame.state``); the frames continue after that
    frame, exactly as they would have. ``state_every``: attach the state to every that many
    frames, and to the last one. When the frames are done, ``sleeper.ema.average`` holds the
    latents a following scene may start from and ``sleeper.first`` those of the first frame.
    """
    run = start_run(models, settings, prompt, seed, frames, init, resume, state_every)
    sleeper = run.sleeper

    def frames_of() -> Iterator[Frame]:
        while True:
            for event in run.events():
                if isinstance(event, Finished):
                    return
                yield event
            run.stepped(sleeper.step())

    return sleeper, frames_of()

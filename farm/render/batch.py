"""Several scenes optimised together (``render.scenes_per_worker``): continuous batching. No Ray here.

A :class:`SceneBatch` holds up to ``capacity`` scenes, each a :class:`SceneRun` (its own
:class:`~farm.render.bigsleep.BigSleep`: prompts, seed, cutouts, Adam state, EMA), and advances
every scene that needs a step with one step of them all (:func:`~farm.render.bigsleep.step_together`:
one BigGAN forward and backward over their latent sets, one CLIP pass over all their cutouts).
A scene leaves as soon as its last frame is drawn and the next one may join at any step, so
scenes of different lengths keep the batch full.

A scene's frames are drawn from its own EMA latents, one BigGAN pass of its own, exactly as
when it renders alone. What a batch can change is the last bits of a step's sums: matrix
products over N latent sets are not always added in the order of one set's (see docs/SPEC.md,
``render.scenes_per_worker``, for the tolerance this gives and how it is tested).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator, Optional

import numpy as np

from farm.render.bigsleep import Latents, SceneRun, start_run, step_together
from farm.render.models import Models
from farm.spec import RenderSpec


@dataclass
class SceneJob:
    """What :func:`render_scenes` is given for one scene."""

    key: Hashable
    settings: RenderSpec
    prompt: str | list[tuple[str, float]]
    seed: int
    frames: int
    init: Optional[Latents] = None
    resume: Optional[dict[str, np.ndarray]] = None
    state_every: int = 0


def start_scene(models: Models, job: SceneJob) -> SceneRun:
    """A scene's optimiser, from its seed (or ``init``) or from a frame's state (``resume``)."""
    return start_run(models, job.settings, job.prompt, job.seed, job.frames, job.init, job.resume, job.state_every)


class SceneBatch:
    """Up to ``capacity`` scenes stepped together; scenes join and leave between steps."""

    def __init__(self, models: Models, capacity: int) -> None:
        self.models, self.capacity = models, capacity
        self.runs: dict[Hashable, SceneRun] = {}

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, key: Hashable, run: SceneRun) -> None:
        assert len(self.runs) < self.capacity, "the batch is full"
        assert key not in self.runs, key
        self.runs[key] = run

    def remove(self, key: Hashable) -> None:
        self.runs.pop(key, None)

    def step(self, keys: Optional[Iterable[Hashable]] = None) -> list[Hashable]:
        """One step of every scene (of ``keys``, by default all) that needs one, scenes of the same
        settings in one batch; the keys stepped."""
        chosen = [k for k in (self.runs if keys is None else keys) if k in self.runs and self.runs[k].needs_step()]
        groups: dict[tuple, list[Hashable]] = {}
        for key in chosen:
            groups.setdefault(self.runs[key].sleeper.batch_key(), []).append(key)
        for group in groups.values():
            runs = [self.runs[k] for k in group]
            for run, stats in zip(runs, step_together([r.sleeper for r in runs])):
                run.stepped(stats)
        return chosen


def render_scenes(models: Models, capacity: int, jobs: Iterable[SceneJob]) -> Iterator[tuple[Hashable, Any]]:
    """Render ``jobs`` ``capacity`` at a time, in order, each joining as soon as a place is free:
    yields (key, Frame) and, last for each scene, (key, Finished)."""
    waiting = deque(jobs)
    batch = SceneBatch(models, capacity)
    while True:
        while waiting and len(batch) < capacity:
            job = waiting.popleft()
            batch.add(job.key, start_scene(models, job))
        if not batch.runs:
            return
        for key, run in list(batch.runs.items()):
            for event in run.events():
                yield key, event
            if run.done:
                batch.remove(key)
        if len(batch) < capacity and waiting:
            continue  # a place came free: fill it before the next step
        batch.step()

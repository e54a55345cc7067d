"""The film's jobs: scenes and, in ``keyframe`` mode, anchors, and what the renderer is given for each.

A job runs once the latents it starts from are known (``start_from``); the
driver, not Ray, keeps that order (see farm.driver.dispatch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from farm.seeds import derive_seed
from farm.spec import FilmSpec, RenderSpec

ANCHOR_PASS, SCENE_PASS = 1, 0


@dataclass(frozen=True)
class Job:
    kind: str  # "anchor" or "scene"
    scene: int
    start_from: Optional[tuple[str, int]]  # the job whose latents this one starts from

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.scene)


def plan_jobs(spec: FilmSpec) -> list[Job]:
    n = len(spec.scenes)
    mode = spec.render.reseed
    if mode == "independent":
        return [Job("scene", k, None) for k in range(n)]
    if mode == "chain":
        return [Job("scene", k, ("scene", k - 1) if k else None) for k in range(n)]
    # keyframe: anchors of every scene but the last, then scene k from anchor k-1.
    anchors = [Job("anchor", k, None) for k in range(n - 1)]
    return anchors + [Job("scene", k, ("anchor", k - 1) if k else None) for k in range(n)]


def job_arguments(spec: FilmSpec, job: Job,
                  frames_per_scene: list[int]) -> tuple[RenderSpec, list[tuple[str, float]], int, int]:
    """What the renderer is given for a job: (settings, weighted prompts, seed, frames).

    An anchor is a warm-up of ``anchor_steps`` steps that draws no frames.
    """
    settings, frames, rendering_pass = spec.render, frames_per_scene[job.scene], SCENE_PASS
    if job.kind == "anchor":
        settings = dataclasses.replace(settings, warmup_steps=settings.anchor_steps)
        frames, rendering_pass = 0, ANCHOR_PASS
    seed = derive_seed(spec.seed, job.scene, rendering_pass)
    return settings, spec.scenes[job.scene].weighted_prompts, seed, frames

"""Render a film's frames on Ray: what is missing, on the workers of a cluster, into the film store.

The parts live in their own modules:

    jobs.py      the film's jobs (scenes, keyframe anchors) and their renderer arguments
    cluster.py   joining a Ray cluster, or starting a local one
    pool.py      the render actors, one record each: started, loaded, busy, idle, gone
    dispatch.py  ready jobs to idle workers; frame streams collected with ray.wait; failures
    latents.py   the latents kept between jobs
    bridges.py   morph bridges, asked of a worker once both neighbours are rendered
    store.py     the film's folder: resolved spec, manifest, frames (atomic writes)
    worker.py    the render actor itself

The driver knows nothing of cutting: it calls back as each scene (``on_scene``) and
each morph bridge (``on_bridge``) is on disk, those already there first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from farm.driver.bridges import Bridges
from farm.driver.cluster import connect
from farm.driver.dispatch import Dispatcher
from farm.driver.jobs import Job, plan_jobs
from farm.driver.latents import LatentBook
from farm.driver.pool import WorkerPool
from farm.driver.progress import Reporter
from farm.driver.store import FilmStore
from farm.spec import FilmSpec


@dataclass
class Rendered:
    scenes_rendered: int = 0  # scenes rendered by this run (the rest were already on disk)
    workers: list[dict[str, Any]] = field(default_factory=list)  # every worker that was ready in this run


def render_frames(spec: FilmSpec, store: FilmStore, address: Optional[str], report: Reporter,
                  on_scene: Callable[[int], None] = lambda k: None, on_bridge: Callable[[int], None] = lambda k: None,
                  bridge_frames: int = 0, worker_class: Optional[type] = None) -> Rendered:
    """Render what ``store`` (opened for ``spec``) is missing, on the Ray cluster at ``address``.

    Joins the cluster at ``address``, uses the one this process already joined, or starts a
    local one sized to the machine (and stops it afterwards). ``bridge_frames``: frames of
    each morph bridge (0: the film has no morphs). ``worker_class``: the render actor (a
    benchmark may give its own).
    """
    report.emit("film", film=spec.slug, path=str(store.path), scenes=len(spec.scenes),
                frames_total=sum(spec.frames_per_scene()), frames_done=store.manifest.frames_done,
                changed=store.changed)
    latents = LatentBook(store)
    bridges = Bridges(spec, store, latents, bridge_frames, on_bridge)
    jobs = missing_jobs(spec, store, latents)
    rerendered = {job.scene for job in jobs if job.kind == "scene"}
    for index in range(len(spec.scenes)):
        if index not in rerendered:
            on_scene(index)
    for k in range(len(spec.scenes) - 1):
        if rerendered & {k, k + 1}:  # a bridge is made from its scenes' latents: stale now
            bridges.forget(k)
        elif bridge_frames and bridges.on_disk(k):
            on_bridge(k)
    if not jobs and not bridges.missing():
        report.say("every scene is already rendered")
        return Rendered()
    import ray

    connected = connect(address)  # or takes over the start farm render began in the background
    # A cluster we did not start (joined at an address, or this process's already) may grow.
    joined = address is not None or not connected
    try:
        pool = WorkerPool(spec, report.say, report.emit, joined)
        dispatcher = Dispatcher(spec, store, latents, bridges, pool, report, jobs, on_scene)
        workers = dispatcher.run(worker_class)
        return Rendered(dispatcher.scenes_rendered, workers)
    finally:
        if connected:
            ray.shutdown()


def missing_jobs(spec: FilmSpec, store: FilmStore, latents: LatentBook) -> list[Job]:
    """The film's jobs that the store does not hold yet (their latents loaded when it does)."""
    jobs = plan_jobs(spec)
    starting_points = {job.start_from for job in jobs if job.start_from}

    def done(job: Job) -> bool:
        if job.kind == "anchor":
            return latents.get(job.key) is not None
        if not store.scene_complete(job.scene):
            return False
        # A finished scene is only a starting point if its latents survived too.
        return latents.get(job.key) is not None if job.key in starting_points else True

    return [job for job in jobs if not done(job)]

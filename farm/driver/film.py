"""One film run: what is already rendered, the latents kept between jobs, morph bridges, the stitch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from farm.cutting.film import CutPlan, FilmCutter
from farm.cutting.layout import BRIDGE_NAME
from farm.driver.jobs import Job, plan_jobs
from farm.driver.store import FilmStore
from farm.errors import RenderError
from farm.spec import FilmSpec


class FilmRun:
    def __init__(self, spec: FilmSpec, store: FilmStore, exe: str, say: Callable[[str], None],
                 cut: Optional[CutPlan], events: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        """``cut``: the film's timeline, for the cutter; None renders frames only (a benchmark)."""
        self.spec = spec
        self.store = store
        self.exe = exe
        self.say = say
        self.events = events
        self.worker_class: Optional[type] = None  # the render actor; a benchmark may give its own
        self.counts = spec.frames_per_scene()
        self.latents: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        # Encodes each scene's pieces of the film as soon as the scene is complete.
        self.cutter = FilmCutter(cut, store.path, exe, say) if cut is not None else None
        self.scenes_rendered = 0
        self.bridge_refs: dict[int, Any] = {}  # morph after scene k -> the worker's answer
        # Jobs whose final latents another job starts from.
        self.starting_points = {job.start_from for job in plan_jobs(spec) if job.start_from}

    # --- latents kept on disk, so a later run can start where this one stopped ---------------

    def emit(self, event: str, **fields: Any) -> None:
        """A progress event (frames, scene, worker, node, autoscaler) for a reporter."""
        if self.events is not None:
            self.events({"event": event, "time": round(time.time(), 3), **fields})

    def save_latents(self, key: tuple[str, int], arrays: dict[str, np.ndarray]) -> None:
        self.store.write_arrays(key[1], f"{key[0]}_latents", arrays)
        self.latents[key] = arrays

    def load_latents(self, key: tuple[str, int]) -> bool:
        arrays = self.store.read_arrays(key[1], f"{key[0]}_latents")
        if arrays is not None:
            self.latents[key] = arrays
        return arrays is not None

    def job_done(self, job: Job) -> bool:
        if job.kind == "anchor":
            return self.load_latents(job.key)
        if not self.store.scene_complete(job.scene):
            return False
        # A finished scene is only a starting point if its latents survived too.
        return self.load_latents(job.key) if job.key in self.starting_points else True

    # --- rendering -----------------------------------------------------------------------------

    def render(self, address: Optional[str]) -> list[dict[str, Any]]:
        from farm.driver.cluster import connect
        from farm.driver.dispatch import Dispatcher

        jobs = [job for job in plan_jobs(self.spec) if not self.job_done(job)]
        for index in range(len(self.spec.scenes)):
            if not any(j.kind == "scene" and j.scene == index for j in jobs):
                self.queue_segment(index, reuse=True)
        rerendered = {job.scene for job in jobs if job.kind == "scene"}
        for k in range(len(self.spec.scenes) - 1):
            if rerendered & {k, k + 1}:  # a bridge is made from its scenes' latents: stale now
                for path in self.store.scene_dir(k).glob(BRIDGE_NAME.replace("{:05d}", "*")):
                    self.store.remove(path)
            elif self.cutter is not None and self.bridge_on_disk(k):
                self.cutter.bridge_ready(k)
        if not jobs and not self.bridges_missing():
            self.say("every scene is already rendered")
            return []
        import ray

        joined = ray.is_initialized() or address is not None  # a cluster we did not start may grow
        connected = connect(address)
        try:
            return Dispatcher(self, jobs, joined).run()
        finally:
            if connected:
                ray.shutdown()

    # --- morph bridges: asked of a worker once both neighbours are rendered -------------------

    def bridge_on_disk(self, k: int) -> bool:
        return all((self.store.scene_dir(k) / BRIDGE_NAME.format(i)).is_file() for i in range(self.cutter.timeline.t))

    def bridges_missing(self) -> list[int]:
        if self.cutter is None or self.cutter.timeline.transition != "morph":
            return []
        return [k for k in range(len(self.spec.scenes) - 1) if k not in self.bridge_refs and not self.bridge_on_disk(k)]

    def request_bridges(self, worker: Any) -> None:
        """Queue on ``worker`` every missing bridge whose two scenes' latents are known."""
        for k in self.bridges_missing():
            ends = [("scene", k), ("first", k + 1)]
            if all(key in self.latents or (self.store.scene_complete(key[1]) and self.load_latents(key)) for key in ends):
                self.bridge_refs[k] = worker.bridge.remote(self.latents[ends[0]], self.latents[ends[1]],
                                                           self.cutter.timeline.t, self.spec.render)

    def collect_bridges(self, workers: list[Any]) -> None:
        import ray

        if self.bridges_missing() and workers:
            self.request_bridges(workers[0])
        if self.bridges_missing():
            raise RenderError(f"the morph after scene {self.bridges_missing()[0] + 1} has no latents to start from; "
                              "remove that scene's folder to render it again")
        for k, ref in sorted(self.bridge_refs.items()):
            for i, png in enumerate(ray.get(ref)):
                self.store.put(self.store.scene_dir(k) / BRIDGE_NAME.format(i), png)
            self.cutter.bridge_ready(k)
        self.bridge_refs.clear()

    # --- the stitch: kept in one place (farm.cutting does the work) ----------------------------

    def queue_segment(self, index: int, reuse: bool = False) -> None:
        if self.cutter is not None:
            self.cutter.scene_ready(index)

    def close(self) -> None:
        if self.cutter is not None:
            self.cutter.close()

    def stitch(self) -> Path:
        video = self.cutter.finish().video
        self.store.publish_new()  # a remote film store gets what ffmpeg made here
        if self.store.remote:
            self.say(f"film stored: {self.store.location}/film.mp4")
        return video

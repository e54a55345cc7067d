"""One film run: what is already rendered, the latents kept between jobs, segments, the stitch."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from farm.cutting.stitch import encode_segment, join_segments, make_srt
from farm.driver.jobs import Job, plan_jobs
from farm.driver.store import FRAME_NAME, FilmStore
from farm.spec import FilmSpec


class FilmRun:
    def __init__(self, spec: FilmSpec, store: FilmStore, exe: str, say: Callable[[str], None],
                 events: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.spec = spec
        self.store = store
        self.exe = exe
        self.say = say
        self.events = events
        self.worker_class: Optional[type] = None  # the render actor; a benchmark may give its own
        self.counts = spec.frames_per_scene()
        self.latents: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.segments: dict[int, Future] = {}
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farm-segments")
        self.scenes_rendered = 0
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
        if not jobs:
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

    # --- segments and the stitch ----------------------------------------------------------------

    def queue_segment(self, index: int, reuse: bool = False) -> None:
        segment = self.store.scene_dir(index) / "segment.mp4"
        if reuse and segment.is_file():
            self.segments[index] = Future()
            self.segments[index].set_result(segment)
            return
        self.segments[index] = self.encoder.submit(
            encode_segment, self.store.scene_dir(index), FRAME_NAME.replace("{:05d}", "%05d"),
            self.counts[index], self.spec.video.fps, self.spec.video.crf, segment, self.exe)

    def stitch(self) -> Path:
        srt = self.store.path / "film.srt"
        self.store.put(srt, make_srt(self.spec).encode())
        try:
            segments = [self.segments[i].result() for i in range(len(self.spec.scenes))]
        finally:
            self.encoder.shutdown()
        subtitles = srt if self.spec.video.subtitles == "soft" else None
        video = join_segments(segments, subtitles, self.store.path / "film.mp4", self.exe)
        for made in [*segments, video]:  # a remote film store gets what ffmpeg made here
            self.store.publish(made)
        self.say(f"film written: {self.store.location}/film.mp4" if self.store.remote else f"film written: {video}")
        return video

"""Dispatch: hand ready jobs to idle workers and write what their frame streams send back.

Everything ready is submitted at once to idle workers and collected with
``ray.wait`` over the workers' frame streams (and the load() calls of workers
still starting). A dead worker or node is an infrastructure failure: its job
goes back to the queue without spending a retry. An exception in the job's own
code spends one of ``render.retries``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from farm.driver.jobs import Job, job_arguments
from farm.driver.pool import WorkerPool
from farm.errors import RenderError

if TYPE_CHECKING:
    from farm.driver.film import FilmRun


class Dispatcher:
    def __init__(self, run: "FilmRun", jobs: list[Job]) -> None:
        import ray

        self.ray = ray
        self.run_ = run
        self.spec = run.spec
        self.store = run.store
        self.waiting = list(jobs)
        # No more workers than jobs that can ever run side by side.
        parallel = 1 if self.spec.render.reseed == "chain" else len(self.waiting)
        self.pool = WorkerPool(self.spec, run.say, parallel)
        self.running: dict[Any, tuple[Job, Any, float]] = {}  # frame stream -> (job, worker, start)
        self.failures: dict[tuple[str, int], int] = {}  # job -> failures of its own code in this run
        self.last_save = 0.0
        self.last_notice = time.monotonic()

    # 1. submit
    def submit_ready(self) -> None:
        pool = self.pool
        for job in list(self.waiting):
            if not pool.idle:
                return
            if job.start_from is not None and job.start_from not in self.run_.latents:
                continue
            self.waiting.remove(job)
            worker = pool.idle.pop(0)
            init = self.run_.latents.get(job.start_from) if job.start_from else None
            stream = worker.render.options(num_returns="streaming").remote(
                *job_arguments(self.spec, job, self.run_.counts), init)
            self.running[stream] = (job, worker, time.perf_counter())
            entry = self.store.scene_entry(job.scene)
            if job.kind == "scene":
                entry.update(state="running", attempts=entry["attempts"] + 1, worker=pool.label(worker))
            else:
                entry["anchor_attempts"] += 1

    # 2. collect
    def run(self) -> list[dict[str, Any]]:
        pool = self.pool
        pool.start()
        try:
            while self.waiting or self.running:
                self.submit_ready()
                if not self.running and not pool.loading:
                    raise RenderError("no job can start: every waiting job needs latents no job makes")  # invariant
                ready, _ = self.ray.wait([*self.running, *pool.loading], num_returns=1, timeout=5.0)
                for ref in ready:
                    if ref in pool.loading:
                        pool.loaded(ref)
                    else:
                        self.collect(ref)
                self.heartbeat()
            return list(pool.info.values())
        finally:
            for entry in self.store.manifest["scenes"]:
                if entry["state"] == "running":
                    entry["state"] = "pending"
            self.store.save_manifest()
            pool.stop()

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_save > 2.0:
            self.store.save_manifest()
            self.last_save = now
        if not self.pool.info and now - self.last_notice > 30.0:
            self.run_.say("waiting for the cluster to place a worker (no free GPU or CPU?)")
            self.last_notice = now

    def collect(self, stream: Any) -> None:
        exceptions = self.ray.exceptions
        job, worker, start = self.running[stream]
        try:
            item = self.ray.get(next(stream))
        except StopIteration:
            self.running.pop(stream)
            self.pool.idle.append(worker)
        except (exceptions.RayActorError, exceptions.ObjectLostError, exceptions.NodeDiedError) as exc:
            self.running.pop(stream)
            self.infrastructure_failure(job, worker, exc)
        except exceptions.RayTaskError as exc:
            self.running.pop(stream)
            self.pool.idle.append(worker)
            self.scene_failure(job, exc)
        else:
            self.receive(job, item, start)

    def receive(self, job: Job, item: dict[str, Any], start: float) -> None:
        if "png" in item:
            self.store.write_frame(job.scene, item["frame"], item["png"])
            return
        # The stream's last item: the job's final latents.
        self.run_.save_latents(job.key, item["latents"])
        if job.kind == "scene":
            entry = self.store.scene_entry(job.scene)
            entry.update(state="done", seconds=round(time.perf_counter() - start, 3))
            self.store.save_manifest()
            self.run_.scenes_rendered += 1
            self.run_.queue_segment(job.scene)
            done = sum(e["state"] == "done" for e in self.store.manifest["scenes"])
            self.run_.say(f"scene {job.scene + 1}/{len(self.spec.scenes)} rendered "
                          f"({entry['frames_expected']} frames, {entry['seconds']:.1f}s) [{done} done]")

    # 3. failures
    def infrastructure_failure(self, job: Job, worker: Any, exc: Exception) -> None:
        """A worker or node died: the job goes back to the queue without spending a retry."""
        self.run_.say(f"worker lost during {job.kind} {job.scene + 1} ({type(exc).__name__}); rescheduling")
        entry = self.store.scene_entry(job.scene)
        if job.kind == "scene":
            entry["attempts"] -= 1
            entry["state"] = "pending"
        else:
            entry["anchor_attempts"] -= 1
        self.waiting.insert(0, job)
        self.pool.replace(worker)

    def scene_failure(self, job: Job, exc: Exception) -> None:
        """The job's own code raised: spend one retry, or give up on the film."""
        cause = getattr(exc, "cause", None) or exc
        message = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        entry = self.store.scene_entry(job.scene)
        entry["failures"].append(f"{job.kind}: {message}")
        # Retries are counted per run: running a failed film again gives it fresh ones.
        failed = self.failures[job.key] = self.failures.get(job.key, 0) + 1
        if failed > self.spec.render.retries:
            entry["state"] = "failed"
            what = f"scene {job.scene + 1}" if job.kind == "scene" else f"the anchor of scene {job.scene + 1}"
            raise RenderError(f"{what} failed {failed} time(s); last error: {message}")
        self.run_.say(f"{job.kind} {job.scene + 1} failed ({message}); retrying")
        entry["state"] = "pending"
        self.waiting.insert(0, job)

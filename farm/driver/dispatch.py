"""Dispatch: hand ready jobs to idle workers and write what their frame streams send back.

Everything ready is submitted to idle workers and collected with ``ray.wait``
over the workers' frame streams (and the load() calls of workers still
starting). Each stream holds at most ``dispatch.in_flight`` frames the driver
has not taken yet (Ray's generator back-pressure), so a slow disk slows the
workers instead of filling the driver's memory.

A frame item carries the renderer's state every ``dispatch.state_every`` frames;
the driver keeps the latest one of each running scene in the film store. A dead
worker or node is an infrastructure failure: its job goes back to the queue
without spending a retry and, being a scene, continues from its last state on
another worker; frames already on disk are not rendered again. An exception in
the job's own code spends one of ``render.retries`` (and is a strike against the
node it ran on).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from farm.driver.bridges import Bridges
from farm.driver.jobs import Job, job_arguments
from farm.driver.latents import LatentBook
from farm.driver.pool import Worker, WorkerPool
from farm.driver.progress import Reporter
from farm.driver.store import FilmStore
from farm.errors import FarmError, RenderError
from farm.folder.manifest import BadNode
from farm.spec import FilmSpec


class Running:
    """A job on a worker: its stream, where it started, and the frames it sent."""

    def __init__(self, job: Job, worker: Worker, first_frame: int) -> None:
        self.job, self.worker = job, worker
        self.node = worker.node
        self.start = time.perf_counter()
        self.first_frame = first_frame


class Dispatcher:
    def __init__(self, spec: FilmSpec, store: FilmStore, latents: LatentBook, bridges: Bridges, pool: WorkerPool,
                 report: Reporter, jobs: list[Job], on_scene: Callable[[int], None]) -> None:
        """``on_scene(k)``: scene k's frames are all on disk (and its record done)."""
        import ray

        self.ray = ray
        self.spec, self.store, self.latents, self.bridges = spec, store, latents, bridges
        self.pool = pool
        self.report = report
        self.on_scene = on_scene
        self.waiting = list(jobs)
        self.running: dict[Any, Running] = {}  # frame stream -> the job on it
        self.failures: dict[tuple[str, int], int] = {}  # job -> failures of its own code in this run
        self.scenes_rendered = 0
        self.last_save = 0.0
        self.last_notice = time.monotonic()
        self.counts = spec.frames_per_scene()
        self.frames_total = sum(self.counts)
        self.frames_done = store.manifest.frames_done
        self.frames_this_run = 0
        self.first_frame_at: Optional[float] = None

    def wanted(self) -> int:
        """Jobs that can run side by side now or soon: the workers worth having (one for morph bridges)."""
        if self.spec.render.reseed == "chain":
            return 1
        return max(len(self.waiting) + len(self.running), 1 if self.bridges.missing() else 0)

    # 1. submit
    def submit_ready(self) -> None:
        for job in list(self.waiting):
            if not self.pool.idle:
                return
            resume = (self.store.read_state(job.scene)
                      if job.kind == "scene" and self.spec.dispatch.state_every else None)
            if resume is None and job.start_from is not None and job.start_from not in self.latents:
                continue
            self.waiting.remove(job)
            worker = self.pool.take(f"{job.kind} {job.scene + 1}")
            init = self.latents.get(job.start_from) if job.start_from and resume is None else None
            settings, prompt, seed, frames = job_arguments(self.spec, job, self.counts)
            stream = worker.actor.render.options(
                num_returns="streaming", _generator_backpressure_num_objects=self.spec.dispatch.in_flight,
            ).remote(settings, prompt, seed, frames, init, resume[1] if resume else None,
                     self.spec.dispatch.state_every if job.kind == "scene" else 0)
            first = resume[0] + 1 if resume else 0
            self.running[stream] = Running(job, worker, first)
            record = self.store.scene(job.scene)
            if job.kind == "scene":
                record.started(worker.label)
                how = f"resumes at frame {first + 1}/{frames}" if resume else "starts"
                self.report.say(f"scene {job.scene + 1} {how} on {worker.label}")
                self.report.emit("scene", state="resumed" if resume else "started", scene=job.scene,
                                 frame=first, node=worker.node)
            else:
                record.anchor_started()

    # 2. collect
    def run(self, worker_class: Optional[type] = None) -> list[dict[str, Any]]:
        """Render every job; returns every worker that was ready in this run (where it ran)."""
        pool = self.pool
        pool.start(self.wanted(), worker_class)
        try:
            while self.waiting or self.running:
                pool.balance(self.wanted())
                self.submit_ready()
                pool.check_placeable()
                if not self.running and pool.idle and self.waiting:
                    raise RenderError("no job can start: every waiting job needs latents no job makes")  # invariant
                loading = pool.loading()
                refs = [*self.running, *loading]
                if not refs:  # no worker yet: the cluster has no room, or a node is joining
                    self.heartbeat()
                    time.sleep(0.5)
                    continue
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
                if ready:  # and whatever else is ready by now: one batch
                    ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
                batch: dict[int, list[int]] = {}
                for ref in ready:
                    if ref in loading:
                        pool.loaded(ref)
                    elif ref in self.running:
                        self.collect(ref, batch)
                if batch:
                    self.report_frames(batch)
                self.heartbeat()
            self.bridges.collect([w.actor for w in (*pool.idle, *pool.in_state("busy", "loading"))])
            return list(pool.history)
        finally:
            self.store.manifest.interrupted()
            self.store.manifest.bad_nodes = self.bad_nodes()
            self.store.save_manifest()
            pool.stop()

    def bad_nodes(self) -> list[BadNode]:
        earlier = [b for b in self.store.manifest.bad_nodes if b.node not in self.pool.bad]
        return earlier + [BadNode(node, self.pool.hosts.get(node, "?"), why) for node, why in self.pool.bad.items()]

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_save > 2.0:
            self.store.save_manifest()
            self.last_save = now
        if not self.pool.ready and now - self.last_notice > 30.0:
            self.report.say("waiting for the cluster to place a worker (no free GPU or CPU?)")
            self.last_notice = now

    def report_frames(self, batch: dict[int, list[int]]) -> None:
        now = time.perf_counter()
        elapsed = now - (self.first_frame_at or now)
        fps = self.frames_this_run / elapsed if elapsed > 0 else None
        left = self.frames_total - self.frames_done
        for scene, frames in batch.items():
            self.report.emit("frames", scene=scene, first=min(frames), last=max(frames), count=len(frames),
                             frames_done=self.frames_done, frames_total=self.frames_total,
                             scenes_done=self.store.manifest.scenes_done,
                             scenes_running=sum(1 for r in self.running.values() if r.job.kind == "scene"),
                             workers=len(self.pool.ready), fps=round(fps, 3) if fps else None,
                             eta_s=round(left / fps, 1) if fps else None)

    def collect(self, stream: Any, batch: dict[int, list[int]]) -> None:
        exceptions = self.ray.exceptions
        running = self.running[stream]
        try:
            item = self.ray.get(next(stream))
        except StopIteration:
            self.running.pop(stream)
            running.worker.release()
            self.bridges.request(running.worker.actor)
        except exceptions.RayTaskError as exc:
            self.running.pop(stream)
            running.worker.release()
            self.scene_failure(running, exc)
        except exceptions.RayError as exc:  # the actor, its node or its objects are gone
            self.running.pop(stream)
            self.infrastructure_failure(running, exc)
        else:
            self.receive(running, item, batch)

    def receive(self, running: Running, item: dict[str, Any], batch: dict[int, list[int]]) -> None:
        job = running.job
        if "png" in item:
            index = item["frame"]
            # Between two states a resumed scene renders again frames already kept: same bytes, not rewritten.
            if not self.store.has_frame(job.scene, index):
                self.store.write_frame(job.scene, index, item["png"], running.node)
                self.frames_done += 1
                self.frames_this_run += 1
                self.first_frame_at = self.first_frame_at or running.start
                batch.setdefault(job.scene, []).append(index)
            if item.get("state") is not None:
                self.store.write_state(job.scene, index, item["state"])
            return
        # The stream's last item: the job's final latents.
        self.latents.save(job.key, item["latents"])
        if job.kind == "scene" and "first_latents" in item:  # where a morph into this scene ends
            self.latents.save(("first", job.scene), item["first_latents"])
        if job.kind == "scene":
            record = self.store.scene(job.scene)
            record.finished(time.perf_counter() - running.start)
            self.store.clear_state(job.scene)
            self.store.save_manifest()
            self.scenes_rendered += 1
            self.on_scene(job.scene)
            done = self.store.manifest.scenes_done
            self.report.say(f"scene {job.scene + 1}/{len(self.spec.scenes)} rendered "
                            f"({record.frames_expected} frames, {record.seconds:.1f}s) [{done} done]")
            self.report.emit("scene", state="done", scene=job.scene, seconds=record.seconds,
                             attempts=record.attempts, scenes_done=done)

    # 3. failures
    def infrastructure_failure(self, running: Running, exc: Exception) -> None:
        """A worker or node died: the job goes back to the queue without spending a retry."""
        job = running.job
        self.report.say(f"worker lost during {job.kind} {job.scene + 1} ({type(exc).__name__}); rescheduling")
        record = self.store.scene(job.scene)
        if job.kind == "scene":
            record.lost()
            self.report.emit("scene", state="lost", scene=job.scene, node=running.node, reason=type(exc).__name__)
        else:
            record.anchor_lost()
        self.waiting.insert(0, job)
        self.pool.lost(running.worker, f"a worker died ({type(exc).__name__})")

    def scene_failure(self, running: Running, exc: Exception) -> None:
        """The job's own code raised: spend one retry, or give up on the film."""
        job = running.job
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, FarmError) and not isinstance(cause, RenderError):
            # The user's to fix (a setting this device cannot honour): no retry would help.
            raise cause from None
        message = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        self.report.emit("scene", state="failed", scene=job.scene, node=running.node, reason=message)
        if running.node:
            self.pool.strike(running.node, f"{job.kind} {job.scene + 1} failed ({message})")
        # Retries are counted per run: running a failed film again gives it fresh ones.
        failed = self.failures[job.key] = self.failures.get(job.key, 0) + 1
        final = failed > self.spec.render.retries
        record = self.store.scene(job.scene)
        if job.kind == "scene":
            record.failed(f"scene: {message}", final)
        else:
            record.anchor_failed(f"anchor: {message}")
        if final:
            what = f"scene {job.scene + 1}" if job.kind == "scene" else f"the anchor of scene {job.scene + 1}"
            raise RenderError(f"{what} failed {failed} time(s); last error: {message}")
        self.report.say(f"{job.kind} {job.scene + 1} failed ({message}); retrying")
        self.waiting.insert(0, job)

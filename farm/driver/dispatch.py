"""Dispatch: hand ready jobs to idle workers and write what their frame streams send back.

Everything ready is submitted to idle workers and collected with ``ray.wait``
over the workers' frame streams (and the load() calls of workers still
starting). Each stream holds at most ``dispatch.in_flight`` frames the driver
has not taken yet (Ray's generator back-pressure), so a slow disk slows the
workers instead of filling the driver's memory. The frames and states of one
batch are written side by side (``FilmStore.put(later=True)``), and are all on
disk before they are reported or their scene is done.

A frame item carries the renderer's state every ``dispatch.state_every`` frames;
the driver keeps the latest one of each running scene in the film store. A dead
worker or node is an infrastructure failure: its job goes back to the queue
without spending a retry and, being a scene, continues from its last state on
another worker; frames already on disk are not rendered again. An exception in
the job's own code spends one of ``render.retries`` (and is a strike against the
node it ran on).

A job is hung when its stream sends nothing for ``dispatch.stall_seconds`` (0:
automatic, see ``Dispatcher.allowance``): the dispatcher wakes at least once a
second to look, cancels the stream, kills the worker (the pool replaces it) and
handles the job as one whose worker died. Morph bridges are jobs of the same
kind: a bridge whose worker dies or hangs is asked again of another worker.
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

# The automatic stall rule (dispatch.stall_seconds: 0).
STALL_MULTIPLE = 10  # times the slowest frame measured in this run
STALL_FLOOR_S = 60.0  # never less
STALL_UNMEASURED_S = 3600.0  # while no frame has been measured yet (the first frames of a film)


class Running:
    """A job on a worker: its stream, where it started, and when it last sent something."""

    def __init__(self, job: Job, worker: Worker, first_frame: int, resumed: bool = False) -> None:
        self.job, self.worker = job, worker
        self.node = worker.node
        self.start = time.perf_counter()
        self.first_frame = first_frame
        self.resumed = resumed
        self.items = 0  # items the stream sent
        self.last_item = time.monotonic()  # when it last sent one (or started)

    def sent(self) -> float:
        """One more item: the seconds since the last one."""
        now = time.monotonic()
        gap, self.last_item = now - self.last_item, now
        self.items += 1
        return gap


def describe(job: Job) -> str:
    if job.kind == "bridge":
        return f"the morph after scene {job.scene + 1}"
    return f"{job.kind} {job.scene + 1}"


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
        self.bridging: dict[Any, Running] = {}  # a bridge's answer -> the bridge job on it
        self.slowest_frame = 0.0  # seconds: the longest wait for a scene's next frame in this run
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
        # Ready bridges may use every idle worker, but start at most one.
        ready = len(self.bridges.ready())
        bridges = max(min(ready, self.pool.places()), 1 if ready else 0)
        return len(self.waiting) + len(self.running) + len(self.bridging) + bridges

    # 1. submit
    def submit_ready(self) -> None:
        for job in list(self.waiting):
            if not self.pool.free:
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
            self.running[stream] = Running(job, worker, first, resume is not None)
            record = self.store.scene(job.scene)
            if job.kind == "scene":
                record.started(worker.label)
                how = f"resumes at frame {first + 1}/{frames}" if resume else "starts"
                self.report.say(f"scene {job.scene + 1} {how} on {worker.label}")
                self.report.emit("scene", state="resumed" if resume else "started", scene=job.scene,
                                 frame=first, node=worker.node)
            else:
                record.anchor_started()
        for k in self.bridges.ready():
            if not self.pool.free:
                return
            job = Job("bridge", k, None)
            worker = self.pool.take(describe(job))
            self.bridging[self.bridges.ask(k, worker.actor)] = Running(job, worker, 0)

    # 2. collect
    def run(self, worker_class: Optional[type] = None) -> list[dict[str, Any]]:
        """Render every job; returns every worker that was ready in this run (where it ran)."""
        pool = self.pool
        pool.start(self.wanted(), worker_class)
        try:
            while self.waiting or self.running or self.bridging or self.bridges.ready():
                pool.balance(self.wanted())
                self.submit_ready()
                pool.check_placeable()
                if not self.running and pool.free and self.waiting:
                    raise RenderError("no job can start: every waiting job needs latents no job makes")  # invariant
                loading = pool.loading()
                refs = [*self.running, *self.bridging, *loading]
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
                    elif ref in self.bridging:
                        self.collect_bridge(ref)
                self.store.settle()  # the batch's frames and states, written side by side, are on disk
                if batch:
                    self.report_frames(batch)
                self.find_stalls()
                self.heartbeat()
            self.bridges.check_done()
            return list(pool.history)
        finally:
            try:
                self.store.settle(stop=True)
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
        except exceptions.RayTaskError as exc:
            self.running.pop(stream)
            running.worker.release()
            self.scene_failure(running, exc)
        except exceptions.RayError as exc:  # the actor, its node or its objects are gone
            self.running.pop(stream)
            self.infrastructure_failure(running, exc)
        else:
            gap = running.sent()
            if "png" in item and running.items > 1:  # the first item waited for the warm-up too
                self.slowest_frame = max(self.slowest_frame, gap)
            self.receive(running, item, batch)

    def collect_bridge(self, ref: Any) -> None:
        running = self.bridging.pop(ref)
        try:
            pngs = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            running.worker.release()
            self.scene_failure(running, exc)
        except self.ray.exceptions.RayError as exc:
            self.infrastructure_failure(running, exc)
        else:
            running.worker.release()
            self.bridges.write(running.job.scene, pngs)

    # 3. hung work
    def allowance(self, running: Running) -> float:
        """Seconds ``running``'s stream may send nothing before its worker counts as hung."""
        if self.spec.dispatch.stall_seconds:
            return self.spec.dispatch.stall_seconds
        if not self.slowest_frame:
            return STALL_UNMEASURED_S
        limit = max(STALL_FLOOR_S, STALL_MULTIPLE * self.slowest_frame)
        if running.items == 0:  # the first item comes after the job's warm-up: counted in measured steps
            r = self.spec.render
            step = self.slowest_frame / r.steps_per_frame
            kind = running.job.kind
            warmup = {"scene": 0 if running.resumed else r.warmup_steps + r.init_candidates,
                      "anchor": r.anchor_steps + r.init_candidates, "bridge": self.bridges.frames}[kind]
            limit += STALL_MULTIPLE * step * warmup
        return limit

    def find_stalls(self) -> None:
        now = time.monotonic()
        late = [(jobs, ref) for jobs in (self.running, self.bridging) for ref, running in jobs.items()
                if now - running.last_item > self.allowance(running)]
        if not late:
            return
        # One with something to take now is not hung: the driver was busy (a piece encoded, a slow disk).
        ready, _ = self.ray.wait([ref for _, ref in late], num_returns=len(late), timeout=0)
        for jobs, ref in late:
            if ref not in ready:
                running = jobs.pop(ref)
                self.stalled(ref, running, now - running.last_item)

    def stalled(self, ref: Any, running: Running, seconds: float) -> None:
        """A job sent nothing for too long: its stream cancelled, its worker killed, the job elsewhere."""
        job = running.job
        self.report.say(f"{describe(job)} stalled on {running.worker.label}: nothing for {seconds:.0f}s; "
                        "killing the worker and rescheduling")
        self.report.emit("stalled", kind=job.kind, scene=job.scene, node=running.node,
                         host=running.worker.info.get("host"), seconds=round(seconds, 1))
        try:
            self.ray.cancel(ref)
        except Exception:  # a stream of an actor task cannot always be cancelled: the actor's death ends it
            pass
        why = f"stalled after {seconds:.0f}s without a frame"
        self.store.scene(job.scene).stalls.append(f"{job.kind} on {running.worker.label} after {seconds:.1f}s")
        self.requeue(running, why, "stalled")

    def receive(self, running: Running, item: dict[str, Any], batch: dict[int, list[int]]) -> None:
        job = running.job
        if "png" in item:
            index = item["frame"]
            # Between two states a resumed scene renders again frames already kept: same bytes, not rewritten.
            if not self.store.has_frame(job.scene, index):
                self.store.write_frame(job.scene, index, item["png"], running.node, later=True)
                self.frames_done += 1
                self.frames_this_run += 1
                self.first_frame_at = self.first_frame_at or running.start
                batch.setdefault(job.scene, []).append(index)
            if item.get("state") is not None:
                self.store.write_state(job.scene, index, item["state"], later=True)
            return
        # The stream's last item: the job's final latents. Its frames came in earlier batches (on disk);
        # the latents and the manifest saying it is done are written with this batch.
        self.latents.save(job.key, item["latents"], later=True)
        if job.kind == "scene" and "first_latents" in item:  # where a morph into this scene ends
            self.latents.save(("first", job.scene), item["first_latents"], later=True)
        if job.kind == "scene":
            record = self.store.scene(job.scene)
            record.finished(time.perf_counter() - running.start)
            self.store.clear_state(job.scene)
            self.store.save_manifest(later=True)
            self.scenes_rendered += 1
            self.on_scene(job.scene)
            done = self.store.manifest.scenes_done
            self.report.say(f"scene {job.scene + 1}/{len(self.spec.scenes)} rendered "
                            f"({record.frames_expected} frames, {record.seconds:.1f}s) [{done} done]")
            self.report.emit("scene", state="done", scene=job.scene, seconds=record.seconds,
                             attempts=record.attempts, scenes_done=done)

    # 4. failures
    def infrastructure_failure(self, running: Running, exc: Exception) -> None:
        """A worker or node died: the job goes back to the queue without spending a retry."""
        self.report.say(f"worker lost during {describe(running.job)} ({type(exc).__name__}); rescheduling")
        self.requeue(running, f"a worker died ({type(exc).__name__})", "lost", type(exc).__name__)

    def requeue(self, running: Running, why: str, state: str, reason: Optional[str] = None) -> None:
        """The job's worker is gone (dead, or killed hung): the job waits for another, its attempt not spent."""
        job = running.job
        record = self.store.scene(job.scene)
        if job.kind == "scene":
            record.lost()
            self.report.emit("scene", state=state, scene=job.scene, node=running.node, reason=reason or why)
        elif job.kind == "anchor":
            record.anchor_lost()
        if job.kind == "bridge":
            self.bridges.again(job.scene)
        else:
            self.waiting.insert(0, job)
        self.pool.lost(running.worker, why)

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
            record.anchor_failed(f"{job.kind}: {message}")
        if final:
            what = {"scene": f"scene {job.scene + 1}", "anchor": f"the anchor of scene {job.scene + 1}",
                    "bridge": describe(job)}[job.kind]
            raise RenderError(f"{what} failed {failed} time(s); last error: {message}")
        self.report.say(f"{describe(job)} failed ({message}); retrying")
        if job.kind == "bridge":
            self.bridges.again(job.scene)
        else:
            self.waiting.insert(0, job)

"""The Ray driver: plan the jobs, start the workers, stream frames to the film store, stitch.

Jobs are scenes and, in ``keyframe`` mode, anchors (a short optimisation whose
last latents start the next scene). A job runs once the latents it starts from
are known; everything ready is submitted at once to idle workers and collected
with ``ray.wait`` over the workers' frame streams.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from farm.cutting.film import CutPlan, FilmCutter, plan_cut
from farm.cutting.layout import BRIDGE_NAME
from farm.cutting.tools import find_ffmpeg
from farm.driver.store import FilmStore, atomic_write
from farm.errors import ClusterError, FarmError, RenderError
from farm.render.bigsleep import derive_seed
from farm.spec import FilmSpec, RenderSpec
from farm.writing.plan import plan_film

ANCHOR_PASS, SCENE_PASS = 1, 0
# Replacing dead workers is free for the scenes, but not endless.
MAX_WORKER_REPLACEMENTS = 20


@dataclass(frozen=True)
class Job:
    kind: str  # "anchor" or "scene"
    scene: int
    start_from: Optional[tuple[str, int]]  # the job whose latents this one starts from

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.scene)


@dataclass
class FilmResult:
    path: Path  # the film's folder
    video: Path
    subtitles: Path
    frames: int  # frames of the film (its timeline)
    scenes_rendered: int  # scenes rendered by this run (the rest were already on disk)
    seconds: float
    workers: list[dict[str, Any]] = field(default_factory=list)


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


def job_arguments(spec: FilmSpec, job: Job, frames_per_scene: list[int]) -> tuple[RenderSpec, list[tuple[str, float]], int, int]:
    """What the renderer is given for a job: (settings, weighted prompts, seed, frames).

    An anchor is a warm-up of ``anchor_steps`` steps that draws no frames.
    """
    settings, frames, rendering_pass = spec.render, frames_per_scene[job.scene], SCENE_PASS
    if job.kind == "anchor":
        settings = dataclasses.replace(settings, warmup_steps=settings.anchor_steps)
        frames, rendering_pass = 0, ANCHOR_PASS
    seed = derive_seed(spec.seed, job.scene, rendering_pass)
    return settings, spec.scenes[job.scene].weighted_prompts, seed, frames


def worker_label(info: dict[str, Any]) -> str:
    return f"{info['host']} node {info['node'][:12]}"


def render_film(spec: FilmSpec, out: str | Path = "out", address: Optional[str] = None,
                progress: Optional[Callable[[str], None]] = None) -> FilmResult:
    """Render ``spec`` into ``out/<film>/``: frames, segments, film.mp4 and film.srt.

    Joins the Ray cluster at ``address``, uses the one this process already joined,
    or starts a local one sized to the machine (and stops it afterwards).
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    # 1. Plan: scenes from the story when needed, prompts checked, jobs derived.
    spec = plan_film(spec)
    exe = find_ffmpeg(spec.video.ffmpeg)
    if address is None:
        # The workers will run on this machine: missing weights are known before any starts.
        from farm.render.weights import preflight

        preflight(spec.models, spec.render.preset)
    # The timeline and the narration: scenes may be lengthened to fit their speech.
    cut = plan_cut(spec, exe, say, film_dir=Path(out) / spec.slug, bridges=True)
    planned, spec = spec, cut.spec
    # 2. Open the film's folder; a different film already there stops us here.
    store = FilmStore(out, spec, same_as=(planned,))
    store.open()
    say(f"film {spec.title!r}: {len(spec.scenes)} scenes, {sum(spec.frames_per_scene())} frames -> {store.path}")
    # 3. Render what is missing.
    run = FilmRun(spec, store, exe, say, cut)
    try:
        workers = run.render(address)
    except BaseException:
        run.cutter.close()
        raise
    # 4. Stitch.
    video = run.stitch()
    return FilmResult(path=store.path, video=video, subtitles=store.path / "film.srt",
                      frames=cut.timeline.total, scenes_rendered=run.scenes_rendered,
                      seconds=time.perf_counter() - started, workers=workers)


class FilmRun:
    def __init__(self, spec: FilmSpec, store: FilmStore, exe: str, say: Callable[[str], None], cut: CutPlan) -> None:
        self.spec = spec
        self.store = store
        self.exe = exe
        self.say = say
        self.counts = spec.frames_per_scene()
        self.latents: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        # Encodes each scene's pieces of the film as soon as the scene is complete.
        self.cutter = FilmCutter(cut, store.path, exe, say)
        self.scenes_rendered = 0
        self.bridge_refs: dict[int, Any] = {}  # morph after scene k -> the worker's answer
        # Jobs whose final latents another job starts from.
        self.starting_points = {job.start_from for job in plan_jobs(spec) if job.start_from}

    # --- latents kept on disk, so a later run can start where this one stopped ---------------

    def latents_path(self, key: tuple[str, int]) -> Path:
        return self.store.scene_dir(key[1]) / f"{key[0]}_latents.npz"

    def save_latents(self, key: tuple[str, int], arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(self.latents_path(key), buffer.getvalue())
        self.latents[key] = arrays

    def load_latents(self, key: tuple[str, int]) -> bool:
        path = self.latents_path(key)
        if not path.is_file():
            return False
        with np.load(path) as data:
            self.latents[key] = {name: data[name] for name in data.files}
        return True

    def job_done(self, job: Job) -> bool:
        if job.kind == "anchor":
            return self.load_latents(job.key)
        if not self.store.scene_complete(job.scene):
            return False
        # A finished scene is only a starting point if its latents survived too.
        return self.load_latents(job.key) if job.key in self.starting_points else True

    # --- rendering -----------------------------------------------------------------------------

    def render(self, address: Optional[str]) -> list[dict[str, Any]]:
        jobs = [job for job in plan_jobs(self.spec) if not self.job_done(job)]
        for index in range(len(self.spec.scenes)):
            if not any(j.kind == "scene" and j.scene == index for j in jobs):
                self.queue_segment(index, reuse=True)
        rerendered = {job.scene for job in jobs if job.kind == "scene"}
        for k in range(len(self.spec.scenes) - 1):
            if rerendered & {k, k + 1}:  # a bridge is made from its scenes' latents: stale now
                for path in self.store.scene_dir(k).glob(BRIDGE_NAME.replace("{:05d}", "*")):
                    path.unlink()
            elif self.bridge_on_disk(k):
                self.cutter.bridge_ready(k)
        if not jobs and not self.bridges_missing():
            self.say("every scene is already rendered")
            return []
        import ray

        connected = connect(address)
        try:
            return Dispatcher(self, jobs).run()
        finally:
            if connected:
                ray.shutdown()

    # --- morph bridges: asked of a worker once both neighbours are rendered -------------------

    def bridge_on_disk(self, k: int) -> bool:
        return all((self.store.scene_dir(k) / BRIDGE_NAME.format(i)).is_file() for i in range(self.cutter.timeline.t))

    def bridges_missing(self) -> list[int]:
        if self.cutter.timeline.transition != "morph":
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
                atomic_write(self.store.scene_dir(k) / BRIDGE_NAME.format(i), png)
            self.cutter.bridge_ready(k)
        self.bridge_refs.clear()

    def queue_segment(self, index: int, reuse: bool = False) -> None:
        self.cutter.scene_ready(index)

    def stitch(self) -> Path:
        return self.cutter.finish().video


def connect(address: Optional[str]) -> bool:
    """Join a Ray cluster, or start a local one; True when this call connected (so we disconnect).

    ``ray.shutdown()`` afterwards stops a local cluster we started, and only
    disconnects from one we joined.
    """
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            return True
        # Ray turns token authentication on for the cluster we start, and says so on every
        # start; the notice is not news to a farm user.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # address="local": a new cluster of our own, even where another Ray runs on this machine.
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        return True
    except ClusterError:
        raise
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words, one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if address:
            raise ClusterError(f"--address: cannot join the Ray cluster at {address} ({reason})") from exc
        raise ClusterError(f"cannot start a local Ray cluster ({reason})") from exc


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: Ray itself keeps retrying for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", "ray://...": Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"--address: no Ray cluster answers at {address} ({exc.strerror or exc})") from exc


class Dispatcher:
    """Hands ready jobs to idle workers and writes what their streams send back.

    Workers that are still loading their models, and replacements for workers that
    died, are waited on in the same ``ray.wait`` as the frame streams: nothing blocks
    on a worker that the cluster cannot place yet.
    """

    def __init__(self, run: FilmRun, jobs: list[Job]) -> None:
        import ray

        self.ray = ray
        self.run_ = run
        self.spec = run.spec
        self.store = run.store
        self.waiting = list(jobs)
        self.idle: list[Any] = []
        self.loading: dict[Any, Any] = {}  # load() reference -> worker
        self.running: dict[Any, tuple[Job, Any, float]] = {}  # frame stream -> (job, worker, start)
        self.info: dict[Any, dict[str, Any]] = {}
        self.replacements = 0
        self.failures: dict[tuple[str, int], int] = {}  # job -> failures of its own code in this run
        self.last_save = 0.0
        self.last_notice = time.monotonic()

    # 1. workers
    def worker_options(self) -> tuple[int, dict[str, Any]]:
        r = self.spec.render
        resources = self.ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if r.device != "cpu" and gpus >= r.gpus_per_worker:
            count = int(gpus // r.gpus_per_worker)
            options = {"num_gpus": r.gpus_per_worker, "num_cpus": min(r.cpus_per_worker, cpus)}
        elif r.device == "cuda":
            raise ClusterError("render.device: 'cuda' was asked for but the Ray cluster has no GPU")
        else:
            if cpus < r.cpus_per_worker:
                raise ClusterError(f"render.cpus_per_worker: {r.cpus_per_worker} CPUs asked, the cluster has {cpus:g}")
            count = int(cpus // r.cpus_per_worker)
            options = {"num_cpus": r.cpus_per_worker}
        # No more workers than jobs that can ever run side by side.
        parallel = 1 if r.reseed == "chain" else len(self.waiting)
        return max(1, min(r.workers or count, parallel)), options

    def start_workers(self) -> None:
        from farm.driver.worker import SceneWorker

        count, options = self.worker_options()
        self.actor_class = self.ray.remote(**options)(SceneWorker)
        for _ in range(count):
            self.add_worker()

    def add_worker(self) -> None:
        worker = self.actor_class.remote(self.spec.render.cpus_per_worker)
        ref = worker.load.remote(self.spec.models, self.spec.video.size, self.spec.render.device)
        self.loading[ref] = worker

    def worker_loaded(self, ref: Any) -> None:
        worker = self.loading.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FarmError):  # a bad model name or missing weights: the user's to fix
                raise cause from None
            raise
        except self.ray.exceptions.RayActorError as exc:
            self.run_.say(f"a worker died while loading its models ({type(exc).__name__}); starting another")
            self.replace(worker)
            return
        self.info[worker] = info
        self.idle.append(worker)
        self.run_.say(f"worker ready on {worker_label(info)} ({info['device']}); {len(self.info)} in the pool")

    def replace(self, worker: Any) -> None:
        self.info.pop(worker, None)
        self.replacements += 1
        if self.replacements > MAX_WORKER_REPLACEMENTS:
            raise ClusterError(f"workers died {self.replacements} times; the cluster is not healthy")
        self.ray.kill(worker, no_restart=True)
        self.add_worker()

    def stop_workers(self) -> None:
        for worker in [*self.info, *self.loading.values()]:
            self.ray.kill(worker, no_restart=True)

    # 2. submit
    def submit_ready(self) -> None:
        for job in list(self.waiting):
            if not self.idle:
                return
            if job.start_from is not None and job.start_from not in self.run_.latents:
                continue
            self.waiting.remove(job)
            worker = self.idle.pop(0)
            init = self.run_.latents.get(job.start_from) if job.start_from else None
            stream = worker.render.options(num_returns="streaming").remote(
                *job_arguments(self.spec, job, self.run_.counts), init)
            self.running[stream] = (job, worker, time.perf_counter())
            entry = self.store.scene_entry(job.scene)
            if job.kind == "scene":
                entry.update(state="running", attempts=entry["attempts"] + 1, worker=worker_label(self.info[worker]))
            else:
                entry["anchor_attempts"] += 1

    # 3. collect
    def run(self) -> list[dict[str, Any]]:
        self.start_workers()
        try:
            while self.waiting or self.running:
                self.submit_ready()
                if not self.running and not self.loading:
                    raise RenderError("no job can start: every waiting job needs latents no job makes")  # invariant
                ready, _ = self.ray.wait([*self.running, *self.loading], num_returns=1, timeout=5.0)
                for ref in ready:
                    if ref in self.loading:
                        self.worker_loaded(ref)
                    else:
                        self.collect(ref)
                self.heartbeat()
            self.run_.collect_bridges([*self.idle, *self.info, *self.loading.values()])
            return list(self.info.values())
        finally:
            for entry in self.store.manifest["scenes"]:
                if entry["state"] == "running":
                    entry["state"] = "pending"
            self.store.save_manifest()
            self.stop_workers()

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_save > 2.0:
            self.store.save_manifest()
            self.last_save = now
        if not self.info and now - self.last_notice > 30.0:
            self.run_.say("waiting for the cluster to place a worker (no free GPU or CPU?)")
            self.last_notice = now

    def collect(self, stream: Any) -> None:
        exceptions = self.ray.exceptions
        job, worker, start = self.running[stream]
        try:
            item = self.ray.get(next(stream))
        except StopIteration:
            self.running.pop(stream)
            self.idle.append(worker)
            self.run_.request_bridges(worker)
        except (exceptions.RayActorError, exceptions.ObjectLostError, exceptions.NodeDiedError) as exc:
            self.running.pop(stream)
            self.infrastructure_failure(job, worker, exc)
        except exceptions.RayTaskError as exc:
            self.running.pop(stream)
            self.idle.append(worker)
            self.scene_failure(job, exc)
        else:
            self.receive(job, item, start)

    def receive(self, job: Job, item: dict[str, Any], start: float) -> None:
        if "png" in item:
            self.store.write_frame(job.scene, item["frame"], item["png"])
            return
        # The stream's last item: the job's final latents.
        self.run_.save_latents(job.key, item["latents"])
        if job.kind == "scene" and "first_latents" in item:  # where a morph into this scene ends
            self.run_.save_latents(("first", job.scene), item["first_latents"])
        if job.kind == "scene":
            entry = self.store.scene_entry(job.scene)
            entry.update(state="done", seconds=round(time.perf_counter() - start, 3))
            self.store.save_manifest()
            self.run_.scenes_rendered += 1
            self.run_.queue_segment(job.scene)
            done = sum(e["state"] == "done" for e in self.store.manifest["scenes"])
            self.run_.say(f"scene {job.scene + 1}/{len(self.spec.scenes)} rendered "
                          f"({entry['frames_expected']} frames, {entry['seconds']:.1f}s) [{done} done]")

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
        self.replace(worker)

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

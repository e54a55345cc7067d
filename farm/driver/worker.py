"""The render actor: loads CLIP and BigGAN once, then streams scenes frame by frame.

It moves frames (PNG bytes) and latents (numpy arrays) it does not interpret
beyond the renderer's own API; the optimisation itself lives in farm.render.

With ``render.scenes_per_worker`` above 1 the actor is threaded: each ``render()``
call (one scene, its own stream) runs in a thread of its own and hands its scene to
the actor's :class:`BatchLoop`, whose one thread steps every scene together
(farm.render.batch) and passes each scene's frames back to its stream. A scene whose
driver has not taken its last frame yet (Ray's back-pressure) waits out of the batch,
so a slow stream slows no other.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import threading
import time
from typing import Any, Iterator, Optional

import ray

# The most scenes a worker picks for itself (render.scenes_per_worker: 0), and the share of its
# GPU's free memory they may fill.
AUTO_SCENES_MAX = 16
AUTO_MEMORY_SHARE = 0.8


def auto_scenes(device_type: str, free_bytes: int, scene_bytes: int, most: int = AUTO_SCENES_MAX) -> int:
    """Scenes per worker chosen from the device: 1 on a CPU (batching is faster there by a third
    at most, see docs/BENCHMARKS.md, and a scene alone renders bit for bit); on a GPU as many as
    fill ``AUTO_MEMORY_SHARE`` of its free memory at ``scene_bytes`` each (one scene's measured
    step), at least 1 and at most ``most``."""
    if device_type != "cuda" or scene_bytes <= 0:
        return 1
    return max(1, min(most, int(AUTO_MEMORY_SHARE * free_bytes // scene_bytes)))


class BatchLoop:
    """One thread stepping a worker's scenes together; each scene's events go to its own queue."""

    def __init__(self, models, capacity: int, threads: int) -> None:
        from farm.render.batch import SceneBatch

        self.models, self.threads = models, threads
        self.batch = SceneBatch(models, capacity)
        self.queues: dict[int, queue.Queue] = {}
        self.leaving: set[int] = set()
        self.keys = itertools.count()
        self.changed = threading.Condition()
        threading.Thread(target=self.loop, name="farm-batch", daemon=True).start()

    def join(self, job) -> tuple[int, queue.Queue]:
        """Start a scene (in the caller's thread) and put it in the batch: its key and its events' queue."""
        from farm.render.batch import start_scene

        run = start_scene(self.models, job)
        events: queue.Queue = queue.Queue()
        with self.changed:
            self.forget_leaving()  # a failed scene's place may not have been given back yet
            key = next(self.keys)
            self.queues[key] = events
            self.batch.add(key, run)
            self.changed.notify()
        return key, events

    def leave(self, key: int) -> None:
        """The scene's stream ended early (cancelled): take it out before the next step."""
        with self.changed:
            self.leaving.add(key)
            self.changed.notify()

    def taken(self) -> None:
        """A stream took an event: its scene may need the next step."""
        with self.changed:
            self.changed.notify()

    def forget_leaving(self) -> None:
        for key in self.leaving & set(self.queues):
            self.batch.remove(key)
            self.queues.pop(key)
        self.leaving.clear()

    def ready(self) -> list[int]:
        """Scenes whose stream has taken everything they sent: the ones to advance now."""
        self.forget_leaving()
        return [key for key in self.batch.runs if self.queues[key].empty()]

    def loop(self) -> None:
        import torch

        torch.set_num_threads(max(1, self.threads))
        while True:
            with self.changed:
                while not (keys := self.ready()):
                    self.changed.wait()
                runs = {key: self.batch.runs[key] for key in keys}
            try:
                for key, run in runs.items():
                    for event in run.events():
                        self.queues[key].put(event)
                stepping = [key for key, run in runs.items() if run.needs_step()]
                if stepping:
                    self.batch.step(stepping)
            except Exception as exc:  # the step of them all failed: each of its scenes fails with it
                for key in runs:
                    self.queues[key].put(exc)
                    self.leave(key)
                continue
            with self.changed:
                for key, run in runs.items():
                    if run.done:
                        self.batch.remove(key)


class SceneWorker:
    """Ray actor, one per GPU (or per ``cpus_per_worker`` CPUs when the cluster has none)."""

    def __init__(self, threads: int) -> None:
        started = time.perf_counter()
        import torch

        torch.set_num_threads(max(1, threads))
        # Where a worker's start goes (the driver reports it; docs/BENCHMARKS.md): torch's import here,
        # then load()'s imports of the model libraries and the models' build.
        self.timings = {"torch_s": round(time.perf_counter() - started, 3)}
        self.threads = threads
        self.models = None
        self.loop: Optional[BatchLoop] = None

    def load(self, models_spec, size: int, device: str, scenes: int = 1, settings=None) -> dict[str, Any]:
        """Load the models; a separate call so a bad model raises its own error, not a dead actor.

        ``scenes``: scenes rendered together (``render.scenes_per_worker``; 0: chosen here from the
        device's memory and one step of a scene at ``settings``). The answer says how many."""
        started = time.perf_counter()
        import open_clip  # noqa: F401  every preset's CLIP and BigGAN classes: imported apart, to be timed
        import pytorch_pretrained_biggan  # noqa: F401

        from farm.render.models import load_models, resolve_device

        imported = time.perf_counter()
        self.models = load_models(models_spec, size, resolve_device(device))
        self.timings.update(imports_s=round(imported - started, 3), build_s=round(time.perf_counter() - imported, 3))
        if scenes == 0:
            scenes = self.choose_scenes(settings)
        if scenes > 1:
            self.loop = BatchLoop(self.models, scenes, self.threads)
        return {"scenes": scenes,
            "node": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": str(self.models.device),
            "resources": ray.get_runtime_context().get_assigned_resources(),
            "timings": self.timings,
        }

    def render(self, settings, prompt, seed: int, frames: int, init=None, resume=None,
               state_every: int = 0) -> Iterator[dict[str, Any]]:
        """Stream one item per frame, then a last item with the scene's first and last (EMA) latents.

        A frame item carries ``state`` (numpy arrays, opaque here) when the renderer attached
        one; ``resume`` is such a state, to continue a scene after the frame it came with.
        """
        from farm.render.bigsleep import Finished, Latents, render_scene_with_state

        assert self.models is not None, "load() must run before render()"
        start = Latents.from_numpy(init, self.models.device) if init is not None else None
        if self.loop is not None:
            yield from self.render_batched(settings, prompt, seed, frames, start, resume, state_every)
            return
        sleeper, frame_iter = render_scene_with_state(self.models, settings, prompt, seed, frames, start,
                                                      resume=resume, state_every=state_every)
        for frame in frame_iter:
            yield frame_item(frame)
        yield last_item(Finished(sleeper.ema.average, sleeper.first))

    def render_batched(self, settings, prompt, seed, frames, start, resume, state_every) -> Iterator[dict[str, Any]]:
        """The same stream, the scene stepped in the worker's batch beside the others."""
        from farm.render.batch import SceneJob
        from farm.render.bigsleep import Finished

        assert self.loop is not None
        key, events = self.loop.join(SceneJob(None, settings, prompt, seed, frames, start, resume, state_every))
        try:
            while True:
                event = events.get()
                self.loop.taken()
                if isinstance(event, Exception):
                    raise event
                if isinstance(event, Finished):
                    yield last_item(event)
                    return
                yield frame_item(event)
        finally:
            self.loop.leave(key)

    def choose_scenes(self, settings) -> int:
        """render.scenes_per_worker 0: 1 on a CPU or in deterministic mode; on a GPU, from the memory
        one scene's step takes (measured here, once) and the GPU's free memory."""
        import torch

        from farm.render.bigsleep import BigSleep

        device = self.models.device
        if device.type != "cuda" or settings is None or settings.deterministic:
            return 1
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        sleeper = BigSleep(self.models, settings, "a measure of memory", 0)
        sleeper.step()
        sleeper.step()
        scene_bytes = torch.cuda.max_memory_allocated(device) - before
        del sleeper
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        share = ray.get_runtime_context().get_assigned_resources().get("GPU", 1.0)
        return auto_scenes("cuda", min(free, int(total * min(share, 1.0))), scene_bytes)

    def bridge(self, start, end, count: int, settings) -> list[bytes]:
        """A morph's bridge frames (PNG bytes) from latents ``start`` to ``end`` (numpy dicts)."""
        import io

        from PIL import Image

        from farm.render.bigsleep import Latents
        from farm.render.morph import bridge_frames

        assert self.models is not None, "load() must run before bridge()"
        device = self.models.device
        images = bridge_frames(self.models, Latents.from_numpy(start, device), Latents.from_numpy(end, device), count,
                               settings.truncation, settings.max_classes, settings.class_temperature)
        out = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            out.append(buffer.getvalue())
        return out


def frame_item(frame) -> dict[str, Any]:
    item = {"frame": frame.index, "png": frame.png(), "loss": frame.loss, "similarity": frame.similarity}
    if frame.state is not None:
        item["state"] = frame.state
    return item


def last_item(finished) -> dict[str, Any]:
    """A stream's last item: the scene's last and first (EMA) latents."""
    last = {"latents": finished.latents.to_numpy()}
    if finished.first is not None:
        last["first_latents"] = finished.first.to_numpy()
    return last

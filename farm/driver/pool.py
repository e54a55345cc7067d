"""The worker pool: render actors started, loaded, replaced when they die, stopped at the end.

Workers still loading their models are waited on by the dispatcher in the same
``ray.wait`` as the frame streams (``loading``): nothing blocks on a worker the
cluster cannot place yet.
"""

from __future__ import annotations

from typing import Any, Callable

from farm.errors import ClusterError, FarmError
from farm.spec import FilmSpec

# Replacing dead workers is free for the scenes, but not endless.
MAX_WORKER_REPLACEMENTS = 20


def worker_label(info: dict[str, Any]) -> str:
    return f"{info['host']} node {info['node'][:12]}"


class WorkerPool:
    def __init__(self, spec: FilmSpec, say: Callable[[str], None], parallel: int) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.say = say
        self.parallel = parallel  # jobs that can ever run side by side
        self.idle: list[Any] = []
        self.loading: dict[Any, Any] = {}  # load() reference -> worker
        self.info: dict[Any, dict[str, Any]] = {}  # loaded workers -> where they run
        self.replacements = 0

    def options(self) -> tuple[int, dict[str, Any]]:
        """How many workers, and the resources each asks Ray for."""
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
        return max(1, min(r.workers or count, self.parallel)), options

    def start(self) -> None:
        from farm.driver.worker import SceneWorker

        count, options = self.options()
        self.actor_class = self.ray.remote(**options)(SceneWorker)
        for _ in range(count):
            self.add()

    def add(self) -> None:
        worker = self.actor_class.remote(self.spec.render.cpus_per_worker)
        ref = worker.load.remote(self.spec.models, self.spec.video.size, self.spec.render.device)
        self.loading[ref] = worker

    def loaded(self, ref: Any) -> None:
        """A worker's load() returned: it joins the idle workers, or is replaced if it died."""
        worker = self.loading.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FarmError):  # a bad model name or missing weights: the user's to fix
                raise cause from None
            raise
        except self.ray.exceptions.RayActorError as exc:
            self.say(f"a worker died while loading its models ({type(exc).__name__}); starting another")
            self.replace(worker)
            return
        self.info[worker] = info
        self.idle.append(worker)
        self.say(f"worker ready on {worker_label(info)} ({info['device']}); {len(self.info)} in the pool")

    def label(self, worker: Any) -> str:
        return worker_label(self.info[worker])

    def replace(self, worker: Any) -> None:
        self.info.pop(worker, None)
        self.replacements += 1
        if self.replacements > MAX_WORKER_REPLACEMENTS:
            raise ClusterError(f"workers died {self.replacements} times; the cluster is not healthy")
        self.ray.kill(worker, no_restart=True)
        self.add()

    def stop(self) -> None:
        for worker in [*self.info, *self.loading.values()]:
            self.ray.kill(worker, no_restart=True)

"""The worker pool: render actors that follow the cluster as it grows and shrinks.

Every second or so the dispatcher asks the pool to ``balance`` against the work
that can run at once. The pool places actors node by node (a hard node
affinity), as many per node as its GPUs allow (two per GPU with
``render.gpus_per_worker: 0.5``; per ``cpus_per_worker`` CPUs on a cluster with
no GPU): new nodes get actors, actors on nodes that left are dropped, idle
actors beyond the work left are let go. On a cluster it joined, the pool asks
the autoscaler for the workers the film can use (``request_resources``) and
withdraws the request when it stops.

A node where workers died or scene code failed ``dispatch.bad_node_failures``
times gets no new actors for this film (``bad``, with the reason).

Workers still loading their models are waited on by the dispatcher in the same
``ray.wait`` as the frame streams (``loading``): nothing blocks on a worker the
cluster cannot place yet.

A worker holds ``capacity`` jobs at once (``render.scenes_per_worker``; its load()
says how many it took, 1 for an actor class that cannot batch): jobs go to the
worker with a free place that has the fewest jobs, so scenes spread over the
workers before they share one.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from farm.errors import ClusterError, FarmError
from farm.spec import MAX_SCENES_PER_WORKER, FilmSpec

# Replacing dead workers is free for the scenes, but not endless.
MAX_WORKER_REPLACEMENTS = 20
BALANCE_EVERY_S = 1.0
# Idle workers kept loaded after a film (dispatch.keep_workers), for the next film of this process:
# by the Ray cluster and job they belong to (a worker dies with its job) and what they were loaded with.
KEPT: dict[tuple, list["Worker"]] = {}

WorkerState = Literal["loading", "idle", "busy", "gone"]


def worker_label(info: dict[str, Any]) -> str:
    return f"{info['host']} node {info['node'][:12]}"


@dataclass(eq=False)
class Worker:
    """One render actor and everything the driver knows of it.

        loading ──loaded──▶ idle ◀──release── busy
           │                 └────take────▶   │
           └──────────── gone ◀───────────────┘  (dropped, lost, or its node left)
    """

    actor: Any
    node: str  # the node it was placed on
    load_ref: Any  # its load() call, waited on with the frame streams
    state: WorkerState = "loading"
    info: dict[str, Any] = field(default_factory=dict)  # node, host, pid, device: from load()
    doing: Optional[str] = None  # what it renders now ("scene 3", "anchor 2", "bridges"; the latest)
    idle_since: float = 0.0  # idle workers are taken oldest first
    capacity: int = 1  # jobs it holds at once (its load() says)
    jobs: int = 0  # jobs it holds now

    @property
    def label(self) -> str:
        return worker_label(self.info) if self.info else f"node {self.node[:12]}"

    @property
    def free(self) -> int:
        """Places for more jobs now (none while loading or gone)."""
        return self.capacity - self.jobs if self.state in ("idle", "busy") else 0

    def ready(self, info: dict[str, Any]) -> None:
        assert self.state == "loading", self.state
        self.state, self.info, self.idle_since = "idle", info, time.monotonic()
        self.capacity = max(1, int(info.get("scenes", 1)))

    def take(self, doing: str) -> None:
        assert self.free > 0, (self.state, self.jobs, self.capacity)
        self.state, self.doing, self.jobs = "busy", doing, self.jobs + 1

    def release(self) -> None:
        assert self.state == "busy", self.state
        self.jobs -= 1
        if not self.jobs:
            self.state, self.doing, self.idle_since = "idle", None, time.monotonic()

    def gone(self) -> None:
        self.state, self.doing, self.jobs = "gone", None, 0


class WorkerPool:
    def __init__(self, spec: FilmSpec, say: Callable[[str], None], emit: Callable[..., None],
                 joined: bool) -> None:
        import ray

        self.ray = ray
        self.spec = spec
        self.say = say
        self.emit = emit
        self.joined = joined  # a cluster we did not start: it may grow (autoscaler) and shrink
        self.workers: list[Worker] = []  # every live worker, in the order they were started
        self.strikes: dict[str, list[str]] = {}
        self.bad: dict[str, str] = {}  # node -> why it is avoided
        self.hosts: dict[str, str] = {}
        self.history: list[dict[str, Any]] = []  # every worker that was ready in this run
        self.losses = 0
        self.requested = -1
        self.last_balance = 0.0
        self.mode = ""

    # --- the workers by state -------------------------------------------------------------------

    def in_state(self, *states: WorkerState) -> list[Worker]:
        return [w for w in self.workers if w.state in states]

    @property
    def idle(self) -> list[Worker]:
        """Idle workers (no job at all), the longest idle first."""
        return sorted(self.in_state("idle"), key=lambda w: w.idle_since)

    @property
    def free(self) -> list[Worker]:
        """Workers with a place for another job, the emptiest first (then the longest idle)."""
        return sorted((w for w in self.workers if w.free > 0), key=lambda w: (w.jobs, w.idle_since))

    def places(self) -> int:
        """Places for more jobs on the loaded workers."""
        return sum(w.free for w in self.workers)

    @property
    def ready(self) -> list[Worker]:
        """Workers whose models are loaded (idle or busy)."""
        return self.in_state("idle", "busy")

    def loading(self) -> dict[Any, Worker]:
        """load() reference -> worker, for the workers still loading their models."""
        return {w.load_ref: w for w in self.in_state("loading")}

    def take(self, doing: str) -> Optional[Worker]:
        """The first worker with a free place, now busy with ``doing`` too; None when none has one."""
        free = self.free
        if not free:
            return None
        free[0].take(doing)
        return free[0]

    # --- what one worker asks for -----------------------------------------------------------

    def choose_mode(self) -> None:
        """GPU actors, or CPU actors on a cluster without GPUs (device auto or cpu)."""
        r = self.spec.render
        resources = self.ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if r.device == "cpu":
            self.mode = "cpu"
        elif gpus > 0 or r.device == "cuda" or (self.joined and cpus < r.cpus_per_worker):
            self.mode = "gpu"  # on a cluster that joins GPU nodes later, wait for them
        else:
            self.mode = "cpu"
        if self.joined:
            return
        if self.mode == "gpu" and gpus == 0:
            raise ClusterError("render.device: 'cuda' was asked for but the Ray cluster has no GPU")
        if self.mode == "cpu" and cpus < r.cpus_per_worker:
            raise ClusterError(f"render.cpus_per_worker: {r.cpus_per_worker} CPUs asked, the cluster has {cpus:g}")

    def bundle(self) -> dict[str, float]:
        r = self.spec.render
        if self.mode == "gpu":
            return {"GPU": r.gpus_per_worker, "CPU": r.cpus_per_worker}
        return {"CPU": r.cpus_per_worker}

    def slots(self, resources: dict[str, float]) -> tuple[int, dict[str, Any]]:
        """How many workers a node with these total resources holds, and each one's options."""
        r = self.spec.render
        cpus = resources.get("CPU", 0)
        if self.mode == "gpu":
            count = int(resources.get("GPU", 0) / r.gpus_per_worker + 1e-9)
            per_cpu = min(r.cpus_per_worker, cpus)
            if per_cpu > 0:
                count = min(count, int(cpus / per_cpu + 1e-9))
            return count, {"num_gpus": r.gpus_per_worker, "num_cpus": per_cpu}
        return int(cpus // r.cpus_per_worker), {"num_cpus": r.cpus_per_worker}

    # --- following the cluster ----------------------------------------------------------------

    def start(self, wanted: int, worker_class: Optional[type] = None) -> None:
        from farm.driver.worker import SceneWorker

        self.choose_mode()
        self.worker_class = worker_class or SceneWorker
        self.actor_class = self.ray.remote(self.worker_class)
        # Kept workers loaded otherwise serve no worker of this film, and hold what its workers need.
        key = self.kept_key()
        for other in [k for k in KEPT if k != key]:
            for worker in KEPT.pop(other):
                if other[0] == key[0]:  # of this very job: alive, and in the way
                    self.kill(worker)
        self.balance(wanted, force=True)

    def kept_key(self) -> tuple:
        """What a kept worker must have been loaded with to serve this film."""
        r = self.spec.render
        context = self.ray.get_runtime_context()
        return ((context.gcs_address, context.get_job_id()), self.worker_class, repr(self.spec.models),
                self.spec.video.size, r.device, self.mode, r.cpus_per_worker, r.gpus_per_worker, self.scenes())

    def take_kept(self, node_id: str) -> Optional[Worker]:
        """A worker an earlier film of this process kept on ``node_id``, now this pool's."""
        kept = KEPT.get(self.kept_key(), [])
        for worker in kept:
            if worker.node == node_id:
                kept.remove(worker)
                self.workers.append(worker)
                self.announce(worker, kept=True)
                return worker
        return None

    def balance(self, wanted: int, force: bool = False) -> None:
        """Workers for ``wanted`` jobs at most, on the live nodes that are not avoided."""
        now = time.monotonic()
        if not force and now - self.last_balance < BALANCE_EVERY_S:
            return
        self.last_balance = now
        cap = self.spec.render.workers
        wanted = min(wanted, cap) if cap else wanted
        self.ask_autoscaler(wanted)
        nodes = {n["NodeID"]: n for n in self.ray.nodes() if n.get("Alive")}
        for worker in self.in_state("idle", "loading"):
            if worker.node not in nodes:
                self.drop(worker, "its node left the cluster")
        # Idle workers beyond the work left are let go (their GPUs may serve another job).
        while len(self.workers) > wanted and self.idle:
            self.drop(self.idle[-1], None)
        free: list[tuple[str, dict[str, Any]]] = []
        for node_id, node in nodes.items():
            if node_id in self.bad:
                continue
            self.hosts.setdefault(node_id, node.get("NodeManagerHostname", "?"))
            count, options = self.slots(node.get("Resources", {}))
            used = sum(1 for w in self.workers if w.node == node_id)
            free += [(node_id, options)] * max(0, count - used)
        # Spread: one per node in turn, so every node renders.
        order: list[tuple[str, dict[str, Any]]] = []
        by_node: dict[str, list[dict[str, Any]]] = {}
        for node_id, options in free:
            by_node.setdefault(node_id, []).append(options)
        while any(by_node.values()):
            for node_id in list(by_node):
                if by_node[node_id]:
                    order.append((node_id, by_node[node_id].pop()))
        for node_id, options in order[: max(0, wanted - len(self.workers))]:
            if self.take_kept(node_id) is None:
                self.add(node_id, options)

    def ask_autoscaler(self, wanted: int) -> None:
        if not self.joined or wanted == self.requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[self.bundle()] * wanted)
        self.requested = wanted
        self.emit("autoscaler", bundles=wanted, bundle=self.bundle())

    def scenes(self) -> int:
        """render.scenes_per_worker, for an actor class that batches (its load() takes ``scenes``); else 1."""
        batches = "scenes" in inspect.signature(self.worker_class.load).parameters
        scenes = self.spec.render.scenes_per_worker
        if not batches or (scenes == 0 and self.mode == "cpu"):  # 0 on a CPU: 1, see the worker
            return 1
        return scenes

    def add(self, node_id: str, options: dict[str, Any]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        scenes = self.scenes()
        if scenes != 1:  # a threaded actor: one thread per scene's stream, and load() and bridges beside
            options = {**options, "max_concurrency": (scenes or MAX_SCENES_PER_WORKER) + 2}
        actor = self.actor_class.options(
            **options, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self.spec.render.cpus_per_worker)
        r = self.spec.render
        extra = {"scenes": scenes, "settings": r} if scenes != 1 else {}
        ref = actor.load.remote(self.spec.models, self.spec.video.size, r.device, **extra)
        self.workers.append(Worker(actor, node_id, ref))
        self.emit("worker", state="starting", node=node_id, host=self.hosts.get(node_id), workers=len(self.ready))

    def loaded(self, ref: Any) -> None:
        """A worker's load() returned: it becomes idle, or is dropped if it died."""
        worker = self.loading()[ref]
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, FarmError):  # a bad model name or missing weights: the user's to fix
                raise cause from None
            raise
        except self.ray.exceptions.RayError as exc:  # died, or its node went before it started
            self.say(f"a worker died while loading its models ({type(exc).__name__}); starting another")
            self.lost(worker, f"a worker died while loading ({type(exc).__name__})")
            return
        worker.ready(info)
        self.announce(worker)

    def announce(self, worker: Worker, kept: bool = False) -> None:
        """A worker is ready in this pool: in the run's history, said, and emitted."""
        info = worker.info
        self.history.append(info)
        self.say(f"worker ready on {worker.label} ({info['device']}){', kept from the last film' if kept else ''}; "
                 f"{len(self.ready)} in the pool")
        self.emit("worker", state="ready", node=info["node"], host=info["host"], pid=info["pid"],
                  workers=len(self.ready), **({"kept": True} if kept else {}),
                  **({"timings": info["timings"]} if "timings" in info else {}))

    # --- losing workers -----------------------------------------------------------------------

    def kill(self, worker: Worker) -> None:
        try:
            self.ray.kill(worker.actor, no_restart=True)
        except Exception:  # already gone with its node, or with its job
            pass
        worker.gone()

    def drop(self, worker: Worker, reason: Optional[str]) -> None:
        """Forget a worker and stop its actor; the next balance starts others where there is room."""
        if worker in self.workers:
            self.workers.remove(worker)
        self.kill(worker)
        if reason:
            self.emit("worker", state="dropped", node=worker.node, host=worker.info.get("host"), reason=reason,
                      workers=len(self.ready))
        self.last_balance = 0.0

    def lost(self, worker: Worker, reason: str) -> None:
        """A worker died under us: dropped, and a strike against its node if the node lives on.
        Once per worker: the other jobs it held find it gone too."""
        if worker.state == "gone" and worker not in self.workers:
            return
        self.drop(worker, reason)
        self.losses += 1
        if self.losses > MAX_WORKER_REPLACEMENTS:
            raise ClusterError(f"workers died {self.losses} times; the cluster is not healthy")
        if self.node_alive(worker.node):
            self.strike(worker.node, reason)

    def node_alive(self, node_id: str) -> bool:
        return any(n["NodeID"] == node_id and n.get("Alive") for n in self.ray.nodes())

    def strike(self, node_id: str, reason: str) -> None:
        """One more failure on a node; past the spec's threshold the node is avoided for this film."""
        if node_id in self.bad:
            return
        strikes = self.strikes.setdefault(node_id, [])
        strikes.append(reason)
        if len(strikes) < self.spec.dispatch.bad_node_failures:
            return
        why = f"{len(strikes)} failure(s): {'; '.join(strikes[-3:])}"
        self.bad[node_id] = why
        host = self.hosts.get(node_id, "?")
        self.say(f"avoiding node {node_id[:12]} ({host}) for this film: {why}")
        self.emit("node", state="avoided", node=node_id, host=host, reason=why)
        for worker in self.in_state("idle", "loading"):
            if worker.node == node_id:
                self.drop(worker, "its node is avoided")

    def check_placeable(self) -> None:
        """Every node avoided and nothing else can come: say so rather than wait forever."""
        if self.workers or self.joined or not self.bad:
            return
        alive = [n for n in self.ray.nodes() if n.get("Alive") and n["NodeID"] not in self.bad]
        if all(self.slots(n.get("Resources", {}))[0] == 0 for n in alive):
            raise ClusterError("every node that can hold a worker is avoided after repeated failures: "
                               + "; ".join(f"{n[:12]}: {why}" for n, why in self.bad.items()))

    def stop(self) -> None:
        """Stop every worker, or with ``dispatch.keep_workers`` keep the idle ones for the next film."""
        if self.spec.dispatch.keep_workers and self.mode:
            key = self.kept_key()
            for stale in [k for k in KEPT if k[0] != key[0]]:  # workers of a job that ended are gone
                del KEPT[stale]
            for worker in self.idle:
                self.workers.remove(worker)
                KEPT.setdefault(key, []).append(worker)
        for worker in list(self.workers):
            self.kill(worker)
        self.workers.clear()
        if self.joined and self.requested > 0:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])  # give the request back: idle nodes may go
            self.requested = 0
            self.emit("autoscaler", bundles=0, bundle=self.bundle())

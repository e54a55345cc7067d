"""farm.driver.pool: one record per worker with explicit state changes, and a pool that follows a
real local Ray cluster (two CPUs); the actor is a small stand-in that loads nothing."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import ray.cloudpickle

from farm.driver.pool import Worker, WorkerPool
from farm.errors import ClusterError
from farm.spec import spec_from_dict

from conftest import tiny_film

# The workers cannot import this test module: its stand-in actor travels by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class QuickWorker:
    """The render actor's boundary (load, render, bridge), without models."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def load(self, models_spec, size: int, device: str) -> dict:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": "cpu", "resources": {}}


def test_a_worker_record_changes_state_only_as_drawn():
    worker = Worker(actor="a", node="n" * 20, load_ref="ref")
    assert worker.state == "loading" and worker.label == "node nnnnnnnnnnnn"
    with pytest.raises(AssertionError):
        worker.take("scene 1")  # still loading
    worker.ready({"node": "n" * 20, "host": "box"})
    assert worker.state == "idle" and worker.label == "box node nnnnnnnnnnnn"
    worker.take("scene 1")
    assert (worker.state, worker.doing) == ("busy", "scene 1")
    with pytest.raises(AssertionError):
        worker.take("scene 2")  # one job at a time
    worker.release()
    assert (worker.state, worker.doing) == ("idle", None)
    worker.gone()
    assert worker.state == "gone"


def pool_for(messages, events, keep=False, **render):
    settings = {"render.workers": 0, "dispatch.keep_workers": keep, **{f"render.{k}": v for k, v in render.items()}}
    spec = spec_from_dict(tiny_film("Pool Film", scenes=2), overrides=[f"{k}={v}" for k, v in settings.items()])
    return WorkerPool(spec, messages.append, lambda event, **fields: events.append((event, fields)), joined=False)


def load_all(pool):
    import ray

    while pool.loading():
        ready, _ = ray.wait(list(pool.loading()), num_returns=1, timeout=30)
        assert ready, "a worker never loaded"
        pool.loaded(ready[0])


def test_the_pool_starts_what_is_wanted_and_lets_idle_workers_go(ray_cluster):
    messages, events = [], []
    pool = pool_for(messages, events, device="cpu")
    pool.start(1, QuickWorker)
    assert len(pool.workers) == 1 and [w.state for w in pool.workers] == ["loading"]
    pool.balance(5, force=True)  # two CPUs, one per worker: two at most
    assert len(pool.workers) == 2
    load_all(pool)
    assert [w.state for w in pool.workers] == ["idle", "idle"] and len(pool.history) == 2
    oldest = min(pool.workers, key=lambda w: w.idle_since)
    first = pool.take("scene 1")
    assert first is oldest and first.state == "busy"  # the longest idle first
    second = pool.take("scene 2")
    assert second is not first and second.state == "busy"
    assert pool.take("scene 3") is None  # none idle
    first.release()
    pool.balance(1, force=True)  # one job left: the idle worker goes, the busy one stays
    assert pool.workers == [second] and first.state == "gone"
    pool.stop()
    assert not pool.workers
    assert [f["state"] for e, f in events if e == "worker"] == ["starting", "starting", "ready", "ready"]


def test_a_node_that_keeps_failing_is_avoided_and_then_nothing_can_be_placed(ray_cluster):
    messages, events = [], []
    pool = pool_for(messages, events, device="cpu")
    pool.start(2, QuickWorker)
    load_all(pool)
    node = pool.workers[0].node
    for n in range(pool.spec.dispatch.bad_node_failures - 1):
        pool.strike(node, f"scene 1 failed ({n})")
    assert node not in pool.bad and len(pool.workers) == 2
    pool.strike(node, "scene 1 failed (last)")
    assert node in pool.bad and "3 failure(s)" in pool.bad[node]
    assert not pool.workers  # its idle workers were dropped
    assert any(e == "node" and f["state"] == "avoided" for e, f in events)
    with pytest.raises(ClusterError, match="every node that can hold a worker is avoided"):
        pool.check_placeable()
    pool.stop()


def test_workers_that_keep_dying_are_not_replaced_forever(ray_cluster, monkeypatch):
    from farm.driver import pool as pool_module

    monkeypatch.setattr(pool_module, "MAX_WORKER_REPLACEMENTS", 2)
    pool = pool_for([], [], device="cpu", cpus_per_worker=1)
    pool.start(1, QuickWorker)
    load_all(pool)
    with pytest.raises(ClusterError, match="workers died 3 times"):
        for _ in range(3):
            pool.bad.clear()
            pool.strikes.clear()
            pool.lost(pool.workers[0], "a worker died (test)")
            pool.balance(1, force=True)
            load_all(pool)
    pool.stop()


def test_a_cpu_count_the_cluster_lacks_is_one_line(ray_cluster):
    pool = pool_for([], [], device="cpu", cpus_per_worker=3)
    with pytest.raises(ClusterError, match="render.cpus_per_worker: 3 CPUs asked, the cluster has 2"):
        pool.start(1, QuickWorker)


def test_kept_workers_serve_the_next_film_with_the_same_models_and_no_other(ray_cluster):
    from farm.driver import pool as pool_module

    events = []
    first = pool_for([], events, keep=True, device="cpu")
    first.start(2, QuickWorker)
    load_all(first)
    actors = {id(w.actor) for w in first.workers}
    first.stop()
    assert not first.workers and sum(len(v) for v in pool_module.KEPT.values()) == 2
    events.clear()
    second = pool_for([], events, keep=True, device="cpu")
    second.start(2, QuickWorker)
    # Ready at once, the same actors: nothing started, nothing to load.
    assert {id(w.actor) for w in second.workers} == actors and not second.loading()
    assert [(e, f["state"], f.get("kept")) for e, f in events if e == "worker"] == [("worker", "ready", True)] * 2
    second.stop()
    other = pool_for([], [], keep=True, device="cpu", cpus_per_worker=2)  # loaded otherwise: of no use
    other.start(1, QuickWorker)
    assert not any(id(w.actor) in actors for w in other.workers) and not pool_module.KEPT
    load_all(other)
    other.stop()
    pool_module.KEPT.clear()


def test_a_batched_worker_holds_as_many_jobs_as_its_load_said_and_the_emptiest_is_taken_first():
    first, second = Worker(actor="a", node="n" * 20, load_ref="r1"), Worker(actor="b", node="m" * 20, load_ref="r2")
    first.ready({"node": "n" * 20, "host": "box", "scenes": 2})
    second.ready({"node": "m" * 20, "host": "box"})  # a worker that does not say: one job
    assert (first.capacity, first.free, second.capacity) == (2, 2, 1)
    first.take("scene 1")
    first.take("scene 2")
    assert (first.state, first.jobs, first.free) == ("busy", 2, 0)
    with pytest.raises(AssertionError):
        first.take("scene 3")
    first.release()
    assert (first.state, first.free) == ("busy", 1)  # still rendering scene 1 or 2
    first.release()
    assert (first.state, first.free) == ("idle", 2)
    pool = WorkerPool.__new__(WorkerPool)
    pool.workers = [first, second]
    first.take("scene 1")
    assert pool.free == [second, first] and pool.places() == 2  # the emptiest first
    assert pool.take("scene 2") is second and pool.take("scene 3") is first and pool.take("scene 4") is None


def test_a_worker_chooses_its_scenes_from_its_device_and_memory():
    from farm.driver.worker import AUTO_SCENES_MAX, auto_scenes

    gib = 2 ** 30
    assert auto_scenes("cpu", 100 * gib, gib) == 1  # a CPU: one scene, bit for bit
    # 0.8 x 60 GiB free at 4.5 GiB a scene: 10.67 -> 10 scenes
    assert auto_scenes("cuda", 60 * gib, int(4.5 * gib)) == 10
    assert auto_scenes("cuda", 2 * gib, 9 * gib) == 1  # never fewer than one
    assert auto_scenes("cuda", 1000 * gib, gib) == AUTO_SCENES_MAX

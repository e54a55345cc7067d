"""farm.driver.dispatch on a real local Ray cluster, the render actor replaced by a stand-in at its
boundary: jobs in their order, every frame written once, a scene's own failure spends a retry, a
dead worker does not, and a lost scene continues from its last state."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle

from farm.driver.bridges import Bridges
from farm.driver.dispatch import Dispatcher
from farm.driver.jobs import plan_jobs
from farm.driver.latents import LatentBook
from farm.driver.pool import WorkerPool
from farm.driver.progress import Reporter
from farm.driver.store import FilmStore
from farm.errors import RenderError
from farm.spec import spec_from_dict

from conftest import tiny_film

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class StandIn:
    """Streams frames that say what it was given; fails or dies when its prompt says so."""

    def __init__(self, threads: int) -> None:
        pass

    def load(self, models_spec, size: int, device: str) -> dict:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": "cpu", "resources": {}}

    def render(self, settings, prompt, seed: int, frames: int, init=None, resume=None, state_every: int = 0):
        text = prompt[0][0]
        first = int(resume["after"][0]) + 1 if resume is not None else 0
        for index in range(first, frames):
            if "fails" in text:
                raise ValueError(f"no picture of {text}")
            marker = Path(text.split("dies once at ")[-1]) if "dies once at " in text else None
            if marker is not None and index == 2 and not marker.exists():
                marker.write_text("died")
                os._exit(1)  # the worker process dies mid-scene, as on a lost node
            said = {"seed": seed, "frame": index, "init": None if init is None else init["z"].tolist(),
                    "resumed": resume is not None}
            yield {"frame": index, "png": json.dumps(said).encode(), "loss": 0.0, "similarity": 0.0,
                   "state": {"after": np.asarray([index])} if state_every else None}
        yield {"latents": {"z": np.asarray([seed, frames], np.float64)}}

    def bridge(self, start, end, count: int, settings) -> list[bytes]:
        return [b"bridge"] * count


def dispatch(tmp_path, spec):
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    messages, events, scenes = [], [], []
    report = Reporter(messages.append, events.append)
    latents = LatentBook(store)
    pool = WorkerPool(spec, report.say, report.emit, joined=False)
    dispatcher = Dispatcher(spec, store, latents, Bridges(spec, store, latents, 0, lambda k: None), pool, report,
                            plan_jobs(spec), scenes.append)
    dispatcher.run(StandIn)
    return store, dispatcher, messages, events, scenes


def said(store, scene, frame):
    return json.loads(store.frame_path(scene, frame).read_bytes())


def film(*prompts, reseed="keyframe", retries=2):
    data = tiny_film("Dispatch Film", scenes=len(prompts), duration=1.0, fps=4)
    for scene, prompt in zip(data["scenes"], prompts):
        scene["prompt"] = prompt
    data["render"].update(reseed=reseed, device="cpu", retries=retries)
    return spec_from_dict(data)


def test_keyframe_jobs_run_in_order_and_every_frame_is_written_once(ray_cluster, tmp_path):
    spec = film("a", "b", "c")
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec)
    assert sorted(scenes) == [0, 1, 2] and dispatcher.scenes_rendered == 3
    for k in range(3):
        record = store.scene(k)
        assert (record.state, record.attempts, record.failures) == ("done", 1, [])
        assert record.frames_written == 4 and sum(r.last - r.first + 1 for r in record.ranges) == 4
        assert [said(store, k, f)["frame"] for f in range(4)] == [0, 1, 2, 3]
    # Scene k starts from anchor k-1's final latents, which the stand-in made from the anchor's seed.
    anchor_1 = store.read_arrays(1, "anchor_latents")["z"].tolist()
    assert said(store, 2, 0)["init"] == anchor_1 and said(store, 0, 0)["init"] is None
    assert json.loads(store.manifest_path.read_text())["scenes"][2]["state"] == "done"  # saved as it ended
    assert events[-1]["event"] == "scene" and events[-1]["scenes_done"] == 3
    frames = [e for e in events if e["event"] == "frames"]
    assert frames[-1]["frames_done"] == frames[-1]["frames_total"] == 12


def test_a_scene_whose_own_code_fails_spends_its_retries_then_stops_the_film(ray_cluster, tmp_path):
    spec = film("a", "the scene fails", reseed="independent", retries=1)
    with pytest.raises(RenderError, match=r"scene 2 failed 2 time\(s\); last error: ValueError: no picture"):
        dispatch(tmp_path, spec)
    manifest = json.loads((tmp_path / spec.slug / "manifest.json").read_text())
    failing = manifest["scenes"][1]
    assert failing["state"] == "failed" and failing["attempts"] == 2
    assert failing["failures"] == ["scene: ValueError: no picture of the scene fails"] * 2


def test_a_dead_worker_costs_no_retry_and_its_scene_continues_from_its_last_state(ray_cluster, tmp_path):
    marker = tmp_path / "died"
    spec = film("a", f"dies once at {marker}", reseed="independent", retries=0)
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec)
    assert marker.exists() and sorted(scenes) == [0, 1]
    record = store.scene(1)
    assert (record.state, record.attempts, record.failures) == ("done", 1, [])
    # Frames 0 and 1 came before the death; the scene resumed after frame 1, not from the start.
    assert [said(store, 1, f)["resumed"] for f in range(4)] == [False, False, True, True]
    assert sorted(f for r in record.ranges for f in range(r.first, r.last + 1)) == [0, 1, 2, 3]
    assert [e["state"] for e in events if e["event"] == "scene" and e["scene"] == 1] == \
        ["started", "lost", "resumed", "done"]
    assert any("worker lost during scene 2" in m for m in messages)

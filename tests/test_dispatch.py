"""farm.driver.dispatch on a real local Ray cluster, the render actor replaced by a stand-in at its
boundary: jobs in their order, every frame written once, a scene's own failure spends a retry, a
dead worker does not, a lost scene continues from its last state, a hung worker is killed and its
scene continues elsewhere, and a morph bridge whose worker dies or hangs is made by another."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
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
from farm.errors import InputError, RenderError
from farm.folder.layout import bridge_path
from farm.spec import spec_from_dict

from conftest import tiny_film

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def once(text: str, what: str):
    """The marker file of a prompt that says "``what`` once at PATH", if it says so."""
    return Path(text.split(f"{what} once at ")[-1]) if f"{what} once at " in text else None


def hang_once(marker) -> None:
    """The first time: say which process hangs, and hang (long enough to be found, not forever)."""
    if marker is not None and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(30)


class StandIn:
    """Streams frames that say what it was given; fails, dies or hangs when its prompt says so.

    Each frame it renders is logged in ``PATH.frames`` beside a "hangs once at PATH" marker; its
    latents carry its prompt, so that a morph bridge between two of its scenes knows it too."""

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
            marker = once(text, "dies")
            if marker is not None and index == 2 and not marker.exists():
                marker.write_text("died")
                os._exit(1)  # the worker process dies mid-scene, as on a lost node
            hung = once(text, "hangs")
            if hung is not None and index == 2:
                hang_once(hung)  # mid-scene, after two frames
            if hung is not None:
                with open(f"{hung}.frames", "a") as log:
                    log.write(f"{index}\n")
            said = {"seed": seed, "frame": index, "init": None if init is None else init["z"].tolist(),
                    "resumed": resume is not None}
            yield {"frame": index, "png": json.dumps(said).encode(), "loss": 0.0, "similarity": 0.0,
                   "state": {"after": np.asarray([index])} if state_every else None}
        yield {"latents": {"z": np.asarray([seed, frames], np.float64), "prompt": np.asarray(text)},
               "first_latents": {"z": np.asarray([seed, 0], np.float64), "prompt": np.asarray(text)}}

    def bridge(self, start, end, count: int, settings) -> list[bytes]:
        text = f"{start['prompt']} {end['prompt']}"
        marker = once(text, "bridge crashes")
        if marker is not None and not marker.exists():
            marker.write_text("died")
            os._exit(1)
        hang_once(once(text, "bridge stalls"))
        return [b"bridge %d" % i for i in range(count)]


class BatchedStandIn(StandIn):
    """The stand-in as a worker of several places (its load() takes ``scenes``): a frame every 0.2 s,
    each job in its own thread of the actor."""

    def load(self, models_spec, size: int, device: str, scenes: int = 1, settings=None) -> dict:
        return {**super().load(models_spec, size, device), "scenes": scenes}

    def render(self, *args, **kwargs):
        for item in super().render(*args, **kwargs):
            time.sleep(0.2)
            yield item


def dispatch(tmp_path, spec, bridge_frames=0, bridges=None, worker=None):
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    messages, events, scenes = [], [], []
    report = Reporter(messages.append, events.append)
    latents = LatentBook(store)
    pool = WorkerPool(spec, report.say, report.emit, joined=False)
    on_bridge = bridges.append if bridges is not None else lambda k: None
    dispatcher = Dispatcher(spec, store, latents, Bridges(spec, store, latents, bridge_frames, on_bridge), pool,
                            report, plan_jobs(spec), scenes.append)
    dispatcher.run(worker or StandIn)
    return store, dispatcher, messages, events, scenes


def said(store, scene, frame):
    return json.loads(store.frame_path(scene, frame).read_bytes())


def film(*prompts, reseed="keyframe", retries=2, **dispatch):
    data = tiny_film("Dispatch Film", scenes=len(prompts), duration=1.0, fps=4)
    for scene, prompt in zip(data["scenes"], prompts):
        scene["prompt"] = prompt
    data["render"].update(reseed=reseed, device="cpu", retries=retries)
    data["dispatch"].update(dispatch)
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


def test_a_worker_of_two_places_renders_two_scenes_at_once_and_its_death_loses_both_once(ray_cluster, tmp_path):
    """render.scenes_per_worker 2, one worker: both scenes run on it side by side; it dies mid-scene and
    both continue from their last states on its replacement, no retry spent, every frame once. The
    death is one strike against the node (two would avoid it here, and nothing could be placed)."""
    marker = tmp_path / "died"
    spec = film(f"dies once at {marker}", "b", reseed="independent", retries=0, bad_node_failures=2)
    spec = dataclasses.replace(spec, render=dataclasses.replace(spec.render, scenes_per_worker=2))
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec, worker=BatchedStandIn)
    assert marker.exists() and sorted(scenes) == [0, 1]
    states = [(e["state"], e["scene"]) for e in events if e["event"] == "scene"]
    assert states[:2] == [("started", 0), ("started", 1)]  # both on the one worker at once
    assert ("lost", 0) in states and ("lost", 1) in states  # the death took both
    for k in range(2):
        record = store.scene(k)
        assert (record.state, record.attempts, record.failures) == ("done", 1, [])
        assert sorted(f for r in record.ranges for f in range(r.first, r.last + 1)) == [0, 1, 2, 3]
        assert said(store, k, 3)["resumed"]
    assert [len(v) for v in dispatcher.pool.strikes.values()] == [1] and not dispatcher.pool.bad
    assert dispatcher.pool.losses == 1 and len(dispatcher.pool.history) == 2


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_hung_worker_is_killed_and_its_scene_continues_elsewhere_from_its_last_state(ray_cluster, tmp_path):
    marker = tmp_path / "hung"
    spec = film("a", f"hangs once at {marker}", reseed="independent", retries=0, stall_seconds=2)
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec)
    hung_pid = int(marker.read_text())
    assert gone(hung_pid)  # killed, not left hanging (it would sleep on for half a minute)
    assert sorted(scenes) == [0, 1]
    record = store.scene(1)
    assert (record.state, record.attempts, record.failures) == ("done", 1, [])  # no retry spent
    assert len(record.stalls) == 1 and " after 2." in record.stalls[0], record.stalls
    # Every frame rendered once: two before the hang, the rest on the new worker after the last state.
    assert Path(f"{marker}.frames").read_text().split() == ["0", "1", "2", "3"]
    assert [said(store, 1, f)["resumed"] for f in range(4)] == [False, False, True, True]
    assert [e["state"] for e in events if e["event"] == "scene" and e["scene"] == 1] == \
        ["started", "stalled", "resumed", "done"]
    stalled = [e for e in events if e["event"] == "stalled"]
    assert len(stalled) == 1 and stalled[0]["kind"] == "scene" and stalled[0]["scene"] == 1
    assert 2 <= stalled[0]["seconds"] < 10 and stalled[0]["node"]
    assert any(m.startswith("scene 2 stalled on ") and "nothing for 2s" in m for m in messages), messages
    assert hung_pid not in {w["pid"] for w in dispatcher.pool.history[-1:]}  # the scene ended on another


@pytest.mark.parametrize("how", ["crashes", "stalls"])
def test_a_morph_bridge_whose_worker_dies_or_hangs_is_made_by_another(ray_cluster, tmp_path, how):
    marker = tmp_path / how
    spec = film("a", f"bridge {how} once at {marker}", reseed="independent", stall_seconds=2)
    made = []
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec, bridge_frames=3, bridges=made)
    assert marker.exists() and sorted(scenes) == [0, 1] and made == [0]
    assert [bridge_path(store.path, 0, i).read_bytes() for i in range(3)] == [b"bridge 0", b"bridge 1", b"bridge 2"]
    if how == "crashes":
        assert any(m.startswith("worker lost during the morph after scene 1") for m in messages), "\n".join(messages)
    else:
        assert gone(int(marker.read_text()))
        assert [(e["kind"], e["scene"]) for e in events if e["event"] == "stalled"] == [("bridge", 0)]
        assert any(m.startswith("the morph after scene 1 stalled on ") for m in messages), messages
    assert all(store.scene(k).failures == [] for k in range(2))  # no retry spent


def test_the_automatic_stall_allowance_follows_the_measured_frame_time(tmp_path):
    from farm.driver.dispatch import Running
    from farm.driver.jobs import Job
    from farm.driver.pool import Worker

    spec = film("a", "b", reseed="independent")  # tiny preset: warmup_steps 1, anchor_steps 2
    r = spec.render
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    latents = LatentBook(store)
    dispatcher = Dispatcher(spec, store, latents, Bridges(spec, store, latents, 5, lambda k: None), None,
                            Reporter(lambda m: None, lambda e: None), plan_jobs(spec), lambda k: None)
    worker = Worker(None, "node", None)
    scene, anchor, bridge = (Running(Job(kind, 0, None), worker, 0) for kind in ("scene", "anchor", "bridge"))
    resumed = Running(Job("scene", 0, None), worker, 2, resumed=True)
    assert dispatcher.allowance(scene) == 3600.0  # nothing measured yet
    dispatcher.slowest_frame = 1.0
    scene.items = 3
    assert dispatcher.allowance(scene) == 60.0  # the floor
    dispatcher.slowest_frame = 20.0
    assert dispatcher.allowance(scene) == 200.0  # ten frames
    assert dispatcher.allowance(resumed) == 200.0  # no warm-up after a state
    step = 20.0 / r.steps_per_frame
    scene.items = 0
    assert dispatcher.allowance(scene) == pytest.approx(200.0 + 10 * step * (r.warmup_steps + r.init_candidates))
    assert dispatcher.allowance(anchor) == pytest.approx(200.0 + 10 * step * (r.anchor_steps + r.init_candidates))
    assert dispatcher.allowance(bridge) == pytest.approx(200.0 + 10 * step * 5)
    explicit = Dispatcher(film("a", stall_seconds=7.5), store, latents, dispatcher.bridges, None,
                          dispatcher.report, [], lambda k: None)
    assert explicit.allowance(scene) == 7.5


def test_frames_and_states_put_later_are_flushed_side_by_side_and_settled(tmp_path, monkeypatch):
    """The dispatch loop writes a batch's frames and states with put(later=True): their flushes to
    disk overlap (one after another they held the loop: ~8 ms a file here, more than 32 workers'
    frames allow), settle() waits for all of them, and a failed write raises there."""
    import threading

    import farm.folder.layout as layout

    spec = film("a", "b", reseed="independent")
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    real_fsync, lock = os.fsync, threading.Lock()
    flushing = {"now": 0, "most": 0}

    def slow_fsync(fd):  # a slow disk: long enough that writes in flight together meet here
        with lock:
            flushing["now"] += 1
            flushing["most"] = max(flushing["most"], flushing["now"])
        time.sleep(0.05)
        with lock:
            flushing["now"] -= 1
        real_fsync(fd)

    monkeypatch.setattr(layout.os, "fsync", slow_fsync)
    for frame in range(4):
        for scene in range(2):
            store.write_frame(scene, frame, b"png %d %d" % (scene, frame), "node", later=True)
        store.write_state(0, frame, {"after": np.asarray([frame])}, later=True)
        store.settle()
        assert [store.frame_path(s, frame).read_bytes() for s in range(2)] == [b"png 0 %d" % frame,
                                                                               b"png 1 %d" % frame]
        assert store.read_state(0)[0] == frame
    assert flushing["most"] >= 2  # one after another, never more than one at a time
    assert store.scene(1).frames_written == 4
    # The manifest saved later: once, as its records stand when the writes settle.
    store.scene(0).finished(1.0)
    store.save_manifest(later=True)
    store.scene(1).finished(2.0)
    store.save_manifest(later=True)
    assert [s["state"] for s in json.loads(store.manifest_path.read_text())["scenes"]] == ["pending", "pending"]
    store.settle()
    assert [s["state"] for s in json.loads(store.manifest_path.read_text())["scenes"]] == ["done", "done"]

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(layout.os, "fsync", full_disk)
    recorded = store.scene(1).to_dict()
    store.write_frame(1, 0, b"again", "node", later=True)
    with pytest.raises(InputError, match=r"frame_00000\.png: cannot be written \(No space left on device\)"):
        store.settle(stop=True)
    assert store.pending == [] and store.writers is None
    assert store.scene(1).to_dict() == recorded  # the failed frame not recorded
    assert store.frame_path(1, 0).read_bytes() == b"png 1 0"  # the old frame whole, no temporary file left
    assert [p.name for p in store.scene_dir(1).iterdir() if p.name.startswith(".")] == []


def test_every_frame_is_on_disk_when_the_dispatcher_reports_it(ray_cluster, tmp_path):
    spec = film("a", "b", "c", reseed="independent")
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    late = []

    def check(event):
        if event["event"] == "frames":
            late.extend((event["scene"], f) for f in range(event["first"], event["last"] + 1)
                        if not store.frame_path(event["scene"], f).is_file())
        if event["event"] == "scene" and event["state"] == "done":
            late.extend((event["scene"], f) for f in range(4) if not store.frame_path(event["scene"], f).is_file())

    report = Reporter(lambda m: None, check)
    latents = LatentBook(store)
    pool = WorkerPool(spec, report.say, report.emit, joined=False)
    Dispatcher(spec, store, latents, Bridges(spec, store, latents, 0, lambda k: None), pool, report,
               plan_jobs(spec), lambda k: None).run(StandIn)
    assert late == [] and store.manifest.frames_done == 12
    assert store.pending == [] and store.writers is None  # settled and stopped as the run ended


def test_a_scene_record_as_json_is_field_for_field_what_asdict_makes():
    """SceneRecord.to_dict is written out by hand for speed (the manifest is saved every 2 s while a
    film renders): the same keys, in the same order, with the same values as dataclasses.asdict."""
    import dataclasses

    from farm.folder.manifest import Manifest

    manifest = Manifest.new("film", [5, 3])
    record = manifest.scenes[0]
    record.started("host node 1")
    for frame, node in ((0, "n1"), (1, "n1"), (2, "n2")):
        record.frame_written(frame, f"hash{frame}", node)
    record.failures.append("scene: ValueError: no picture")
    record.stalls.append("scene on host node 1 after 3.0s")
    record.state_frame = 2
    for scene in manifest.scenes:
        expected = {**dataclasses.asdict(scene), "frames_written": scene.frames_written}
        assert json.dumps(scene.to_dict()) == json.dumps(expected)
    copy = record.to_dict()
    record.frame_written(3, "hash3", "n2")
    assert copy["hashes"] == {"0": "hash0", "1": "hash1", "2": "hash2"}  # a copy, not the record's own

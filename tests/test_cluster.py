"""The driver on a logical multi-node Ray cluster that changes under it.

GPU workers spread over the nodes, nodes join and leave mid-film, a node whose
workers keep dying is avoided, a scene lost mid-way resumes from its last state
on another node without spending a retry, a worker that hangs mid-scene is
killed and its scene continues on another node, a driver killed with SIGKILL is
continued with ``farm render --resume``, and ``farm render --address`` joins the
running cluster. Every film is compared byte for byte with what the bare
renderer (no Ray) makes of the same spec.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, logical_cluster, tiny_film

GPU_NODE = {"num_cpus": 2, "num_gpus": 1}


@pytest.fixture(scope="module")
def cluster():
    """A head node for the driver (no CPU, no GPU) and three worker nodes with one logical GPU each."""
    with logical_cluster("farmel", [GPU_NODE] * 3) as (cluster, _):
        yield cluster


def frames_of(film_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(film_dir)): p.read_bytes() for p in sorted(film_dir.glob("scenes/*/frame_*.png"))}


def ranges_nodes(manifest: dict) -> list[str]:
    return [r["node"] for s in manifest["scenes"] for r in s["ranges"]]


def covered_once(manifest: dict) -> bool:
    """Every frame of every scene lies in exactly one written range (no frame written twice)."""
    for scene in manifest["scenes"]:
        seen = [f for r in scene["ranges"] for f in range(r["first"], r["last"] + 1)]
        if sorted(seen) != list(range(scene["frames_expected"])):
            return False
    return True


@pytest.fixture(scope="module")
def reference():
    """What the bare renderer makes of a film, in this process: what every run on the cluster must equal."""
    import torch

    from farm.driver.jobs import job_arguments, plan_jobs
    from farm.render.bigsleep import render_scene
    from farm.render.models import load_models
    from farm.writing.plan import plan_film

    def render(data):
        spec = plan_film(spec_from_dict(data))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as a worker of one CPU: the same arithmetic, bit for bit
        try:
            models = load_models(spec.models, spec.video.size, torch.device("cpu"))
            frames = {}
            for job in plan_jobs(spec):
                assert job.start_from is None, "the reference renders independent scenes"
                settings, prompts, seed, count = job_arguments(spec, job, spec.frames_per_scene())
                for frame in render_scene(models, settings, prompts, seed, count):
                    frames[f"scenes/{job.scene:03d}/frame_{frame.index:05d}.png"] = frame.png()
            return frames
        finally:
            torch.set_num_threads(threads)
    return render


def film(title, scenes, frames, reseed="independent", **dispatch):
    data = tiny_film(title, scenes=scenes, duration=1.0, fps=frames)
    # GPU actors (logical GPUs; the models run on CPU), as many as the nodes hold.
    data["render"].update(reseed=reseed, device="auto", workers=0)
    data["dispatch"] = {"state_every": 1, **dispatch}
    return data


def test_workers_spread_over_nodes_two_per_gpu_and_the_frames_are_the_bare_renderers(cluster, reference, tmp_path):
    import time

    data = film("Spread Half", scenes=4, frames=6, in_flight=1)
    data["render"].update(gpus_per_worker=0.5, workers=4)
    events = []

    def on_event(event):
        events.append(event)
        ready = sum(1 for e in events if e["event"] == "worker" and e["state"] == "ready")
        if event["event"] == "frames" and ready < 4:
            # Workers take seconds to start on a busy 2-core machine: hold the film back (in_flight=1
            # stalls the ready workers after a frame) until all four are ready, so every node renders.
            time.sleep(1.0)

    result = render_film(spec_from_dict(data), out=tmp_path, events=on_event)
    nodes = {n.node_id for n in cluster.worker_nodes}
    started = [e["node"] for e in events if e["event"] == "worker" and e["state"] == "starting"]
    per_node = {node: started.count(node) for node in started}
    # Four workers on three one-GPU nodes: every node holds one, one GPU holds two.
    assert set(per_node) == nodes and sorted(per_node.values()) == [1, 1, 2]
    assert len(result.workers) == 4
    for worker in result.workers:
        assert worker["resources"].get("GPU") == 0.5, result.workers
    # The logical GPUs are for scheduling; the tiny models run on the CPU of a GPU-less machine.
    assert {w["device"] for w in result.workers} == {"cpu"}
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert covered_once(manifest) and set(ranges_nodes(manifest)) == nodes  # every node renders
    assert frames_of(result.path) == reference(data)
    assert len(decode_video(result.video)) == 24
    # A joined cluster may autoscale: farm asked for the workers it could use, then gave the request back.
    asked = [e["bundles"] for e in events if e["event"] == "autoscaler"]
    assert asked[0] == 4 and asked[-1] == 0


def test_a_node_that_joins_mid_film_gets_work(cluster, tmp_path):
    import time

    data = film("Joiner", scenes=6, frames=6, in_flight=1)
    joined, ready = [], []

    def on_event(event):
        if event["event"] == "frames" and not joined:
            joined.append(cluster.add_node(**GPU_NODE))
        elif event["event"] == "worker" and event["state"] == "ready" and joined and event["node"] == joined[0].node_id:
            ready.append(event)
        elif event["event"] == "frames" and not ready:
            # A new worker takes many seconds to start on a busy 2-core machine: slow the film down
            # meanwhile (the other workers stall after one frame, in_flight=1) so scenes still wait.
            time.sleep(1.0)

    result = render_film(spec_from_dict(data), out=tmp_path, events=on_event)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert joined and joined[0].node_id in {w["node"] for w in result.workers}
    assert joined[0].node_id in ranges_nodes(manifest)
    cluster.remove_node(joined[0])


def test_a_node_whose_workers_die_is_avoided(cluster, tmp_path):
    data = film("Bad Node", scenes=2, frames=2, bad_node_failures=1)
    killed = []

    def on_event(event):
        if event["event"] == "worker" and event["state"] == "ready" and not killed:
            os.kill(event["pid"], signal.SIGKILL)  # its node lives on: the node is to blame
            killed.append(event["node"])

    result = render_film(spec_from_dict(data), out=tmp_path, events=on_event)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert [b["node"] for b in manifest["bad_nodes"]] == killed
    assert "died" in manifest["bad_nodes"][0]["reason"]
    assert killed[0] not in ranges_nodes(manifest)
    assert [w["node"] for w in result.workers].count(killed[0]) == 1  # no worker started there again
    assert all(s["state"] == "done" for s in manifest["scenes"])


@pytest.mark.parametrize("graceful", [False, True])
def test_a_node_lost_mid_scene_resumes_there_without_rendering_a_frame_twice(cluster, reference, tmp_path, graceful):
    data = film(f"Lost Mid {graceful}", scenes=1, frames=8)
    data["render"].update(workers=1, retries=0)  # had the lost node spent a retry, the film would fail
    lost = []

    def on_event(event):
        if event["event"] == "frames" and event["frames_done"] >= 3 and not lost:
            node = next(n for n in cluster.worker_nodes if n.node_id == event_node[0])
            lost.append(node.node_id)
            cluster.remove_node(node, allow_graceful=graceful)
        elif event["event"] == "scene" and event["state"] == "started":
            event_node[:] = [event["node"]]

    event_node = [None]
    events = []
    result = render_film(spec_from_dict(data), out=tmp_path, events=lambda e: (events.append(e), on_event(e)))
    manifest = json.loads((result.path / "manifest.json").read_text())
    resumed = [e for e in events if e["event"] == "scene" and e["state"] == "resumed"]
    assert lost and resumed and resumed[0]["frame"] >= 3 and resumed[0]["node"] != lost[0]
    assert covered_once(manifest)
    assert manifest["scenes"][0]["ranges"][0]["node"] == lost[0]
    assert manifest["scenes"][0]["attempts"] == 1 and not manifest["scenes"][0]["failures"]
    assert frames_of(result.path) == reference(data)
    cluster.add_node(**GPU_NODE)  # the next test has three nodes again


def test_a_killed_driver_is_continued_with_resume(cluster, reference, tmp_path):
    spec_file = tmp_path / "film.yaml"
    data = film("Killed Driver", scenes=2, frames=8)
    spec_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    farm = Path(sys.executable).with_name("farm")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    driver = subprocess.Popen([str(farm), "render", str(spec_file), "--out", str(out),
                               "--address", cluster.address, "--progress", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in driver.stdout:
            event = json.loads(line)
            if event["event"] == "frames" and event["frames_done"] >= 3:
                driver.send_signal(signal.SIGKILL)
                break
    finally:
        driver.kill()
        driver.wait()
    film_dir = out / "killed-driver"
    before = {p: p.stat().st_mtime_ns for p in film_dir.glob("scenes/*/frame_*.png")}
    states = list(film_dir.glob("scenes/*/state.npz"))
    assert 3 <= len(before) < 16 and states

    from conftest import run_farm

    again = run_farm("render", str(spec_file), "--out", str(out), "--address", cluster.address, "--resume",
                     "--progress", "json")
    assert again.returncode == 0, again.stderr
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    said = " ".join(e.get("text", "") for e in lines if e["event"] == "message")
    assert "resuming:" in said and "part-done: scene" in said
    assert lines[-1]["event"] == "done" and lines[-1]["video"] == str(film_dir / "film.mp4")
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing on disk rendered again
    manifest = json.loads((film_dir / "manifest.json").read_text())
    assert covered_once(manifest)
    assert frames_of(film_dir) == reference(data)
    assert not list(film_dir.glob("scenes/*/state.npz"))


def test_a_changed_scene_is_rendered_again_with_rerender_changed_and_quiet_prints_the_path(cluster, tmp_path):
    from conftest import run_farm

    data = film("Changed Scene", scenes=2, frames=2)
    spec_file = tmp_path / "film.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    first = render_film(spec_from_dict(data), out=out)
    kept = {p: p.stat().st_mtime_ns for p in first.path.glob("scenes/000/frame_*.png")}
    old_second = frames_of(first.path)
    args = ["render", str(spec_file), "--out", str(out), "--address", cluster.address,
            "--set", "scenes.1.prompt=a red kite over the snow"]
    again = run_farm(*args, "--rerender-changed", "--quiet")  # joins the running cluster
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{first.video}\n" and again.stderr == ""
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # scene 1 untouched
    now = frames_of(first.path)
    assert all(now[k] != old_second[k] for k in now if k.startswith("scenes/001"))
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["changed"] == ["scenes[1].prompt"]


def test_a_worker_that_hangs_mid_scene_is_killed_and_its_scene_continues_on_another_node(cluster, tmp_path):
    """The render actor replaced at its boundary by test_dispatch's stand-in, which hangs after two frames."""
    from test_dispatch import dispatch, film, gone

    marker = tmp_path / "hung"
    spec = film("a", f"hangs once at {marker}", reseed="independent", retries=0, stall_seconds=2,
                bad_node_failures=1)  # one hang and its node is avoided: the scene must go elsewhere
    store, dispatcher, messages, events, scenes = dispatch(tmp_path, spec)
    assert gone(int(marker.read_text())) and sorted(scenes) == [0, 1]
    stalled = [e for e in events if e["event"] == "stalled"]
    assert len(stalled) == 1 and stalled[0]["scene"] == 1
    hung = stalled[0]["node"]
    record = store.scene(1)
    assert (record.state, record.attempts, record.failures, len(record.stalls)) == ("done", 1, [], 1)
    assert [(r.first, r.last) for r in record.ranges] == [(0, 1), (2, 3)]  # every frame once
    assert record.ranges[0].node == hung and record.ranges[1].node not in (hung, None)
    assert Path(f"{marker}.frames").read_text().split() == ["0", "1", "2", "3"]
    assert set(dispatcher.pool.bad) == {hung}


def within_levels(got: dict[str, bytes], want: dict[str, bytes], levels: int) -> bool:
    """The same frames, each pixel within ``levels`` of 255 of the other's."""
    import io

    import numpy as np
    from PIL import Image

    def pixels(png: bytes):
        return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)

    return got.keys() == want.keys() and all(
        np.abs(pixels(got[k]) - pixels(want[k])).max() <= levels for k in want)


def test_a_batched_worker_renders_two_scenes_at_once_and_a_node_lost_resumes_both(cluster, reference, tmp_path):
    """render.scenes_per_worker 2 and one worker: scenes 1 and 2 start on it together (scene 3
    joins when a place comes free); the node is lost mid-film and every scene it held continues
    from its last state on another node, spending no retry, every frame once, each scene's frames
    those of the bare renderer within tests/test_batch.py's tolerance."""
    from test_batch import FRAME_LEVELS

    data = film("Batched Lost", scenes=3, frames=6)
    data["render"].update(workers=1, retries=0, scenes_per_worker=2)
    lost, events = [], []

    def on_event(event):
        events.append(event)
        if event["event"] == "frames" and event["frames_done"] >= 4 and not lost:
            started = [e["node"] for e in events if e["event"] == "scene" and e["state"] == "started"]
            node = next(n for n in cluster.worker_nodes if n.node_id == started[0])
            lost.append(node.node_id)
            cluster.remove_node(node, allow_graceful=False)

    result = render_film(spec_from_dict(data), out=tmp_path, events=on_event)
    manifest = json.loads((result.path / "manifest.json").read_text())
    states = [(e["state"], e["scene"]) for e in events if e["event"] == "scene"]
    assert states[:2] == [("started", 0), ("started", 1)]  # two at once on the one worker
    assert {w["node"] for w in result.workers} >= {lost[0]} and len(result.workers) >= 2
    resumed = [e for e in events if e["event"] == "scene" and e["state"] == "resumed"]
    assert resumed and all(e["node"] != lost[0] for e in resumed)
    assert covered_once(manifest)
    assert all(s["attempts"] == 1 and not s["failures"] and s["state"] == "done" for s in manifest["scenes"])
    assert within_levels(frames_of(result.path), reference(data), FRAME_LEVELS)
    cluster.add_node(**GPU_NODE)  # the next test has three nodes again

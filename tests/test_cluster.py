"""Rendering on a logical multi-node Ray cluster: GPU workers spread over nodes, a node lost mid-film."""

from __future__ import annotations

import json
import re

import pytest

from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, logical_cluster, tiny_film


@pytest.fixture(scope="module")
def cluster():
    """A head node for the driver and two worker nodes with one logical GPU each."""
    nodes = [dict(num_cpus=1, num_gpus=1, resources={f"worker{i}": 1}) for i in range(2)]
    with logical_cluster("farmcl", nodes) as (cluster, workers):
        yield cluster, workers


def test_one_gpu_worker_per_node(cluster, tmp_path):
    _, nodes = cluster
    spec = spec_from_dict(tiny_film("Spread", scenes=2, duration=1, fps=3), overrides=["render.reseed=independent"])
    events = []
    result = render_film(spec, out=tmp_path, events=events.append)
    assert len(decode_video(result.video)) == 6
    # Where the workers were placed (a worker may finish loading after the film is done, so the
    # ready ones alone depend on timing): one on each GPU node.
    started = [e["node"] for e in events if e["event"] == "worker" and e["state"] == "starting"]
    assert sorted(started) == sorted(n.node_id for n in nodes)
    assert {w["node"] for w in result.workers} <= set(started) and result.workers
    # The logical GPUs are for scheduling; the tiny models run on the CPU of a GPU-less machine.
    assert {w["device"] for w in result.workers} == {"cpu"}


def test_a_lost_node_sends_its_scene_elsewhere_without_spending_a_retry(cluster, tmp_path):
    ray_cluster, nodes = cluster
    spec = spec_from_dict(tiny_film("Lost Node", scenes=3, duration=1, fps=4),
                          overrides=["render.reseed=independent", "render.workers=1", "render.retries=0"])
    messages, removed = [], []

    def progress(message):
        messages.append(message)
        ready = re.search(r"node ([0-9a-f]{12})", message)
        if ready and not removed:
            removed.append(ready.group(1))
        if message.startswith("scene 1/3 rendered"):
            # The only worker is about to get scene 2: take its node away.
            node = next(n for n in nodes if n.node_id.startswith(removed[0]))
            ray_cluster.remove_node(node, allow_graceful=False)

    result = render_film(spec, out=tmp_path, progress=progress)
    assert len(decode_video(result.video)) == 12
    assert any(m.startswith("worker lost") for m in messages), messages
    manifest = json.loads((result.path / "manifest.json").read_text())
    # result.workers lists every worker of the run, the lost one's included.
    survivors = {w["node"][:12] for w in result.workers} - {removed[0]}
    assert survivors and removed[0] in {w["node"][:12] for w in result.workers}
    # retries=0: had the lost node spent a retry, the film would have failed.
    assert [s["attempts"] for s in manifest["scenes"]] == [1, 1, 1]
    assert all(s["state"] == "done" and not s["failures"] for s in manifest["scenes"])
    # Scene 1 was rendered on the node that was later lost; scenes 2 and 3 on the survivor.
    assert manifest["scenes"][0]["worker"].endswith(removed[0])
    assert {s["worker"].split()[-1] for s in manifest["scenes"][1:]} == survivors


def test_the_command_joins_a_running_cluster_with_address(cluster, tmp_path):
    import yaml

    from conftest import run_farm

    ray_cluster, nodes = cluster
    spec = tmp_path / "film.yaml"
    spec.write_text(yaml.safe_dump(tiny_film("Joined", scenes=2, duration=1, fps=2)))
    result = run_farm("render", str(spec), "--out", str(tmp_path / "out"), "--address", ray_cluster.address,
                      "--set", "render.reseed=independent")
    assert result.returncode == 0, result.stderr
    # Only the nodes still alive in this module's cluster have GPUs to place the workers on.
    alive = {n.node_id[:12] for n in ray_cluster.worker_nodes}
    used = set(re.findall(r"node ([0-9a-f]{12})", result.stderr))
    assert used and used <= alive
    assert len(decode_video(tmp_path / "out" / "joined" / "film.mp4")) == 4

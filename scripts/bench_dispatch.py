#!/usr/bin/env python3
"""How well does the farm keep its workers busy? Dispatch efficiency and driver memory.

A logical Ray cluster (ray.cluster_utils.Cluster: NODES nodes of GPUS_PER_NODE logical
GPUs, so 8 workers) renders films with a renderer whose cost is known: each frame is a
sleep of FRAME_S seconds, injected here alone (the SleepWorker below stands in for the
render actor; the farm's driver, pool, dispatch, store and states are the real ones).
It measures the farm, not the model.

  efficiency      = ideal makespan / measured makespan, measured from the moment the whole
                    pool (8 workers) is up to the last scene done; the frames left at that moment
                    are the work. Ideal: that work spread perfectly, work / workers. With a node
                    lost mid-film the ideal counts the capacity left:
                    workers * t_loss + survivors * (T - t_loss) = work.
  driver memory   = peak RSS of a driver process rendering a film, and of one rendering a film
                    ten times longer (each in its own process joined to the same cluster).

Targets: efficiency >= 0.95 without failures, >= 0.9 with a node lost;
driver memory growth <= 1.1x for a 10x longer film.

Usage: scripts/bench_dispatch.py [--scenes 64] [--frames 10] [--frame-s 0.1] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NODES, GPUS_PER_NODE = 4, 2
WORKERS = NODES * GPUS_PER_NODE
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
}


class SleepWorker:
    """The render actor's interface with a renderer that sleeps FRAME_S per frame."""

    def __init__(self, threads: int) -> None:
        self.frame_s = float(os.environ.get("FARM_BENCH_FRAME_S", "0.1"))

    def load(self, models_spec, size: int, device: str):
        import socket

        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": "sleep", "resources": ray.get_runtime_context().get_assigned_resources()}

    def render(self, settings, prompt, seed: int, frames: int, init=None, resume=None, state_every: int = 0):
        import numpy as np

        first = int(resume["frame"]) + 1 if resume is not None else 0
        rng = np.random.default_rng(seed)
        png = rng.integers(0, 256, 12_000, dtype=np.uint8).tobytes()  # about a small PNG's size
        for index in range(first, frames):
            time.sleep(self.frame_s)
            state = {"frame": np.asarray(index), "z": np.zeros((16, 128), np.float32)} if state_every else None
            yield {"frame": index, "png": png + index.to_bytes(4, "little"), "loss": 0.0, "similarity": 0.0,
                   "state": state}
        yield {"latents": {"z": np.zeros((16, 128), np.float32)}}


def film_spec(scenes: int, frames: int):
    from farm.spec import spec_from_dict

    return spec_from_dict({
        "title": f"Bench {scenes}x{frames}", "seed": 1,
        "scenes": [{"narration": f"Scene {i}.", "duration": 1.0} for i in range(scenes)],
        "video": {"fps": frames},
        "render": {"preset": "tiny", "reseed": "independent", "device": "auto"},
        "dispatch": {"state_every": 1},
    })


def render(spec, out: Path, on_event=None) -> dict:
    """The farm's own film run with the SleepWorker; no stitch (ffmpeg is not dispatch)."""
    from farm.driver.progress import Reporter
    from farm.driver.render import render_frames
    from farm.driver.store import FilmStore

    store = FilmStore(out, spec.slug)
    store.open(spec)
    ends, losses, ready, done = [], [], [], [0]
    full = {}

    def events(event):
        if event["event"] == "worker" and event["state"] == "ready":
            ready.append(event)
            if len(ready) == WORKERS and not full:  # the clock starts when the whole pool is up
                full.update(t0=time.perf_counter(), done0=done[0])
        elif event["event"] == "frames":
            done[0] = event["frames_done"]
        elif event["event"] == "scene" and event["state"] == "done":
            ends.append(time.perf_counter())
        if on_event:
            loss = on_event(event)
            if loss:
                losses.append(loss)

    render_frames(spec, store, None, Reporter(events=events), worker_class=SleepWorker)  # no cut: frames only
    return {**full, "last_end": max(ends), "losses": losses, "frames": sum(spec.frames_per_scene())}


def efficiency(result: dict, frame_s: float, workers: int, survivors: int | None = None) -> dict:
    """Ideal over measured, from the moment every worker is up (the frames left then are the work)."""
    work = (result["frames"] - result["done0"]) * frame_s
    makespan = result["last_end"] - result["t0"]
    if result["losses"]:
        t_loss = result["losses"][0] - result["t0"]
        ideal = t_loss + max(0.0, work - workers * t_loss) / survivors
    else:
        ideal = work / workers
    return {"makespan_s": makespan, "ideal_s": ideal, "efficiency": ideal / makespan, "work_s": work}


def child(address: str, scenes: int, frames: int, out: str) -> None:
    """One driver process: render a film on the cluster at ``address``, print its peak RSS."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"FARM_BENCH_FRAME_S": os.environ["FARM_BENCH_FRAME_S"]}})
    render(film_spec(scenes, frames), Path(out))
    ray.shutdown()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--frame-s", type=float, default=0.1)
    parser.add_argument("--memory-scenes", type=int, default=32, help="the short film of the memory test")
    parser.add_argument("--memory-frame-s", type=float, default=0.01)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", nargs=4, metavar=("ADDRESS", "SCENES", "FRAMES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.child[3])
        return

    os.environ.update(HEALTH_CHECK)
    os.environ["FARM_BENCH_FRAME_S"] = str(args.frame_s)
    import ray
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="farmbd", dir="/tmp")
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "temp_dir": temp, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=GPUS_PER_NODE, num_gpus=GPUS_PER_NODE) for _ in range(NODES)]
    workers = NODES * GPUS_PER_NODE
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"FARM_BENCH_FRAME_S": str(args.frame_s)}})
    rows = []
    try:
        work = args.scenes * args.frames * args.frame_s
        out = Path(temp) / "films"
        clean = render(film_spec(args.scenes, args.frames), out / "clean")
        rows.append(("no failure", efficiency(clean, args.frame_s, workers)))

        total = args.scenes * args.frames
        removed = []

        def lose_a_node(event):
            if event["event"] == "frames" and event["frames_done"] >= 0.4 * total and not removed:
                victim = next(n for n in nodes if n.node_id == event_node(event))
                removed.append(victim)
                cluster.remove_node(victim, allow_graceful=False)
                return time.perf_counter()
            return None

        scene_nodes = {}

        def event_node(event):
            return scene_nodes[event["scene"]]

        def track(event):
            if event["event"] == "scene" and event["state"] in ("started", "resumed"):
                scene_nodes[event["scene"]] = event["node"]
            return lose_a_node(event)

        lost = render(film_spec(args.scenes, args.frames), out / "lost", on_event=track)
        rows.append(("one node (2 of 8 workers) lost at 40%",
                     efficiency(lost, args.frame_s, workers, workers - GPUS_PER_NODE)))
        ray.shutdown()

        # Driver memory: the same cluster, a fresh node for the lost one, two driver processes.
        cluster.add_node(num_cpus=GPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
        memory = {}
        env = dict(os.environ, FARM_BENCH_FRAME_S=str(args.memory_frame_s), PYTHONPATH=str(ROOT))
        for label, scenes in (("short", args.memory_scenes), ("10x longer", 10 * args.memory_scenes)):
            done = subprocess.run([sys.executable, __file__, "--child", cluster.address, str(scenes), str(args.frames),
                                   str(out / f"memory-{scenes}")], env=env, capture_output=True, text=True, check=True)
            memory[label] = (scenes, json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"])
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    machine = (f"{datetime.date.today()}: {os.cpu_count()}-core {platform.machine()}, "
               f"Python {platform.python_version()}, Ray {ray.__version__}")
    growth = memory["10x longer"][1] / memory["short"][1]
    if args.markdown:
        print(f"### {machine}\n")
        print(f"{workers} workers ({NODES} nodes x {GPUS_PER_NODE} logical GPUs), {args.scenes} scenes x "
              f"{args.frames} frames, {args.frame_s} s per frame (work {work:.0f} s)\n")
        print("| run | makespan | ideal | efficiency |\n|---|---|---|---|")
        for label, r in rows:
            print(f"| {label} | {r['makespan_s']:.2f} s | {r['ideal_s']:.2f} s | {r['efficiency']:.3f} |")
        print("\n| driver film | frames | peak RSS |\n|---|---|---|")
        for label, (scenes, rss) in memory.items():
            print(f"| {label} | {scenes * args.frames} | {rss:.0f} MiB |")
        print(f"\nDriver memory growth for a 10x longer film: {growth:.3f}x")
    else:
        print(machine)
        for label, r in rows:
            print(f"{label}: makespan {r['makespan_s']:.2f}s ideal {r['ideal_s']:.2f}s "
                  f"efficiency {r['efficiency']:.3f}")
        for label, (scenes, rss) in memory.items():
            print(f"driver peak RSS, {label} film ({scenes * args.frames} frames): {rss:.0f} MiB")
        print(f"driver memory growth: {growth:.3f}x")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A ten-minute film on 32 GPUs, simulated: dispatch efficiency, makespan, driver memory, frame latency.

A logical Ray cluster (ray.cluster_utils.Cluster: NODES nodes of GPUS_PER_NODE logical GPUs,
num_gpus on CPU nodes; 32 nodes of 1 by default) renders a 120-scene film of 5 s scenes at
12 fps (7,200 frames) in keyframe mode (render.reseed: keyframe: 119 anchors first, then
scene k from anchor k-1) with the final preset's settings, through farm's own pipeline:
farm.film.render_film (plan, cut plan, film store, driver, pool, dispatch, the cutter
encoding each scene's pieces as it lands, join, check, pictures). Only the renderer's cost
is injected, at the actor's boundary: the SleepWorker below sleeps STEP_S per optimisation
step (warm-up, then steps_per_frame a frame; an anchor is its anchor_steps), sends real
PNGs of the film's size (pre-encoded, 512x512 of a textured picture) with the time they
were sent in a PNG text chunk, and a renderer state of the real shapes (BigGAN-deep 512:
15 latent rows) with every frame (dispatch.state_every: 1). STEP_S defaults to 0.061 s,
farm's compiled bf16 step on an H200 (docs/BENCHMARKS.md): the driver sees the frame
rate 32 such GPUs would send it. A frame's hand-over (serialising it into the object
store: a millisecond on a GPU node, up to hundreds of milliseconds among 32 workers on
this 2-core machine) is not counted up to a frame's time; a yield held longer than that
(Ray's back-pressure: the driver has dispatch.in_flight frames of the stream not taken)
delays the worker's later frames, as it would idle a GPU. Every worker's load() waits
until the whole pool has loaded (a barrier at the boundary), so every worker starts at
the same moment, t0.

Definitions (times from t0, the moment the pool is whole):

  job cost        anchor: anchor_steps x STEP_S; scene: (warmup_steps + frames x
                  steps_per_frame) x STEP_S; a scene resumed from its state after frame f:
                  (frames - f - 1) x steps_per_frame x STEP_S (no warm-up).
  ideal render    the makespan of the dispatcher's own order with no overhead at all,
                  computed by `ideal_schedule`: the jobs in farm's order (every anchor, then
                  the scenes), each started the instant a worker is free and the anchor it
                  starts from is done, each taking exactly its cost. For this film on 32
                  workers: anchors in ceil(119/32) = 4 rounds while the first scenes start
                  (scene 0 needs no anchor), then the scenes, a worker's chain of ceil(120/32)
                  = 4 scenes: 4 x 1.22 s + 4 x 32.33 s = 134.2 s (the scenes that start in
                  the anchors' last round do not shorten it: the last round of scenes sets it).
                  With a node lost at time t_loss: t_loss plus the same schedule of what was
                  left at t_loss on the survivors (each scene's frames not yet written, the
                  lost node's scenes first, resumed without warm-up; scenes not started whole).
  render          measured: t0 to the last scene done (its last frame and latents on disk).
  dispatch efficiency = ideal render / render.
  stitch tail     measured: the last scene done to film.mp4 joined and checked, subtitles,
                  contact sheet and poster written (render_film returned).
  ideal tail      the same tail with nothing else to do: right after the film, the cutter
                  again on the same folder, every piece but the last scene's already encoded,
                  timed from that scene's arrival (its body and the crossfade into it encoded,
                  the 239 pieces joined, the film checked, the pictures).
  makespan ratio  (render + stitch tail) / (ideal render + ideal tail).
  driver memory   peak RSS (ru_maxrss) of the driver process rendering the 120-scene film,
                  against one rendering the first 10 scenes of it (each its own process
                  joined to the same cluster); and apart, sampled from /proc every 0.2 s,
                  the peak of its own memory (RssAnon) and of the object store's shared
                  memory it maps (RssShmem: the frames in flight, more with more streams).
  frame latency   from the worker sending a frame (the time in its PNG) to the driver
                  having written it to disk (the driver's "frames" event for its batch:
                  after the frame's atomic write, and its state's); median, p95, max.

Targets (issue 19): dispatch efficiency >= 0.95, makespan ratio <= 1.1, driver memory of the
long film at most 1.1x the 10-scene film's. The node loss: when 40 % of the frames are on
disk, the node of a running scene is removed without warning (its processes killed).

The cluster lives in a private temp dir and is shut down at the end, also on an error or
Ctrl-C (never `ray stop`).

Usage: scripts/bench_dispatch.py [--nodes 32] [--gpus-per-node 1] [--step-s 0.061] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENES, SCENE_SECONDS, FPS = 120, 5.0, 12
SHORT_SCENES = 10
LATENT_ROWS = 15  # BigGAN-deep 512: one row for gen_z and one per generator block (14)
LOSS_AT = 0.4
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "4",
}
STAMP = b"farmsent"
MARK = "bench_dispatch: "  # the child's lines to the parent on stdout; others are relayed
BARRIER_TIMEOUT_S = 600.0
BANK_FRAMES = 1.0  # see SleepWorker.render


# --- the renderer's cost, injected at the actor's boundary ------------------------------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def stamped(png: bytes, sent: float) -> bytes:
    """``png`` with a tEXt chunk holding ``sent`` (time.time()) before its IEND."""
    return png[:-12] + png_chunk(b"tEXt", STAMP + b"\x00" + repr(sent).encode()) + png[-12:]


def sent_time(png: bytes) -> float:
    at = png.rindex(STAMP + b"\x00") + len(STAMP) + 1
    return float(png[at: png.index(b"IEND", at) - 8])


class SleepWorker:
    """The render actor's interface with a renderer that sleeps STEP_S a step (see the docstring)."""

    VARIANTS = 6

    def __init__(self, threads: int) -> None:
        self.step_s = float(os.environ["FARM_BENCH_STEP_S"])
        self.pngs: list[bytes] = []

    def load(self, models_spec, size: int, device: str):
        import io
        import socket

        import numpy as np
        import ray
        from PIL import Image

        # A textured picture of the film's size (PNG bytes near a rendered frame's), a few shifts of it.
        rng = np.random.default_rng(os.getpid())
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([np.sin(6 * x + 3 * y), np.cos(5 * y), np.sin(4 * (x - y))], -1) * 90 + 128
        base = base + rng.normal(0, 6, base.shape)
        for k in range(self.VARIANTS):
            buffer = io.BytesIO()
            image = np.roll(base, 7 * k, axis=1).clip(0, 255).astype(np.uint8)
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
            self.pngs.append(buffer.getvalue())
        barrier = Path(os.environ["FARM_BENCH_BARRIER"])  # every worker starts when the pool is whole
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + BARRIER_TIMEOUT_S
        while len(list(barrier.iterdir())) < int(os.environ["FARM_BENCH_WORKERS"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "device": "sleep", "resources": context.get_assigned_resources()}

    def render(self, settings, prompt, seed: int, frames: int, init=None, resume=None, state_every: int = 0):
        import numpy as np

        first = int(resume["frames_done"]) if resume is not None else 0
        rows, z, classes = LATENT_ROWS, 128, 1000
        latents = {"z": np.zeros((rows, z), np.float32), "classes": np.zeros((rows, classes), np.float32)}
        state = {"frames_done": np.asarray(0), "steps": np.asarray(0), "ema_accum": np.asarray(0.0),
                 "rng": np.zeros(5056, np.uint8), "noise_rng": np.zeros(5056, np.uint8),
                 **{f"{prefix}{name}": np.zeros(a.shape, np.float32) for prefix in ("", "ema_", "first_")
                    for name, a in latents.items()},
                 **{f"adam_{i}_{key}": np.zeros(a.shape, np.float32) for i, a in enumerate(latents.values())
                    for key in ("exp_avg", "exp_avg_sq")}}
        # The clock: a step costs step_s; a frame waits while the driver has not taken the ones before
        # (Ray's back-pressure blocks the yield), as a GPU would.
        ready = time.perf_counter() + (settings.warmup_steps * self.step_s if resume is None else 0.0)
        frame_s = settings.steps_per_frame * self.step_s
        for index in range(first, frames):
            ready += frame_s
            time.sleep(max(0.0, ready - time.perf_counter()))
            keep = state_every > 0 and ((index + 1) % state_every == 0 or index == frames - 1)
            item_state = {**state, "frames_done": np.asarray(index + 1)} if keep else None
            png = stamped(self.pngs[(seed + index) % self.VARIANTS], time.time())
            yield {"frame": index, "png": png, "loss": 0.0, "similarity": 0.0, "state": item_state}
            # The hand-over of a frame (serialising it, the object store) takes a GPU node a millisecond and
            # this crowded machine up to hundreds: up to a frame's time it is not counted. A yield held
            # longer (Ray's back-pressure: the driver is behind) leaves the GPU idle: later frames slip.
            ready = max(ready, time.perf_counter() - BANK_FRAMES * frame_s)
        if frames == 0:  # an anchor: its warm-up alone
            time.sleep(max(0.0, ready - time.perf_counter()))
        yield {"latents": latents, "first_latents": latents}


# --- the ideal -----------------------------------------------------------------------------------

def ideal_schedule(workers: int, jobs: list[tuple[str, int, float, tuple | None]], busy: list[float] = ()) -> float:
    """Makespan of ``jobs`` (kind, scene, cost, the job it starts from or None) in this order on
    ``workers`` workers with no overhead: a free worker takes the first job whose start is done.
    ``busy``: seconds until each of some workers is free (their jobs' rest, not in ``jobs``)."""
    free = sorted(list(busy) + [0.0] * (workers - len(busy)))
    heapq.heapify(free)
    done: dict[tuple, float] = {}
    waiting = list(jobs)
    end = max(busy, default=0.0)
    while waiting:
        now = heapq.heappop(free)
        pick = next((j for j in waiting if j[3] is None or done.get(j[3], math.inf) <= now), None)
        if pick is None:  # nothing is ready yet: this worker waits for the next job to finish
            later = min(t for t in done.values() if t > now) if any(t > now for t in done.values()) else None
            assert later is not None, "a job waits on one that never runs"
            heapq.heappush(free, later)
            continue
        waiting.remove(pick)
        finish = now + pick[2]
        done[(pick[0], pick[1])] = finish
        end = max(end, finish)
        heapq.heappush(free, finish)
    return end


def film_jobs(spec, step_s: float) -> list[tuple[str, int, float, tuple | None]]:
    from farm.driver.jobs import job_arguments, plan_jobs

    counts = spec.frames_per_scene()
    out = []
    for job in plan_jobs(spec):
        settings, _, _, frames = job_arguments(spec, job, counts)
        out.append((job.kind, job.scene, (settings.warmup_steps + frames * settings.steps_per_frame) * step_s,
                    job.start_from))
    return out


# --- one driver: a child process joined to the cluster ----------------------------------------

class MemorySampler:
    """This process's resident memory, read from /proc every 0.2 s: the peak of its own (anonymous:
    heap, Python objects) and of what it maps from Ray's object store (shared memory, the frames in
    flight), apart; ru_maxrss counts both together."""

    def __init__(self) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssShmem": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for line in Path("/proc/self/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], int(value.split()[0]))

    def result(self) -> dict:
        self.stop.set()
        self.thread.join()
        return {"anon_mib": self.peak["RssAnon"] / 1024, "shmem_mib": self.peak["RssShmem"] / 1024}


def film_spec(scenes: int):
    from farm.spec import spec_from_dict

    return spec_from_dict({
        "title": "Ten minutes on thirty-two", "seed": 7,
        "scenes": [{"narration": f"Scene {i + 1} of the long film.", "prompt": f"a landscape, view {i + 1}",
                    "duration": SCENE_SECONDS} for i in range(scenes)],
        "video": {"fps": FPS, "narration": "none"},
        "render": {"preset": "final", "reseed": "keyframe"},
        "dispatch": {"state_every": 1},
    })


def child(config: dict) -> None:
    """Render one film with the SleepWorker on the cluster at config["address"]; JSON lines on stdout."""
    import ray

    from farm.cutting.film import FilmCutter, plan_cut
    from farm.cutting.segments import piece_key
    from farm.cutting.tools import find_ffmpeg
    from farm.driver.jobs import plan_jobs
    from farm.film import render_film
    from farm.folder.layout import frame_path

    spec = film_spec(config["scenes"])
    workers = min(config["workers"], len(plan_jobs(spec)))
    barrier = Path(config["out"]) / "barrier"
    barrier.mkdir(parents=True)
    ray.init(address=config["address"], log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"FARM_BENCH_STEP_S": str(config["step_s"]), "FARM_BENCH_WORKERS": str(workers),
                                       "FARM_BENCH_BARRIER": str(barrier)}})
    total = sum(spec.frames_per_scene())
    ready: list[float] = []
    written: dict[tuple[int, int], float] = {}
    progress = {"done": 0, "frames": {}, "nodes": {}, "state": {}, "t_loss": None, "snapshot": None}
    scene_done: list[float] = []

    def on_event(event: dict) -> None:
        now, wall = time.perf_counter(), time.time()
        kind = event["event"]
        if kind == "worker" and event["state"] == "ready":
            ready.append(now)
        elif kind == "scene" and event["state"] in ("started", "resumed"):
            progress["nodes"][event["scene"]] = event["node"]
            progress["state"][event["scene"]] = "running"
        elif kind == "scene" and event["state"] == "done":
            progress["state"][event["scene"]] = "done"
            scene_done.append(now)
        elif kind == "frames":
            progress["done"] = event["frames_done"]
            for index in range(event["first"], event["last"] + 1):
                written.setdefault((event["scene"], index), wall)
            have = progress["frames"]
            have[event["scene"]] = max(have.get(event["scene"], 0), event["last"] + 1)
            if config["lose"] and progress["t_loss"] is None and progress["done"] >= LOSS_AT * total:
                victim = progress["nodes"][event["scene"]]
                progress["t_loss"] = now
                progress["snapshot"] = {"frames": dict(have), "state": dict(progress["state"]),
                                        "nodes": dict(progress["nodes"]), "victim": victim}
                print(MARK + json.dumps({"lose": victim}), flush=True)

    out = Path(config["out"]) / "films"
    memory = MemorySampler()
    started = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    result = render_film(spec, out=out, address=config["address"], events=on_event, worker_class=SleepWorker)
    finished = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks = memory.result()
    ray.shutdown()

    # Latency: sent (in the PNG) to written (the driver's event for the frame's batch).
    latencies = sorted(written[(k, f)] - sent_time(frame_path(result.path, k, f).read_bytes())
                       for (k, f) in written)
    assert len(written) == total, (len(written), total)

    # The ideal tail: the cutter again, every piece but the last scene's on disk.
    exe = find_ffmpeg(spec.video.ffmpeg)
    cut = plan_cut(spec, exe, lambda m: None, film_dir=result.path, bridges=True)
    cutter = FilmCutter(cut, result.path, exe, lambda m: None)
    last = len(spec.scenes) - 1
    for piece, needs in cutter.pieces:
        if last in needs:
            (cutter.folder / f"{piece.name}-{piece_key(piece, cutter.encoding, [])}.mp4").unlink()
    for k in range(last):
        cutter.scene_ready(k)
    for future in [*cutter.futures.values(), *cutter.thumbnails.values()]:
        future.result()
    tail0 = time.perf_counter()
    cutter.scene_ready(last)
    cutter.finish()
    ideal_tail = time.perf_counter() - tail0

    t0 = ready[workers - 1] if len(ready) >= workers else math.nan
    jobs = film_jobs(spec, config["step_s"])
    if progress["t_loss"] is None:
        ideal_render = ideal_schedule(workers, jobs)
        survivors = workers
    else:
        snap = progress["snapshot"]
        frame_s = spec.render.steps_per_frame * config["step_s"]
        lost = [k for k, s in snap["state"].items() if s == "running" and snap["nodes"][k] == snap["victim"]]
        alive = [k for k, s in snap["state"].items() if s == "running" and snap["nodes"][k] != snap["victim"]]
        left = {k: (spec.frames_per_scene()[k] - snap["frames"].get(k, 0)) * frame_s for k in range(len(spec.scenes))}
        rest = [("scene", k, left[k], None) for k in lost]
        rest += [("scene", k, cost, None) for kind, k, cost, _ in jobs if kind == "scene" and k not in snap["state"]]
        survivors = workers - config["gpus_per_node"]
        ideal_render = (progress["t_loss"] - t0) + ideal_schedule(survivors, rest, [left[k] for k in alive])
    render = max(scene_done) - t0
    tail = finished - max(scene_done)
    print(MARK + json.dumps({
        "scenes": len(spec.scenes), "frames": total, "workers": workers, "survivors": survivors,
        "startup_s": t0 - started, "render_s": render, "ideal_render_s": ideal_render,
        "tail_s": tail, "ideal_tail_s": ideal_tail,
        "t_loss_s": (progress["t_loss"] - t0) if progress["t_loss"] else None,
        "latency": {"median": statistics.median(latencies), "p95": latencies[int(0.95 * (len(latencies) - 1))],
                    "max": latencies[-1]},
        "peak_rss_mib": peak_rss, **peaks,
        "driver_cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "frames_per_s": total / render,
    }), flush=True)


# --- the cluster, and the runs ---------------------------------------------------------------

def run_child(cluster, nodes, config: dict, log: Path) -> dict:
    """One driver process; removes the node it names when it asks (the node loss)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config)], env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        result = None
        try:
            for line in proc.stdout:
                if not line.startswith(MARK):
                    err.write(line)
                    continue
                message = json.loads(line[len(MARK):])
                if "lose" in message:
                    victim = next(n for n in nodes if n.node_id == message["lose"])
                    nodes.remove(victim)
                    cluster.remove_node(victim, allow_graceful=False)
                else:
                    result = message
        finally:
            if proc.poll() is None and result is None:
                proc.terminate()
            proc.wait()
    if proc.returncode or result is None:
        raise SystemExit(f"bench_dispatch: the driver failed (exit {proc.returncode}); see {log}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--step-s", type=float, default=0.061, help="seconds per optimisation step")
    parser.add_argument("--runs", default="clean,short,lost", help="which films: clean, short, lost")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if os.environ.get("FARM_BENCH_PROFILE"):  # where the driver's time goes: a cProfile dump
            import cProfile

            cProfile.runctx("child(json.loads(args.child))", globals(), {"args": args},
                            os.environ["FARM_BENCH_PROFILE"])
        else:
            child(json.loads(args.child))
        return
    for name in ("nodes", "gpus_per_node", "step_s"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"bench_dispatch: --{name.replace('_', '-')} must be positive")

    os.environ.update(HEALTH_CHECK)
    import ray
    from ray.cluster_utils import Cluster

    # Ctrl-C and a kill end the same way: the cluster shut down, its temp dir removed.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    temp = Path(tempfile.mkdtemp(prefix="farmbd", dir="/tmp"))
    workers = args.nodes * args.gpus_per_node
    cluster = None
    rows = {}
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": str(temp / "ray"),
                                                                 "include_dashboard": False})
        start = time.perf_counter()
        nodes = [cluster.add_node(num_cpus=args.gpus_per_node, num_gpus=args.gpus_per_node)
                 for _ in range(args.nodes)]
        print(f"{args.nodes} nodes up in {time.perf_counter() - start:.0f}s", file=sys.stderr)
        base = {"address": cluster.address, "workers": workers, "gpus_per_node": args.gpus_per_node,
                "step_s": args.step_s}
        films = {"clean": (SCENES, False), "short": (SHORT_SCENES, False), "lost": (SCENES, True)}
        for name in args.runs.split(","):
            scenes, lose = films[name]
            rows[name] = run_child(cluster, nodes, {**base, "scenes": scenes, "lose": lose, "out": str(temp / name)},
                                   temp / f"{name}.log")
            print(name, json.dumps(rows[name]), file=sys.stderr)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    report(args, rows, ray.__version__)


def report(args, rows: dict, ray_version: str) -> None:
    load = os.getloadavg()
    machine = (f"{datetime.date.today()}: {os.cpu_count()}-core {platform.machine()}, Python "
               f"{platform.python_version()}, Ray {ray_version}; load average {load[0]:.1f} at the end")
    workers = args.nodes * args.gpus_per_node
    labels = {"clean": "no failure", "lost": f"one node ({args.gpus_per_node} of {workers} GPUs) lost at 40%",
              "short": f"the first {SHORT_SCENES} scenes alone"}
    print(f"### {machine}\n")
    print(f"{workers} logical GPUs ({args.nodes} nodes x {args.gpus_per_node}), {args.step_s} s a step\n")
    print("| film | frames | workers | render | ideal | dispatch efficiency | stitch tail | ideal tail | "
          "makespan ratio | latency median / p95 / max | driver peak RSS (own, object store) | driver CPU a frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lat = r["latency"]
        ratio = (r["render_s"] + r["tail_s"]) / (r["ideal_render_s"] + r["ideal_tail_s"])
        cells = [labels[name], r["frames"], r["workers"], f"{r['render_s']:.1f} s", f"{r['ideal_render_s']:.1f} s",
                 f"{r['ideal_render_s'] / r['render_s']:.3f}", f"{r['tail_s']:.2f} s", f"{r['ideal_tail_s']:.2f} s",
                 f"{ratio:.3f}x", " / ".join(f"{lat[k] * 1e3:.0f}" for k in ("median", "p95", "max")) + " ms",
                 f"{r['peak_rss_mib']:.0f} MiB ({r.get('anon_mib', math.nan):.0f}, {r.get('shmem_mib', math.nan):.0f})",
                 f"{r['driver_cpu_s'] / r['frames'] * 1e3:.1f} ms"]
        print("| " + " | ".join(map(str, cells)) + " |")
    if "clean" in rows and "short" in rows:
        clean, short = rows["clean"], rows["short"]
        print(f"\nDriver peak memory, 120 scenes against 10: {clean['peak_rss_mib'] / short['peak_rss_mib']:.3f}x "
              f"(its own: {clean['anon_mib'] / short['anon_mib']:.3f}x)")


if __name__ == "__main__":
    main()

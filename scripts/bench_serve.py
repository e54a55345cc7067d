#!/usr/bin/env python3
"""farm serve benchmark: how fast a big film's page answers, and what serving costs a render beside it.

1. Pages: a synthetic film of --scenes scenes (1,000) written as farm writes one: film.yaml by
   farm.folder.layout, manifest.json by farm.folder.manifest (600 scenes done with a hash per
   frame, 4 running with frames on disk, the rest pending), events.jsonl with a frames event
   per frame batch. The film page (/films/NAME) and its JSON (/api/films/NAME) are fetched
   from a real `farm serve` server on loopback: once after a change (the folder read again:
   "cold") and --requests times while nothing changes ("warm"); median and worst.
2. Beside a render: the same tiny film rendered by farm.film.render_film (one Ray cluster,
   its worker kept between films) with nobody watching, and with a `farm serve` process
   watching it as a person would: the film page's event stream open, and the page itself
   fetched every second. The two alternate, --pairs times; the figure is the ratio of render
   times (watched / alone) per pair, and the serving process's CPU time per second of render.

    .venv/bin/python scripts/bench_serve.py [--scenes 1000] [--requests 30] [--pairs 3] [--markdown]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.folder.layout import EVENTS_NAME, MANIFEST_NAME, frame_path, write_film_yaml  # noqa: E402
from farm.folder.manifest import Manifest  # noqa: E402
from farm.spec import spec_from_dict  # noqa: E402

PROMPTS = ["a hairy tardigrade in the snow", "a frozen valley at night", "a ball of white fur sleeping",
           "a moss leaf on a glacier", "snow falling like stars"]


def film_spec(title: str, scenes: int, seconds: float, fps: int) -> dict:
    return {
        "title": title, "seed": 7,
        "scenes": [{"narration": f"Scene {k + 1}: {PROMPTS[k % 5]}, and the story goes on a little.",
                    "prompt": PROMPTS[k % 5], "duration": seconds} for k in range(scenes)],
        "video": {"fps": fps, "transition": "cut", "narration": "none"},
        "render": {"preset": "tiny", "cutouts": 2, "warmup_steps": 1, "anchor_steps": 2, "workers": 1},
        "dispatch": {"keep_workers": True},
    }


def synthetic_film(out: Path, scenes: int) -> str:
    """A 1,000-scene film folder in mid-render, written with farm's own writers."""
    spec = spec_from_dict(film_spec("Bench Serve", scenes, 2.0, 12))
    folder = out / spec.slug
    write_film_yaml(folder, spec)
    manifest = Manifest.new(spec.slug, spec.frames_per_scene())
    events = [{"event": "run", "state": "started", "time": time.time(), "pid": os.getpid(),
               "host": platform.node()}]
    png = (ROOT / "farm" / "serve" / "static" / "farm.css").read_bytes()[:64]  # any bytes: only listed
    for k, record in enumerate(manifest.scenes):
        if k < 600:
            record.started(f"worker-host node {k % 8:012d}")
            for frame in range(record.frames_expected):
                record.frame_written(frame, f"{k:08x}{frame:08x}", f"{k % 8:056d}")
            record.finished(12.5)
            events.append({"event": "frames", "scene": k, "first": 0, "last": record.frames_expected - 1,
                           "count": record.frames_expected, "time": time.time(), "frames_done": 0,
                           "frames_total": 0, "eta_s": 100.0, "fps": 4.0})
        elif k < 604:
            record.started(f"worker-host node {k % 8:012d}")
            for frame in range(10):
                path = frame_path(folder, k, frame)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
            events.append({"event": "scene", "state": "started", "scene": k, "node": f"{k % 8:056d}",
                           "time": time.time()})
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    (folder / EVENTS_NAME).write_text("".join(json.dumps(e) + "\n" for e in events))
    return spec.slug


def fetch(port: int, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    seconds = time.perf_counter() - started
    conn.close()
    assert response.status == 200, (path, response.status)
    return seconds, len(body)


def start_serve(out: Path, watch: str | None = None) -> tuple[subprocess.Popen, int]:
    """`farm serve OUT --port 0` in its own process; with ``watch``, that process also plays a
    person's browser: the film page's event stream read, the page fetched every second."""
    code = (
        "import sys, threading, time, http.client\n"
        "from farm.serve.app import Server\n"
        "server = Server(sys.argv[1], port=0).start()\n"
        "print(server.port, flush=True)\n"
        "def watch(name):\n"
        "    conn = http.client.HTTPConnection('127.0.0.1', server.port)\n"
        "    conn.request('GET', f'/api/films/{name}/events'); response = conn.getresponse()\n"
        "    while response.readline(): pass\n"
        "def page(name):\n"
        "    while True:\n"
        "        conn = http.client.HTTPConnection('127.0.0.1', server.port)\n"
        "        conn.request('GET', f'/films/{name}'); response = conn.getresponse(); response.read()\n"
        "        conn.close(); time.sleep(1)\n"
        "if len(sys.argv) > 2:\n"
        "    threading.Thread(target=watch, args=(sys.argv[2],), daemon=True).start()\n"
        "    threading.Thread(target=page, args=(sys.argv[2],), daemon=True).start()\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(out), *([watch] if watch else [])],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return process, int(process.stdout.readline())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pages(scenes: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_serve") as tmp:
        out = Path(tmp)
        name = synthetic_film(out, scenes)
        process, port = start_serve(out)
        try:  # the first request of a server at once (reading the film, film.yaml parsed too) ...
            figures = {"first_read_ms": 1000 * fetch(port, f"/films/{name}")[0]}
        finally:
            process.stdin.close()
            process.wait(timeout=10)
        process, port = start_serve(out)
        try:  # ... and a second after it started, having read every film once as it started
            time.sleep(1.0)
            figures["first_after_start_ms"] = 1000 * fetch(port, f"/films/{name}")[0]
            for path in (f"/films/{name}", f"/api/films/{name}"):
                cold = []
                for _ in range(5):
                    os.utime(out / name / MANIFEST_NAME)  # changed: read again on the next request
                    cold.append(fetch(port, path)[0])
                warm = [fetch(port, path) for _ in range(requests)]
                figures[path.split(name)[0] + "NAME"] = {
                    "bytes": warm[0][1], "cold_median_ms": 1000 * statistics.median(cold),
                    "cold_worst_ms": 1000 * max(cold),
                    "warm_median_ms": 1000 * statistics.median(s for s, _ in warm),
                    "warm_worst_ms": 1000 * max(s for s, _ in warm)}
            return figures
        finally:
            process.stdin.close()
            process.wait(timeout=10)


def bench_render(pairs: int) -> dict:
    import ray

    from farm.film import render_film

    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    alone, watched, serving_cpu = [], [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_serve") as tmp:
            def render(k: int, watch: bool) -> float:
                out = Path(tmp) / f"run{k}-{'watched' if watch else 'alone'}"
                out.mkdir()
                spec = spec_from_dict(film_spec("Bench Render", 4, 2.0, 6))
                process = None
                if watch:
                    process, _ = start_serve(out, spec.slug)
                    before = cpu_seconds(process.pid)
                try:
                    started = time.perf_counter()
                    render_film(spec, out=out)
                    seconds = time.perf_counter() - started
                    if process is not None:
                        serving_cpu.append((cpu_seconds(process.pid) - before) / seconds)
                finally:
                    if process is not None:
                        process.stdin.close()
                        process.wait(timeout=10)
                return seconds

            render(-1, False)  # the worker started and its models loaded: kept for every run after
            for k in range(pairs):
                first_watched = k % 2 == 1  # the order alternates, so drift falls on both sides
                for watch in (first_watched, not first_watched):
                    (watched if watch else alone).append(render(k, watch))
    finally:
        ray.shutdown()
    ratios = [w / a for w, a in zip(watched, alone)]
    return {"alone_s": alone, "watched_s": watched, "ratios": ratios, "median_ratio": statistics.median(ratios),
            "serving_cpu_per_render_s": statistics.median(serving_cpu)}


def machine() -> str:
    import aiohttp

    return (f"{os.cpu_count()}-core {platform.machine()}, Python {platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    pages = bench_pages(args.scenes, args.requests)
    render = bench_render(args.pairs) if args.pairs else None
    if not args.markdown:
        print(json.dumps({"machine": machine(), "pages": pages, "render": render}, indent=1))
        return
    print(f"### {time.strftime('%Y-%m-%d')}: {machine()}\n")
    print(f"A {args.scenes}-scene film (24 frames a scene; 600 done, 4 running, the rest pending):\n")
    print("| request | bytes | cold median | cold worst | warm median | warm worst |")
    print("|---|---|---|---|---|---|")
    for path, f in pages.items():
        if path.startswith("first_"):
            continue
        print(f"| `{path}` | {f['bytes']:,} | {f['cold_median_ms']:.1f} ms | {f['cold_worst_ms']:.1f} ms | "
              f"{f['warm_median_ms']:.1f} ms | {f['warm_worst_ms']:.1f} ms |")
    print(f"\nCold: the manifest changed since the last request (read again, not film.yaml). Warm: nothing "
          f"changed. The first request of a server, sent the moment it listens (the film read, film.yaml parsed "
          f"too): {pages['first_read_ms']:.1f} ms; a second after it started (it reads every film once as it "
          f"starts): {pages['first_after_start_ms']:.1f} ms.")
    if render:
        print(f"\nA tiny film (4 scenes, 48 frames) rendered alone and watched, {len(render['ratios'])} pairs:\n")
        print("| pair | alone | watched | watched / alone |")
        print("|---|---|---|---|")
        for k, (a, w, r) in enumerate(zip(render["alone_s"], render["watched_s"], render["ratios"])):
            print(f"| {k + 1} | {a:.2f} s | {w:.2f} s | {r:.3f} |")
        print(f"\nMedian ratio {render['median_ratio']:.3f}; the serving process (server, event stream and a "
              f"page a second) used {render['serving_cpu_per_render_s'] * 1000:.1f} ms of CPU per second of render.")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What does the farm cost over a plain loop? Render one film both ways, side by side, and compare.

  farm      : `farm render` (a local Ray cluster, render actors, frames streamed to the driver)
  plain loop: the same renderer steps in one process: load models, render each scene, write the
              PNG frames, and stitch the film with the same cutting code (farm.cutting.FilmCutter)

Two pairings, each run in alternation (REPEATS times) so both sides see the same machine noise:
  same resources: farm with one worker of one CPU   vs  the plain loop on one torch thread
  whole machine : farm with its default workers     vs  the plain loop on all cores' threads
Start-up (Ray, actors, model loading) is reported apart: the ratio "without start-up" compares
time from the moment the models are loaded.

With --first-scene, only the start is timed: the command (README's toy film by default) from its
launch to its first scene started, stopped there, with the split its events carry (planned, Ray up
and the actors asked, each worker's torch import, model-library imports and model build), beside a
plain process that imports the same libraries and builds the same models (alternating).

Usage: scripts/bench_overhead.py [FILM.yaml] [--preset tiny] [--repeats 2] [--markdown]
       scripts/bench_overhead.py --first-scene [examples/toy_world.yaml --preset toy] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plain_loop(spec, out: Path, threads: int) -> dict[str, float]:
    """The renderer in one process, no Ray: what a person scripting Big Sleep by hand would run.

    It runs the very jobs the farm runs (anchors first in keyframe mode, each scene from the
    latents the farm would start it from), one after the other.
    """
    import torch

    from farm.cutting.film import FilmCutter, plan_cut
    from farm.cutting.tools import find_ffmpeg
    from farm.driver.jobs import job_arguments, plan_jobs
    from farm.folder.layout import scene_dir
    from farm.render.bigsleep import render_scene_with_state
    from farm.render.models import load_models
    from farm.writing.plan import plan_film

    start = time.perf_counter()
    torch.set_num_threads(threads)
    spec = plan_film(spec)
    models = load_models(spec.models, spec.video.size, torch.device("cpu"))
    loaded = time.perf_counter()
    exe = find_ffmpeg(spec.video.ffmpeg)
    cut = plan_cut(spec, exe, lambda message: None, film_dir=out)
    spec = cut.spec
    cutter = FilmCutter(cut, out, exe, lambda message: None)
    counts = spec.frames_per_scene()
    latents = {}
    for job in plan_jobs(spec):
        settings, prompt, seed, frames = job_arguments(spec, job, counts)
        sleeper, frame_iter = render_scene_with_state(models, settings, prompt, seed, frames,
                                                      latents.get(job.start_from))
        folder = scene_dir(out, job.scene)
        folder.mkdir(parents=True, exist_ok=True)
        for frame in frame_iter:
            (folder / f"frame_{frame.index:05d}.png").write_bytes(frame.png())
        latents[job.key] = sleeper.ema.average
        if job.kind == "scene":
            cutter.scene_ready(job.scene)
    cutter.finish()
    end = time.perf_counter()
    return {"total": end - start, "startup": loaded - start}


def farm_render(spec_path: str, preset: str, out: Path, overrides: list[str]) -> dict[str, float]:
    """The real command line, timed from outside; start-up ends when the last worker is ready."""
    farm = Path(sys.executable).with_name("farm")
    args = [str(farm), "render", spec_path, "--preset", preset, "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready_at = None
    for line in proc.stderr:
        if line.startswith("worker ready"):
            ready_at = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"farm render failed (exit {proc.returncode})")
    end = time.perf_counter()
    return {"total": end - start, "startup": (ready_at or start) - start}


def first_scene(spec_path: str, preset: str, out: Path, tree: Optional[str] = None) -> dict[str, float]:
    """`farm render --progress json` from its launch to its first scene started (then stopped): seconds
    to the film planned, to the actors asked for (Ray up), to the first worker ready, to the first
    scene, and that worker's own split (torch, model libraries, build). ``tree``: run the farm of
    another checkout (PYTHONPATH, workers included), e.g. an earlier commit's worktree."""
    import signal

    # The console script's own two lines (a set-up run elsewhere may be rewriting .venv/bin/farm).
    farm = [sys.executable, "-c", "import sys; from farm.cli import main; sys.exit(main())"]
    args = [*farm, "render", spec_path, "--preset", preset, "--out", str(out), "--progress", "json"]
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    marks: dict[str, float] = {}
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        at = time.perf_counter() - start
        kind, state = event["event"], event.get("state")
        if kind == "film":
            marks.setdefault("planned", at)
        elif kind == "worker" and state == "starting":
            marks.setdefault("actors_asked", at)
        elif kind == "worker" and state == "ready" and "ready" not in marks:
            marks["ready"] = at
            marks.update({f"worker_{k}": v for k, v in event.get("timings", {}).items()})
        elif kind == "scene" and state == "started":
            marks["first_scene"] = at
            proc.send_signal(signal.SIGTERM)  # the start is what is measured
            break
    proc.stdout.close()
    proc.wait()
    if "first_scene" not in marks:
        raise SystemExit(f"farm render ended (exit {proc.returncode}) before a scene started")
    return marks


def plain_start(preset: str) -> dict[str, float]:
    """A fresh process that imports what a plain loop needs and builds the same models (the whole
    process timed from outside; its own split from inside)."""
    code = (
        "import time, json; t0 = time.perf_counter(); import torch; t1 = time.perf_counter()\n"
        "import open_clip, pytorch_pretrained_biggan; from farm.render.models import load_models\n"
        "from farm.spec import spec_from_dict; t2 = time.perf_counter()\n"
        f"spec = spec_from_dict({{'title': 'b', 'scenes': [{{'narration': 'x'}}]}}, preset={preset!r})\n"
        "load_models(spec.models, spec.video.size, torch.device('cpu')); t3 = time.perf_counter()\n"
        "print(json.dumps({'torch_s': t1 - t0, 'imports_s': t2 - t1, 'build_s': t3 - t2}))")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return {"total": time.perf_counter() - start, **json.loads(out.strip().splitlines()[-1])}


def main_first_scene(args) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    farm_runs, plain_runs, other_runs = [], [], []
    try:
        for repeat in range(args.repeats):
            if args.compare_tree:
                other_runs.append(first_scene(args.spec, args.preset, scratch / f"other-{repeat}", args.compare_tree))
            farm_runs.append(first_scene(args.spec, args.preset, scratch / f"farm-{repeat}"))
            plain_runs.append(plain_start(args.preset))
            print(f"#{repeat + 1}: farm first scene {farm_runs[-1]['first_scene']:.1f}s, "
                  f"plain models loaded {plain_runs[-1]['total']:.1f}s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = os.getloadavg()
    print(f"film: {args.spec} preset {args.preset}; machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {datetime.date.today().isoformat()}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    keys = ["planned", "actors_asked", "worker_torch_s", "worker_imports_s", "worker_build_s", "ready", "first_scene"]
    med = {k: statistics.median(r.get(k, float("nan")) for r in farm_runs) for k in keys}
    plain = {k: statistics.median(r[k] for r in plain_runs) for k in ("total", "torch_s", "imports_s", "build_s")}
    print("\n| run | film planned | Ray up, actors asked | worker: torch | worker: model libraries | "
          "worker: models built | first worker ready | first scene started |")
    print("|---|---|---|---|---|---|---|---|")
    print("| farm render (median of %d) | %s |" % (len(farm_runs), " | ".join(f"{med[k]:.1f} s" for k in keys)))
    if other_runs:
        other = {k: statistics.median(r.get(k, float("nan")) for r in other_runs) for k in keys}
        print("| farm render of %s (median of %d) | %s |" % (args.compare_tree, len(other_runs),
                                                           " | ".join(f"{other[k]:.1f} s" for k in keys)))
    print(f"| plain process (median of {len(plain_runs)}) | | | {plain['torch_s']:.1f} s | {plain['imports_s']:.1f} s "
          f"| {plain['build_s']:.1f} s | {plain['total']:.1f} s | |")
    print("\nevery run:", json.dumps({"farm": farm_runs, "plain": plain_runs, "other": other_runs}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "yeti_tardigrade.yaml"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--markdown", action="store_true", help="print a table for docs/BENCHMARKS.md")
    parser.add_argument("--first-scene", action="store_true",
                        help="time only the start: the command to its first scene (the toy film by default)")
    parser.add_argument("--compare-tree", help="with --first-scene: also the farm of this checkout, in turn")
    args = parser.parse_args()
    if args.first_scene:
        if args.spec == str(ROOT / "examples" / "yeti_tardigrade.yaml") and args.preset == "tiny":
            args.spec, args.preset = str(ROOT / "examples" / "toy_world.yaml"), "toy"
        return main_first_scene(args)

    from farm.spec import load_spec

    cores = os.cpu_count() or 1
    pairings = {
        "same resources (1 worker x 1 CPU vs 1 thread)": (["render.workers=1", "render.cpus_per_worker=1"], 1),
        f"whole machine (default workers vs {cores} threads)": ([], cores),
    }
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    try:
        for name, (overrides, threads) in pairings.items():
            spec = load_spec(args.spec, preset=args.preset, overrides=overrides)
            runs = results.setdefault(name, {"farm": [], "plain": []})
            for repeat in range(args.repeats):
                runs["farm"].append(farm_render(args.spec, args.preset, scratch / f"farm-{len(results)}-{repeat}",
                                                overrides))
                runs["plain"].append(plain_loop(spec, scratch / f"plain-{len(results)}-{repeat}", threads))
                print(f"{name} #{repeat + 1}: farm {runs['farm'][-1]['total']:.1f}s, "
                      f"plain {runs['plain'][-1]['total']:.1f}s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    frames = sum(spec.frames_per_scene())
    print(f"film: {args.spec} preset {args.preset}, {len(spec.scenes)} scenes, {frames} frames")
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}, "
          f"{datetime.date.today().isoformat()}")
    rows = []
    for name, runs in results.items():
        med = {side: {k: statistics.median(r[k] for r in runs[side]) for k in ("total", "startup")} for side in runs}
        with_startup = med["farm"]["total"] / med["plain"]["total"]
        without = (med["farm"]["total"] - med["farm"]["startup"]) / (med["plain"]["total"] - med["plain"]["startup"])
        rows.append((name, med, with_startup, without))
    if args.markdown:
        print("\n| pairing | farm total | farm start-up | plain total | plain start-up | ratio with start-up "
              "| ratio without start-up |")
        print("|---|---|---|---|---|---|---|")
        for name, med, a, b in rows:
            print(f"| {name} | {med['farm']['total']:.1f} s | {med['farm']['startup']:.1f} s "
                  f"| {med['plain']['total']:.1f} s | {med['plain']['startup']:.1f} s | {a:.2f}x | {b:.2f}x |")
    else:
        for name, med, a, b in rows:
            print(f"{name}: farm {med['farm']['total']:.1f}s (start-up {med['farm']['startup']:.1f}s), "
                  f"plain {med['plain']['total']:.1f}s (start-up {med['plain']['startup']:.1f}s); "
                  f"ratio {a:.2f}x with start-up, {b:.2f}x without")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

Usage: scripts/bench_overhead.py [FILM.yaml] [--preset tiny] [--repeats 2] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "examples" / "yeti_tardigrade.yaml"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--markdown", action="store_true", help="print a table for docs/BENCHMARKS.md")
    args = parser.parse_args()

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

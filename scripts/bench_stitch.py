#!/usr/bin/env python3
"""Stitching benchmark: the time from a film's last frame written to film.mp4, farm against plain ffmpeg.

- farm: farm.cutting as the driver uses it. Each scene's pieces are encoded as
  soon as the scene's frames are written; the render is simulated as slower
  than the encoder (the next scene's frames are written once the encoder is
  idle), which holds for every real preset. The clock starts when the last
  scene's last frame is written and stops when film.mp4 is written and checked
  (film.srt/.vtt included); a second figure runs until contact.png and
  poster.png are saved too.
- plain: one ffmpeg command line that reads the same PNG frames and encodes
  them with the same crossfades (a chain of xfade filters), the same x264
  settings and the same soft subtitle track, in one pass, started after the last
  frame is written.

Frames are made with numpy (moving colour gradients), not rendered: this
measures stitching only. No narration on either side. The two sides alternate;
each figure is the median of --repeats runs.

    .venv/bin/python scripts/bench_stitch.py [--scenes 60] [--seconds 2] [--fps 12] [--size 256] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.cutting.film import FilmCutter, plan_cut  # noqa: E402
from farm.cutting.subtitles import cues, make_ass  # noqa: E402
from farm.cutting.tools import find_ffmpeg  # noqa: E402
from farm.folder.layout import scene_dir  # noqa: E402
from farm.spec import spec_from_dict  # noqa: E402


def make_spec(scenes: int, seconds: float, fps: int, size: int):
    data = {
        "title": "Bench Stitch",
        "scenes": [{"narration": f"Scene {k + 1}: the tardigrade goes on.", "prompt": "a tardigrade",
                    "duration": seconds} for k in range(scenes)],
        "video": {"fps": fps, "size": size, "narration": "none"},
        "render": {"preset": "tiny"},
    }
    return spec_from_dict(data)


def write_scene(folder: Path, k: int, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        phase = k * 0.7 + i * 0.05
        image = np.stack([np.sin(6 * x + phase), np.cos(5 * y - phase), np.sin(4 * (x + y) + 2 * phase)], -1)
        Image.fromarray(((image * 0.5 + 0.5) * 255).astype(np.uint8)).save(folder / f"frame_{i:05d}.png",
                                                                            compress_level=1)


def run_farm(spec, film_dir: Path, exe: str) -> tuple[float, float]:
    plan = plan_cut(spec, exe, lambda m: None, film_dir=film_dir)
    cutter = FilmCutter(plan, film_dir, exe, lambda m: None)
    counts = plan.spec.frames_per_scene()
    for k, count in enumerate(counts):
        if k < len(counts) - 1:
            # "rendering": the encoder keeps up with a real render, so wait until it is idle
            for future in list(cutter.futures.values()):
                future.result()
        write_scene(scene_dir(film_dir, k), k, count, spec.video.size)
        if k == len(counts) - 1:
            start = time.perf_counter()
        cutter.scene_ready(k)
    cutter.finish()
    return cutter.film_written_at - start, time.perf_counter() - start


def plain_command(spec, film_dir: Path, exe: str, timeline) -> list[str]:
    fps, t = spec.video.fps, timeline.t
    args = [exe, "-hide_banner", "-loglevel", "error", "-y"]
    for k in range(timeline.scenes):
        args += ["-framerate", str(fps), "-i", str(scene_dir(film_dir, k) / "frame_%05d.png")]
    ass = film_dir / "plain.ass"
    ass.write_text(make_ass(cues([s.narration for s in spec.scenes], timeline), spec.video.played_size, burn=False))
    args += ["-i", str(ass)]
    chains, last, length = [], "0:v", timeline.frames[0]
    for k in range(1, timeline.scenes):
        offset = (length - t) / fps
        chains.append(f"[{last}][{k}:v]xfade=transition=fade:duration={t / fps:.6f}:offset={offset:.6f}[x{k}]")
        last, length = f"x{k}", length + timeline.frames[k] - t
    chains.append(f"[{last}]format=yuv420p[v]")
    v = spec.video
    args += ["-filter_complex", ";".join(chains), "-map", "[v]", "-map", f"{timeline.scenes}:s",
             "-c:v", "libx264", "-preset", v.preset, "-crf", str(v.crf), "-r", str(fps), "-c:s", "mov_text",
             "-movflags", "+faststart", str(film_dir / "plain.mp4")]
    return args


def run_plain(spec, film_dir: Path, exe: str, timeline) -> float:
    for k, count in enumerate(spec.frames_per_scene()):
        write_scene(scene_dir(film_dir, k), k, count, spec.video.size)
    command = plain_command(spec, film_dir, exe, timeline)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    elapsed = time.perf_counter() - start
    import av

    with av.open(str(film_dir / "plain.mp4")) as container:
        frames = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
    assert frames == timeline.total, (frames, timeline.total)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    spec = make_spec(args.scenes, args.seconds, args.fps, args.size)
    exe = find_ffmpeg()
    timeline = plan_cut(spec, exe, lambda m: None).timeline
    farm_times, all_times, plain_times = [], [], []
    for _ in range(args.repeats):
        for side in ("farm", "plain"):
            work = Path(tempfile.mkdtemp(prefix="farm-bench-stitch-"))
            try:
                if side == "farm":
                    film, everything = run_farm(spec, work, exe)
                    farm_times.append(film)
                    all_times.append(everything)
                    print(f"farm: film.mp4 {film:.2f}s, with contact sheet and poster {everything:.2f}s",
                          file=sys.stderr)
                else:
                    plain_times.append(run_plain(spec, work, exe, timeline))
                    print(f"plain: {plain_times[-1]:.2f}s", file=sys.stderr)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    farm, everything, plain = (statistics.median(t) for t in (farm_times, all_times, plain_times))
    what = (f"{args.scenes} scenes x {args.seconds:g} s at {args.fps} fps, {args.size}x{args.size}, crossfades of "
            f"{timeline.t} frames: {timeline.total} frames in the film")
    if args.markdown:
        print(f"| {what} | {farm:.2f} s | {everything:.2f} s | {plain:.2f} s | {farm / plain:.3f}x | "
              f"{everything / plain:.3f}x |")
    else:
        print(f"{what}\nfarm, last frame -> film.mp4 checked: {farm:.2f} s "
              f"(and contact sheet, poster: {everything:.2f} s)\nplain ffmpeg, one pass: {plain:.2f} s\n"
              f"ratio: {farm / plain:.3f}x ({everything / plain:.3f}x)  "
              f"({platform.machine()}, {platform.python_version()})")


if __name__ == "__main__":
    main()

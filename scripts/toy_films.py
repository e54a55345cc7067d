#!/usr/bin/env python
"""Measure re-seeding in the toy world: six-scene films drawn from seeds, rendered in ``chain`` and
``keyframe`` mode through farm's renderer, every scene's last frame read by the pixel judge
(farm/toy/judge.py, not the guiding CLIP). docs/TOY.md records what it printed.

    scripts/toy_films.py                                  # 4 films per mode, the toy preset, one start per scene
    scripts/toy_films.py --films 8 --set render.learning_rate=0.05 --frames 40
    scripts/toy_films.py --clip /tmp/other_clip.pt        # other toy CLIP weights
    scripts/toy_films.py --exact                          # the generator's code drawn exactly, no generator

Each film's first scene is random (colour, background, place, shape; the colours differ); every
later scene changes one or two of those of the scene before. The jobs run in the driver's order
(farm.driver.jobs), each started from the latents of the job it starts from (the average latents at
that job's end, what farm.driver hands its workers), one after another in this process. Printed per
film: one mark per scene, C (colour), B (background), P (place), S (shape) where the judge reads it
as prompted; per mode: the shares, and how far the pictures move within scenes and at the cuts
(mean absolute difference, 0..255).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from farm.toy.world import COLOURS, POSITIONS, SHAPES  # noqa: E402

ATTRIBUTES = ("colour", "background", "position", "shape")
VALUES = {"colour": list(COLOURS), "background": list(COLOURS), "position": list(POSITIONS), "shape": list(SHAPES)}


def film_prompts(seed: int, scenes: int = 6) -> list[dict[str, str]]:
    """A random first picture, then each scene changes one or two attributes of the one before."""
    rng = np.random.Generator(np.random.PCG64(seed))
    scene = {a: v[rng.integers(len(v))] for a, v in VALUES.items()}
    while scene["background"] == scene["colour"]:
        scene["background"] = VALUES["background"][rng.integers(len(COLOURS))]
    out = [scene]
    while len(out) < scenes:
        changed = dict(out[-1])
        for attribute in rng.choice(ATTRIBUTES, 1 + rng.integers(2), replace=False):
            others = [v for v in VALUES[attribute] if v != out[-1][attribute]]
            changed[attribute] = others[rng.integers(len(others))]
        if changed["colour"] != changed["background"]:
            out.append(changed)
    return out


def caption(scene: dict[str, str]) -> str:
    place = POSITIONS[scene["position"]][0]
    return f"a {scene['colour']} {scene['shape']} {place} on a {scene['background']} background"


def film_spec(seed: int, mode: str, frames: int, overrides: list[str]):
    from farm.spec import spec_from_dict

    scenes = [{"narration": "x", "prompt": caption(s), "duration": frames / 12} for s in film_prompts(seed)]
    data = {"title": "Toy", "seed": seed, "scenes": scenes, "video": {"fps": 12},
            "render": {"preset": "toy", "reseed": mode, "init_candidates": 1}}
    return spec_from_dict(data, overrides=overrides)


def render_film(models, spec) -> tuple[list[list[np.ndarray]], list[np.ndarray | None]]:
    """Every scene's frames, and the picture of the latents each scene started from (None: its own seed)."""
    from farm.driver.jobs import job_arguments, plan_jobs
    from farm.render.bigsleep import render_scene_with_state

    counts, latents = spec.frames_per_scene(), {}
    scenes: list = [None] * len(spec.scenes)
    starts: list = [None] * len(spec.scenes)
    for job in plan_jobs(spec):
        settings, prompt, seed, frames = job_arguments(spec, job, counts)
        init = latents.get(job.start_from) if job.start_from else None
        sleeper, stream = render_scene_with_state(models, settings, prompt, seed, frames, init)
        drawn = [frame.image for frame in stream]
        latents[job.key] = sleeper.ema.average
        if job.kind == "scene":
            scenes[job.scene] = drawn
            starts[job.scene] = sleeper.frame_image(init) if init is not None else None
    return scenes, starts


def exact_drawing(models, z: torch.Tensor, classes: torch.Tensor, truncation: float) -> torch.Tensor:
    """The toy generator's code (the first 26 values of the first latent row) drawn exactly, in torch."""
    from farm.toy.generator import _PARTS, PALETTE, SHARPNESS, templates

    code, masks = z[:, 0], torch.from_numpy(templates(models.resolution))
    palette = torch.from_numpy(PALETTE / 255).float()
    w = {part: torch.softmax(SHARPNESS * code[:, where], -1) for part, where in _PARTS.items()}
    mask = torch.einsum("bs,bp,bk,spkhw->bhw", w["shapes"], w["places"], w["sizes"], masks)[:, None]
    fg, bg = (w["colour"] @ palette)[:, :, None, None], (w["background"] @ palette)[:, :, None, None]
    return mask * fg + (1 - mask) * bg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="chain,keyframe")
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=6, help="frames per scene (at 12 fps)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override")
    parser.add_argument("--clip", type=Path, help="toy CLIP weights (default: the shipped ones)")
    parser.add_argument("--generator", type=Path, help="toy generator weights (default: the shipped ones)")
    parser.add_argument("--exact", action="store_true", help="draw the generator's code exactly instead")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import farm.render.bigsleep as bigsleep
    import farm.render.generator as generator
    import farm.toy.clip as toy_clip
    import farm.toy.generator as toy_generator
    from farm.render.models import load_models
    from farm.toy.judge import judge

    if args.clip:
        toy_clip.load_toy_clip = functools.partial(toy_clip.load_toy_clip, args.clip)
    if args.generator:
        toy_generator.load_toy_biggan = functools.partial(toy_generator.load_toy_biggan, args.generator)
    if args.exact:
        bigsleep.synthesize = generator.synthesize = exact_drawing
    spec = film_spec(args.first_seed, "chain", args.frames, args.set)
    models = load_models(spec.models, spec.video.size, torch.device("cpu"))
    for mode in args.modes.split(","):
        rows, within, cuts, start = [], [], [], time.monotonic()
        for seed in range(args.first_seed, args.first_seed + args.films):
            prompts = film_prompts(seed)
            scenes, _ = render_film(models, film_spec(seed, mode, args.frames, args.set))
            marks = []
            for k, (frames, scene) in enumerate(zip(scenes, prompts)):
                verdict = judge(frames[-1])
                row = {a: verdict is not None and getattr(verdict, a) == scene[a] for a in ATTRIBUTES}
                rows.append(row)
                marks.append("".join(m if row[a] else "." for m, a in zip("CBPS", ATTRIBUTES)))
                within.append(np.abs(frames[-1].astype(float) - frames[0]).mean())
                if k:
                    cuts.append(np.abs(frames[0].astype(float) - scenes[k - 1][-1]).mean())
            print(f"{mode} film {seed}: {' '.join(marks)}", flush=True)
        shares = {"colour and background": np.mean([r["colour"] and r["background"] for r in rows]),
                  **{a: np.mean([r[a] for r in rows]) for a in ATTRIBUTES}}
        print(f"{mode}: {len(rows)} scenes, " + json.dumps({k: round(float(v), 3) for k, v in shares.items()})
              + f"; change within scenes {np.min(within):.0f}-{np.max(within):.0f} (mean {np.mean(within):.0f}),"
              f" at cuts {np.min(cuts):.0f}-{np.max(cuts):.0f} (mean {np.mean(cuts):.0f});"
              f" {time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

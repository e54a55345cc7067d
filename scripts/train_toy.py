#!/usr/bin/env python
"""Train the toy world's CLIP and generator from scratch on the CPU and write the weights farm ships.

    scripts/train_toy.py                      # both, the shipped recipes -> farm/toy/weights/
    scripts/train_toy.py --model clip         # only the CLIP (toy_clip.pt)
    scripts/train_toy.py --model generator    # only the generator (toy_biggan.pt)
    scripts/train_toy.py --fast --out-dir /tmp/toy   # a short debugging run of both

Deterministic from --seed on a given machine and --threads. Prints the CLIP's held-out
zero-shot accuracy (colour, shape, position) on freshly drawn pictures, and how often the
pixel judge finds, in what the generator draws from random latents, the shape and place
that their code stands for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# The repository root, for farm; scripts/ (this file's folder, already on the path) holds the training.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toy_training.clip import Recipe, fmt, train  # noqa: E402
from toy_training.generator import GeneratorRecipe, train_generator  # noqa: E402

from farm.toy.clip import WEIGHTS as CLIP_WEIGHTS  # noqa: E402
from farm.toy.clip import save_toy_clip, zero_shot_accuracy  # noqa: E402
from farm.toy.generator import TOY_BIGGAN, drawing_fidelity, save_toy_biggan  # noqa: E402


def timed(run):
    wall, cpu = time.time(), time.process_time()
    result = run()
    return result, {"wall_seconds": round(time.time() - wall), "cpu_seconds": round(time.process_time() - cpu),
                    "load_average": [round(x, 2) for x in os.getloadavg()]}


def report(figures: str, info: dict, out: Path) -> None:
    print(figures)
    print(json.dumps({k: v for k, v in info.items() if k != "history"}))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)


def train_clip(args, out: Path) -> None:
    recipe = Recipe(seed=args.seed, threads=args.threads or Recipe.threads)
    if args.clip_steps:
        recipe = dataclasses.replace(recipe, steps=args.clip_steps)
    if args.clip_finetune_steps is not None:
        recipe = dataclasses.replace(recipe, finetune_steps=args.clip_finetune_steps)
    if args.clip_distill_steps is not None:
        recipe = dataclasses.replace(recipe, distill_steps=args.clip_distill_steps)
    if args.fast:
        recipe = dataclasses.replace(recipe, steps=60, finetune_steps=20, batch=32,
                                     distill_steps=min(recipe.distill_steps, 10))
    print(f"CLIP recipe: {dataclasses.asdict(recipe)}", flush=True)
    partial = out.with_suffix(".partial.pt")

    def checkpoint(model, tokenizer):
        save_toy_clip(partial, model, tokenizer, recipe.config, {"partial": True})

    (model, tokenizer, info), times = timed(lambda: train(recipe, log=lambda line: print(line, flush=True),
                                                          evaluate_every=args.eval_every, checkpoint=checkpoint))
    partial.unlink(missing_ok=True)
    info.update(times, recipe=dataclasses.asdict(recipe))
    accuracy = zero_shot_accuracy(model, tokenizer, seed=123_456_789, n=1000)
    info["held_out_accuracy"] = accuracy
    save_toy_clip(out, model, tokenizer, recipe.config, info)
    report(f"CLIP held-out zero-shot (1000 fresh pictures): {fmt(accuracy)}", info, out)


def train_toy_generator(args, out: Path) -> None:
    recipe = GeneratorRecipe(seed=args.seed)
    if args.threads:
        recipe = dataclasses.replace(recipe, threads=args.threads, finetune_threads=args.threads)
    if args.generator_steps:
        recipe = dataclasses.replace(recipe, steps=args.generator_steps)
    if args.generator_finetune_steps is not None:
        recipe = dataclasses.replace(recipe, finetune_steps=args.generator_finetune_steps)
    if args.generator_disagree_weight is not None:
        recipe = dataclasses.replace(recipe, disagree_weight=args.generator_disagree_weight)
    if args.fast:
        recipe = dataclasses.replace(recipe, steps=20, finetune_steps=10, batch=4)
    print(f"generator recipe: {dataclasses.asdict(recipe)}", flush=True)
    partial = out.with_suffix(".partial.pt")
    (model, info), times = timed(lambda: train_generator(
        recipe, log=lambda line: print(line, flush=True),
        checkpoint=lambda m: save_toy_biggan(partial, m, TOY_BIGGAN, {"partial": True})))
    partial.unlink(missing_ok=True)
    info.update(times, recipe=dataclasses.asdict(recipe))
    info["drawing"] = drawing_fidelity(model, seed=123_456_789, n=200)
    save_toy_biggan(out, model, TOY_BIGGAN, info)
    report(f"generator drawings judged on pixels (200 random latents): {fmt(info['drawing'])}", info, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["both", "clip", "generator"], default="both")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--clip-steps", type=int, help=f"default {Recipe.steps}")
    parser.add_argument("--clip-finetune-steps", type=int,
                        help=f"the second phase (wide colours, soft edges), default {Recipe.finetune_steps}; 0: none")
    parser.add_argument("--clip-distill-steps", type=int,
                        help="a third phase distilling the logits on in-between pictures onto a smooth teacher "
                             f"(docs/TOY.md), default {Recipe.distill_steps}: none")
    parser.add_argument("--generator-steps", type=int, help=f"default {GeneratorRecipe.steps}")
    parser.add_argument("--generator-finetune-steps", type=int,
                        help=f"the generator's second phase, default {GeneratorRecipe.finetune_steps}; 0: none")
    parser.add_argument("--generator-disagree-weight", type=float,
                        help="extra weight where the shapes' masks disagree, "
                             f"default {GeneratorRecipe.disagree_weight}")
    parser.add_argument("--threads", type=int,
                        help=f"default {Recipe.threads} for the CLIP, {GeneratorRecipe.threads} and "
                             f"{GeneratorRecipe.finetune_threads} for the generator's two phases")
    parser.add_argument("--fast", action="store_true", help="a short debugging run")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--out-dir", type=Path, default=CLIP_WEIGHTS.parent)
    args = parser.parse_args()
    if args.model in ("both", "clip"):
        train_clip(args, args.out_dir / "toy_clip.pt")
    if args.model in ("both", "generator"):
        train_toy_generator(args, args.out_dir / "toy_biggan.pt")


if __name__ == "__main__":
    main()

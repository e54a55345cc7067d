#!/usr/bin/env python
"""Train the toy world's CLIP from scratch on the CPU and write the weights farm ships.

    scripts/train_toy.py                 # the shipped recipe -> farm/toy/weights/toy_clip.pt
    scripts/train_toy.py --fast --out /tmp/toy_clip.pt   # a minute-long debugging run

Deterministic from --seed on a given machine and --threads. Prints the held-out
zero-shot accuracy (colour, shape, position) on freshly drawn pictures at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farm.toy.clip import WEIGHTS, save_toy_clip  # noqa: E402
from farm.toy.train_clip import Recipe, fmt, train, zero_shot_accuracy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--batch", type=int, default=Recipe.batch)
    parser.add_argument("--lr", type=float, default=Recipe.learning_rate)
    parser.add_argument("--temperature", type=float, default=Recipe.temperature)
    parser.add_argument("--threads", type=int, default=Recipe.threads)
    parser.add_argument("--fast", action="store_true", help="a tiny debugging run (60 steps, batch 32)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    recipe = Recipe(seed=args.seed, steps=args.steps, batch=args.batch, learning_rate=args.lr, threads=args.threads,
                    temperature=args.temperature)
    if args.fast:
        recipe = dataclasses.replace(recipe, steps=60, batch=32)
    print(f"recipe: {dataclasses.asdict(recipe)}", flush=True)
    wall = time.time()
    cpu = time.process_time()
    partial = args.out.with_suffix(".partial.pt")

    def checkpoint(model, tokenizer):
        save_toy_clip(partial, model, tokenizer, recipe.config, {"partial": True})

    model, tokenizer, info = train(recipe, log=lambda line: print(line, flush=True), evaluate_every=args.eval_every,
                                   checkpoint=checkpoint)
    partial.unlink(missing_ok=True)
    info.update(wall_seconds=round(time.time() - wall), cpu_seconds=round(time.process_time() - cpu),
                load_average=os.getloadavg(), recipe=dataclasses.asdict(recipe))
    accuracy = zero_shot_accuracy(model, tokenizer, seed=123_456_789, n=1000)
    info["held_out_accuracy"] = accuracy
    save_toy_clip(args.out, model, tokenizer, recipe.config, info)
    print(f"held-out zero-shot (1000 fresh pictures): {fmt(accuracy)}")
    print(json.dumps({k: v for k, v in info.items() if k != "history"}))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

"""A second plain loop from big-sleep's ``train_step``, in variants, beside farm's step: step by step in turn.

Written apart from scripts/bench_renderer.py's ReferenceLoop, to check its figure (docs/BENCHMARKS.md,
"why another plain loop found farm 1.10-1.14x slower"). Each variant: the per-cutout
``F.interpolate`` loop (nearest), the loss terms row by row, Adam, the bias-corrected EMA; BigGAN
one latent row per block, through

    lib-SN / folded     the library's module with its spectral norm recomputed at every call, or
                        farm's loaded BigGAN (spectral norm folded into the weights)
    lib-attn / farm-attn  the library's SelfAttn module, or farm.render.biggan.self_attention

Every runner takes one step in turn, so each meets the same moments of a shared machine's load.
Tiny preset, one torch thread, this thread's CPU time.

    python scripts/bench_plain_loops.py --cutouts 32 --steps 24
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_renderer  # noqa: E402

from farm.render.biggan import build_tiny_biggan, self_attention  # noqa: E402
from farm.render.bigsleep import BigSleep  # noqa: E402
from farm.render.models import load_models  # noqa: E402
from farm.spec import spec_from_dict  # noqa: E402

PROMPT = bench_renderer.PROMPT


class Plain:
    """big-sleep's train_step as its source reads: BigGAN, cutouts, CLIP, the loss, Adam, the EMA."""

    def __init__(self, models, biggan, cutouts: int, library_attention: bool, seed: int = 1) -> None:
        torch.manual_seed(seed)
        self.m, self.biggan, self.cutouts, self.library_attention = models, biggan, cutouts, library_attention
        self.z = torch.nn.Parameter(torch.randn(models.num_latents, models.z_dim))
        self.cls = torch.nn.Parameter(-3.9 + 0.3 * torch.randn(models.num_latents, models.num_classes))
        self.optimizer = torch.optim.Adam([self.z, self.cls], 0.07)
        self.decay, self.accum = 0.99, 1.0
        self.biased = [torch.zeros_like(self.z), torch.zeros_like(self.cls)]
        self.average = [torch.zeros_like(self.z), torch.zeros_like(self.cls)]
        with torch.no_grad():
            self.text = models.clip.encode_text(models.tokenizer([PROMPT]))
        self.update()

    @torch.no_grad()
    def update(self) -> None:
        self.accum *= self.decay
        for biased, average, param in zip(self.biased, self.average, (self.z, self.cls)):
            biased.mul_(self.decay).add_((1 - self.decay) * param)
            average.copy_(biased).div_(1 - self.accum)

    def image(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return bench_renderer.library_image(self.biggan, z, classes,
                                            attention=None if self.library_attention else self_attention)

    def loss(self) -> torch.Tensor:
        m, z = self.m, self.z
        classes = torch.sigmoid(self.cls)
        out = self.image(z, classes)
        width = out.shape[-1]
        pieces = []
        for _ in range(self.cutouts):
            size = int(width * torch.zeros(1).normal_(mean=.8, std=.3).clip(.5, .95))
            ox, oy = torch.randint(0, width - size + 1, (2,)).tolist()
            pieces.append(F.interpolate(out[:, :, ox:ox + size, oy:oy + size], (m.clip_size, m.clip_size),
                                        mode="nearest"))
        embeds = m.clip.encode_image((torch.cat(pieces) - m.clip_mean) / m.clip_std)
        rows = z.shape[0]
        latent = (torch.abs(1 - torch.std(z, dim=1)).mean() + torch.abs(torch.mean(z, dim=1)).mean()
                  + 4 * torch.max(torch.square(z).mean(), torch.tensor(1.0)))
        for row in z:
            diffs = row - row.mean()
            scores = diffs / diffs.pow(2).mean().pow(.5)
            latent = latent + (scores.pow(4).mean() - 3).abs() / rows + scores.pow(3).mean().abs() / rows
        weakest = torch.topk(classes, largest=False, dim=1, k=classes.shape[1] - 1)[0]
        return latent + ((50 * weakest) ** 2).mean() - 100 * torch.cosine_similarity(self.text, embeds, dim=-1).mean()

    def step(self) -> None:
        self.loss().backward()
        self.optimizer.step()
        self.update()
        self.optimizer.zero_grad()


class Farm:
    def __init__(self, models, settings) -> None:
        self.sleeper = BigSleep(models, settings, PROMPT, 1)

    def step(self) -> None:
        self.sleeper.step()


class Reference:
    def __init__(self, models, cutouts) -> None:
        self.loop = bench_renderer.ReferenceLoop(models, cutouts, 0.07, 0.99, 10 ** 9, 1)

    def step(self) -> None:
        self.loop.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cutouts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=24, help="timed steps of each runner")
    parser.add_argument("--warm", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = spec_from_dict({"title": "bench", "scenes": [{"narration": "x"}]}, preset="tiny")
    models = load_models(spec.models, 128, torch.device("cpu"))
    library = build_tiny_biggan(128).eval().requires_grad_(False)  # spectral norm as the library has it
    settings = dataclasses.replace(spec.render, cutouts=args.cutouts, learning_rate=0.07, ema_decay=0.99)
    runners = {
        "bench_renderer's ReferenceLoop": Reference(dataclasses.replace(models, biggan=library), args.cutouts),
        "plain, lib-SN, lib-attn": Plain(models, library, args.cutouts, True),
        "plain, folded, lib-attn": Plain(models, models.biggan, args.cutouts, True),
        "plain, folded, farm-attn": Plain(models, models.biggan, args.cutouts, False),
        "farm": Farm(models, settings),
    }
    for _ in range(args.warm):
        for runner in runners.values():
            runner.step()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.steps):
        for name, runner in runners.items():
            start = time.thread_time()
            runner.step()
            times[name].append(time.thread_time() - start)
    print(f"tiny preset, {args.cutouts} cutouts, one thread, {args.steps} steps each in turn (thread CPU time)")
    farm = statistics.median(times["farm"])
    for name, values in times.items():
        quartiles = statistics.quantiles(values, n=4)
        print(f"{name:32s} median {statistics.median(values) * 1e3:6.1f} ms  (IQR {quartiles[0] * 1e3:.1f}-"
              f"{quartiles[2] * 1e3:.1f})  farm / this {farm / statistics.median(values):.3f}", flush=True)


if __name__ == "__main__":
    main()

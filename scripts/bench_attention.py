"""The generator's self-attention three ways, forward and backward, side by side in one run.

    library : pytorch-pretrained-biggan's SelfAttn module (explicit bmm, softmax, a transposed map)
    bmm     : farm.render.biggan.self_attention(fused=False): the same product, the map never transposed
    sdpa    : farm.render.biggan.self_attention(fused=True): torch's scaled_dot_product_attention
              (scale 1; on a CPU queries and keys zero-padded to the values' width, for the flash kernel)

Then one whole Big Sleep step (tiny preset) with the attention each way. The runs alternate call by
call, so a shared machine's drift hits all of them; each figure is a median. On the CPU the clock is
this thread's CPU time (one torch thread), on a GPU wall time after a synchronise.

    python scripts/bench_attention.py                 # this CPU
    python scripts/bench_attention.py --device cuda   # a GPU (adds bf16)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.render import biggan  # noqa: E402
from farm.render.biggan import self_attention, settle_spectral_norm  # noqa: E402

# (name, channels at the attention layer, its side in pixels)
SHAPES = [
    ("toy (64 px generator, attention at 32x32)", 32, 32),
    ("tiny (128 px, 8 channels per unit)", 16, 64),
    ("64 channels at 64x64", 64, 64),
    ("128 channels at 64x64", 128, 64),
    ("BigGAN-deep-512 (512 channels at 64x64)", 512, 64),
]


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.thread_time()


def interleaved(calls: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls taken in turn ``repeats`` times after one warm-up each."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock(device)
            call()
            times[name].append(clock(device) - start)
    return {name: statistics.median(values) for name, values in times.items()}


def attention_calls(channels: int, side: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
    from pytorch_pretrained_biggan.model import SelfAttn

    torch.manual_seed(0)
    layer = SelfAttn(channels)
    settle_spectral_norm(layer)
    layer = layer.eval().requires_grad_(False).to(device)
    layer.gamma.data.fill_(0.5)
    x = torch.randn(batch, channels, side, side, device=device).requires_grad_()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def run(forward):
        def call():
            with autocast:
                out = forward(x)
            out.float().sum().backward()
            x.grad = None
        return call

    return {"library": run(layer), "bmm": run(lambda t: self_attention(layer, t, fused=False)),
            "sdpa": run(lambda t: self_attention(layer, t, fused=True))}


def step_calls(device: torch.device, cutouts: int) -> dict:
    """A whole Big Sleep step at the tiny preset, the attention forced each way."""
    from farm.render.bigsleep import BigSleep
    from farm.render.models import load_models
    from farm.spec import spec_from_dict

    spec = spec_from_dict({"title": "bench", "scenes": [{"narration": "x"}]}, preset="tiny")
    models = load_models(spec.models, spec.video.size, device)
    settings = dataclasses.replace(spec.render, cutouts=cutouts, learning_rate=0.07, ema_decay=0.99,
                                   device=device.type)
    sleepers = {name: BigSleep(models, settings, "a furry white yeti tardigrade on a glacier", 1)
                for name in ("bmm", "sdpa")}
    original = biggan.fused_attention_wins

    def run(name):
        def call():
            biggan.fused_attention_wins = lambda x, value_channels: name == "sdpa"
            try:
                sleepers[name].step()
            finally:
                biggan.fused_attention_wins = original
        return call

    return {name: run(name) for name in sleepers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cutouts", type=int, default=32, help="cutouts of the whole-step comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "device": args.device, "threads": args.threads,
               "date": time.strftime("%Y-%m-%d"), "runs": []}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
    for dtype in dtypes:
        for name, channels, side in SHAPES:
            medians = interleaved(attention_calls(channels, side, args.batch, device, dtype), device, args.repeats)
            entry = {"shape": name, "channels": channels, "side": side, "batch": args.batch,
                     "dtype": str(dtype).removeprefix("torch."),
                     **{f"{k}_ms": round(v * 1e3, 2) for k, v in medians.items()},
                     "sdpa_vs_bmm": round(medians["sdpa"] / medians["bmm"], 3),
                     "chosen": "sdpa" if biggan.fused_attention_wins(
                         torch.empty(1, channels, side, side, device=device), channels // 2) else "bmm"}
            results["runs"].append(entry)
            print(json.dumps(entry), flush=True)
    medians = interleaved(step_calls(device, args.cutouts), device, args.repeats)
    entry = {"shape": f"whole step, tiny preset, {args.cutouts} cutouts",
             **{f"{k}_ms": round(v * 1e3, 2) for k, v in medians.items()},
             "sdpa_vs_bmm": round(medians["sdpa"] / medians["bmm"], 3)}
    results["runs"].append(entry)
    print(json.dumps(entry), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Time farm's Big Sleep renderer against a plain big-sleep-style loop, side by side in one run.

The reference loop is written here from the published algorithm (lucidrains/big-sleep's
``train_step``): a Python loop of ``F.interpolate`` resizes, one per cutout, the loss terms
spelled out row by row, Adam, a deep-copied EMA of the latents, and at every saved image
the reference's extra evaluation pass (BigGAN + cutouts + CLIP on the EMA latents, then
BigGAN again for the picture). Both use the same CLIP and BigGAN modules and cutout count.
Runs alternate (reference, farm, reference, farm, ...) so drift on a shared machine hits both; on a
CPU, within each round, frame by frame (the reference's frame, farm's, the reference's, ...).

    # this CPU: tiny widths, one thread
    python scripts/bench_renderer.py --cutouts 8 32
    # a GPU: full-size BigGAN-deep-512 and ViT-B/32 architectures, random weights
    python scripts/bench_renderer.py --device cuda --full --cutouts 128 --configs fp32 tf32 bf16 bf16+cl
    # several scenes in one batch (render.scenes_per_worker): aggregate scene-steps/s for N = 1, 2, 4, 8
    python scripts/bench_renderer.py --batch 1 2 4 8 --cutouts 32

With ``--batch``, each round times the plain loop and then N scenes (other prompts, other
seeds) stepped together for every N, all on the same device: aggregate scene-steps per second
(N / seconds per batched step), per scene-step against N = 1 and against the plain loop, the
achieved TFLOP/s (FLOPs of one step counted by torch's FlopCounterMode: matrix products and
convolutions, forward and backward) and the memory: on a GPU torch's peak, everywhere the
tensors one step keeps for its backward pass (what grows with N; the weights do not).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.render.biggan import build_biggan, build_tiny_biggan, fold_spectral_norm  # noqa: E402
from farm.render.bigsleep import BigSleep, step_together  # noqa: E402
from farm.render.models import Models, load_models  # noqa: E402
from farm.spec import spec_from_dict  # noqa: E402

PROMPT = "a furry white yeti tardigrade on a glacier"
PROMPTS = [PROMPT, "a frozen valley at night", "a ball of white fur sleeping", "a moss leaf on a glacier",
           "snow falling like stars", "a lantern in a blue cave", "an owl made of ice", "a red tent in a storm"]


# --- the reference loop ------------------------------------------------------------------------


class ReferenceLoop:
    """big-sleep's Imagine.train_step, written plainly (one prompt, loss_coef 100, nearest resize)."""

    def __init__(self, models: Models, cutouts: int, lr: float, decay: float, save_every: int, seed: int) -> None:
        self.m, self.cutouts, self.save_every = models, cutouts, save_every
        torch.manual_seed(seed)
        device = models.device
        self.latents = torch.nn.ParameterDict({
            "normu": torch.nn.Parameter(torch.zeros(models.num_latents, models.z_dim).normal_(std=1).to(device)),
            "cls": torch.nn.Parameter(
                torch.zeros(models.num_latents, models.num_classes).normal_(-3.9, 0.3).to(device)),
        })
        # EMA as big-sleep's ema.py: biased copy from zero, average = biased / (1 - decay^t).
        self.decay, self.accum = decay, torch.tensor(1.0)
        self.biased = copy.deepcopy(self.latents)
        self.average = copy.deepcopy(self.latents)
        for p in [*self.biased.values(), *self.average.values()]:
            p.detach_().zero_()
        self.ema_update()
        self.optimizer = torch.optim.Adam(self.latents.parameters(), lr)
        with torch.no_grad():
            tokens = models.tokenizer([PROMPT]).to(device)
            self.text = models.clip.encode_text(tokens)
        self.step_count = 0

    @torch.no_grad()
    def ema_update(self) -> None:
        self.accum *= self.decay
        for name, p in self.latents.items():
            self.biased[name].mul_(self.decay).add_((1 - self.decay) * p)
            self.average[name].copy_(self.biased[name]).div_(1 - self.accum)

    def forward(self, latents) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.m
        z, classes = latents["normu"], torch.sigmoid(latents["cls"])
        out = library_image(m.biggan, z, classes)
        width = out.shape[-1]
        pieces = []
        for _ in range(self.cutouts):
            size = int(width * torch.zeros(1).normal_(mean=.8, std=.3).clip(.5, .95))
            ox, oy = torch.randint(0, width - size + 1, (2,)).tolist()
            piece = out[:, :, ox:ox + size, oy:oy + size]
            pieces.append(F.interpolate(piece, (m.clip_size, m.clip_size), mode="nearest"))
        into = (torch.cat(pieces) - m.clip_mean) / m.clip_std
        image_embed = m.clip.encode_image(into)
        rows = z.shape[0]
        lat_loss = (torch.abs(1 - torch.std(z, dim=1)).mean() + torch.abs(torch.mean(z, dim=1)).mean()
                    + 4 * torch.max(torch.square(z).mean(), torch.tensor(1.0, device=z.device)))
        for array in z:
            diffs = array - array.mean()
            zscores = diffs / diffs.pow(2).mean().pow(0.5)
            lat_loss = lat_loss + (zscores.pow(4).mean() - 3).abs() / rows + zscores.pow(3).mean().abs() / rows
        cls_loss = ((50 * torch.topk(classes, largest=False, dim=1, k=classes.shape[1] - 1)[0]) ** 2).mean()
        sim_loss = -100 * torch.cosine_similarity(self.text, image_embed, dim=-1).mean()
        return out, lat_loss + cls_loss + sim_loss

    def step(self) -> None:
        _, loss = self.forward(self.latents)
        loss.backward()
        self.optimizer.step()
        self.ema_update()
        self.optimizer.zero_grad()
        self.step_count += 1
        if self.step_count % self.save_every == 0:
            self.save_image()

    @torch.no_grad()
    def save_image(self) -> None:
        self.forward(self.average)  # the reference scores the EMA image with CLIP at every save
        z, classes = self.average["normu"], torch.sigmoid(self.average["cls"])
        image = library_image(self.m.biggan, z, classes)
        image.cpu()


def library_image(biggan, z: torch.Tensor, classes: torch.Tensor, attention=None) -> torch.Tensor:
    """z (L, Z), class weights (L, C) -> (1, 3, H, W) in [0, 1], as big-sleep runs BigGAN: one latent
    row per block through the library's modules as they are, its SelfAttn included (farm's
    generate computes the attention its own way: farm.render.biggan.self_attention).
    ``attention(layer, x)``: another way to compute the SelfAttn layers (bench_plain_loops.py)."""
    gen = biggan.generator
    cond = torch.cat([z, biggan.embeddings(classes)], dim=1)  # (L, Z + E)
    x = gen.gen_z(cond[:1]).view(-1, 4, 4, 16 * gen.config.channel_width).permute(0, 3, 1, 2).contiguous()
    row = 1
    for layer in gen.layers:
        if layer.__class__.__name__ == "GenBlock":
            x = layer(x, cond[row:row + 1], 1.0)
            row += 1
        else:
            x = layer(x) if attention is None else attention(layer, x)
    x = torch.tanh(gen.conv_to_rgb(gen.relu(gen.bn(x, 1.0)))[:, :3])
    return (x + 1) / 2


# --- timing --------------------------------------------------------------------------------------


def clock(device: torch.device) -> float:
    """Wall time on a GPU (after a sync); on the CPU this thread's CPU time, which other work on a
    shared machine does not inflate (torch runs on this thread with one thread)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.thread_time()


def time_interleaved(makers: dict, device: torch.device, frames: int,
                     steps_per_frame: int) -> dict[str, tuple[float, float]]:
    """time_steps for several runs at once, their frames taken in turn (one of each, then the next):
    each run meets the same moments of a shared machine's load. ``makers``: name -> a function that
    applies the run's settings and returns its runner's maker."""
    runners = {}
    for name, setup in makers.items():
        runners[name] = setup()()
        for _ in range(steps_per_frame):  # warm-up
            runners[name].step_once()
        runners[name].frame()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in runners}
    for _ in range(frames):
        for name, runner in runners.items():
            makers[name]()  # its settings again (memory format, TF32) before its frame
            start = clock(device)
            for _ in range(steps_per_frame):
                runner.step_once()
            stepped = clock(device)
            runner.frame()
            end = clock(device)
            times[name][0].append((stepped - start) / steps_per_frame)
            times[name][1].append(end - start)
    return {name: (statistics.median(steps), statistics.median(frame)) for name, (steps, frame) in times.items()}


def time_steps(make, device: torch.device, frames: int, steps_per_frame: int) -> tuple[float, float]:
    """(seconds per step, seconds per frame) after one warm-up frame; a frame is its steps plus its image."""
    return time_interleaved({"run": lambda: make}, device, frames, steps_per_frame)["run"]


class Ours:
    def __init__(self, models, settings, seed):
        self.sleeper = BigSleep(models, settings, PROMPT, seed)

    def step_once(self):
        self.sleeper.step()

    def frame(self):
        self.sleeper.frame_image()


class Batched:
    """N scenes, each its own prompt and seed, stepped together (render.scenes_per_worker: N)."""

    def __init__(self, models, settings, n, seed):
        self.sleepers = [BigSleep(models, settings, PROMPTS[i % len(PROMPTS)], seed + i) for i in range(n)]

    def step_once(self):
        step_together(self.sleepers)

    def frame(self):
        for sleeper in self.sleepers:
            sleeper.frame_image()


def step_flops(runner) -> int:
    """FLOPs of one step (forward and backward), as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        runner.step_once()
    return counter.get_total_flops()


def saved_mib(runner) -> float:
    """MiB of the tensors one step keeps for its backward pass (each storage once): on a CPU, where
    torch keeps no peak, the memory that grows with the batch (the models' weights do not)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        runner.step_once()
    return sum(storages.values()) / 2 ** 20


def bench_batches(args, models, ref_models, device, results) -> None:
    """The plain loop and N scenes together for each N, alternating in every round."""
    for cutouts in args.cutouts:
        settings = settings_for(args.configs[0], cutouts, args.steps_per_frame)
        names = ["reference", *[f"N={n}" for n in args.batch]]
        makers = {"reference": lambda: Theirs(ref_models, cutouts, 1, args.steps_per_frame)}
        for n in args.batch:
            makers[f"N={n}"] = lambda n=n: Batched(models, settings, n, 1)
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        memory: dict[str, float] = {}
        for _ in range(args.rounds):
            for name in names:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                rows[name].append(time_steps(makers[name], device, args.frames, args.steps_per_frame))
                if device.type == "cuda":
                    memory[name] = max(memory.get(name, 0), torch.cuda.max_memory_allocated() / 2 ** 20)
        flops = {name: step_flops(makers[name]()) for name in names}
        saved = {name: saved_mib(makers[name]()) for name in names}
        ref_step = statistics.median(r[0] for r in rows["reference"])
        one_step = statistics.median(r[0] for r in rows[f"N={args.batch[0]}"]) / args.batch[0]
        for name in names:
            n = 1 if name == "reference" else int(name[2:])
            step = statistics.median(r[0] for r in rows[name])
            per_scene = step / n
            entry = {"cutouts": cutouts, "config": args.configs[0], "run": name, "scenes": n,
                     "batch_step_s": step, "scene_steps_per_s": n / step,
                     "per_scene_step_vs_first_n": per_scene / one_step,
                     "aggregate_vs_plain_loop": ref_step / per_scene,
                     "frame_s_per_scene": statistics.median(r[1] for r in rows[name]) / n,
                     "gflop_per_step": flops[name] / 1e9, "tflop_s": flops[name] / step / 1e12,
                     "peak_mib": memory.get(name), "saved_for_backward_mib": saved[name],
                     "spread": [r[0] / n for r in rows[name]]}
            if args.peak_tflops:
                entry["share_of_peak"] = entry["tflop_s"] / args.peak_tflops
            results["runs"].append(entry)
            print(json.dumps(entry), flush=True)


class Theirs:
    """The reference loop, its per-frame save included in frame()."""

    def __init__(self, models, cutouts, seed, steps_per_frame):
        # save_every larger than any run: the save is timed in frame(), not inside step().
        self.loop = ReferenceLoop(models, cutouts, lr=0.07, decay=0.99, save_every=10 ** 9, seed=seed)

    def step_once(self):
        self.loop.step()

    def frame(self):
        self.loop.save_image()


def reference_models(models: Models, args) -> Models:
    """The same networks as the library gives them: BigGAN's spectral norm recomputed at every call,
    as in big-sleep (farm folds it into the weights once, which gives the same images)."""
    biggan = build_biggan(args.size, channels=128) if args.full else build_tiny_biggan(128)
    biggan.eval().requires_grad_(False).to(models.device)
    return dataclasses.replace(models, biggan=biggan)


def build_models(args) -> Models:
    device = torch.device(args.device)
    if not args.full:
        spec = spec_from_dict({"title": "bench", "scenes": [{"narration": "x"}]}, preset="tiny")
        return load_models(spec.models, 128, device)
    import open_clip

    clip = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    biggan = build_biggan(args.size, channels=128)
    fold_spectral_norm(biggan.eval())
    for module in (clip, biggan):
        module.eval().requires_grad_(False).to(device)
    blocks = sum(1 for layer in biggan.generator.layers if layer.__class__.__name__ == "GenBlock")
    return Models(clip=clip, tokenizer=open_clip.get_tokenizer("ViT-B-32"), biggan=biggan, clip_size=224,
                  clip_mean=torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1).to(device),
                  clip_std=torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1).to(device),
                  resolution=args.size, num_latents=1 + blocks, z_dim=128, num_classes=1000, device=device)


def settings_for(config: str, cutouts: int, steps_per_frame: int):
    spec = spec_from_dict({"title": "bench", "scenes": [{"narration": "x"}]}, preset="tiny")
    parts = config.split("+")
    return dataclasses.replace(
        spec.render, cutouts=cutouts, steps_per_frame=steps_per_frame, learning_rate=0.07, ema_decay=0.99,
        precision=parts[0], channels_last="cl" in parts, compile="compile" in parts, device=spec.render.device)


def profile_ours(models, settings, steps: int) -> list[str]:
    """Where our step's time goes: the top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    runner = Ours(models, settings, seed=1)
    runner.step_once()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.step_once()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    return table.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="full-size BigGAN-deep and ViT-B/32 (random weights)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cutouts", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--configs", nargs="+", default=["fp32"],
                        help="fp32 | tf32 | bf16, +cl channels-last, +compile")
    parser.add_argument("--frames", type=int, default=4, help="timed frames per run")
    parser.add_argument("--steps-per-frame", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU times assume 1)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--batch", type=int, nargs="+",
                        help="scenes per batch to time against the plain loop (e.g. 1 2 4 8), first config only")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak TFLOP/s at the precision timed (e.g. an H200's dense bf16: 989), "
                             "to report the share of it achieved")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = build_models(args)
    ref_models = reference_models(models, args)
    results = {"machine": platform.node(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "device": args.device, "full": args.full,
               "date": time.strftime("%Y-%m-%d"), "runs": []}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    if args.batch:
        bench_batches(args, models, ref_models, device, results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    for cutouts in args.cutouts:
        rows: dict[str, list[tuple[float, float]]] = {"reference": []}
        memory: dict[str, int] = {}

        def setup(name, cutouts=cutouts):
            """A run's global settings applied; its runner's maker returned."""
            if name == "reference":
                # The reference runs with torch's defaults (cuDNN may use TF32, matmuls do not).
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
                models.clip.to(memory_format=torch.contiguous_format)
                models.memory_format = torch.contiguous_format
                return lambda: Theirs(ref_models, cutouts, 1, args.steps_per_frame)
            settings = settings_for(name, cutouts, args.steps_per_frame)
            return lambda: Ours(models, settings, 1)

        for _ in range(args.rounds):
            if device.type == "cpu":
                # Frames in turn: runs of seconds one after the other met different loads on this
                # shared machine (docs/BENCHMARKS.md); a GPU's own peak memory needs a run alone.
                names = ["reference", *args.configs]
                timed = time_interleaved({name: lambda name=name: setup(name) for name in names}, device,
                                         args.frames, args.steps_per_frame)
                for name in names:
                    rows.setdefault(name, []).append(timed[name])
                continue
            for name in ["reference", *args.configs]:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                make = setup(name)
                rows.setdefault(name, []).append(time_steps(make, device, args.frames, args.steps_per_frame))
                if device.type == "cuda":
                    memory[name] = max(memory.get(name, 0), torch.cuda.max_memory_allocated())
        ref_step = statistics.median(r[0] for r in rows["reference"])
        ref_frame = statistics.median(r[1] for r in rows["reference"])
        for name, runs in rows.items():
            step = statistics.median(r[0] for r in runs)
            frame = statistics.median(r[1] for r in runs)
            entry = {"cutouts": cutouts, "config": name, "step_s": step, "frame_s": frame,
                     "steps_per_s": 1 / step, "step_ratio": step / ref_step, "frame_ratio": frame / ref_frame,
                     "speedup": ref_step / step}
            if name in memory:
                entry["peak_gib"] = memory[name] / 2 ** 30
            results["runs"].append(entry)
            print(json.dumps(entry), flush=True)
    if args.profile:
        results["profile"] = profile_ours(
            models, settings_for(args.configs[0], args.cutouts[-1], args.steps_per_frame), 8)
        print("\n".join(results["profile"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

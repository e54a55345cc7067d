"""Checks that need a CUDA GPU (skipped without one): bf16 agrees with fp32, deterministic mode repeats."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from farm.render.bigsleep import BigSleep
from farm.render.cutouts import cutout_boxes
from farm.render.models import load_models
from farm.spec import spec_from_dict

from conftest import tiny_film

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# bf16 autocast may move the total loss by at most this fraction of the CLIP term's scale
# (clip_weight): the pictures are steered by the same loss within 1%.
BF16_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def cuda_models():
    spec = spec_from_dict(tiny_film(), overrides=["render.cutouts=16", "render.device=cuda"])
    return spec, load_models(spec.models, spec.video.size, torch.device("cuda"))


def test_bf16_loss_agrees_with_fp32(cuda_models):
    spec, models = cuda_models
    results = {}
    for precision in ("fp32", "bf16"):
        settings = dataclasses.replace(spec.render, precision=precision)
        sleeper = BigSleep(models, settings, "a hairy tardigrade in the snow", seed=3)
        boxes = cutout_boxes(settings, settings.cutouts, models.resolution, torch.Generator().manual_seed(5))
        results[precision] = {k: v.item() for k, v in sleeper.losses(boxes).items()}
    fp32, bf16 = results["fp32"], results["bf16"]
    print("fp32", fp32, "bf16", bf16)
    assert abs(fp32["loss"] - bf16["loss"]) <= BF16_TOLERANCE * spec.render.clip_weight
    assert abs(fp32["similarity"] - bf16["similarity"]) <= BF16_TOLERANCE


@pytest.mark.parametrize("resample", ["nearest", "bilinear", "area"])
def test_deterministic_mode_repeats_bit_for_bit(cuda_models, resample):
    spec, models = cuda_models
    settings = dataclasses.replace(spec.render, deterministic=True, cutout_resample=resample)
    runs = []
    for _ in range(2):
        sleeper = BigSleep(models, settings, "a frozen valley at night", seed=9)
        for _ in range(3):
            sleeper.step()
        runs.append(sleeper.z.detach().clone())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_attention_agrees_with_the_explicit_product_on_cuda(dtype):
    # On a GPU the generator's attention goes through SDPA (fused_attention_wins), at the full-size
    # generator's widths: 64 channels for queries and keys, 256 for values, 64x64 pixels.
    from farm.render.biggan import attend, fused_attention_wins

    gen = torch.Generator(device="cuda").manual_seed(0)
    theta, phi = (torch.randn(2, 64, n, device="cuda", generator=gen) / 8 for n in (4096, 1024))
    g = torch.randn(2, 256, 1024, device="cuda", generator=gen)
    assert fused_attention_wins(theta, 256)
    outs, grads = [], []
    for fused in (False, True):
        q = theta.to(dtype).requires_grad_()
        out = attend(q, phi.to(dtype), g.to(dtype), fused)
        out.float().square().mean().backward()
        outs.append(out.float())
        grads.append(q.grad.float())
    tolerance = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outs[1], outs[0], atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(grads[1], grads[0], atol=tolerance, rtol=tolerance)
    torch.use_deterministic_algorithms(True)
    try:
        assert not fused_attention_wins(theta, 256)  # deterministic mode keeps the explicit product
    finally:
        torch.use_deterministic_algorithms(False)

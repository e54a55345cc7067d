"""Big Sleep's loss terms against numbers worked out by hand (big-sleep's published formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from farm.render.bigsleep import EMA, Latents
from farm.render.losses import class_loss, class_vectors, clip_loss, differentiable_topk, latent_loss


def test_latent_loss_one_row_by_hand():
    # z = [1, -1, 1, -1]: mean 0; unbiased std sqrt(4/3) -> |1 - 1.1547| = 0.1547;
    # mean(z^2) = 1 -> 4 x max(1, 1) = 4; biased std 1 -> z-scores +-1: skew 0, kurtosis 1 - 3 = -2.
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    assert latent_loss(z).item() == pytest.approx(0.1547005 + 4 + 2, abs=1e-5)


def test_latent_loss_skewed_row_by_hand():
    # z = [0, 0, 0, 4]: mean 1 (|mean| = 1); unbiased std 2 (|1 - 2| = 1); mean(z^2) = 4 -> 16;
    # biased std sqrt(3): z-scores (-1, -1, -1, 3) / sqrt(3): skew 4.6188 / 4 = 1.1547,
    # kurtosis (3 x 1/9 + 9) / 4 - 3 = -0.6667.
    z = torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    assert latent_loss(z).item() == pytest.approx(1 + 1 + 16 + 1.1547005 + 0.6666667, abs=1e-5)


def test_latent_loss_averages_rows_by_hand():
    # Row 1 as above (|1 - std| 0.1547, kurtosis -2); row 2 = [2, 0, 0, -2]: unbiased std 1.63299
    # (|1 - std| 0.63299), biased std sqrt(2), z-scores (1.414, 0, 0, -1.414): kurtosis 2 - 3 = -1.
    # mean(z^2) over both rows = 12 / 8 = 1.5 -> 6. Rows averaged: 0.39385 + 6 + (2 + 1) / 2.
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 0.0, 0.0, -2.0]])
    assert latent_loss(z).item() == pytest.approx(0.3938469 + 6 + 1.5, abs=1e-5)


def test_class_loss_by_hand():
    # All but the largest weight of the row, times 50, squared, averaged: (5^2 + 10^2) / 2.
    assert class_loss(torch.tensor([[0.5, 0.1, 0.2]])).item() == pytest.approx(62.5)


def test_clip_loss_weight_by_hand():
    # cos((3, 4), (3, 4)) = 1, cos((3, 4), (4, 3)) = 24/25: mean 0.98; loss -100 x 0.98.
    images = torch.tensor([[3.0, 4.0], [4.0, 3.0]])
    loss, similarity = clip_loss(images, torch.tensor([[3.0, 4.0]]), torch.tensor([1.0]), clip_weight=100.0)
    assert loss.item() == pytest.approx(-98.0, abs=1e-4)
    assert similarity.tolist() == pytest.approx([0.98])
    loss_1, _ = clip_loss(images, torch.tensor([[3.0, 4.0]]), torch.tensor([1.0]), clip_weight=1.0)
    assert loss_1.item() == pytest.approx(-0.98, abs=1e-6)


def test_negative_prompt_pushes_away_by_hand():
    # Cutouts (1, 0) and (0, 1): towards (1, 0) mean cos 0.5; away from (-1, 0), weight -1, mean cos -0.5:
    # -100 x (1 x 0.5 + (-1) x (-0.5)) = -100.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, _ = clip_loss(images, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([1.0, -1.0]), 100.0)
    assert loss.item() == pytest.approx(-100.0, abs=1e-4)


def test_differentiable_topk_by_hand():
    # softmax(0, ln 2, ln 4) = (1, 2, 4) / 7: take 4/7 at class 2; then softmax(0, ln 2) = (1/3, 2/3): take 2/3.
    logits = torch.tensor([[0.0, math.log(2), math.log(4)]])
    picked = differentiable_topk(logits, k=2, temperature=1.0)
    assert picked[0].tolist() == pytest.approx([0.0, 2 / 3, 4 / 7], abs=1e-6)


def test_topk_class_vectors_keep_exactly_max_classes():
    logits = -3.9 + 0.3 * torch.randn(11, 1000, generator=torch.Generator().manual_seed(1))
    vectors = class_vectors(logits.requires_grad_(True), max_classes=5, temperature=2.0)
    assert ((vectors != 0).sum(dim=1) == 5).all()
    vectors.sum().backward()  # the values keep their gradient
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.equal(class_vectors(logits, None, 2.0), torch.sigmoid(logits))


def ema_run(mode: str, decay: float, values: list[float]) -> list[float]:
    start = Latents(torch.tensor([[values[0]]]), torch.tensor([[values[0]]]))
    ema = EMA(start, decay, mode)
    averages = [ema.average.z.item()]
    for value in values[1:]:
        ema.update(Latents(torch.tensor([[value]]), torch.tensor([[value]])))
        averages.append(ema.average.z.item())
    return averages


def test_bias_corrected_ema_by_hand():
    # decay 0.5, sequence 2, 4, 8. zero: biased 1, 2.5, 5.25 over 1 - 0.5^(t+1) = 0.5, 0.75, 0.875.
    assert ema_run("zero", 0.5, [2.0, 4.0, 8.0]) == pytest.approx([2.0, 3.3333333, 6.0])
    # initial: starts at 2, uncorrected: 0.5 x 2 + 0.5 x 4 = 3, 0.5 x 3 + 0.5 x 8 = 5.5.
    assert ema_run("initial", 0.5, [2.0, 4.0, 8.0]) == pytest.approx([2.0, 3.0, 5.5])


def test_bias_corrected_ema_forgets_the_start():
    # Starting latents 1, then 20 steps at 0: big-sleep keeps 0.01 x 0.99^20 / (1 - 0.99^21) = 0.043 of
    # the start; an average that starts at the start keeps 0.99^20 = 0.818.
    values = [1.0] + [0.0] * 20
    assert ema_run("zero", 0.99, values)[-1] == pytest.approx(0.042986, abs=1e-5)
    assert ema_run("initial", 0.99, values)[-1] == pytest.approx(0.817907, abs=1e-5)

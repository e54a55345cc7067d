"""Batched cutouts: the same pixels as big-sleep's loop of F.interpolate calls, one crop at a time."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from farm.render.cutouts import cutout_boxes, take_cutouts
from farm.spec import RenderSpec

BOXES = torch.tensor([[0, 0, 64], [10, 20, 100], [3, 5, 121], [60, 60, 64], [1, 0, 127], [0, 0, 128], [5, 9, 37]])


def loop_of_interpolates(image, boxes, out, mode):
    extra = {"align_corners": False} if mode == "bilinear" else {}
    return torch.cat([F.interpolate(image[:, :, t:t + s, left:left + s], size=(out, out), mode=mode, **extra)
                      for t, left, s in boxes.tolist()])


@pytest.mark.parametrize("out", [64, 224])
@pytest.mark.parametrize("mode", ["nearest", "bilinear", "area"])
def test_batched_cutouts_match_one_interpolate_per_crop(mode, out):
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    ours = take_cutouts(image, BOXES, out, mode)
    theirs = loop_of_interpolates(image, BOXES, out, mode)
    assert ours.shape == (len(BOXES), 3, out, out)
    if mode == "nearest":
        assert torch.equal(ours, theirs)
    else:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_batched_cutouts_carry_gradients_like_the_loop():
    image = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (take_cutouts, loop_of_interpolates):
        leaf = image.clone().requires_grad_(True)
        (fn(leaf, BOXES, 64, "bilinear") * torch.linspace(0, 1, 64)).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_cutout_sizes_follow_big_sleeps_distribution():
    settings = RenderSpec()
    boxes = cutout_boxes(settings, 4000, 256, torch.Generator().manual_seed(2))
    sizes, tops, lefts = boxes[:, 2], boxes[:, 0], boxes[:, 1]
    # int(256 x clip(normal(0.8, 0.3), 0.5, 0.95)): between 128 and 243, and often at the clip bounds.
    assert sizes.min() == 128 and sizes.max() == 243
    assert (sizes == 243).float().mean() > 0.25  # P(normal(0.8, 0.3) > 0.95) = 0.31
    assert ((tops >= 0) & (tops + sizes <= 256) & (lefts >= 0) & (lefts + sizes <= 256)).all()


def test_center_bias_pulls_cutouts_to_the_middle():
    plain = cutout_boxes(RenderSpec(), 4000, 256, torch.Generator().manual_seed(3))
    biased = cutout_boxes(dataclasses.replace(RenderSpec(), center_bias=True), 4000, 256,
                          torch.Generator().manual_seed(3))

    def off_centre(boxes):
        centre = boxes[:, :2].float() + boxes[:, 2:3].float() / 2
        return (centre - 128).abs().mean().item()

    assert off_centre(biased) < 0.8 * off_centre(plain)
    assert ((biased[:, :2] >= 0) & (biased[:, :2] + biased[:, 2:3] <= 256)).all()

"""farm/render/biggan.py: the generator's self-attention, by hand and against the library's module.

Both ways of computing it are tested: the explicit product and softmax (``fused=False``) and
torch's scaled_dot_product_attention (``fused=True``; on a CPU with queries and keys padded to the
values' width). Which one a render uses is chosen per device (``fused_attention_wins``).
"""

from __future__ import annotations

import math

import pytest
import torch

from farm.render.biggan import attend, fused_attention_wins, self_attention, settle_spectral_norm

BOTH = pytest.mark.parametrize("fused", [False, True], ids=["bmm", "sdpa"])


@BOTH
def test_attention_by_hand(fused):
    # Two queries, two keys of 2 channels (a 1/sqrt(2) scale, SDPA's default, would change every
    # number below), values of 4 channels. Scores theta_n . phi_m:
    #   query 1 (1, 1): key 1 (0, 0) -> 0, key 2 (ln 3, 0) -> ln 3; softmax (1, 3) / 4 = (0.25, 0.75)
    #   query 2 (2, 1): 0 and 2 ln 3 = ln 9;                     softmax (1, 9) / 10 = (0.1, 0.9)
    theta = torch.tensor([[[1.0, 2.0], [1.0, 1.0]]])  # (B=1, Dk=2, N=2): column n is query n
    phi = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0]]])  # (1, 2, M=2)
    g = torch.tensor([[[4.0, 8.0], [0.0, 10.0], [1.0, 1.0], [-2.0, 2.0]]])  # (1, Dv=4, M=2)
    # out[:, n] = sum_m p[n, m] g[:, m]:
    #   query 1: 0.25 (4, 0, 1, -2) + 0.75 (8, 10, 1, 2) = (7, 7.5, 1, 1)
    #   query 2: 0.1 (4, 0, 1, -2) + 0.9 (8, 10, 1, 2)   = (7.6, 9, 1, 1.6)
    expected = torch.tensor([[[7.0, 7.6], [7.5, 9.0], [1.0, 1.0], [1.0, 1.6]]])
    torch.testing.assert_close(attend(theta, phi, g, fused), expected, atol=1e-5, rtol=1e-5)


def library_attention(channels: int):
    from pytorch_pretrained_biggan.model import SelfAttn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        layer = SelfAttn(channels)
        settle_spectral_norm(layer)  # random power-iteration vectors would scale the scores by hundreds
    layer.eval().requires_grad_(False)
    layer.gamma.data.fill_(0.7)  # a new layer's is 0, which would hide the attention
    return layer


@BOTH
@pytest.mark.parametrize("channels", [16, 64, 256])
def test_self_attention_is_the_librarys(fused, channels):
    # The same sums as pytorch-pretrained-biggan's SelfAttn, forward and backward (the gradient
    # is what optimises the latents).
    layer = library_attention(channels)
    x = torch.randn(2, channels, 16, 16, generator=torch.Generator().manual_seed(0))
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = self_attention(layer, mine, fused=fused)
    reference = layer(theirs)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-4)


@BOTH
def test_attention_of_a_batch_is_each_alone_bit_for_bit(fused):
    # Scenes stepped together share the generator's passes: none may change another's numbers.
    gen = torch.Generator().manual_seed(2)
    theta, phi, g = torch.randn(3, 2, 256, generator=gen), torch.randn(3, 2, 64, generator=gen), \
        torch.randn(3, 8, 64, generator=gen)
    together = attend(theta, phi, g, fused)
    alone = torch.cat([attend(theta[i:i + 1], phi[i:i + 1], g[i:i + 1], fused) for i in range(3)])
    assert torch.equal(together, alone)


def test_the_cpu_uses_the_fused_kernel_for_large_maps_of_narrow_values_only():
    # docs/BENCHMARKS.md: on a CPU padded SDPA is faster at 64x64 pixels up to 64 value channels (the
    # tiny generator's 8), the explicit product for wider values (the full-size generator's 256) and
    # as fast at 32x32 (the toy generator's, which keeps the explicit product).
    at_64, at_32 = torch.zeros(1, 16, 64, 64), torch.zeros(1, 32, 32, 32)
    assert fused_attention_wins(at_64, 8) and fused_attention_wins(at_64, 64)
    assert not fused_attention_wins(at_64, 128) and not fused_attention_wins(at_64, 256)
    assert not fused_attention_wins(at_32, 16)

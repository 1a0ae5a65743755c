# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.networks.blocks.cdc (Eq. 3 of Lin et al., IJCAI 2024)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_umed.networks.blocks import CDCConvolution, CentralDifferenceConv


def eq3_reference(layer: CentralDifferenceConv, x: torch.Tensor) -> torch.Tensor:
    """Direct evaluation of Eq. 3 with explicit loops over output positions and kernel offsets (zero padding)."""
    w_v = layer.weight_vanilla.detach().double()
    w_c = layer.weight_diff.detach().double()
    x = x.double()
    b, c_in, *size = x.shape
    k, s, d, pad = layer.kernel_size, layer.stride, layer.dilation, layer.padding
    out_size = [(n + 2 * p - dd * (kk - 1) - 1) // ss + 1 for n, p, dd, kk, ss in zip(size, pad, d, k, s)]
    g = layer.groups
    cin_g, cout_g = c_in // g, layer.out_channels // g
    out = torch.zeros(b, layer.out_channels, *out_size, dtype=torch.float64)

    def sample(pos):  # f_in(pos) for all (batch, channel), zero outside the input
        if all(0 <= q < n for q, n in zip(pos, size)):
            return x[(slice(None), slice(None), *pos)]
        return torch.zeros(b, c_in, dtype=torch.float64)

    for o in itertools.product(*[range(n) for n in out_size]):
        # window start o*s - pad; centre p at offset d*(k-1)/2 from the start
        p = [oo * ss - pp + dd * (kk - 1) // 2 for oo, ss, pp, dd, kk in zip(o, s, pad, d, k)]
        f_p = sample(p)
        acc = torch.zeros(b, layer.out_channels, dtype=torch.float64)
        for kidx in itertools.product(*[range(kk) for kk in k]):
            n_off = [(ki - (kk - 1) // 2) * dd for ki, kk, dd in zip(kidx, k, d)]
            f_pn = sample([pp + nn_ for pp, nn_ in zip(p, n_off)])
            for gi in range(g):
                ci, co = slice(gi * cin_g, (gi + 1) * cin_g), slice(gi * cout_g, (gi + 1) * cout_g)
                wv = w_v[(co, slice(None), *kidx)]  # [cout_g, cin_g]
                wc = w_c[(co, slice(None), *kidx)]
                acc[:, co] += f_pn[:, ci] @ wv.T + layer.theta * ((f_pn[:, ci] - f_p[:, ci]) @ wc.T)
        if layer.bias is not None:
            acc += layer.bias.detach().double()
        out[(slice(None), slice(None), *o)] = acc
    return out.float()


CASES = [
    # spatial_dims, size, kwargs
    (2, (7, 6), {}),
    (2, (8, 7), {"stride": 2}),
    (2, (7, 7), {"stride": 2, "theta": 0.7, "bias": False}),
    (2, (8, 8), {"dilation": 2, "groups": 2}),
    (2, (6, 7), {"padding": 0}),
    (2, (6, 6), {"padding": 2, "stride": 2}),
    (2, (7, 8), {"kernel_size": (3, 5), "stride": (1, 2)}),
    (3, (5, 4, 5), {}),
    (3, (6, 5, 6), {"stride": 2}),
    (3, (5, 5, 5), {"stride": 2, "padding": 0, "theta": 0.5}),
]


@pytest.mark.parametrize("spatial_dims,size,kwargs", CASES)
def test_matches_loop_reference_and_fused(spatial_dims, size, kwargs):
    layer = CentralDifferenceConv(spatial_dims, 4, 6, **kwargs)
    with torch.no_grad():  # non-zero bias in any case
        if layer.bias is not None:
            layer.bias.normal_()
    x = torch.randn(2, 4, *size)
    out = layer(x)
    ref = eq3_reference(layer, x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    fused = layer.fuse()
    assert isinstance(fused, (nn.Conv2d, nn.Conv3d))
    torch.testing.assert_close(fused(x), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_same_padding_shape(spatial_dims, stride):
    layer = CentralDifferenceConv(spatial_dims, 2, 3, stride=stride)
    x = torch.randn(1, 2, *([8] * spatial_dims))
    assert layer(x).shape == (1, 3, *([8 // stride] * spatial_dims))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_constant_input_gives_vanilla_conv(spatial_dims):
    conv = getattr(F, f"conv{spatial_dims}d")
    x = torch.full((2, 3, *([6] * spatial_dims)), 0.37)
    # no padding: every window is inside the input, the difference branch vanishes everywhere
    layer = CentralDifferenceConv(spatial_dims, 3, 5, padding=0)
    torch.testing.assert_close(layer(x), conv(x, layer.weight_vanilla, layer.bias), atol=1e-6, rtol=0)
    # "same" padding: equal away from the zero-padded border
    layer = CentralDifferenceConv(spatial_dims, 3, 5)
    interior = (slice(None), slice(None), *([slice(1, -1)] * spatial_dims))
    vanilla = conv(x, layer.weight_vanilla, layer.bias, padding=1)
    torch.testing.assert_close(layer(x)[interior], vanilla[interior], atol=1e-6, rtol=0)
    assert not torch.allclose(layer(x), vanilla)  # at the border the padded zeros do differ from the centre


def test_gradients_reach_both_kernels():
    layer = CentralDifferenceConv(2, 2, 3, stride=2)
    layer(torch.randn(2, 2, 8, 8)).square().sum().backward()
    for p in (layer.weight_vanilla, layer.weight_diff, layer.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_theta_zero_is_vanilla_and_validation():
    layer = CentralDifferenceConv(2, 2, 3, theta=0.0)
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight_vanilla, layer.bias, padding=1))
    with pytest.raises(ValueError):
        CentralDifferenceConv(2, 2, 3, kernel_size=2)
    with pytest.raises(ValueError):
        CentralDifferenceConv(2, 3, 3, groups=2)


def test_cdc_convolution_block():
    block = CDCConvolution(3, 2, 4, strides=2, dropout=0.1)
    assert isinstance(block.conv, CentralDifferenceConv)
    assert block(torch.randn(2, 2, 8, 8, 8)).shape == (2, 4, 4, 4, 4)
    assert len(CDCConvolution(2, 2, 4, conv_only=True)) == 1


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "padding": 0}, {"dilation": 2, "groups": 2, "theta": 0.7}])
def test_gradients_match_two_branch_form(kwargs):
    """The single fused convolution back-propagates into w_v and w_c exactly as the two-branch form of Eq. 3."""
    layer = CentralDifferenceConv(2, 4, 6, **kwargs)
    x = torch.randn(2, 4, 9, 8, requires_grad=True)
    grad_out = torch.randn_like(layer(x))
    grads = torch.autograd.grad((layer(x) * grad_out).sum(), (x, layer.weight_vanilla, layer.weight_diff))

    def two_branch(x, w_v, w_c):
        conv = lambda w, b=None: F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
        # f(p) under the centre tap: a kernel that is one at the centre, zero elsewhere, per (out, in) pair
        centre = torch.zeros_like(w_c)
        centre[..., w_c.shape[-2] // 2, w_c.shape[-1] // 2] = w_c.sum(dim=(-2, -1))
        return conv(w_v, layer.bias) + layer.theta * (conv(w_c) - conv(centre))

    ref = torch.autograd.grad(
        (two_branch(x, layer.weight_vanilla, layer.weight_diff) * grad_out).sum(),
        (x, layer.weight_vanilla, layer.weight_diff),
    )
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Central difference convolution (Eq. 3): one convolution with the fused kernel vs. the three-convolution form.

    python benchmarks/cdc_speed.py [--size 96] [--batch 16] [--iters 20] [--threads 2]

``CentralDifferenceConv`` evaluates Eq. 3 as a single convolution with the kernel ``w_v + theta * w_c`` whose
centre tap is reduced by ``theta * sum(w_c)`` (built differentiably in every forward pass). The earlier form ran
three convolutions per layer: ``conv(x, w_v) + theta * (conv(x, w_c) - conv(x, sum(w_c) as a 1x1 kernel))``.
This script times forward (no grad) and forward + backward of the protect job's contour generator (CDC U-Net, channels 8-64, as in
``bundles/umed/configs/protect.json``) with both forms, after checking that they agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F

from monai_umed.networks.blocks import CentralDifferenceConv
from monai_umed.networks.nets import CDCUNet


def three_conv_forward(self: CentralDifferenceConv, x: torch.Tensor) -> torch.Tensor:
    """Eq. 3 as three convolutions (the form before the fused kernel; same-padding layers only)."""
    conv = getattr(F, f"conv{self.spatial_dims}d")
    out = conv(x, self.weight_vanilla, self.bias, self.stride, self.padding, self.dilation, self.groups)
    diff = conv(x, self.weight_diff, None, self.stride, self.padding, self.dilation, self.groups)
    w_sum = self.weight_diff.sum(dim=tuple(range(2, 2 + self.spatial_dims)), keepdim=True)
    return out + self.theta * (diff - conv(x, w_sum, None, self.stride, 0, 1, self.groups))


def time_forms(net: torch.nn.Module, x: torch.Tensor, iters: int, backward: bool) -> tuple[float, float]:
    """Median seconds per call of the fused and the three-convolution form, measured alternately (less drift)."""

    def once() -> float:
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        if backward:
            net(x).square().mean().backward()
        else:
            with torch.no_grad():
                net(x)
        return time.perf_counter() - t0

    fused, three = [], []
    for i in range(iters + 1):
        t_f = once()
        with mock.patch.object(CentralDifferenceConv, "forward", three_conv_forward):
            t_t = once()
        if i:  # the first round is a warm-up
            fused.append(t_f)
            three.append(t_t)
    return statistics.median(fused), statistics.median(three)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = CDCUNet(2, 1, 1, channels=(8, 16, 32, 64), strides=(2, 2, 2))
    x = torch.rand(args.batch, 1, args.size, args.size)
    with torch.no_grad():
        fused = net(x)
        with mock.patch.object(CentralDifferenceConv, "forward", three_conv_forward):
            three = net(x)
    print(f"max |fused - three-conv| = {(fused - three).abs().max().item():.2e}")
    for backward in (False, True):
        t_fused, t_three = time_forms(net, x, args.iters, backward)
        what = "forward + backward" if backward else "forward (no grad)"
        print(
            f"CDC U-Net (channels 8-64), batch {args.batch} x 1 x {args.size} x {args.size}, {args.threads} threads, "
            f"{what}, median of {args.iters}: fused kernel {t_fused * 1e3:.1f} ms, "
            f"three convolutions {t_three * 1e3:.1f} ms ({t_three / t_fused:.2f}x)"
        )

if __name__ == "__main__":
    main()

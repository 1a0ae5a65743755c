# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.networks.nets.cdc_unet (generator F_c, Fig. 2b of Lin et al., IJCAI 2024)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_umed.networks.blocks import CentralDifferenceConv
from monai_umed.networks.nets import CDCUNet

CASES = [
    # spatial_dims, channels(in=out), size, net kwargs
    (2, 1, (16, 16), {"channels": (4, 8), "strides": (2,)}),
    (2, 3, (16, 24), {"channels": (4, 8), "strides": (2,)}),
    (2, 1, (16, 32), {"channels": (4, 8, 8), "strides": (2, 2), "theta": 0.7}),
    (2, 3, (24, 24), {"channels": (4, 8, 8), "strides": (2, 3), "norm": "BATCH", "act": "RELU", "dropout": 0.1}),
    (3, 1, (16, 16, 16), {"channels": (4, 8), "strides": (2,)}),
    (3, 3, (8, 16, 16), {"channels": (2, 4, 4), "strides": (2, 2)}),
]


@pytest.mark.parametrize("spatial_dims,chans,size,kwargs", CASES)
def test_shape_encoder_and_backward(spatial_dims, chans, size, kwargs):
    net = CDCUNet(spatial_dims, chans, chans, **kwargs)
    x = torch.rand(2, chans, *size)
    out = net(x)
    assert out.shape == x.shape
    # every encoder convolution is CDC, and there is no vanilla convolution in the encoder at all
    convs = net.encoder_convs()
    assert len(convs) == 2 * len(net.channels)
    assert all(isinstance(c, CentralDifferenceConv) for c in convs)
    assert not any(isinstance(m, nn.modules.conv._ConvNd) for m in net.encoder.modules())
    out.square().mean().backward()
    for c in convs:
        assert c.weight_vanilla.grad is not None and c.weight_diff.grad.abs().sum() > 0
    assert net.head.weight.grad.abs().sum() > 0


def test_output_unbounded_and_out_channels():
    net = CDCUNet(2, 1, 2, channels=(4, 8), strides=(2,))
    with torch.no_grad():
        net.head.weight.mul_(1e3)
    out = net(torch.rand(1, 1, 16, 16))
    assert out.shape == (1, 2, 16, 16) and out.abs().max() > 1.0


def test_invalid_config():
    with pytest.raises(ValueError):
        CDCUNet(2, 1, 1, channels=(4, 8), strides=(2, 2))
    with pytest.raises(ValueError):
        CDCUNet(2, 1, 1, channels=(4,), strides=())

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.networks.nets.transunet."""

from __future__ import annotations

import pytest
import torch

from monai_umed.networks.nets.transunet import TRANSUNET_PAPER_KWARGS, TransUNet

TINY = {"cnn_channels": (4, 8, 16), "hidden_size": 16, "mlp_dim": 32, "num_layers": 1, "num_heads": 2}


@pytest.mark.parametrize("in_channels,out_channels,size", [(1, 2, 32), (3, 2, 64), (1, 3, 96), (3, 1, (32, 64))])
def test_shape_and_backward(in_channels, out_channels, size):
    net = TransUNet(in_channels=in_channels, out_channels=out_channels, img_size=size, **TINY)
    hw = (size, size) if isinstance(size, int) else size
    x = torch.rand(2, in_channels, *hw, requires_grad=True)
    y = net(x)
    assert y.shape == (2, out_channels, *hw)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_patch_size_and_decoder_layout():
    net = TransUNet(img_size=64, patch_size=2, **TINY)  # 4 upsamplings: 1/16 -> 1
    assert net.grid_size == (4, 4)
    assert net._skip_index == [None, 1, 0, None]
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    default = TransUNet(img_size=96)
    assert [b.conv2.conv.out_channels for b in default.decoder] == [32, 16, 8]
    assert default._skip_index == [1, 0, None]


def test_default_is_small():
    n_params = sum(p.numel() for p in TransUNet(img_size=96).parameters())
    assert n_params < 1_000_000


def test_paper_like_config():
    assert TRANSUNET_PAPER_KWARGS["hidden_size"] == 768 and TRANSUNET_PAPER_KWARGS["num_layers"] == 12
    # same layout, shrunken width/depth so it builds fast: checks the kwargs are accepted and overridable
    net = TransUNet.paper_like(in_channels=3, img_size=64, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=12,
                               cnn_channels=(4, 8, 8, 16), head_channels=8, decoder_channels=(8, 8, 8, 4))
    assert net.grid_size == (4, 4)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("size", [100, 36, (64, 60)])
def test_rejects_indivisible_img_size(size):
    with pytest.raises(ValueError, match="divisible by the total downsampling 8"):
        TransUNet(img_size=size, **TINY)


def test_rejects_wrong_input_size_and_bad_args():
    net = TransUNet(img_size=32, **TINY)
    with pytest.raises(ValueError, match="img_size"):
        net(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="spatial_dims=2"):
        TransUNet(spatial_dims=3, img_size=32, **TINY)
    with pytest.raises(ValueError, match="power of two"):
        TransUNet(img_size=48, patch_size=3, **TINY)
    with pytest.raises(ValueError, match="decoder_channels needs 3"):
        TransUNet(img_size=32, decoder_channels=(8, 4), **TINY)

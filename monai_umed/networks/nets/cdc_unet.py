# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""CDC U-Net: the encoder-decoder generator F_c of UMed's contour perturbator (Fig. 2b of Lin et al., IJCAI 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Conv, Norm
from torch import nn

from monai_umed.networks.blocks.cdc import CDCConvolution, CentralDifferenceConv

__all__ = ["CDCUNet"]


class CDCUNet(nn.Module):
    """
    U-Net shaped encoder-decoder whose encoder convolutions are **all** central difference convolutions (Eq. 3 of
    Lin et al., IJCAI 2024): the generator F_c of the contour perturbator G_c (Fig. 2b). The paper's ablation
    (Table 5) shows CDC in F_c beats a vanilla U-Net there.

    Layout, with ``n = len(channels)`` levels::

        encoder level 0      : CDC(in -> c0)          -> CDC(c0 -> c0)                     (full resolution)
        encoder level i >= 1 : CDC(c[i-1] -> c[i], stride s[i-1]) -> CDC(c[i] -> c[i])    (downsampled)
        decoder level i < n-1: ConvTrans(c[i+1] -> c[i], stride s[i]) ; concat skip of encoder level i ;
                               Conv(2 c[i] -> c[i]) -> Conv(c[i] -> c[i])
        head                 : 1x1 Conv(c0 -> out_channels), no norm / activation

    * Downsampling is done by a **stride-s CDC convolution** (as MONAI's ``UNet`` does with strided convolutions)
      rather than pooling, so that every encoder operation that sees pixel differences is a CDC layer and no
      information is thrown away before the central differences are taken.
    * Every encoder / decoder convolution (except the head) is followed by ``norm`` -> ``dropout`` -> ``act``
      (MONAI ``ADN``, ordering "NDA"); defaults are instance norm and PReLU, like MONAI's ``UNet``.
      With instance norm every level needs more than one voxel: the input size must be divisible by
      ``prod(strides)`` and the deepest level must not be ``1 x 1 (x 1)`` in training mode.
    * The decoder uses vanilla (transposed) convolutions from ``monai.networks.blocks.Convolution``.
    * The output is raw and unbounded (``out_channels`` = image channels); the bound of Eq. 4 is applied by
      :func:`monai_umed.networks.nets.perturbators.contour_perturbation`.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3; 1 also works).
        in_channels: number of input channels.
        out_channels: number of output channels.
        channels: feature channels per level, at least two levels.
        strides: downsampling stride between consecutive levels (``len(channels) - 1`` entries, ints or
            per-dimension sequences).
        kernel_size: kernel size of the encoder (CDC, must be odd) and decoder convolutions.
        up_kernel_size: kernel size of the transposed convolutions.
        theta: weight of the central-difference branch of every CDC layer (1.0 = Eq. 3).
        act: activation type and arguments. Defaults to PReLU.
        norm: normalisation type and arguments. Defaults to instance norm.
        dropout: dropout ratio. Defaults to no dropout.
        bias: whether the convolutions have a bias.

    Example::

        net = CDCUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), strides=(2, 2, 2))
        raw = net(torch.rand(4, 1, 224, 224))  # [4, 1, 224, 224], unbounded
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Sequence[int] | int] = (2, 2, 2),
        kernel_size: Sequence[int] | int = 3,
        up_kernel_size: Sequence[int] | int = 3,
        theta: float = 1.0,
        act: tuple | str | None = Act.PRELU,
        norm: tuple | str | None = Norm.INSTANCE,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        strides = tuple(strides)
        if len(channels) < 2:
            raise ValueError(f"channels must have at least two levels, got {channels}.")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 = {len(channels) - 1} entries, got {strides}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.strides = strides
        self.theta = float(theta)

        def cdc(c_in: int, c_out: int, stride: Sequence[int] | int = 1) -> CDCConvolution:
            return CDCConvolution(
                spatial_dims, c_in, c_out, strides=stride, kernel_size=kernel_size, theta=theta,
                act=act, norm=norm, dropout=dropout, bias=bias,
            )  # fmt: skip

        def conv(c_in: int, c_out: int, stride: Sequence[int] | int = 1, transposed: bool = False) -> Convolution:
            return Convolution(
                spatial_dims, c_in, c_out, strides=stride, kernel_size=up_kernel_size if transposed else kernel_size,
                act=act, norm=norm, dropout=dropout, bias=bias, is_transposed=transposed,
            )  # fmt: skip

        self.encoder = nn.ModuleList([nn.Sequential(cdc(in_channels, channels[0]), cdc(channels[0], channels[0]))])
        for i in range(1, len(channels)):
            down = cdc(channels[i - 1], channels[i], strides[i - 1])
            self.encoder.append(nn.Sequential(down, cdc(channels[i], channels[i])))

        # decoder[j] goes from level i + 1 to level i, with i = len(channels) - 2 - j (deepest first)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.up.append(conv(channels[i + 1], channels[i], strides[i], transposed=True))
            self.decoder.append(nn.Sequential(conv(2 * channels[i], channels[i]), conv(channels[i], channels[i])))

        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1, bias=True)

    def encoder_convs(self) -> list[nn.Module]:
        """All convolution layers of the encoder, in order (all :class:`CentralDifferenceConv` by construction)."""
        return [m for m in self.encoder.modules() if isinstance(m, (CentralDifferenceConv, nn.modules.conv._ConvNd))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` ``[B, in_channels, *spatial]`` to the raw field ``[B, out_channels, *spatial]``."""
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.decoder):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

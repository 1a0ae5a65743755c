# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Central difference convolution (CDC), Eq. 3 of Lin et al., IJCAI 2024."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN
from monai.networks.layers.factories import Act, Conv, Norm
from monai.networks.layers.convutils import same_padding
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["CentralDifferenceConv", "CDCConvolution"]


class CentralDifferenceConv(nn.Module):
    r"""
    Central difference convolution, Eq. 3 of Lin et al., IJCAI 2024 (after Yu et al., CVPR 2020):

    .. math::

        f_{out}(p) = \sum_{n} w_v(n) f_{in}(p + n) + b
                     + \theta \sum_{n} w_c(n) \big[f_{in}(p + n) - f_{in}(p)\big]

    with two separate trainable kernels: ``weight_vanilla`` (:math:`w_v`, with the optional ``bias``) and
    ``weight_diff`` (:math:`w_c`, no bias). Offsets ``n`` run over the (dilated) kernel window; like every
    PyTorch convolution this is a cross-correlation (the paper writes ``f_in(r - Δr)``, i.e. a flipped kernel,
    which is only a re-indexing of the trainable weights). Samples outside the input are zero (zero padding),
    the centre sample ``f_in(p)`` is the input at the centre of the window.

    Because :math:`\sum_n w_c(n)[f(p+n) - f(p)] = (f \star w_c)(p) - f(p)\sum_n w_c(n)`, the layer is computed as

        ``conv(x, w_v, bias) + theta * (conv(x, w_c) - conv(x, sum_spatial(w_c) as a 1x1 kernel, same stride))``

    and :meth:`fuse` folds it into a single vanilla convolution with kernel ``w_v + theta * w_c`` whose centre
    tap is reduced by ``theta * sum(w_c)`` (exactly equivalent, for inference/export).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: number of input channels.
        out_channels: number of output channels.
        kernel_size: kernel size; must be odd in every dimension (the central difference needs a centre tap).
        stride: convolution stride.
        padding: zero padding; ``None`` (default) gives "same" padding ``dilation * (kernel_size - 1) // 2``
            (output size ``ceil(input / stride)``). Any non-negative padding is supported; where the window
            centre falls into the padding, ``f_in(p) = 0``.
        dilation: kernel dilation.
        groups: number of blocked connections from input to output channels (as in ``nn.Conv2d``).
        bias: whether the vanilla branch has a bias (the difference branch never has one).
        theta: weight of the central-difference branch. ``1.0`` is Eq. 3 of the paper exactly; CDCN
            (Yu et al., CVPR 2020) uses ``0.7`` with a single shared kernel; ``0.0`` reduces the layer to a
            vanilla convolution (``w_c`` then receives no gradient).

    Both kernels are initialised like ``nn.Conv{N}d`` (Kaiming-uniform, ``a = sqrt(5)``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        stride: Sequence[int] | int = 1,
        padding: Sequence[int] | int | None = None,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        theta: float = 1.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ensure_tuple_rep(kernel_size, spatial_dims)
        if any(k < 1 or k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd and positive in every dimension, got {self.kernel_size}.")
        self.stride = ensure_tuple_rep(stride, spatial_dims)
        self.dilation = ensure_tuple_rep(dilation, spatial_dims)
        if any(s < 1 for s in self.stride) or any(d < 1 for d in self.dilation):
            raise ValueError(f"stride and dilation must be >= 1, got {self.stride}, {self.dilation}.")
        if padding is None:
            padding = same_padding(self.kernel_size, self.dilation)
        self.padding = ensure_tuple_rep(padding, spatial_dims)
        if any(p < 0 for p in self.padding):
            raise ValueError(f"padding must be non-negative, got {self.padding}.")
        self.groups = groups
        self.theta = float(theta)

        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight_vanilla = nn.Parameter(torch.empty(shape))
        self.weight_diff = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._conv = getattr(F, f"conv{spatial_dims}d")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise both kernels and the bias like ``nn.Conv{N}d``."""
        nn.init.kaiming_uniform_(self.weight_vanilla, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.weight_diff, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight_vanilla[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def kernel(self) -> torch.Tensor:
        """The single kernel equivalent to Eq. 3, differentiable in both ``w_v`` and ``w_c``.

        ``w_v + theta * w_c`` with the centre tap reduced by ``theta * sum_n w_c(n)``: the centre tap multiplies
        ``f_in(p)`` (the window centre, zero where it lies in the padding), so one convolution with this kernel
        equals the two-branch sum of Eq. 3 for every padding, stride, dilation and group setting.
        """
        if self.theta == 0.0:
            return self.weight_vanilla
        weight = self.weight_vanilla + self.theta * self.weight_diff
        w_sum = self.weight_diff.sum(dim=tuple(range(2, 2 + self.spatial_dims)))
        centre = torch.zeros(self.kernel_size, dtype=weight.dtype, device=weight.device)
        centre[tuple(k // 2 for k in self.kernel_size)] = 1.0
        return weight - self.theta * w_sum.reshape(*w_sum.shape, *([1] * self.spatial_dims)) * centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply Eq. 3 to ``x`` of shape ``[B, in_channels, *spatial]`` as one convolution with :meth:`kernel`."""
        return self._conv(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def fused_weight(self) -> torch.Tensor:
        """A detached copy of :meth:`kernel` (the fused kernel of Eq. 3), for export."""
        return self.kernel().detach().clone()

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """
        Return an equivalent vanilla ``nn.Conv{N}d`` (built with MONAI's ``Conv`` factory) with the fused kernel
        (see :meth:`fused_weight`) and the same bias, stride, padding, dilation and groups; same device/dtype.
        The result is a copy: later training of this layer does not affect it.
        """
        conv = Conv[Conv.CONV, self.spatial_dims](
            self.in_channels,
            self.out_channels,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
        ).to(device=self.weight_vanilla.device, dtype=self.weight_vanilla.dtype)
        conv.weight.copy_(self.fused_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        conv.train(self.training)
        return conv

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, theta={self.theta}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class CDCConvolution(nn.Sequential):
    """
    A :class:`CentralDifferenceConv` followed by MONAI's ``ADN`` (activation / dropout / normalisation), the CDC
    counterpart of ``monai.networks.blocks.Convolution``::

        -- CDC -- (Norm -- Dropout -- Acti) --

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: number of input channels.
        out_channels: number of output channels.
        strides: convolution stride. Defaults to 1.
        kernel_size: convolution kernel size (odd). Defaults to 3.
        theta: weight of the central-difference branch (see :class:`CentralDifferenceConv`).
        adn_ordering: ordering of activation (A), dropout (D) and normalisation (N). Defaults to "NDA".
        act: activation type and arguments. Defaults to PReLU.
        norm: normalisation type and arguments. Defaults to instance norm.
        dropout: dropout ratio. Defaults to no dropout.
        dropout_dim: spatial dimensions of dropout (see ``monai.networks.blocks.ADN``).
        dilation: kernel dilation.
        groups: convolution groups.
        bias: whether the vanilla branch has a bias.
        conv_only: only the CDC layer, no ADN.
        padding: zero padding; ``None`` gives "same" padding.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        strides: Sequence[int] | int = 1,
        kernel_size: Sequence[int] | int = 3,
        theta: float = 1.0,
        adn_ordering: str = "NDA",
        act: tuple | str | None = Act.PRELU,
        norm: tuple | str | None = Norm.INSTANCE,
        dropout: tuple | str | float | None = None,
        dropout_dim: int | None = 1,
        dilation: Sequence[int] | int = 1,
        groups: int = 1,
        bias: bool = True,
        conv_only: bool = False,
        padding: Sequence[int] | int | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.add_module(
            "conv",
            CentralDifferenceConv(
                spatial_dims,
                in_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=strides,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
                theta=theta,
            ),
        )
        if conv_only or (act is None and norm is None and dropout is None):
            return
        self.add_module(
            "adn",
            ADN(
                ordering=adn_ordering,
                in_channels=out_channels,
                act=act,
                norm=norm,
                norm_dim=spatial_dims,
                dropout=dropout,
                dropout_dim=dropout_dim,
            ),
        )

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""TransUNet (Chen et al., 2021), one of the exploiter segmentation models of Lin et al., IJCAI 2024 (Sec. 4.1).

TransUNet is a hybrid CNN-Transformer U-shaped network:

1. **CNN encoder** -- ``len(cnn_channels)`` stages, each halving the resolution (its first residual unit has
   stride 2). Stage ``i`` (0-based) outputs ``cnn_channels[i]`` channels at ``1 / 2**(i + 1)`` of the input size.
   The outputs of all stages but the last are skip features for the decoder (in Chen et al. these are the
   ResNet-50 root / block1 / block2 outputs at 1/2, 1/4, 1/8 of the input).
2. **Transformer encoder** -- the lowest-resolution CNN feature map is cut into ``patch_size`` patches, linearly
   embedded (``monai.networks.blocks.PatchEmbeddingBlock``, learnable position embeddings), passed through
   ``num_layers`` pre-norm ``monai.networks.blocks.TransformerBlock`` layers and a final layer norm.
3. **Cascaded upsampler (CUP)** -- the tokens are reshaped to a feature map, a 3x3 conv maps ``hidden_size`` to
   ``head_channels``, then each decoder block upsamples x2 (bilinear), concatenates the skip feature of that
   resolution (if any) and applies two 3x3 conv-norm-act layers; a 3x3 convolution (the segmentation head) gives
   the logits at full resolution.

The default constructor is a small model meant to train on a CPU at 96x96; :meth:`TransUNet.paper_like` (or
``TransUNet(**TRANSUNET_PAPER_KWARGS)``) gives the R50-ViT-B/16-sized configuration of Chen et al. with
random initialisation (no ImageNet weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution, PatchEmbeddingBlock, ResidualUnit, TransformerBlock, UpSample
from monai.utils import ensure_tuple_rep

__all__ = ["TransUNet", "TRANSUNET_PAPER_KWARGS"]

#: Keyword arguments of a TransUNet sized like Chen et al.'s R50-ViT-B/16 at the paper's 224x224 input size:
#: CNN stages with the ResNet-50 root/block1/block2/block3 widths 64/256/512/1024 (one basic residual unit per
#: stage instead of ResNet-50's bottleneck blocks), ViT-Base (hidden 768, MLP 3072, 12 layers, 12 heads) with
#: patch size 1 on the 1/16 map (14x14 tokens), 512-channel CUP head, decoder channels 256/128/64/16, dropout 0.1.
#: About 118M parameters (Chen et al.'s model: about 105M; the difference is the CNN stem).
TRANSUNET_PAPER_KWARGS: dict[str, Any] = {
    "img_size": 224,
    "cnn_channels": (64, 256, 512, 1024),
    "cnn_blocks": 1,
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "patch_size": 1,
    "head_channels": 512,
    "decoder_channels": (256, 128, 64, 16),
    "dropout_rate": 0.1,
}


class _CUPBlock(nn.Module):
    """One cascaded-upsampler block: bilinear upsample x2, concatenate the skip feature, two 3x3 conv-norm-act."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: str | tuple,
        act: str | tuple,
    ) -> None:
        super().__init__()
        self.up = UpSample(
            spatial_dims, in_channels, in_channels, scale_factor=2, mode="nontrainable",
            interp_mode="bilinear", align_corners=True,
        )  # fmt: skip
        self.conv1 = Convolution(spatial_dims, in_channels + skip_channels, out_channels, kernel_size=3,
                                 norm=norm, act=act)  # fmt: skip
        self.conv2 = Convolution(spatial_dims, out_channels, out_channels, kernel_size=3, norm=norm, act=act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Upsample ``x`` by 2, concatenate ``skip`` along channels when given, and convolve twice."""
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    """TransUNet of Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation",
    arXiv:2102.04306, 2021 -- the Transformer-based exploiter of Lin et al., IJCAI 2024 (Sec. 4.1, Table 2).

    Args:
        spatial_dims: number of spatial dimensions; only 2 is supported (``ValueError`` otherwise).
        in_channels: number of input image channels.
        out_channels: number of output channels (classes); the network returns logits.
        img_size: input size ``H == W`` (int) or ``(H, W)``; fixed because the position embeddings are learnable.
            Must be divisible by the total downsampling ``2**len(cnn_channels) * patch_size``.
        cnn_channels: output channels of the CNN encoder stages; each stage halves the resolution.
        cnn_blocks: residual units per CNN stage (int for all stages or one per stage); the first unit of a
            stage has stride 2. Each unit is a MONAI ``ResidualUnit`` with two 3x3 conv-norm-act subunits.
        hidden_size: Transformer embedding size.
        mlp_dim: Transformer MLP hidden size.
        num_layers: number of Transformer layers.
        num_heads: number of attention heads (must divide ``hidden_size``).
        patch_size: patch size (a power of two) on the lowest-resolution CNN feature map; 1 as in Chen et al.
        head_channels: output channels of the 3x3 conv applied to the reshaped tokens before the first decoder
            block; ``None`` -> ``cnn_channels[-1]``.
        decoder_channels: output channels of the CUP decoder blocks, coarse to fine; one block per x2 upsampling,
            i.e. ``len(cnn_channels) + log2(patch_size)`` entries. ``None`` -> each block producing resolution
            ``1 / 2**k`` (``k >= 1``) gets ``cnn_channels[k - 1]`` channels and the full-resolution block gets
            ``max(cnn_channels[0] // 2, 1)`` (``(32, 16, 8)`` for the defaults).
        dropout_rate: dropout of the position-embedded tokens and inside the Transformer layers.
        norm: normalisation of the convolutional layers (MONAI layer-factory name or ``(name, args)``).
        act: activation of the convolutional layers.
        qkv_bias: whether the attention q/k/v projections have a bias (True as in ViT).

    Defaults: ``cnn_channels=(16, 32, 64)`` (1/8 feature map), ``hidden_size=96``, ``mlp_dim=384``,
    ``num_layers=2``, ``num_heads=4``, ``patch_size=1``, decoder ``(32, 16, 8)``: about 0.44M parameters, small
    enough to train on a CPU at 96x96 (``img_size=96``). :meth:`paper_like` gives the ~118M-parameter
    R50-ViT-B/16-sized model (see :data:`TRANSUNET_PAPER_KWARGS`).

    Input ``[B, in_channels, H, W]`` with ``(H, W) == img_size``; output logits ``[B, out_channels, H, W]``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        img_size: Sequence[int] | int = 224,
        cnn_channels: Sequence[int] = (16, 32, 64),
        cnn_blocks: Sequence[int] | int = 1,
        hidden_size: int = 96,
        mlp_dim: int = 384,
        num_layers: int = 2,
        num_heads: int = 4,
        patch_size: int = 1,
        head_channels: int | None = None,
        decoder_channels: Sequence[int] | None = None,
        dropout_rate: float = 0.0,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"TransUNet supports only spatial_dims=2 (2D images), got spatial_dims={spatial_dims}.")
        cnn_channels = tuple(int(c) for c in cnn_channels)
        if len(cnn_channels) < 1:
            raise ValueError("cnn_channels must have at least one stage.")
        num_stages = len(cnn_channels)
        blocks = ensure_tuple_rep(cnn_blocks, num_stages)
        if any(int(b) < 1 for b in blocks):
            raise ValueError(f"cnn_blocks must be >= 1 per stage, got {cnn_blocks}.")
        patch_size = int(patch_size)
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"patch_size must be a power of two (1, 2, 4, ...), got {patch_size}.")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        self.img_size: tuple[int, int] = tuple(int(s) for s in ensure_tuple_rep(img_size, 2))  # type: ignore
        self.total_stride = 2**num_stages * patch_size
        bad = [s for s in self.img_size if s <= 0 or s % self.total_stride != 0]
        if bad:
            raise ValueError(
                f"img_size {self.img_size} must be divisible by the total downsampling {self.total_stride} "
                f"(2**len(cnn_channels)={2**num_stages} x patch_size={patch_size}); "
                f"use e.g. {max(1, round(bad[0] / self.total_stride)) * self.total_stride}."
            )
        num_up = num_stages + patch_size.bit_length() - 1  # x2 upsamplings back to full resolution
        if decoder_channels is None:
            decoder_channels = tuple(cnn_channels[k - 1] if k >= 1 else max(cnn_channels[0] // 2, 1)
                                     for k in range(num_up - 1, -1, -1))  # fmt: skip
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != num_up:
            raise ValueError(
                f"decoder_channels needs {num_up} entries (len(cnn_channels) + log2(patch_size)), "
                f"got {len(decoder_channels)}: {decoder_channels}."
            )
        head_channels = cnn_channels[-1] if head_channels is None else int(head_channels)
        self.spatial_dims = spatial_dims
        self.grid_size = tuple(s // self.total_stride for s in self.img_size)
        self.hidden_size = hidden_size

        # 1. CNN encoder: stage i -> cnn_channels[i] channels at 1/2**(i+1).
        stages = []
        prev = in_channels
        for ch, nb in zip(cnn_channels, blocks):
            units = [
                ResidualUnit(spatial_dims, prev if u == 0 else ch, ch, strides=2 if u == 0 else 1, kernel_size=3,
                             subunits=2, norm=norm, act=act)  # fmt: skip
                for u in range(int(nb))
            ]
            stages.append(nn.Sequential(*units))
            prev = ch
        self.cnn_stages = nn.ModuleList(stages)

        # 2. Transformer encoder on the 1/2**num_stages feature map.
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=cnn_channels[-1], img_size=tuple(s // 2**num_stages for s in self.img_size),
            patch_size=patch_size, hidden_size=hidden_size, num_heads=num_heads, proj_type="conv",
            pos_embed_type="learnable", dropout_rate=dropout_rate, spatial_dims=spatial_dims,
        )  # fmt: skip
        self.transformer = nn.ModuleList()
        for _ in range(num_layers):
            blk = TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias=qkv_bias)
            # MONAI always builds ``norm_cross_attn`` but uses it only with cross-attention (off here); drop the
            # unused LayerNorm so every parameter gets a gradient (DDP-friendly, honest parameter counts).
            blk.norm_cross_attn = nn.Identity()
            self.transformer.append(blk)
        self.encoder_norm = nn.LayerNorm(hidden_size)

        # 3. Cascaded upsampler (CUP) and segmentation head.
        self.conv_more = Convolution(spatial_dims, hidden_size, head_channels, kernel_size=3, norm=norm, act=act)
        self.decoder = nn.ModuleList()
        self._skip_index: list[int | None] = []  # index of the CNN stage whose output is concatenated, per block
        prev = head_channels
        for j, ch in enumerate(decoder_channels):
            k = num_up - 1 - j  # this block outputs resolution 1 / 2**k
            skip_stage = k - 1 if 1 <= k <= num_stages - 1 else None
            skip_ch = cnn_channels[skip_stage] if skip_stage is not None else 0
            self.decoder.append(_CUPBlock(spatial_dims, prev, skip_ch, ch, norm=norm, act=act))
            self._skip_index.append(skip_stage)
            prev = ch
        self.segmentation_head = Convolution(spatial_dims, prev, out_channels, kernel_size=3, conv_only=True)

    @classmethod
    def paper_like(cls, in_channels: int = 1, out_channels: int = 2, **overrides: Any) -> TransUNet:
        """A TransUNet sized like Chen et al.'s R50-ViT-B/16 at 224x224 (:data:`TRANSUNET_PAPER_KWARGS`,
        about 118M parameters, random init); ``overrides`` replace any of those arguments (e.g. ``img_size``)."""
        kwargs = {**TRANSUNET_PAPER_KWARGS, **overrides}
        return cls(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, out_channels, H, W]`` for images ``[B, in_channels, H, W]`` with ``(H, W) == img_size``."""
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"TransUNet was built for img_size={self.img_size} (learnable position embeddings), "
                f"got input of spatial shape {tuple(x.shape[2:])}."
            )
        feats = []
        for stage in self.cnn_stages:
            x = stage(x)
            feats.append(x)
        tokens = self.patch_embedding(x)  # [B, N, hidden], N = grid_h * grid_w in row-major order
        for blk in self.transformer:
            tokens = blk(tokens)
        tokens = self.encoder_norm(tokens)
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], self.hidden_size, *self.grid_size)
        x = self.conv_more(x)
        for block, skip_idx in zip(self.decoder, self._skip_index):
            x = block(x, None if skip_idx is None else feats[skip_idx])
        return self.segmentation_head(x)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Exploiter-side defenses against unlearnable examples (Sec. 4.4, Table 3 of Lin et al., IJCAI 2024)."""

from __future__ import annotations

from .adversarial import AdversarialPrepareBatch, AdversarialView, pgd_linf
from .differentiable import (
    EOT_TRANSFORMS,
    ROBUST_DEFAULT,
    DiffJPEG,
    EOTDefense,
    augment_batch,
    gaussian_blur_batch,
    grayscale_batch,
    median_batch,
    resample_batch,
    ste_round,
)
from .transforms import (
    DEFENSES,
    LUMA_WEIGHTS,
    GaussianBlurDefense,
    GaussianBlurDefensed,
    GrayscaleDefense,
    GrayscaleDefensed,
    JPEGDefense,
    JPEGDefensed,
    MedianDefense,
    MedianDefensed,
    ResampleDefense,
    ResampleDefensed,
    RandChannelShuffled,
    augment_defense,
    gaussian_kernel_1d,
    get_defense_transform,
)

__all__ = [
    "EOT_TRANSFORMS",
    "ROBUST_DEFAULT",
    "DiffJPEG",
    "EOTDefense",
    "augment_batch",
    "gaussian_blur_batch",
    "grayscale_batch",
    "median_batch",
    "resample_batch",
    "ste_round",
    "AdversarialPrepareBatch",
    "AdversarialView",
    "DEFENSES",
    "LUMA_WEIGHTS",
    "GaussianBlurDefense",
    "GaussianBlurDefensed",
    "GrayscaleDefense",
    "GrayscaleDefensed",
    "JPEGDefense",
    "JPEGDefensed",
    "MedianDefense",
    "MedianDefensed",
    "ResampleDefense",
    "ResampleDefensed",
    "RandChannelShuffled",
    "augment_defense",
    "gaussian_kernel_1d",
    "get_defense_transform",
    "pgd_linf",
]

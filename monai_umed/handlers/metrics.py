# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Invisibility metrics of a protected image: PSNR and SSIM (MONAI's metrics), l-inf and changed pixels."""

from __future__ import annotations

import math
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler, PeakSignalToNoiseRatio
from monai.metrics import PSNRMetric, SSIMMetric
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["invisibility_metrics", "ssim_map", "InvisibilityHandler"]


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
    k1: float = 0.01, k2: float = 0.03,
) -> torch.Tensor:
    """The SSIM map of MONAI's ``SSIMMetric`` (Gaussian window, "valid" windows only), computed with separable filters.

    ``x`` and ``y`` are ``[B, C, *spatial]`` (2D or 3D). The same local means, variances and covariance as MONAI's
    ``compute_ssim_and_cs`` (one ``win_size``-tap Gaussian of ``sigma`` per axis, whose outer product is MONAI's
    kernel), filtered one axis at a time as weighted sums of shifted views (2 x 11 instead of 11 x 11 taps per pixel
    in 2D, and no grouped convolution, which is slow on the CPU); the values agree with MONAI's to float32 rounding
    (``tests/handlers/test_metrics.py``). Returns the map ``[B, C, *valid spatial]``; its mean is ``SSIMMetric``'s
    value.
    """
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}.")
    x, y = x.float(), y.float()
    dims, c = x.ndim - 2, x.shape[1]
    dist = torch.arange((1 - win_size) / 2, (1 + win_size) / 2, 1, dtype=torch.float32)
    gauss = torch.exp(-torch.pow(dist / sigma, 2) / 2)
    gauss = gauss / gauss.sum()
    taps = gauss.tolist()
    stacked = torch.cat([x, y, x * x, y * y, x * y], 1)  # the five local moments, filtered together
    for axis in range(2, 2 + dims):  # "valid" correlation along one axis: a weighted sum of shifted views
        n = stacked.shape[axis] - win_size + 1
        out = stacked.narrow(axis, 0, n) * taps[0]
        for k in range(1, win_size):
            out.add_(stacked.narrow(axis, k, n), alpha=taps[k])
        stacked = out
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = stacked.split(c, 1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    sigma_x, sigma_y, sigma_xy = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    contrast = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * contrast


def invisibility_metrics(original: torch.Tensor, protected: torch.Tensor, data_range: float = 1.0) -> dict[str, float]:
    """PSNR (dB), SSIM, l-inf and the fraction of changed pixels between one image and its protected copy.

    Both are channel-first ``[C, H, W]`` (or ``[C, D, H, W]``) on the same intensity scale with range ``data_range``
    (1.0 on the package's [0, 1] scale). PSNR is MONAI's ``PSNRMetric``, SSIM the value of MONAI's ``SSIMMetric``
    (Gaussian window 11, sigma 1.5, as in the paper's Table 4 convention) computed by :func:`ssim_map`; PSNR of
    identical images is ``inf``. The
    changed fraction counts pixels with any channel changed.

    SSIM is computed on the box around the changed pixels grown by the window size: every window
    outside that box sees identical inputs, whose SSIM is exactly 1 (numerator and denominator are the same
    floating-point expression), so the mean over the whole image is ``(sum over the box + windows outside) / all
    windows``: the value of the whole-image metric, at the cost of the changed region only.
    """
    original = torch.as_tensor(original, dtype=torch.float64)
    protected = torch.as_tensor(protected, dtype=torch.float64)
    if original.shape != protected.shape:
        raise ValueError(f"shape mismatch: original {tuple(original.shape)} vs protected {tuple(protected.shape)}.")
    spatial_dims = original.ndim - 1
    diff = (protected - original).abs()
    linf = float(diff.max()) if diff.numel() else 0.0
    changed_map = (diff > 0).any(dim=0)
    changed = float(changed_map.float().mean())
    if linf == 0.0:
        return {"psnr": float("inf"), "ssim": 1.0, "linf": 0.0, "changed_fraction": 0.0}
    psnr = float(PSNRMetric(max_val=data_range)(protected[None], original[None]).mean())
    spatial = original.shape[1:]
    win = 3 if min(spatial) < 11 else 11
    box = []
    for axis in range(spatial_dims):
        other = tuple(a for a in range(spatial_dims) if a != axis)
        hit = torch.nonzero(changed_map.amax(dim=other) if other else changed_map).flatten()
        box.append(slice(max(int(hit.min()) - (win - 1), 0), min(int(hit.max()) + win, spatial[axis])))
    crop = (slice(None), *box)
    box_mean = float(ssim_map(protected[crop][None], original[crop][None], data_range, win).mean())
    windows_all = math.prod(n - win + 1 for n in spatial)
    windows_box = math.prod(s.stop - s.start - win + 1 for s in box)
    ssim = (box_mean * windows_box + (windows_all - windows_box)) / windows_all
    return {"psnr": psnr, "ssim": ssim, "linf": linf, "changed_fraction": changed}


class InvisibilityHandler:
    """Attach epoch-wise PSNR and SSIM of the protected batches (``protected`` vs ``image`` outputs) to a trainer.

    Uses MONAI's ``PeakSignalToNoiseRatio`` handler and an ``IgniteMetricHandler`` around ``SSIMMetric``;
    the values appear in ``engine.state.metrics`` as ``psnr`` and ``ssim`` (so ``StatsHandler`` and
    ``TensorBoardStatsHandler`` report them).
    """

    def __init__(self, spatial_dims: int = 2, data_range: float = 1.0, win_size: int = 11) -> None:
        self.spatial_dims = spatial_dims
        self.data_range = data_range
        self.win_size = win_size

    @staticmethod
    def _pair(output: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return output["protected"].float(), output["image"].float()

    def attach(self, engine) -> None:
        PeakSignalToNoiseRatio(max_val=self.data_range, output_transform=self._pair, save_details=False).attach(
            engine, "psnr"
        )
        ssim = SSIMMetric(spatial_dims=self.spatial_dims, data_range=self.data_range, win_size=self.win_size)
        IgniteMetricHandler(metric_fn=ssim, output_transform=self._pair, save_details=False).attach(engine, "ssim")

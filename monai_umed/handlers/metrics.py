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

__all__ = ["invisibility_metrics", "InvisibilityHandler"]


def invisibility_metrics(original: torch.Tensor, protected: torch.Tensor, data_range: float = 1.0) -> dict[str, float]:
    """PSNR (dB), SSIM, l-inf and the fraction of changed pixels between one image and its protected copy.

    Both are channel-first ``[C, H, W]`` (or ``[C, D, H, W]``) on the same intensity scale with range ``data_range``
    (1.0 on the package's [0, 1] scale). PSNR and SSIM are MONAI's ``PSNRMetric`` and ``SSIMMetric`` (Gaussian
    window 11, sigma 1.5, as in the paper's Table 4 convention); PSNR of identical images is ``inf``. The
    changed fraction counts pixels with any channel changed.

    SSIM is computed by MONAI's metric on the box around the changed pixels grown by the window size: every window
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
    ssim_metric = SSIMMetric(spatial_dims=spatial_dims, data_range=data_range, win_size=win)
    box_mean = float(ssim_metric(protected[crop][None].float(), original[crop][None].float()).mean())
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

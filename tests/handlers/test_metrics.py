"""invisibility_metrics: the same PSNR / SSIM as MONAI's metrics on the whole image, plus l-inf and changed pixels."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

from monai_umed.handlers import invisibility_metrics, ssim_map


def _whole_image_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    win = 3 if min(a.shape[1:]) < 11 else 11
    return float(SSIMMetric(spatial_dims=a.ndim - 1, data_range=1.0, win_size=win)(b[None].float(), a[None].float()).mean())


@pytest.mark.parametrize(
    "shape, region",
    [
        ((1, 64, 64), (slice(20, 30), slice(25, 40))),
        ((3, 50, 70), (slice(0, 8), slice(60, 70))),  # touches two image borders
        ((1, 9, 12), (slice(2, 4), slice(3, 5))),  # smaller than the 11-pixel window
        ((1, 20, 24, 28), (slice(5, 9), slice(10, 14), slice(0, 6))),  # 3D
        ((3, 40, 40), (slice(0, 40), slice(0, 40))),  # everything changed
    ],
)
def test_matches_monai_on_the_whole_image(shape, region):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    b = a.clone()
    b[(slice(None), *region)] += (torch.rand(b[(slice(None), *region)].shape, generator=g, dtype=torch.float64) - 0.5) * 0.03
    m = invisibility_metrics(a, b)
    assert m["ssim"] == pytest.approx(_whole_image_ssim(a, b), abs=2e-6)
    assert m["ssim"] < 1.0
    assert m["psnr"] == pytest.approx(float(PSNRMetric(max_val=1.0)(b[None], a[None]).mean()), rel=1e-9)
    assert m["linf"] == pytest.approx(float((b - a).abs().max()))
    changed = math.prod(s.stop - s.start for s in region) / math.prod(shape[1:])
    assert m["changed_fraction"] == pytest.approx(changed)


def test_identical_images():
    a = torch.rand(1, 16, 16)
    assert invisibility_metrics(a, a.clone()) == {"psnr": float("inf"), "ssim": 1.0, "linf": 0.0, "changed_fraction": 0.0}
    with pytest.raises(ValueError, match="shape mismatch"):
        invisibility_metrics(a, torch.rand(1, 16, 8))


@pytest.mark.parametrize(
    "shape, win", [((2, 1, 40, 33), 11), ((1, 3, 30, 30), 11), ((1, 1, 12, 9), 3), ((1, 2, 20, 17, 14), 11), ((1, 1, 9, 8, 7), 3)]
)
def test_ssim_map_is_monais_map(shape, win):
    """The separable SSIM map equals MONAI's (2D and 3D, several channels, both window sizes) to float32 rounding:
    the local variances ``E[x^2] - E[x]^2`` cancel digits, so the two summation orders differ by up to ~1e-5 on
    the map; the means (the metric) agree to 1e-6."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=g)
    y = (x + (torch.rand(shape, generator=g) - 0.5) * 0.2).clamp(0, 1)
    dims = len(shape) - 2
    ref, _ = compute_ssim_and_cs(x, y, dims, [win] * dims, [1.5] * dims, data_range=1.0, kernel_type="gaussian",
                                 k1=0.01, k2=0.03)
    ours = ssim_map(x, y, 1.0, win)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=2e-5, rtol=0)
    assert float(ours.mean()) == pytest.approx(float(ref.mean()), abs=1e-6)
    assert float(ref.min()) < 0.99  # the images differ enough that the comparison means something

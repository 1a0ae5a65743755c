"""AR baseline protector (Sandoval-Segura et al. 2022): class-wise autoregressive noise, adapted to segmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_umed.protectors import ARProtector, ar_process

EPS = 4 / 255


def _naive(c: np.ndarray, shape, rng) -> np.ndarray:
    """The recurrence pixel by pixel, drawing the same random numbers in the same order."""
    h, w = shape
    x = np.zeros((h + 2, w + 2))
    x[:2, :] = rng.standard_normal((2, w + 2))
    x[:, :2] = rng.standard_normal((h + 2, 2))
    for i in range(2, h + 2):
        e = rng.standard_normal(w)
        for j in range(2, w + 2):
            window = x[i - 2 : i + 1, j - 2 : j + 1]
            x[i, j] = sum(c[a, b] * window[a, b] for a in range(3) for b in range(3) if (a, b) != (2, 2)) + e[j - 2]
    return x[2:, 2:]


def test_ar_process_matches_the_recurrence():
    c = np.random.default_rng(0).standard_normal((3, 3))
    c *= 0.9 / np.abs(c).sum()
    fast = ar_process(c, (12, 17), np.random.default_rng(5))
    slow = _naive(c, (12, 17), np.random.default_rng(5))
    assert np.allclose(fast, slow, atol=1e-10)


def test_filters_are_stable_finite_and_class_specific():
    ar = ARProtector(3, seed=1)
    f = ar.filters.numpy()
    assert np.isfinite(f).all() and np.allclose(np.abs(f).sum(axis=(-2, -1)), 0.95) and (f[..., 2, 2] == 0).all()
    assert not np.allclose(f[0], f[1])
    p = ar.class_patterns((64, 64), "case").numpy()
    assert np.isfinite(p).all() and np.allclose(np.abs(p).max(axis=(-2, -1)), EPS, atol=1e-7)
    assert (np.abs(p) > EPS / 4).mean() > 0.2, "not degenerate: the noise fills the budget, it does not fade out"
    # the AR property: the class's own filter whitens its noise much better than the other class's filter
    def residual(x, c):
        r = x[2:, 2:].copy()
        for a in range(3):
            for b in range(3):
                if (a, b) != (2, 2):
                    r -= c[a, b] * x[a : a + x.shape[0] - 2, b : b + x.shape[1] - 2]
        return float(r.var())
    for ch in range(3):
        own, other = residual(p[0, ch], f[0, ch]), residual(p[0, ch], f[1, ch])
        assert own < 0.8 * other
    assert not np.allclose(ar.class_patterns((64, 64), "other"), p), "a fresh sample per image"
    assert np.array_equal(ARProtector(3, seed=1).class_patterns((64, 64), "case").numpy(), p), "reproducible"


def test_native_delta_takes_each_pixel_from_its_class():
    ar = ARProtector(1, seed=2)
    image = 0.25 + 0.5 * torch.rand(1, 40, 48)
    label = torch.zeros(1, 40, 48)
    label[:, 10:25, 12:30] = 1
    delta, allowed = ar.native_delta(image, label, "k")
    p = ar.class_patterns((40, 48), "k")
    inside = label[0] > 0
    assert allowed.all() and delta.abs().max() <= EPS + 1e-7
    assert torch.allclose(delta[:, inside], p[1][:, inside], atol=1e-7)
    assert torch.allclose(delta[:, ~inside], p[0][:, ~inside], atol=1e-7)
    with pytest.raises(ValueError, match="stability"):
        ARProtector(1, stability=1.0)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""AR, autoregressive poisons (Sandoval-Segura et al., NeurIPS 2022), adapted to segmentation.

One of the class-wise baselines of the UMed paper's Table 1: each class owns one autoregressive filter per
channel, and each image's noise for that class is a fresh sample of the AR process, which a small convolution (the
filter itself) can tell apart from any other class's noise while it looks like texture to a person. As for LSP,
the pixels outside and inside the ROI are the two classes (Sec. 4.1 of the UMed paper): each pixel takes the noise
of its own class.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.signal import lfilter

from monai_umed.protectors.base import register_protector
from monai_umed.protectors.classwise import ClassWiseProtector

__all__ = ["ARProtector", "ar_process"]


def ar_process(coefficients: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One sample of the 2D autoregressive process of a 3x3 causal window, on a ``shape`` grid.

    ``x[i, j] = sum_{(a, b) != (2, 2)} c[a, b] * x[i - 2 + a, j - 2 + b] + e[i, j]`` with ``e`` standard normal
    innovations; the two rows above and two columns left of the grid start as standard normal values. Rows are
    generated one after the other: the part that reads earlier rows is a vectorised sum, the part that reads the
    same row (``c[2, 0]``, ``c[2, 1]``) a second-order recursion along the row (``scipy.signal.lfilter``).

    Args:
        coefficients: ``[3, 3]``; ``c[2, 2]`` (the generated pixel) is ignored.

    Returns:
        float64 ``[H, W]``.
    """
    h, w = shape
    c = np.asarray(coefficients, dtype=np.float64)
    x = np.zeros((h + 2, w + 2))
    x[:2, :] = rng.standard_normal((2, w + 2))
    x[:, :2] = rng.standard_normal((h + 2, 2))
    a = np.array([1.0, -c[2, 1], -c[2, 0]])  # y[j] - c21 y[j-1] - c20 y[j-2] = u[j]
    for i in range(2, h + 2):
        u = rng.standard_normal(w)
        for da in range(2):
            for db in range(3):
                u = u + c[da, db] * x[i - 2 + da, db : db + w]
        y1, y2 = x[i, 1], x[i, 0]  # the two values left of the row start the recursion
        zi = np.array([-a[1] * y1 - a[2] * y2, -a[2] * y1])
        x[i, 2:], _ = lfilter([1.0], a, u, zi=zi)
    return x[2:, 2:]


@register_protector
class ARProtector(ClassWiseProtector):
    """AR class-wise noise: by default two classes, outside and inside the ROI.

    **Filters.** Class ``k`` and channel ``ch`` own a 3x3 causal filter drawn from a generator seeded by ``seed``:
    standard normal coefficients scaled so that their absolute values sum to ``stability`` (< 1), which makes the
    process stable (bounded and stationary), while the innovations keep it from fading out. Our adaptation: the
    original draws coefficients with the same purpose; the sum-of-absolute-values rule is what guarantees it.
    Filters are checked to be finite and distinct across classes.

    **Noise.** Each image's noise of class ``k`` is a fresh sample of the process (generator seeded by ``seed`` and
    the image's key, so a re-run writes the same files), scaled to the l2 norm of a perturbation of l-inf
    ``epsilon`` (``epsilon * sqrt(H * W)`` per channel, as the original scales to an l2 norm, and as LSP does here)
    and clipped to ``[-epsilon, epsilon]``, the bound every protector here keeps. A sample whose norm is not a
    positive finite number is refused (degenerate noise).

    Args:
        in_channels: channels of the images the perturbation is added to.
        epsilon: l-inf bound on the [0, 1] scale.
        num_classes: label values a mask may hold (2: background and ROI).
        stability: sum of the absolute filter coefficients, in (0, 1).
        seed: seed of the filters and of every image's sample.
    """

    name: ClassVar[str] = "ar"

    def __init__(
        self, in_channels: int, epsilon: float = 4 / 255, num_classes: int = 2, stability: float = 0.95, seed: int = 0
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError("in_channels must be >= 1 and num_classes >= 2.")
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}.")
        if not 0 < stability < 1:
            raise ValueError(f"stability must be in (0, 1), got {stability}.")
        self.in_channels, self.epsilon = int(in_channels), float(epsilon)
        self.num_classes, self.stability, self.seed = int(num_classes), float(stability), int(seed)
        rng = np.random.default_rng(self.seed)
        filters = rng.standard_normal((self.num_classes, self.in_channels, 3, 3))
        filters[..., 2, 2] = 0.0
        filters *= self.stability / np.abs(filters).sum(axis=(-2, -1), keepdims=True)
        if not np.isfinite(filters).all():
            raise ValueError("AR filter coefficients are not finite.")
        self.register_buffer("filters", torch.as_tensor(filters))

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "epsilon": self.epsilon, "num_classes": self.num_classes,
                "stability": self.stability, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, epsilon={self.epsilon:.6g}, num_classes={self.num_classes}"

    def class_patterns(self, shape: tuple[int, int], key: str) -> torch.Tensor:
        """The image's noise of every class, ``[num_classes, C, H, W]``, l2-scaled and clipped to epsilon."""
        digest = hashlib.sha256(f"{self.seed}|{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        filters = self.filters.cpu().numpy()
        out = np.empty((self.num_classes, self.in_channels, *shape))
        for k in range(self.num_classes):
            for ch in range(self.in_channels):
                noise = ar_process(filters[k, ch], shape, rng)
                norm = float(np.sqrt((noise**2).sum()))
                if not (np.isfinite(norm) and norm > 0):
                    raise ValueError(f"{key}: degenerate AR noise (l2 norm {norm}).")
                # the original's l2 ball of a perturbation of l-inf epsilon, then the l-inf bound of this package
                out[k, ch] = noise * (self.epsilon * np.sqrt(noise.size) / norm)
        return torch.as_tensor(out, dtype=torch.float32).clamp(-self.epsilon, self.epsilon)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""LSP, the linearly separable synthetic perturbation of Yu et al. (SIGKDD 2022), adapted to segmentation.

One of the baseline protectors of the UMed paper's Table 1. The original draws, for each image, a point of its
class's cluster in a low-dimensional space (one value per patch and channel; clusters far apart, so the points
are linearly separable), repeats each value over its ``patch_size x patch_size`` patch and projects the result
onto the l2 ball of radius ``epsilon * sqrt(D)`` (the l2 norm of a perturbation of l-inf ``epsilon`` over
``D = C * H * W`` values). UMed adapts class-wise protectors to segmentation by treating the pixels inside and
outside the ROI as two classes (Sec. 4.1): each image gets one pattern per class, and each pixel takes the
pattern of its own class.
"""

from __future__ import annotations

import hashlib
import math

from typing import Any, ClassVar

import torch

from monai_umed.protectors.base import register_protector
from monai_umed.protectors.classwise import ClassWiseProtector

__all__ = ["LSPProtector"]


def _key_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the protector's seed and an image key (reproducible across runs and machines)."""
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@register_protector
class LSPProtector(ClassWiseProtector):
    """LSP class-wise patch perturbation: by default two classes, outside and inside the ROI.

    **Clusters.** Class ``k`` has a centroid with one entry per channel and patch cell, each ``+-class_sep``
    (a vertex of a hypercube, as scikit-learn's ``make_classification`` places its clusters; distinct for every
    class), stored as a buffer on a ``max_grid x max_grid`` cell grid so that any image size up to
    ``max_grid * patch_size`` pixels uses the same clusters. An image's point of class ``k`` is the centroid
    plus standard normal noise, drawn from a generator seeded by ``seed`` and the image's key (its name), so a
    re-run writes the same files.

    **Bound.** After the l2 projection of the original, values are clipped to ``[-epsilon, epsilon]``, so the
    l-inf bound of this package holds exactly (the original bounds only the l2 norm).

    Args:
        in_channels: channels of the images the perturbation is added to.
        epsilon: l-inf bound on the [0, 1] intensity scale (default 4/255, as for UMed).
        patch_size: side of the constant patches in native pixels (original: 8 for 32x32 images, 32 for 224x224;
            default 16, the strongest of 8, 16, 32, 64 on BUSI at 224x224, see the README).
        num_classes: label values a mask may hold (2: background and ROI).
        class_sep: distance of the cluster centroids from the origin along each axis (original: 10).
        max_grid: cells per side of the stored centroid grid.
        seed: seed of the centroids and of every image's draw.
    """

    name: ClassVar[str] = "lsp"

    def __init__(
        self,
        in_channels: int,
        epsilon: float = 4 / 255,
        patch_size: int = 16,
        num_classes: int = 2,
        class_sep: float = 10.0,
        max_grid: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or patch_size < 1 or num_classes < 2 or max_grid < 1:
            raise ValueError("in_channels, patch_size and max_grid must be >= 1 and num_classes >= 2.")
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}.")
        if num_classes > 2 ** (in_channels * max_grid * max_grid):
            raise ValueError("too many classes for distinct hypercube vertices.")
        self.in_channels = int(in_channels)
        self.epsilon = float(epsilon)
        self.patch_size = int(patch_size)
        self.num_classes = int(num_classes)
        self.class_sep = float(class_sep)
        self.max_grid = int(max_grid)
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.in_channels, self.max_grid, self.max_grid)
        signs: list[torch.Tensor] = []
        while len(signs) < self.num_classes:
            s = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
            if all(not torch.equal(s, t) for t in signs):
                signs.append(s)
        self.register_buffer("centroids", torch.stack(signs) * self.class_sep)

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels, "epsilon": self.epsilon, "patch_size": self.patch_size,
            "num_classes": self.num_classes, "class_sep": self.class_sep, "max_grid": self.max_grid, "seed": self.seed,
        }

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, epsilon={self.epsilon:.6g}, patch_size={self.patch_size}, "
            f"num_classes={self.num_classes}"
        )

    def class_patterns(self, spatial_shape: tuple[int, int], key: str) -> torch.Tensor:
        """The image's pattern of every class, ``[num_classes, C, H, W]``, each l2-projected and clipped."""
        h, w = int(spatial_shape[0]), int(spatial_shape[1])
        gh, gw = math.ceil(h / self.patch_size), math.ceil(w / self.patch_size)
        if gh > self.max_grid or gw > self.max_grid:
            raise ValueError(
                f"an image of {h}x{w} pixels needs {gh}x{gw} patches of {self.patch_size}; raise max_grid "
                f"({self.max_grid}) or patch_size."
            )
        g = torch.Generator().manual_seed(_key_seed(self.seed, key))
        centroids = self.centroids[:, :, :gh, :gw].cpu()
        points = centroids + torch.randn(centroids.shape, generator=g)
        patterns = points.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)[..., :h, :w]
        radius = self.epsilon * math.sqrt(self.in_channels * h * w)
        norms = patterns.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (patterns * (radius / norms)).clamp(-self.epsilon, self.epsilon)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Storage of the sample-wise protectors: one perturbation per training image, looked up by the image's name."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_umed.protectors.base import Protector
from monai_umed.protectors.umed import native_band_width
from monai_umed.transforms import contour_band

__all__ = ["SampleWiseProtector", "REGIONS"]

#: Where a sample-wise perturbation may be (Table 5 ablations restrict EM to the band or the ROI).
REGIONS = ("all", "band", "roi")


class SampleWiseProtector(Protector):
    """One perturbation per training image, at the training size, bounded by ``epsilon`` in l-inf: the storage
    shared by the sample-wise protectors (EM, TAP, SEP), which differ only in how ``deltas`` is optimised.

    The writer asks for an image's perturbation by its key (the datalist name); it is resized bilinearly to the
    image's own grid and clipped to ``[-epsilon, epsilon]`` again. An image the protector was not optimised on has
    no perturbation, and asking for one is an error.

    Args:
        keys: the training images' names, in the order of the ``deltas`` rows.
        in_channels: channels of the perturbations.
        image_size: ``(H, W)`` the perturbations are optimised at.
        epsilon: l-inf bound on the [0, 1] scale (default 4/255).
        region: where the perturbation may be: ``"all"`` (the method), ``"band"`` (UMed's contour band, ``band_width``
            at the training size, scaled to each file's grid) or ``"roi"`` (the ROI): Table 5's "EM restricted to
            the contour band / the ROI". The optimisers keep ``deltas`` inside it (:meth:`region_mask`).
        band_width: contour band half-width at the training size, for ``region="band"``.
    """

    def __init__(
        self,
        keys: Sequence[str],
        in_channels: int,
        image_size: Sequence[int],
        epsilon: float = 4 / 255,
        region: str = "all",
        band_width: int = 3,
    ):
        super().__init__()
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}.")
        self.region, self.band_width = region, int(band_width)
        self.keys = [str(k) for k in keys]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"{self.name} keys (image names) must be unique.")
        if not self.keys:
            raise ValueError(f"{self.name} needs at least one training image.")
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}.")
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.epsilon = float(epsilon)
        self.in_channels = int(in_channels)
        self.image_size = [int(s) for s in image_size]
        self.register_buffer("deltas", torch.zeros(len(self.keys), int(in_channels), *[int(s) for s in image_size]))
        # which row belongs to which image is part of the protector (and of the writer's fingerprint)
        digest = hashlib.sha256("\n".join(self.keys).encode()).digest()
        self.register_buffer("keys_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def config(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "in_channels": self.in_channels, "image_size": self.image_size,
                "epsilon": self.epsilon, "region": self.region, "band_width": self.band_width}

    def region_mask(self, label: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """Where the perturbation may be, ``[..., 1, *spatial]`` float {0, 1}, from a label map ``[..., 1, *spatial]``
        (``width``: the band half-width on this grid, default ``band_width``)."""
        fg = (label > 0).float()
        if self.region == "all":
            return torch.ones_like(fg)
        if self.region == "roi":
            return fg
        return contour_band(fg, self.band_width if width is None else width, "both", spatial_dims=2)

    def extra_repr(self) -> str:
        return f"images={len(self.keys)}, shape={tuple(self.deltas.shape[1:])}, epsilon={self.epsilon:.6g}"

    @torch.no_grad()
    def native_delta(self, image: torch.Tensor, label: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbation of image ``key`` on the image's own grid (``image + delta`` kept in [0, 1]), zero
        outside the region (:meth:`region_mask` of the native label, band width scaled to the native grid)."""
        if key not in self.index:
            raise ValueError(
                f"{key}: {self.name} is sample-wise and has no perturbation for this image (optimised on "
                f"{len(self.keys)} other images); run protect_{self.name} on the dataset that holds it."
            )
        d = self.deltas[self.index[key]]
        if image.ndim != 3 or image.shape[0] != d.shape[0]:
            raise ValueError(f"image must be [{d.shape[0]}, H, W], got {tuple(image.shape)}.")
        d = F.interpolate(d[None].float().cpu(), size=tuple(image.shape[1:]), mode="bilinear", align_corners=False)
        d = d[0].clamp(-self.epsilon, self.epsilon).to(image.device, image.dtype)
        width = native_band_width(self.band_width, self.image_size, tuple(image.shape[1:]))
        allowed = self.region_mask(torch.as_tensor(label).cpu(), width)[0] > 0
        d = d * allowed.to(d.device, d.dtype)
        return (image + d).clamp(0, 1) - image, allowed

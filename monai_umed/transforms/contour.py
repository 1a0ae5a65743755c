# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Contour prior of UMed: the contour band ``y_c`` (Eq. 4) and the ROI interior ``y_t`` (Eq. 5) of Lin et al.,
IJCAI 2024.

The paper defines ``y_c`` only as "the binary map of contour regions" and leaves its width open. Here the band is
morphological: dilation minus erosion of each labelled region with a ``(2 * width + 1)`` square (cube) footprint,
i.e. the pixels within Chebyshev distance ``width`` of the region boundary. The default ``width = 3`` follows a
public re-implementation that uses ``dilate(y) - erode(y)`` with a 7x7 kernel (see ``docs/DESIGN.md``). Everything is
computed with torch box sums (cumulative sums), so it runs on the label's device (CPU or CUDA) and on batches.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

__all__ = ["CONTOUR_SIDES", "contour_band", "roi_interior", "ContourBand", "ContourBandd"]

#: Accepted values of ``side``.
CONTOUR_SIDES = ("both", "inside", "outside")


def _box_any(mask: torch.Tensor, width: int, spatial_dims: int) -> torch.Tensor:
    """Whether any pixel of a ``(2 * width + 1) ** spatial_dims`` box around each position is set, for a bool
    ``[N, 1, *spatial]`` tensor; positions outside the image are ignored (binary dilation with the outside as
    background). Computed as box sums, separable along each axis, each from a cumulative sum: exact (integers) and
    independent of ``width`` in cost."""
    count = mask.to(torch.int32)
    for axis in range(count.ndim - spatial_dims, count.ndim):
        n = count.shape[axis]
        cum = torch.cat([torch.zeros_like(count.narrow(axis, 0, 1)), count.cumsum(axis, dtype=torch.int32)], axis)
        pos = torch.arange(n, device=mask.device)
        hi, lo = (pos + width + 1).clamp(max=n), (pos - width).clamp(min=0)
        count = cum.index_select(axis, hi) - cum.index_select(axis, lo)
    return count > 0


def _infer_spatial_dims(label: torch.Tensor, spatial_dims: int | None) -> int:
    if spatial_dims is None:
        spatial_dims = 2 if label.ndim <= 3 else 3
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if label.ndim < spatial_dims:
        raise ValueError(f"label with shape {tuple(label.shape)} has fewer than {spatial_dims} dimensions.")
    return spatial_dims


def contour_band(
    label: torch.Tensor, width: int = 3, side: str = "both", spatial_dims: int | None = None
) -> torch.Tensor:
    """Binary contour band ``y_c`` of a label map (the contour region of Eq. 4, Lin et al., IJCAI 2024).

    For every class ``c > 0`` present in ``label`` (foreground is ``label > 0``; a binary mask has one class),
    with ``R_c = (label == c)`` and ``B`` the ``(2 * width + 1)`` square (2D) or cube (3D) footprint:

    * ``side="both"``: ``dilate(R_c, B) - erode(R_c, B)``, pixels within Chebyshev distance ``width`` of the
      boundary on either side;
    * ``side="inside"``: ``R_c - erode(R_c, B)``;
    * ``side="outside"``: ``dilate(R_c, B) - R_c``.

    The band is the union over classes, so two touching classes get a band along their shared boundary.

    Border rule: the image border is *not* a contour. Erosion treats every position outside the image as equal
    to the nearest image pixel (``numpy.pad(mode="edge")``; equivalently scipy's ``border_value=1``), so a region
    touching the image border is not eroded from the border and gets no band along it; dilation treats the
    outside as background (which gives the same result inside the image). An empty mask gives zeros.

    Args:
        label: label tensor ``[..., H, W]`` (2D) or ``[..., D, H, W]`` (3D), any leading dims, any device.
        width: band half-width in pixels (``>= 0``; 0 gives an empty band). Default 3 (see module docstring).
        side: "both", "inside" or "outside".
        spatial_dims: 2 or 3; if None, 2 when ``label.ndim <= 3`` (``[H, W]``, ``[1, H, W]``, ``[B, H, W]``)
            and 3 otherwise (``[1, D, H, W]``, ``[B, 1, D, H, W]``). A 2D batch ``[B, 1, H, W]`` is then read as
            3D with ``D = 1``, which gives the same band because a singleton axis is never eroded (edge rule);
            pass ``spatial_dims=2`` for 2D inputs with several leading dims to be explicit.

    Returns:
        float32 tensor of zeros and ones with the shape and device of ``label``.
    """
    side = side.lower()
    if side not in CONTOUR_SIDES:
        raise ValueError(f"side must be one of {CONTOUR_SIDES}, got {side!r}.")
    if int(width) != width or width < 0:
        raise ValueError(f"width must be a non-negative integer, got {width}.")
    width = int(width)
    spatial_dims = _infer_spatial_dims(label, spatial_dims)
    shape = label.shape
    lab = label.reshape(-1, 1, *shape[label.ndim - spatial_dims :])
    band = torch.zeros(lab.shape, dtype=torch.bool, device=label.device)
    if width == 0:
        return band.to(torch.float32).reshape(shape)
    for value in torch.unique(lab[lab > 0]):
        region = lab == value
        # dilation: any region pixel in the box; erosion (edge rule): no background pixel of the image in the box
        outer = region if side == "inside" else _box_any(region, width, spatial_dims)
        inner = region if side == "outside" else ~_box_any(~region, width, spatial_dims)
        band |= outer & ~inner
    return band.to(torch.float32).reshape(shape)


def roi_interior(label: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """ROI interior ``y_t = (1 - y_c) * y`` of Eq. 5 (Lin et al., IJCAI 2024), with ``y = label > 0``.

    Args:
        label: label tensor (foreground ``label > 0``).
        band: contour band ``y_c`` from :func:`contour_band`, same shape as ``label``.

    Returns:
        float32 tensor of zeros and ones, disjoint from ``band`` and contained in the ROI.
    """
    return (1.0 - (band > 0).to(torch.float32)) * (label > 0).to(torch.float32)


class ContourBand(Transform):
    """Contour band ``y_c`` (Eq. 4) and ROI interior ``y_t`` (Eq. 5) of UMed (Lin et al., IJCAI 2024) from a label.

    Input: a label map ``[1, H, W]`` or ``[1, D, H, W]`` (numpy or torch, any device; foreground ``label > 0``,
    several positive values are treated as classes, see :func:`contour_band`). Output: a float32 tensor
    ``[2, H, W]`` (``[2, D, H, W]``) with channel 0 = ``y_c`` and channel 1 = ``y_t``, on the label's device,
    a ``MetaTensor`` carrying the label's metadata when metadata is tracked.

    The default ``width = 3`` (a 7x7 footprint, ``dilate - erode``) is a choice: the paper does not give the
    band width; the default follows a public re-implementation (``docs/DESIGN.md``).
    The image border is not treated as a contour (see :func:`contour_band`).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, width: int = 3, side: str = "both") -> None:
        """
        Args:
            width: band half-width in pixels (footprint ``2 * width + 1``).
            side: "both" (dilation minus erosion), "inside" (region minus erosion), "outside" (dilation minus region).
        """
        if side.lower() not in CONTOUR_SIDES:
            raise ValueError(f"side must be one of {CONTOUR_SIDES}, got {side!r}.")
        if int(width) != width or width < 0:
            raise ValueError(f"width must be a non-negative integer, got {width}.")
        self.width = int(width)
        self.side = side.lower()

    def _compute(self, label: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        label_t = convert_to_tensor(label, track_meta=get_track_meta())
        lab = convert_to_tensor(label_t, track_meta=False)
        if lab.ndim not in (3, 4) or lab.shape[0] != 1:
            raise ValueError(f"expected a label map [1, H, W] or [1, D, H, W], got {tuple(lab.shape)}.")
        band = contour_band(lab, self.width, self.side, spatial_dims=lab.ndim - 1)
        return label_t, band, roi_interior(lab, band)

    def band_and_interior(self, label: NdarrayOrTensor) -> tuple[NdarrayOrTensor, NdarrayOrTensor]:
        """Return ``(y_c, y_t)``, each a float32 ``[1, *spatial]`` tensor carrying the label's metadata."""
        label_t, band, interior = self._compute(label)
        band_out = convert_to_dst_type(band, dst=label_t, dtype=torch.float32)[0]
        interior_out = convert_to_dst_type(interior, dst=label_t, dtype=torch.float32)[0]
        return band_out, interior_out

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return ``[2, *spatial]``: channel 0 the contour band ``y_c``, channel 1 the ROI interior ``y_t``."""
        label_t, band, interior = self._compute(label)
        return convert_to_dst_type(torch.cat([band, interior], dim=0), dst=label_t, dtype=torch.float32)[0]


class ContourBandd(MapTransform):
    """Dictionary-based wrapper of :class:`ContourBand` (``y_c`` of Eq. 4, ``y_t`` of Eq. 5, Lin et al., IJCAI 2024).

    For each label key writes ``y_c`` under ``band_key`` and ``y_t`` under ``interior_key``, each a float32
    ``[1, *spatial]`` tensor with the label's metadata; with several keys the outputs are named
    ``f"{key}_{band_key}"`` and ``f"{key}_{interior_key}"``. The label itself is kept.
    """

    backend = ContourBand.backend

    def __init__(
        self,
        keys: KeysCollection,
        band_key: str = "contour_band",
        interior_key: str = "roi_interior",
        width: int = 3,
        side: str = "both",
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the label maps.
            band_key: output key (or suffix, with several keys) of the contour band ``y_c``.
            interior_key: output key (or suffix, with several keys) of the ROI interior ``y_t``.
            width, side: see :class:`ContourBand`.
            allow_missing_keys: don't raise an exception if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.band_key = band_key
        self.interior_key = interior_key
        self.contour = ContourBand(width, side)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        several = len(self.keys) > 1
        for key in self.key_iterator(d):
            band, interior = self.contour.band_and_interior(d[key])
            d[f"{key}_{self.band_key}" if several else self.band_key] = band
            d[f"{key}_{self.interior_key}" if several else self.interior_key] = interior
        return d

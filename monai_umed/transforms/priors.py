# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The priors of Eq. 4-5 as one settings object and one training-size pipeline."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
    DivisiblePadd,
    EnsureTyped,
    MapTransform,
    RandCropByPosNegLabeld,
    Resized,
    SpatialPadd,
)

from monai_umed.transforms.channels import MatchChannelsd
from monai_umed.transforms.contour import CONTOUR_SIDES, ContourBand, ContourBandd
from monai_umed.transforms.labels import label_classes_transform
from monai_umed.transforms.texture import LBPTextureMap, LBPTextureMapd

__all__ = ["LBP_GRIDS", "ForegroundNeighbourhoodd", "PriorSettings", "prior_transforms"]

#: Where training computes the LBP texture map (:class:`PriorSettings`'s ``lbp_grid``).
LBP_GRIDS = ("train", "native")


@dataclass(frozen=True)
class PriorSettings:
    """How UMed computes its priors: the contour band ``y_c`` (Eq. 4) and the LBP texture map ``x_t`` (Eq. 5).

    One object for the settings that training, writing and the protector file must agree on.

    Args:
        band_width: half-width of the contour band in pixels at the training size (see :class:`ContourBand`).
        band_side: "both", "inside" or "outside".
        lbp_points, lbp_radius, lbp_method, lbp_normalize: see :class:`LBPTextureMap`.
        lbp_grid: where training computes ``x_t`` for a resized 2D image: ``"train"`` (the default) on the image at
            the training size; ``"native"`` on the image's own grid, then resized to the training size as the image
            is (bilinear, anti-aliased): the texture bound of the written file (computed on its own grid) as an
            exploiter that trains at that size sees it. Writing always uses the file's own grid. Volumes (trained
            on their own grid) are unaffected.
    """

    band_width: int = 3
    band_side: str = "both"
    lbp_points: int = 8
    lbp_radius: float = 1.0
    lbp_method: str = "uniform"
    lbp_normalize: str = "max_code"
    lbp_grid: str = "train"

    def __post_init__(self) -> None:
        if self.lbp_grid not in LBP_GRIDS:
            raise ValueError(f"lbp_grid must be one of {LBP_GRIDS}, got {self.lbp_grid!r}.")
        if self.band_side not in CONTOUR_SIDES:
            raise ValueError(f"band_side must be one of {CONTOUR_SIDES}, got {self.band_side!r}.")
        self.lbp()  # checks the LBP settings
        ContourBand(self.band_width, self.band_side)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PriorSettings:
        """The settings found in ``values`` (other keys are ignored); missing ones take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lbp(self) -> LBPTextureMap:
        """The texture-map transform ``x_t`` of these settings."""
        return LBPTextureMap(self.lbp_points, self.lbp_radius, self.lbp_method, self.lbp_normalize)

    def contour(self, width: int | None = None) -> ContourBand:
        """The contour-band transform of these settings (``width`` overrides the band width, e.g. on a native grid)."""
        return ContourBand(self.band_width if width is None else width, self.band_side)


class ForegroundNeighbourhoodd(MapTransform):
    """Crop ``keys`` to the box around ``label > 0`` grown by ``margin`` voxels on each side (clamped to the volume,
    MONAI's ``CropForegroundd``); a volume without foreground is kept whole.

    With ``margin`` equal to the patch size, ``RandCropByPosNegLabeld`` draws the same foreground-centred patches
    from the crop as from the whole volume (the same foreground voxels in the same order, and the windows around them
    never reach the crop's edge unless they reach the volume's), so caching the crop instead of the volume bounds the
    memory of large volumes with small structures (``tests/transforms/test_priors.py``); background-centred
    patches (``neg > 0``) come from the crop, i.e. from within one patch of the foreground.

    Args:
        keys: the keys to crop alike.
        label_key: the label map whose foreground (``> 0``) sets the box.
        margin: voxels added on each side (an int or one per spatial axis).
    """

    backend = CropForegroundd.backend

    def __init__(self, keys: KeysCollection, label_key: str = "label", margin: int | Sequence[int] = 0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.cropper = CropForegroundd(keys, source_key=label_key, margin=margin, allow_smaller=True,
                                       allow_missing_keys=allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not bool((d[self.label_key] > 0).any()):
            return d
        return dict(self.cropper(d))


def prior_transforms(
    image_size: int | Sequence[int],
    channels: int,
    band_width: int = 3,
    band_side: str = "both",
    lbp_points: int = 8,
    lbp_radius: float = 1.0,
    lbp_method: str = "uniform",
    lbp_normalize: str = "max_code",
    lbp_grid: str = "train",
    track_meta: bool = False,
    class_values: Sequence[int] | None = None,
    native: str | None = None,
) -> Compose:
    """Resize an ``{"image", "label"}`` pair to the training size and add the priors of Eq. 4-5.

    ``native`` keeps the pair on its own grid instead of resizing it (volumes): the priors are computed there,
    then ``"train"`` keeps the foreground's neighbourhood (:class:`ForegroundNeighbourhoodd`, margin
    ``image_size``), pads to at least ``image_size`` and draws one ``image_size`` patch per volume and draw, centred
    on the foreground or on the background with equal odds (``RandCropByPosNegLabeld(pos=1, neg=1)``, all keys
    alike, as the exploiter samples; a surrogate that only meets foreground-centred patches never learns the
    background of a whole volume), ``"apply"`` pads every side to a multiple of 16 (whole volumes
    through the fully convolutional networks).

    Image: bilinear with anti-aliasing; label: nearest, then class indices (:func:`label_classes_transform`:
    foreground ``label > 0`` as class 1 when ``class_values`` is empty, else ``class_values[k]`` -> ``k + 1``).
    Adds ``contour_band`` and ``roi_interior`` (``ContourBandd``) and ``texture_map`` (``LBPTextureMapd``; with
    ``lbp_grid="native"`` computed before the resize and resized as the image is).
    The outputs are float32 plain tensors unless ``track_meta``: training needs no metadata, and every torch
    operation on a MetaTensor goes through MONAI's metadata handling (measured in ``docs/DESIGN.md``).
    The keyword arguments are those of :class:`PriorSettings` (``prior_transforms(size, c, **s.as_dict())``).
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    keys = ["image", "label", "contour_band", "roi_interior", "texture_map"]
    if native not in (None, "train", "apply"):
        raise ValueError(f"native must be None, 'train' or 'apply', got {native!r}.")
    if lbp_grid not in LBP_GRIDS:
        raise ValueError(f"lbp_grid must be one of {LBP_GRIDS}, got {lbp_grid!r}.")
    lbp = LBPTextureMapd(
        "image", num_points=lbp_points, radius=lbp_radius, method=lbp_method, normalize=lbp_normalize
    )
    lbp_first = lbp_grid == "native" and not native
    image_keys = ["image", "texture_map"] if lbp_first else ["image"]
    resize = [] if native else [
        Resized(image_keys, spatial_size=size, mode="bilinear", anti_aliasing=True),
        Resized("label", spatial_size=size, mode="nearest"),
    ]
    crop = []
    if native == "train":
        crop = [
            # deterministic, hence cached: only the foreground's neighbourhood of a large volume is kept in memory
            ForegroundNeighbourhoodd(keys, label_key="label", margin=size),
            SpatialPadd(keys, spatial_size=size),
            RandCropByPosNegLabeld(keys, label_key="label", spatial_size=size, pos=1, neg=1, num_samples=1),
        ]
    elif native == "apply":
        crop = [DivisiblePadd(keys, k=16)]
    return Compose(
        [
            MatchChannelsd("image", channels),
            *([lbp] if lbp_first else []),
            *resize,
            label_classes_transform("label", class_values),
            ContourBandd("label", width=band_width, side=band_side),
            *([] if lbp_first else [lbp]),
            EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta),
            *crop,
        ]
    )

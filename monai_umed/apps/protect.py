# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Glue for the ``protect`` job: dataset resolution, the training transforms, and saving/loading a protector.

The bundle configs (``bundles/umed/configs/*.json``) compose these with MONAI components; a researcher can
call them from Python too.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import AsDiscreted, Compose, EnsureTyped, MapTransform, Resized

from monai_umed.data import LoadImageUnitd, LoadMaskd, load_datalist, make_synthetic_dataset, read_raw, validate_datalist
from monai_umed.networks import ContourPerturbator, TexturePerturbator, UMedPerturbator
from monai_umed.transforms import ContourBandd, LBPTextureMapd

__all__ = [
    "check_image_size",
    "check_output_dir",
    "resolve_dataset",
    "infer_channels",
    "MatchChannelsd",
    "prior_transforms",
    "umed_transforms",
    "build_perturbator",
    "save_protector",
    "load_protector",
    "PROTECTOR_FORMAT",
    "latest_checkpoint",
    "as_bool",
]

logger = logging.getLogger("monai_umed")

#: version tag stored in protector files
PROTECTOR_FORMAT = "monai_umed.protector/1"


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_output_dir(dataset_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """Refuse an output folder equal to, inside, or containing the input dataset (nothing may be overwritten)."""
    src = Path(dataset_dir).resolve()
    dst = Path(output_dir).resolve()
    if dst == src or _is_within(dst, src):
        raise ValueError(
            f"output folder {dst} is the input dataset {src} or inside it; monai_umed never writes into the "
            "input dataset. Choose an output folder outside it."
        )
    if _is_within(src, dst):
        raise ValueError(f"output folder {dst} contains the input dataset {src}; choose a folder beside it.")


def resolve_dataset(
    dataset_dir: str | None,
    datalist: str | None,
    output_dir: str,
    key: str = "training",
    stems: str | Sequence[str] | None = None,
    synthetic_size: int = 96,
    synthetic_images: int = 24,
    seed: int = 0,
) -> tuple[list[dict], Path]:
    """Return ``(datalist, dataset_root)`` for the job, validated.

    With neither ``dataset_dir`` nor ``datalist`` the embedded default dataset is used: a SYNTHETIC,
    segmentation-like dataset generated on the fly with MONAI's ``create_test_image_2d`` into
    ``<output_dir>/synthetic_input`` (logged loudly). Every problem of the dataset is reported in one error
    before any training starts.
    """
    if not dataset_dir and not datalist:
        root = Path(output_dir) / "synthetic_input"
        logger.warning(
            "No --dataset_dir or --datalist given: using the embedded SYNTHETIC default dataset (%d images "
            "of %dx%d generated with MONAI's create_test_image_2d) in %s. These are not medical images.",
            synthetic_images,
            synthetic_size,
            synthetic_size,
            root,
        )
        make_synthetic_dataset(root, num_images=synthetic_images, size=(synthetic_size, synthetic_size), seed=seed)
        dataset_dir = str(root)
    items = load_datalist(dataset_dir=dataset_dir, datalist=datalist, key=key, stems=stems)
    root = Path(dataset_dir) if dataset_dir else Path(datalist).parent
    validate_datalist(items, dataset_dir=root)
    if not items:
        raise ValueError(f"no images found in {dataset_dir or datalist}.")
    logger.info("dataset %s: %d image/mask pairs validated.", root, len(items))
    return items, root


def _grey_channels(array: np.ndarray) -> bool:
    """True for one channel, or three identical channels (a grey image stored as RGB, e.g. BUSI PNGs)."""
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 1):
        return True
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))
    return False


def infer_channels(datalist: Sequence[dict]) -> int:
    """Channels the perturbators work on: 1 if every image is grey (also grey stored as RGB), else 3.

    A grey image stored as RGB gets the same perturbation in its three channels, so it stays grey.
    """
    for item in datalist:
        if not _grey_channels(read_raw(item["image"]).array):
            return 3
    return 1


class MatchChannelsd(MapTransform):
    """Bring images to ``channels`` channels: grey-as-RGB ``[3, H, W]`` -> ``[1, H, W]`` (first channel), or
    ``[1, H, W]`` -> ``[3, H, W]`` (repeated); other counts pass unchanged when they already match."""

    def __init__(self, keys, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = channels

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] == self.channels:
                continue
            if self.channels == 1 and img.shape[0] == 3:
                d[key] = img[:1]
            elif self.channels == 3 and img.shape[0] == 1:
                d[key] = img.repeat(3, *([1] * (img.ndim - 1)))
            else:
                raise ValueError(f"cannot bring an image with {img.shape[0]} channels to {self.channels}.")
        return d


def check_image_size(image_size: int | Sequence[int], *strides: Sequence[int]) -> tuple[int, ...]:
    """Check that the training size suits every network: each side a multiple of the product of each stride list.

    ``protect`` calls it with the surrogate's and both generators' strides (``(2, 2, 2, 2)`` -> multiples of 16),
    so that a size such as 90 fails at once with this message instead of a tensor-shape error deep in a U-Net.
    Returns the size as a tuple.
    """
    size = (image_size,) * 2 if isinstance(image_size, (int, float, str)) else tuple(image_size)
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an integer or a pair of integers, got {image_size!r}.") from None
    multiple = 1
    for stride_list in strides:
        multiple = math.lcm(multiple, math.prod(int(s) for s in stride_list))
    if any(s < multiple or s % multiple for s in size):
        raise ValueError(
            f"image_size {image_size!r} does not suit the networks: each side must be a positive multiple of "
            f"{multiple} (they downsample by {multiple}); e.g. {max(multiple, round(size[0] / multiple) * multiple)}."
        )
    return size


def prior_transforms(
    image_size: int | Sequence[int],
    channels: int,
    band_width: int = 3,
    band_side: str = "both",
    lbp_points: int = 8,
    lbp_radius: float = 1.0,
    lbp_method: str = "uniform",
    lbp_normalize: str = "max_code",
    track_meta: bool = False,
) -> Compose:
    """Resize an ``{"image", "label"}`` pair to the training size and add the priors of Eq. 4-5.

    Image: bilinear with anti-aliasing; label: nearest, then foreground ``label > 0`` as class 1.
    Adds ``contour_band`` and ``roi_interior`` (``ContourBandd``) and ``texture_map`` (``LBPTextureMapd``).
    The outputs are float32 plain tensors unless ``track_meta``: training needs no metadata, and every torch
    operation on a MetaTensor goes through MONAI's metadata handling (on 128 BUSI cases at 96x96 and 2 CPU cores,
    plain tensors took an epoch from 6.2 s to 4.3 s for the generators and from 4.7 s to 3.3 s for the surrogate).
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return Compose(
        [
            MatchChannelsd("image", channels),
            Resized("image", spatial_size=size, mode="bilinear", anti_aliasing=True),
            Resized("label", spatial_size=size, mode="nearest"),
            AsDiscreted("label", threshold=0.5),
            ContourBandd("label", width=band_width, side=band_side),
            LBPTextureMapd(
                "image", num_points=lbp_points, radius=lbp_radius, method=lbp_method, normalize=lbp_normalize
            ),
            EnsureTyped(
                ["image", "label", "contour_band", "roi_interior", "texture_map"],
                dtype=torch.float32,
                track_meta=track_meta,
            ),
        ]
    )


def umed_transforms(image_size: int | Sequence[int], channels: int, **prior_kwargs: Any) -> Compose:
    """Load an image/mask pair from a datalist entry and apply :func:`prior_transforms`.

    The result is one flat ``Compose`` of deterministic transforms, so that ``CacheDataset`` caches all of it,
    priors included: a nested ``Compose`` counts as randomizable and stops the caching before the LBP and the
    contour band, which were then recomputed in every epoch (0.28 s per batch of 16 at 96x96 on 2 CPU cores).
    """
    return Compose(
        [LoadImageUnitd("image"), LoadMaskd("label"), prior_transforms(image_size, channels, **prior_kwargs)]
    ).flatten()


def build_perturbator(
    spatial_dims: int = 2,
    in_channels: int = 1,
    epsilon: float = 4 / 255,
    bound: str = "tanh",
    contour_channels: Sequence[int] = (16, 32, 64, 128),
    contour_strides: Sequence[int] = (2, 2, 2),
    theta: float = 1.0,
    texture_channels: Sequence[int] = (16, 32, 64, 128),
    texture_strides: Sequence[int] = (2, 2, 2),
    texture_res_units: int = 2,
) -> UMedPerturbator:
    """Build G_c (CDC U-Net generator, Eq. 3-4) and G_t (MONAI U-Net generator, Eq. 5) from plain arguments.

    These arguments are what a protector file stores (``settings["perturbator"]``), so the same call rebuilds
    the networks when the protector is loaded.
    """
    contour = ContourPerturbator(
        spatial_dims,
        in_channels,
        epsilon=epsilon,
        bound=bound,
        channels=tuple(contour_channels),
        strides=tuple(contour_strides),
        theta=theta,
    )
    texture = TexturePerturbator(
        spatial_dims,
        in_channels,
        epsilon=epsilon,
        bound=bound,
        channels=tuple(texture_channels),
        strides=tuple(texture_strides),
        num_res_units=texture_res_units,
    )
    return UMedPerturbator(contour=contour, texture=texture, epsilon=epsilon)


def save_protector(path: str | os.PathLike, perturbator: UMedPerturbator, settings: dict[str, Any]) -> Path:
    """Save a trained protector (both generators and the settings needed to apply them) atomically.

    ``settings`` must hold the constructor arguments of the perturbator under ``"perturbator"`` and the
    priors/size settings (image_size, channels, band_width, ...) used in training.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save({"format": PROTECTOR_FORMAT, "settings": settings, "state_dict": perturbator.state_dict()}, tmp)
    os.replace(tmp, path)
    return path


def load_protector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UMedPerturbator, dict]:
    """Load a protector saved by :func:`save_protector`: returns ``(perturbator in eval mode, settings)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"protector file not found: {path}")
    payload = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != PROTECTOR_FORMAT:
        raise ValueError(f"{path} is not a monai_umed protector file (expected format {PROTECTOR_FORMAT}).")
    settings = payload["settings"]
    perturbator = build_perturbator(**settings["perturbator"]).to(device)
    perturbator.load_state_dict(payload["state_dict"])
    perturbator.eval()
    return perturbator, settings


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str:
    """The most recent ``*.pt`` checkpoint written by MONAI's ``CheckpointSaver`` in ``checkpoint_dir``."""
    folder = Path(checkpoint_dir)
    files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"--resume was given but no checkpoint (*.pt) exists in {folder}.")
    logger.info("resuming from checkpoint %s", files[-1])
    return str(files[-1])


def as_bool(value: Any, name: str = "value") -> bool | None:
    """A command-line flag as a bool: ``True``/``False``, ``"true"``/``"false"``, ``"yes"``/``"no"``, ``1``/``0``.

    ``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"`` (only ``False`` is parsed
    as a bool), which Python would treat as true; configs pass their flags through this function. ``None`` stays
    ``None`` (meaning "automatic" where a config allows it).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "on"):
        return True
    if text in ("false", "no", "n", "0", "off"):
        return False
    if text in ("none", "null", "auto"):
        return None
    raise ValueError(f"{name}: cannot read {value!r} as true/false.")

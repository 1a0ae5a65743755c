# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Check a whole datalist before training and report every problem at once.

:func:`validate_datalist` raises one :class:`DatasetValidationError` whose message has one line per
problem, each starting with the file concerned::

    Dataset validation failed: 3 problem(s) in 10 case(s) (dataset: /data/kvasir):
      - /data/kvasir/images/a.png: image has no mask (no masks/a.<ext> in /data/kvasir)
      - /data/kvasir/masks/b.png: mask size 90x96 (HxW) does not match image /data/kvasir/images/b.png (96x96)
      - /data/kvasir/images/c.png: file is empty (0 bytes)
    Note: 1 mask(s) are empty (all zero) -- allowed, e.g. BUSI 'normal' cases.

Empty (all-zero) masks are allowed and only counted (a warning). Images are checked cheaply: PNG headers
plus chunk CRCs (``PIL.Image.verify``, no decompression); other formats and NIfTI are decoded. Masks are
always decoded because their values are checked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from PIL import Image

from monai_umed.utils import UserInputError
from monai_umed.data.adapters import DatasetError, _require_dir, detect_layout, find_orphans
from monai_umed.data.io import (
    ALPHA_MODES,
    MAX_MASK_LABELS,
    ImageReadError,
    PathLike,
    _check_file,
    _JUNK_ERRORS,
    image_paths,
    is_itk,
    is_nifti,
    mask_to_labels,
    read_raw,
    shape_text,
)

__all__ = ["MIN_IMAGE_SIDE", "DatasetValidationError", "ValidationReport", "image_header", "validate_datalist"]

logger = logging.getLogger(__name__)

#: Smallest image side accepted (the contour band, the LBP neighbourhood and SSIM's window need a few pixels).
MIN_IMAGE_SIDE = 8


class DatasetValidationError(UserInputError):
    """Everything wrong with a dataset, found in one pass.

    Attributes:
        problems: one line per problem, each naming the file(s) concerned.
        warnings: non-fatal notes (e.g. the count of empty masks).
        num_cases: number of datalist entries checked.
        root: dataset folder, if known.
    """

    def __init__(
        self, problems: Sequence[str], warnings: Sequence[str] = (), num_cases: int = 0, root: str | None = None
    ) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        self.num_cases = num_cases
        self.root = root
        where = f" (dataset: {root})" if root else ""
        lines = [f"Dataset validation failed: {len(self.problems)} problem(s) in {num_cases} case(s){where}:"]
        lines += [f"  - {p}" for p in self.problems]
        lines += [f"Note: {w}" for w in self.warnings]
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (type(self), (self.problems, self.warnings, self.num_cases, self.root))


@dataclass
class ValidationReport:
    """What :func:`validate_datalist` found in a dataset that passed.

    Attributes:
        num_cases: entries checked.
        empty_masks: names of the cases whose (union) mask is all zero.
        label_values: sorted label values seen over all masks (after :func:`~monai_umed.data.io.mask_to_labels`).
        warnings: non-fatal notes (also logged).
        seconds: wall time of the check.
        spatial_dims: 2 for images, 3 for volumes (3D NIfTI); a dataset that mixes them does not pass.
        volumes: the image paths of the 3D volumes (empty for a 2D dataset).
    """

    num_cases: int
    empty_masks: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    spatial_dims: int = 2
    volumes: list[str] = field(default_factory=list)


def _pil_channels(mode: str, bands: int) -> int:
    if mode in ("P", "PA"):
        return 3
    return bands - 1 if mode in ALPHA_MODES else bands


def image_header(path: PathLike, decode: bool = False) -> tuple:
    """Cheap look at an image file: ``(H, W, channels, mode)`` (a 3D NIfTI volume: ``(X, Y, Z, channels,
    "NIFTI")``, the modalities of a 4D file as channels).

    ``channels`` counts colour channels as :func:`~monai_umed.data.io.to_unit` will give them (alpha
    excluded, palette -> 3). PNG files are header-parsed and CRC-verified without decompression unless
    ``decode``; other raster formats, NIfTI, NRRD / MetaImage and DICOM series folders are decoded (mode
    ``"NIFTI"`` / ``"ITK"`` / ``"DICOM"``).

    Raises:
        ImageReadError: missing, empty, unsupported, corrupt or truncated file.
    """
    p = os.fspath(path)
    if is_nifti(p) or is_itk(p) or os.path.isdir(p):  # a folder: a DICOM series (read_raw says when it is not)
        raw = read_raw(p)
        _check_finite(raw.array, p)
        return (*raw.spatial_shape, raw.channels, raw.format)
    _check_file(Path(p))
    try:
        with Image.open(p) as im:
            w, h = im.size
            mode, fmt, bands = im.mode, (im.format or "").upper(), len(im.getbands())
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                raise ImageReadError(p, f"multi-frame image ({n_frames} frames); only 2D images are supported")
            if decode or fmt != "PNG":
                im.load()
                if mode in ("F", "I;16F") or mode.startswith("F;"):
                    _check_finite(np.asarray(im), p)
            else:
                im.verify()
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(p, f"image too large: {exc}") from exc
    except _JUNK_ERRORS as exc:
        raise ImageReadError(p, f"cannot read image: {type(exc).__name__}: {exc}") from exc
    return h, w, _pil_channels(mode, bands), mode


def _check_finite(array: np.ndarray, path: str) -> None:
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ImageReadError(
                path, f"image has {bad} non-finite value(s) (NaN or +-inf); replace them before protecting"
            )


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def validate_datalist(
    datalist: Sequence[Mapping],
    dataset_dir: PathLike | None = None,
    allowed_channels: Iterable[int] = (1, 3),
    max_labels: int = MAX_MASK_LABELS,
    decode_images: bool = False,
) -> ValidationReport:
    """Check every case of ``datalist`` and raise one error listing all problems.

    Checks: layout problems recorded by the adapters (``Datalist.problems``: image without mask, mask
    without image, duplicate stems, unsupported files, selected stems not found) and, when
    ``dataset_dir`` is given, a fresh scan of that folder (:func:`~monai_umed.data.adapters.find_orphans`;
    skipped if its layout is not a recognised one); entries without ``"image"`` or ``"label"``; duplicate
    case names or image paths; missing, empty, unreadable or corrupt files; 2D image channels not in
    ``allowed_channels`` (alpha excluded, e.g. 2-channel or CMYK images; a volume may have any number of
    modalities); channel files of one image (a list ``image``) on different grids; mask values that are not a
    label map (:func:`~monai_umed.data.io.mask_to_labels`); mask size different from the image size, or
    between a case's mask files. All-zero masks are allowed and counted in the report's warnings.

    Args:
        datalist: entries from :mod:`monai_umed.data.adapters` (or any list of ``{"image", "label"}`` dicts).
        dataset_dir: dataset folder to scan for orphan files as well.
        allowed_channels: accepted channel counts of 2D images.
        max_labels: most distinct values a mask may hold.
        decode_images: fully decode PNG images too (default: header + CRC check only).

    Returns:
        a :class:`ValidationReport` (the dataset passed).

    Raises:
        DatasetValidationError: at least one problem; ``.problems`` lists them, the message has one per line.
    """
    t0 = time.perf_counter()
    allowed = tuple(int(c) for c in allowed_channels)
    root = getattr(datalist, "root", None)
    problems: list[str] = list(getattr(datalist, "problems", []) or [])
    if dataset_dir is not None:
        try:
            scan_root = _require_dir(dataset_dir)
            root = root or scan_root
            try:
                detect_layout(scan_root)
            except DatasetError:
                pass  # not a layout we can scan (e.g. a JSON-described dataset): nothing to add
            else:
                problems += find_orphans(scan_root)
        except DatasetError as exc:
            problems.append(str(exc))
    if len(datalist) == 0:
        problems.append(f"{root or 'datalist'}: datalist is empty (no cases)")

    names: dict[str, str] = {}
    seen_images: dict[str, str] = {}
    empty: list[str] = []
    label_values: set[int] = set()
    dims: dict[int, list[str]] = {}
    for i, entry in enumerate(datalist):
        if not isinstance(entry, Mapping) or not entry.get("image"):
            problems.append(f"entry {i}: no 'image' path ({entry!r:.100})")
            continue
        files = image_paths(entry["image"])
        image = files[0]
        name = str(entry.get("name") or os.path.basename(image))
        if name in names:
            problems.append(f"{image}: duplicate case name '{name}' (also {names[name]})")
        else:
            names[name] = image
        if image in seen_images:
            problems.append(f"{image}: image listed twice (cases '{seen_images[image]}' and '{name}')")
        seen_images.setdefault(image, name)

        img_hw = None
        try:
            *spatial, channels, mode = image_header(image, decode=decode_images)
            for other in files[1:]:  # the channel files of one image share its grid
                *o_spatial, o_channels, _ = image_header(other, decode=decode_images)
                if tuple(o_spatial) != tuple(spatial):
                    raise ImageReadError(other, f"channel file of shape {shape_text(o_spatial)} does not match the "
                                                f"first channel file {image} ({shape_text(spatial)})")
                channels += o_channels
            img_hw = tuple(spatial)
            dims.setdefault(len(spatial), []).append(image)
            if min(spatial) < MIN_IMAGE_SIDE:
                problems.append(
                    f"{image}: image is {shape_text(spatial)}; monai_umed needs at least {MIN_IMAGE_SIDE} pixels a side"
                )
            if len(spatial) == 2 and channels not in allowed:
                # 2D networks take grey or colour images; a volume's channels are its modalities (any number)
                problems.append(
                    f"{image}: unsupported channel count {channels} (mode {mode}"
                    + (f", {len(files)} channel files" if len(files) > 1 else "") + "); allowed: "
                    + ", ".join(str(c) for c in allowed)
                )
        except ImageReadError as exc:
            problems.append(str(exc))

        label = entry.get("label")
        labels = [label] if isinstance(label, (str, os.PathLike)) else list(label or [])
        if not labels:
            problems.append(f"{image}: image has no mask (entry '{name}' has no 'label')")
            continue
        union_empty = True
        first_hw, first_path = None, None
        for lp in labels:
            lp = os.fspath(lp)
            try:
                lab = mask_to_labels(read_raw(lp), max_labels)
            except ImageReadError as exc:
                problems.append(str(exc))
                union_empty = False  # unknown: do not also count it as empty
                continue
            hw = lab.shape
            if img_hw is not None and hw != img_hw:
                hint = (
                    " (the same axes in reverse order: NIfTI is read in (x, y, z) order, DICOM series, NRRD and "
                    "MetaImage in SimpleITK's (z, y, x); save the mask in the image's family, e.g. as .nrrd)"
                    if len(hw) == 3 and tuple(reversed(hw)) == tuple(img_hw) else ""
                )
                problems.append(
                    f"{lp}: mask size {shape_text(hw)} does not match image {image} ({'x'.join(map(str, img_hw))})"
                    + hint
                )
            elif img_hw is None and first_hw is not None and hw != first_hw:
                problems.append(
                    f"{lp}: mask size {shape_text(hw)} differs from {first_path} ({'x'.join(map(str, first_hw))})"
                )
            if first_hw is None:
                first_hw, first_path = hw, lp
            if lab.any():
                union_empty = False
                label_values.update(np.flatnonzero(np.bincount(lab.ravel())).tolist())
        if union_empty:
            empty.append(name)

    warnings = []
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        warnings.append(
            f"{len(empty)} of {len(datalist)} mask(s) are empty (all zero) -- allowed, "
            f"e.g. BUSI 'normal' cases ({shown})"
        )
    if len(dims) > 1:
        problems.append(
            f"{root or 'datalist'}: the dataset mixes 2D images ({len(dims[2])}, e.g. {dims[2][0]}) and 3D volumes "
            f"({len(dims[3])}, e.g. {dims[3][0]}); one dataset is either 2D or 3D"
        )
    problems = _dedupe(problems)
    if problems:
        raise DatasetValidationError(problems, warnings, num_cases=len(datalist), root=root)
    for w in warnings:
        logger.warning(w)
    return ValidationReport(
        num_cases=len(datalist),
        empty_masks=empty,
        label_values=sorted(label_values),
        warnings=warnings,
        seconds=time.perf_counter() - t0,
        spatial_dims=3 if 3 in dims else 2,
        volumes=list(dims.get(3, [])),
    )

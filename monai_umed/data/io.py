# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Reading 2D medical images and masks in their native form, and the package's [0, 1] intensity scale.

Two views of one image file are kept apart on purpose:

* :func:`read_raw` gives the file's pixels exactly as stored (``np.asarray(PIL.Image.open(p))`` for raster
  files, the squeezed 2D data array for NIfTI), so a protected copy can later be written with the same
  dtype, mode and layout;
* :func:`to_unit` gives the float32 channel-first ``[C, H, W]`` array on the package's **[0, 1] scale**,
  ``(x - lo) / (hi - lo)`` with ``(lo, hi) = intensity_range(array)``; :func:`from_unit` is its exact inverse
  for integer files (8-bit and 16-bit round-trip bit for bit).

Raster images are never transposed (rows are ``H``, columns are ``W``), unlike MONAI's default ``PILReader``.
NIfTI arrays keep the axis order of the stored data array (first axis is ``H``); no reorientation is done.

:class:`LoadImageUnit` / :class:`LoadImageUnitd` and :class:`LoadMask` / :class:`LoadMaskd` are the MONAI
transforms that load images and label maps for training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from PIL import Image, UnidentifiedImageError

from monai_umed.data.dicom import dicom_voxel_count, is_dicom_series, read_dicom_series
from monai_umed.utils import UserInputError

__all__ = [
    "SUPPORTED_IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "ALPHA_MODES",
    "MAX_MASK_LABELS",
    "PathLike",
    "ImageReadError",
    "MaskValueError",
    "RawImage",
    "is_nifti",
    "is_itk",
    "is_supported_image",
    "image_exists",
    "suffix_of",
    "stem_of",
    "label_paths",
    "image_paths",
    "image_key",
    "case_name",
    "read_channel_files",
    "voxel_count",
    "relative_path",
    "protected_name",
    "read_raw",
    "intensity_range",
    "value_range",
    "unit_channels",
    "to_unit",
    "from_unit",
    "output_mode",
    "mask_to_labels",
    "read_mask",
    "shape_text",
    "mask_values",
    "LoadImageUnit",
    "LoadImageUnitd",
    "LoadMask",
    "LoadMaskd",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File suffixes (lower case) that :func:`read_raw` accepts.
SUPPORTED_IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".nrrd", ".mha"
)
#: NIfTI suffixes (read with nibabel).
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: Single-file ITK formats read and written with SimpleITK (NRRD, MetaImage); format ``"ITK"``.
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".mha")
#: PIL modes whose last channel is alpha; :func:`to_unit` drops it and :func:`from_unit` re-attaches it.
ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "LA", "RGBa", "La"})
#: PIL modes converted with ``Image.convert("RGB")`` before scaling (palette images).
_CONVERT_TO_RGB_MODES: frozenset[str] = frozenset({"P", "PA"})
#: A mask with more distinct values than this is not a label map (e.g. a greyscale image used as a mask).
MAX_MASK_LABELS: int = 32
#: Lossy formats: masks saved in them are binarised (their edges carry compression noise).
_LOSSY_FORMATS: frozenset[str] = frozenset({"JPEG"})
_JUNK_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, TypeError, IndexError)


class ImageReadError(UserInputError):
    """An image or mask file could not be read; the message names the file and the problem.

    Args:
        path: the file.
        problem: what is wrong with it (e.g. ``"file not found"``, ``"file is empty (0 bytes)"``).
    """

    def __init__(self, path: PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep picklable (DataLoader workers re-raise it in the main process)
        return (type(self), (self.path, self.problem))


class MaskValueError(ImageReadError):
    """A mask file was read but its values are not a label map (e.g. a continuous greyscale image)."""


@dataclass
class RawImage:
    """One image file's pixels in their native dtype and layout, plus what is needed to write it back.

    Attributes:
        array: raster files: ``np.asarray(PIL.Image.open(path))`` -- ``(H, W)`` or ``(H, W, C)`` in the
            file's dtype (8-bit -> ``uint8``, 16-bit -> ``uint16``, mode ``"1"`` -> ``bool``, ``"I"`` ->
            ``int32``, ``"F"`` -> ``float32``); palette images keep their index array. NIfTI: the data array
            with singleton dimensions squeezed away, ``(H, W)``, in the dtype nibabel's ``dataobj`` gives
            (the on-disk dtype, or float when the header sets a scaling slope/intercept).
        format: ``"PNG"``, ``"JPEG"``, ``"TIFF"``, ``"BMP"``, ``"NIFTI"``, ``"DICOM"`` (a series folder,
            :mod:`monai_umed.data.dicom`: ``(z, y, x)`` like SimpleITK) or ``"ITK"`` (``.nrrd`` / ``.mha`` through
            SimpleITK: the array in SimpleITK's reversed axis order, ``(z, y, x)``, singleton axes squeezed, vector
            pixels as a trailing channel axis; written back with the file's spacing, origin, direction, metadata
            and pixel type).
        mode: the PIL mode (``"L"``, ``"RGB"``, ``"RGBA"``, ``"I;16"``, ``"1"``, ``"P"``...) or ``None`` for NIfTI.
        path: the file, as a string.
        nifti_header: the NIfTI header (a copy) or ``None``.
        affine: the NIfTI affine (4x4) or ``None``.
        native_shape: the array's shape before squeezing (NIfTI), else ``array.shape``.
        info: PIL's ``Image.info`` (dpi, ICC profile, ...) for writing a faithful copy; empty for NIfTI.
        converted: for palette images only, the ``(H, W, 3)`` RGB array from ``Image.convert("RGB")``
            that :func:`to_unit` uses.
        slope, inter: NIfTI scaling (``scl_slope``, ``scl_inter``; DICOM ``RescaleSlope``, ``RescaleIntercept``):
            :attr:`array` holds the values a reader gets, ``stored * slope + inter``; ``1.0`` and ``0.0`` when the
            file is not scaled (and for raster files).
        spatial_ndim: 2 for an image, 3 for a volume.
        files: a DICOM series (format ``"DICOM"``, :attr:`path` its folder): the slice files in array order.
        stored_array: a scaled DICOM series: the stored integers, ``(z, y, x)`` (what :meth:`stored` gives).
    """

    array: np.ndarray
    format: str
    mode: str | None
    path: str
    nifti_header: Any = None
    affine: np.ndarray | None = None
    native_shape: tuple[int, ...] = ()
    info: dict = field(default_factory=dict, repr=False)
    converted: np.ndarray | None = field(default=None, repr=False)
    slope: float = 1.0
    inter: float = 0.0
    spatial_ndim: int = 2
    files: tuple[str, ...] = ()
    stored_array: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.native_shape:
            self.native_shape = tuple(self.array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(H, W)`` of a 2D image, the three voxel dimensions of a volume."""
        return tuple(int(s) for s in self.array.shape[: self.spatial_ndim])

    @property
    def channels_last(self) -> bool:
        """Whether :attr:`array` has a trailing channel axis (colour, alpha, or the modalities of a 4D NIfTI)."""
        return self.array.ndim > self.spatial_ndim

    @property
    def scaled(self) -> bool:
        """Whether the stored values are scaled on reading (NIfTI ``scl_slope`` / ``scl_inter``)."""
        return self.slope != 1.0 or self.inter != 0.0

    def stored(self) -> np.ndarray:
        """The array as stored on disk before scaling (squeezed like :attr:`array`): :attr:`array` itself for
        an unscaled file, else the raw NIfTI data (``dataobj.get_unscaled()``) in the on-disk dtype."""
        if not self.scaled:
            return self.array
        if self.stored_array is not None:
            return self.stored_array
        import nibabel as nib

        return _native_byteorder(np.asarray(np.squeeze(nib.load(self.path).dataobj.get_unscaled())))

    @property
    def has_alpha(self) -> bool:
        """Whether the last channel of :attr:`array` is an alpha channel (dropped by :func:`to_unit`)."""
        return self.mode in ALPHA_MODES and self.channels_last

    @property
    def channels(self) -> int:
        """Number of channels of :func:`to_unit`'s output (alpha excluded, palette -> 3)."""
        return unit_channels(self)


def suffix_of(path: PathLike) -> str:
    """Lower-case suffix of ``path``, ``".nii.gz"`` counted as one suffix."""
    name = os.path.basename(os.fspath(path)).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def is_nifti(path: PathLike) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return suffix_of(path) in NIFTI_SUFFIXES


def is_itk(path: PathLike) -> bool:
    """Whether ``path`` names a single-file ITK image (``.nrrd``, ``.mha``; read with SimpleITK)."""
    return suffix_of(path) in ITK_SUFFIXES


def image_exists(path: PathLike) -> bool:
    """Whether ``path`` is an image to read: a regular file, or a folder holding a DICOM series."""
    return os.path.isfile(path) or is_dicom_series(path)


def is_supported_image(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`SUPPORTED_IMAGE_SUFFIXES` (any case)."""
    return suffix_of(path) in SUPPORTED_IMAGE_SUFFIXES


def stem_of(path: PathLike) -> str:
    """File name without its suffix.

    ``"a.nii.gz"`` -> ``"a"``, ``"benign (4)_mask_1.png"`` -> ``"benign (4)_mask_1"``.
    """
    name = os.path.basename(os.fspath(path))
    suffix = suffix_of(name)
    return name[: len(name) - len(suffix)] if suffix else name


def label_paths(label: Any) -> list[str]:
    """A datalist entry's ``label`` (one path, several paths, or ``None``) as a list of paths."""
    if label is None:
        return []
    if isinstance(label, (str, os.PathLike)):
        return [os.fspath(label)]
    return [os.fspath(p) for p in label]


def image_paths(image: Any) -> list[str]:
    """A datalist entry's ``image`` as a list of files: one path (the usual case), or a list of paths that are the
    channels of one image in order (nnU-Net v2 ``{CASE}_0000``, ``{CASE}_0001``, ... one file per modality).
    The same rule as :func:`label_paths`."""
    return label_paths(image)


def image_key(image: Any) -> str:
    """One string for a datalist entry's ``image`` in messages and tables: the path, or for channel files the
    first file's path (the one that names the case)."""
    return image_paths(image)[0]


def case_name(item: Mapping[str, Any]) -> str:
    """A datalist entry's case name: its ``name``, else the stem of its (first) image file."""
    return str(item.get("name") or stem_of(image_key(item["image"])))


def read_channel_files(paths: Sequence[PathLike]) -> list[RawImage]:
    """Read the channel files of one image (:func:`read_raw` each) and check that they fit together: the same
    spatial shape and dimensionality, and for NIfTI files the same affine (to 1e-4), as the first file.

    Raises:
        ImageReadError: a file cannot be read, or does not match the first file (the message names both).
    """
    raws = [read_raw(p) for p in paths]
    first = raws[0]
    for r in raws[1:]:
        if r.spatial_ndim != first.spatial_ndim or r.spatial_shape != first.spatial_shape:
            raise ImageReadError(
                r.path, f"channel file of shape {shape_text(r.spatial_shape)} does not match the first channel file "
                f"{first.path} ({shape_text(first.spatial_shape)}); the channel files of one image share one grid"
            )
        if (r.affine is None) != (first.affine is None) or (
            r.affine is not None and not np.allclose(r.affine, first.affine, atol=1e-4)
        ):
            raise ImageReadError(
                r.path, f"channel file has another voxel-to-world affine than the first channel file {first.path}"
            )
    return raws


def voxel_count(path: PathLike) -> int:
    """Number of values in an image file (all channels), from its header where the format has one (NIfTI, NRRD,
    MetaImage), else by decoding it; to size caches without loading data."""
    p = os.fspath(path)
    if os.path.isdir(p) and is_dicom_series(p):
        return dicom_voxel_count(p)
    if is_nifti(p):
        import nibabel as nib

        return int(np.prod(nib.load(p).shape))
    if is_itk(p):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(p)
        reader.ReadImageInformation()
        return int(np.prod(reader.GetSize())) * int(reader.GetNumberOfComponents())
    return int(read_raw(p).array.size)


def relative_path(path: PathLike, root: PathLike) -> str | None:
    """``path`` relative to ``root`` (both made absolute), or ``None`` when it lies outside ``root``."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        return None
    return rel


def protected_name(path: PathLike) -> str:
    """The name a protected image is written under: JPEG files (``.jpg``, ``.jpeg``) become ``.png``, since JPEG
    compression would wash the perturbation out; every other name is kept."""
    path = os.fspath(path)
    if suffix_of(path) in (".jpg", ".jpeg"):
        return path[: len(path) - len(suffix_of(path))] + ".png"
    return path


def _check_file(path: Path) -> None:
    if path.is_dir() and is_dicom_series(path):
        return
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, f"broken symbolic link (its target {os.readlink(path)} does not exist)")
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a regular file" + (" (a folder is read as an image only when it holds a DICOM "
                                                           "series)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    if not is_supported_image(path):
        raise ImageReadError(
            path, f"unsupported file type '{suffix_of(path)}' (supported: {', '.join(SUPPORTED_IMAGE_SUFFIXES)})"
        )


def _native_byteorder(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder not in ("=", "|"):  # e.g. big-endian "I;16B" or NIfTI data
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _read_nifti(path: Path) -> RawImage:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many kinds (ImageFileError, EOFError, zlib errors, ...)
        raise ImageReadError(path, f"cannot read NIfTI: {type(exc).__name__}: {exc}") from exc
    if data.dtype.fields is not None:
        raise ImageReadError(path, f"unsupported NIfTI data type {data.dtype} (structured/RGB voxels)")
    native_shape = tuple(data.shape)
    data = np.squeeze(data)
    if data.ndim not in (2, 3, 4):
        raise ImageReadError(
            path, f"not a 2D image or a 3D volume: data shape {native_shape} (squeezed {tuple(data.shape)})"
        )
    return RawImage(
        array=_native_byteorder(np.asarray(data)),
        format="NIFTI",
        mode=None,
        path=str(path),
        nifti_header=img.header.copy(),
        affine=np.asarray(img.affine, dtype=np.float64),
        native_shape=native_shape,
        slope=float(getattr(img.dataobj, "slope", 1.0)),
        inter=float(getattr(img.dataobj, "inter", 0.0)),
        # squeezed 2D: an image; 3D: a volume; 4D: a volume with its modalities on the last axis (MSD layout)
        spatial_ndim=2 if data.ndim == 2 else 3,
    )


def _itk_affine(img: Any, axes: Sequence[int]) -> np.ndarray:
    """A 4x4 voxel-to-world matrix for the array axes of a SimpleITK image (``axes``: the ITK axis of each array
    axis, the array being in reversed ITK order), in RAS like NIfTI's (ITK's world is LPS)."""
    dim = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing, origin = np.asarray(img.GetSpacing(), np.float64), np.asarray(img.GetOrigin(), np.float64)
    affine = np.eye(4)
    rows = min(dim, 3)
    for col, axis in enumerate(axes[:3]):
        affine[:rows, col] = (direction[:, axis] * spacing[axis])[:rows]
    affine[:rows, 3] = origin[:rows]
    affine[:2] *= -1  # LPS -> RAS
    affine[3] = (0, 0, 0, 1)
    return affine


def _read_itk(path: Path) -> RawImage:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
        data = sitk.GetArrayFromImage(img)  # reversed ITK axis order: (z, y, x[, components])
    except Exception as exc:  # SimpleITK raises RuntimeError for unreadable or truncated files
        raise ImageReadError(path, f"cannot read {suffix_of(path)} image: {type(exc).__name__}: {exc}") from exc
    dim, comps = img.GetDimension(), img.GetNumberOfComponentsPerPixel()
    if data.dtype.kind not in "biuf":
        raise ImageReadError(path, f"unsupported pixel type {img.GetPixelIDTypeAsString()}")
    native_shape = tuple(data.shape)
    itk_axes = list(range(dim - 1, -1, -1))  # the ITK axis of each array axis
    keep = [i for i, n in enumerate(data.shape[:dim]) if n > 1]  # singleton spatial axes squeezed
    if comps > 1:
        data = data.reshape(*[data.shape[i] for i in keep], comps)
    else:
        data = data.reshape(*[data.shape[i] for i in keep])
    spatial = len(keep)
    if spatial not in (2, 3):
        raise ImageReadError(path, f"not a 2D image or a 3D volume: size {tuple(img.GetSize())} (ITK order)")
    return RawImage(
        array=_native_byteorder(np.asarray(data)),
        format="ITK",
        mode=None,
        path=str(path),
        affine=_itk_affine(img, [itk_axes[i] for i in keep]) if spatial == 3 else None,
        native_shape=native_shape,
        spatial_ndim=spatial,
    )


def _read_raster(path: Path) -> RawImage:
    try:
        with Image.open(path) as im:
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                raise ImageReadError(path, f"multi-frame image ({n_frames} frames); only 2D images are supported")
            im.load()
            mode, fmt, info = im.mode, (im.format or "").upper(), dict(im.info)
            array = np.asarray(im)
            converted = np.asarray(im.convert("RGB")) if mode in _CONVERT_TO_RGB_MODES else None
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"image too large: {exc}") from exc
    except _JUNK_ERRORS as exc:
        raise ImageReadError(path, f"cannot read image: {type(exc).__name__}: {exc}") from exc
    if fmt == "PNG" and mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
        # Pillow < 10.? opens 16-bit greyscale PNGs as mode "I" (int32): give them back as uint16.
        array, mode = array.astype(np.uint16), "I;16"
    if fmt == "MPO":  # multi-picture JPEG from cameras: first frame is a plain JPEG
        fmt = "JPEG"
    return RawImage(
        array=_native_byteorder(array), format=fmt, mode=mode, path=str(path), info=info, converted=converted
    )


def read_raw(path: PathLike) -> RawImage:
    """Read one image file (2D, or a 3D NIfTI / NRRD / MetaImage volume, or a DICOM series folder) in its native
    dtype and layout.

    Args:
        path: a file with one of :data:`SUPPORTED_IMAGE_SUFFIXES`, or a folder of DICOM files (one series).

    Returns:
        a :class:`RawImage`; see its attributes for the array layout.

    Raises:
        ImageReadError: the file is missing, empty, of an unsupported type, corrupt/truncated, multi-frame,
            or (NIfTI) not 2D, 3D or 4D (a volume with modalities) after squeezing singleton dimensions.
    """
    p = Path(path)
    _check_file(p)
    if p.is_dir():
        return read_dicom_series(p)
    if is_nifti(p):
        return _read_nifti(p)
    return _read_itk(p) if is_itk(p) else _read_raster(p)


def intensity_range(array: np.ndarray | torch.Tensor, data_range: bool = False) -> tuple[float, float]:
    """The ``(lo, hi)`` that map ``array`` to the package's [0, 1] scale ``(x - lo) / (hi - lo)``.

    * ``uint8`` -> ``(0, 255)`` (fixed: 8-bit pictures use most of their range and 4/255 is then 4 grey levels),
      unless ``data_range``; ``bool`` -> ``(0, 1)``;
    * every other dtype -> the per-image ``(min, max)`` of the data: ``uint16`` (a 12-bit X-ray, CT or MR stored in
      16 bits would otherwise get a bound of ``4/255 * 65535 = 1028`` levels, a quarter of its 0-4095 range),
      ``int16`` (CT), ``int32`` (TIFF ``"I"``), ``uint32``, floats (NaN and infinities ignored).

    epsilon is thus a fraction of what the image actually spans. For the per-image cases ``hi > lo`` is guaranteed:
    a constant image gives ``(v, v + 1)``; :func:`from_unit` inverts the scale exactly for integer data.
    """
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if a.dtype == np.bool_:
        return 0.0, 1.0
    if a.dtype == np.uint8 and not data_range:
        return 0.0, 255.0
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"intensity_range: unsupported dtype {a.dtype}")
    if a.size == 0:
        return 0.0, 1.0
    finite = a if np.issubdtype(a.dtype, np.integer) else a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def value_range(values: np.ndarray, spatial_ndim: int = 2) -> tuple[Any, Any]:
    """The ``(lo, hi)`` of the [0, 1] scale of a file's values (``values`` in the file's layout, alpha excluded).

    One :func:`intensity_range` for a 2D image, whose colour channels share one scale, and for a single-channel
    volume; one per modality for a volume with channels (a 4D NIfTI: the modalities are separate measurements, e.g.
    T1 and FLAIR, each with its own range), then ``lo`` and ``hi`` are arrays of shape ``(C,)`` that broadcast over
    the trailing channel axis. epsilon is thus a fraction of each modality's range, as for channel files.
    """
    a = np.asarray(values)
    volume = spatial_ndim == 3  # a volume's scale is its own data range, whatever its dtype (uint8 MR included)
    if volume and a.ndim == 4:
        pairs = [intensity_range(a[..., c], data_range=True) for c in range(a.shape[-1])]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return intensity_range(a, data_range=volume)


def _unit_source(raw: RawImage) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour array ``(*spatial)`` or ``(*spatial, C)`` that is scaled, alpha ``(H, W)`` or ``None``)."""
    if raw.converted is not None:
        return raw.converted, None
    a = raw.array
    if raw.has_alpha:
        return a[..., :-1], a[..., -1]
    return a, None


def unit_channels(raw: RawImage) -> int:
    """Channels of :func:`to_unit`'s output for ``raw``: colour channels only (alpha dropped, palette -> 3)."""
    src, _ = _unit_source(raw)
    return 1 if src.ndim == raw.spatial_ndim else int(src.shape[-1])


def output_mode(raw: RawImage) -> str | None:
    """The PIL mode of :func:`from_unit`'s output for ``raw``: ``raw.mode``, except palette images -> ``"RGB"``."""
    return "RGB" if raw.mode in _CONVERT_TO_RGB_MODES else raw.mode


def to_unit(raw: RawImage) -> np.ndarray:
    """The image as float32 ``[C, H, W]`` (a volume: ``[C, *spatial]``) on the [0, 1] scale ``(x - lo) / (hi - lo)``.

    ``(lo, hi) = value_range(...)`` of the colour array (one range per modality for a volume with channels).
    Alpha channels (``RGBA``, ``LA``) are **dropped** (``RGBA`` -> 3 channels, ``LA`` -> 1; :func:`from_unit` puts
    the original alpha back);
    palette images (``P``) are converted to RGB with PIL; ``I;16`` is read as uint16; mode ``"1"`` gives
    0/1. Non-finite float values map to 0.
    """
    src, _ = _unit_source(raw)
    lo, hi = value_range(src, raw.spatial_ndim)
    a = src.astype(np.float64) if src.dtype.itemsize > 2 or src.dtype.kind == "f" else src.astype(np.float32)
    unit = ((a - lo) / (hi - lo)).astype(np.float32, copy=False)
    if src.dtype.kind == "f":
        unit = np.nan_to_num(unit, nan=0.0, posinf=1.0, neginf=0.0)
    unit = unit[None] if unit.ndim == raw.spatial_ndim else np.moveaxis(unit, -1, 0)
    return np.ascontiguousarray(unit)


def from_unit(unit: np.ndarray | torch.Tensor, raw: RawImage) -> np.ndarray:
    """Inverse of :func:`to_unit`: a ``[C, H, W]`` [0, 1]-scale image back to ``raw``'s dtype and layout.

    ``x = unit * (hi - lo) + lo`` with ``raw``'s :func:`value_range`; integer dtypes are rounded
    half-to-even (``np.rint``) and clipped to the dtype's range, ``bool`` is ``x >= 0.5``, float dtypes
    are cast. The result has ``raw.array``'s layout (``(H, W)`` or ``(H, W, C)``); for ``RGBA``/``LA``
    files the original alpha channel is re-attached. Palette images come back as ``(H, W, 3)`` RGB uint8
    (see :func:`output_mode`). NIfTI arrays come back squeezed; reshape to ``raw.native_shape`` to write.

    ``from_unit(to_unit(raw), raw)`` reproduces ``raw.array`` exactly for 8-bit, 16-bit and bilevel files.
    Values of ``unit`` outside [0, 1] are not clipped here beyond the dtype's range.
    """
    u = unit.detach().cpu().numpy() if isinstance(unit, torch.Tensor) else np.asarray(unit)
    src, alpha = _unit_source(raw)
    nd = raw.spatial_ndim
    channels = 1 if src.ndim == nd else src.shape[-1]
    if u.ndim == nd:
        u = u[None]
    if u.ndim != nd + 1 or u.shape[0] != channels or tuple(u.shape[1:]) != tuple(src.shape[:nd]):
        raise ValueError(
            f"from_unit: expected an array of shape {(channels, *src.shape[:nd])} for {raw.path}, got {tuple(u.shape)}"
        )
    lo, hi = value_range(src, nd)
    x = u.astype(np.float64)
    x = (x[0] if src.ndim == nd else np.moveaxis(x, 0, -1)) * (hi - lo) + lo
    dtype = src.dtype
    if dtype == np.bool_:
        out = x >= 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(x), info.min, info.max).astype(dtype)
    else:
        out = x.astype(dtype)
    if alpha is not None:
        out = np.concatenate([out if out.ndim == nd + 1 else out[..., None], alpha[..., None]], axis=-1)
    return np.ascontiguousarray(out)


def shape_text(shape: Sequence[int]) -> str:
    """``(H, W)`` -> ``"HxW (HxW)"``-style text for messages: ``"40x32 (HxW)"``, a volume ``"35x51x35 (voxels)"``."""
    dims = "x".join(str(int(s)) for s in shape)
    return f"{dims} (HxW)" if len(shape) == 2 else f"{dims} (voxels)"


def _distinct_values(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    if a.dtype == np.bool_:
        return np.unique(a.view(np.uint8))
    return np.unique(a)


def mask_to_labels(raw: RawImage, max_labels: int = MAX_MASK_LABELS) -> np.ndarray:
    """A mask file's pixels as an ``(H, W)`` ``uint8`` label map (a NIfTI volume: its voxel shape).

    Rules:

    * colour masks: alpha is ignored and the label is the max over the colour channels; palette (``P``)
      masks use their palette **indices** (the usual way labels are stored in palette PNGs);
    * ``bool`` / mode ``"1"`` -> {0, 1};
    * lossy formats (JPEG): binarised at half the 8-bit range (``> 127``; ``> 0`` when all values are
      <= 1), because compression smears the edges of a 0/255 mask;
    * a binary mask (background 0 and one other value ``v``, e.g. 0/255 or 0/1) -> {0, 1} when ``v >=
      max_labels`` (an intensity-coded mask such as 0/255), else ``v`` is kept (a label map in which one class
      appears, e.g. 0/2 in a 0/1/2 dataset, keeps class 2); a mask of one value -> 0 if it is 0 (an empty
      mask, allowed), that value if it is below ``max_labels``, else 1 (all foreground);
    * otherwise, at most ``max_labels`` distinct non-negative integer values all below 256 are kept as
      label values (multi-class, e.g. 0/1/2).

    Raises:
        MaskValueError: non-integer, negative or too many distinct values (e.g. a greyscale image used as
            a mask); the message names the file and the values found.
    """
    a = raw.array
    if raw.has_alpha:
        a = a[..., :-1]
    if a.ndim > raw.spatial_ndim:
        a = a.max(axis=-1)
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.all():
            raise MaskValueError(raw.path, "mask has non-finite values (NaN/inf)")
        if not np.array_equal(a, np.round(a)):
            raise MaskValueError(raw.path, "mask has non-integer values; expected a binary or label mask")
    if raw.format in _LOSSY_FORMATS and a.size:
        threshold = 0 if a.max() <= 1 else 127
        return (a > threshold).astype(np.uint8)
    values = _distinct_values(a)
    if values.size and values[0] < 0:
        raise MaskValueError(raw.path, f"mask has negative values (min {values[0]})")
    if values.size <= 2:
        if values.size == 2 and values[0] != 0 and values[-1] < 256:
            return a.astype(np.uint8)  # two labels without background, e.g. {1, 2}
        if values.size and 0 < values[-1] < max_labels:
            return a.astype(np.uint8)  # one class of a label map, e.g. {0, 2}: the class keeps its value
        return (a > 0).astype(np.uint8)
    if values.size > max_labels or values[-1] >= 256:
        shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
        raise MaskValueError(
            raw.path,
            f"not a label mask: {values.size} distinct values ({shown}; max {values[-1]}); a mask must be binary "
            f"(0/255 or 0/1) or hold at most {max_labels} integer labels below 256 -- is this a greyscale image?",
        )
    return a.astype(np.uint8)


def read_mask(
    paths: PathLike | Sequence[PathLike], max_labels: int = MAX_MASK_LABELS
) -> tuple[np.ndarray, list[RawImage]]:
    """Read one mask file or the union (element-wise max) of several into an ``(H, W)`` label map.

    Returns:
        ``(labels, raws)``: the label map (see :func:`mask_to_labels`) and the :class:`RawImage` of each file.

    Raises:
        ImageReadError: a file cannot be read; MaskValueError: a file is not a label mask;
        ValueError: no paths given, or the files differ in size (message names them).
    """
    plist = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not plist:
        raise ValueError("read_mask: no mask file given")
    raws = [read_raw(p) for p in plist]
    labels = mask_to_labels(raws[0], max_labels)
    for r in raws[1:]:
        other = mask_to_labels(r, max_labels)
        if other.shape != labels.shape:
            raise ImageReadError(
                r.path, f"mask size {shape_text(other.shape)} differs from {raws[0].path} "
                f"({'x'.join(map(str, labels.shape))}); cannot take their union"
            )
        labels = np.maximum(labels, other)
    return labels, raws


def mask_values(items: Sequence[Mapping[str, Any]], max_labels: int = MAX_MASK_LABELS) -> list[int]:
    """The distinct values (background 0 included when present) of the label maps of ``items``' masks
    (``item["label"]``: one path or several, read as their union with :func:`read_mask`), sorted."""
    found: set[int] = set()
    for item in items:
        labels, _ = read_mask(item["label"], max_labels)
        found.update(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    return sorted(found)


def _base_meta(raw: RawImage) -> dict:
    meta: dict[str, Any] = {
        "filename_or_obj": raw.path,
        "raw_dtype": str(raw.array.dtype),
        "format": raw.format,
        "mode": raw.mode or "",
        "spatial_shape": np.asarray(raw.spatial_shape, dtype=np.int64),
        "original_channel_dim": -1 if raw.channels_last else "no_channel",
    }
    if raw.affine is not None:
        meta["affine"] = torch.as_tensor(raw.affine, dtype=torch.float64)
    return meta


class LoadImageUnit(Transform):
    """Load an image file as a float32 ``MetaTensor`` ``[C, H, W]`` on the [0, 1] scale.

    Uses :func:`read_raw` + :func:`to_unit` (no PIL transpose; alpha dropped). Meta data:
    ``filename_or_obj``, ``intensity_range`` (``(lo, hi)`` of :func:`value_range`, lists for a volume with
    modalities), ``raw_dtype``,
    ``format``, ``mode`` (``""`` for NIfTI), ``spatial_shape``, ``original_channel_dim`` and, for NIfTI,
    ``affine``.

    A list of paths is one image whose channels are in separate files (:func:`image_paths`): each file is scaled
    by its own :func:`intensity_range` (modalities have their own scales) and the channels are concatenated in
    order; ``filename_or_obj`` and ``intensity_range`` are the first file's, ``channel_files`` (JSON) lists all
    (:func:`read_channel_files` checks that they share one grid).
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, path: PathLike | Sequence[PathLike]) -> MetaTensor:
        paths = image_paths(path)
        raws = read_channel_files(paths) if len(paths) > 1 else [read_raw(paths[0])]
        unit = np.concatenate([to_unit(r) for r in raws]) if len(raws) > 1 else to_unit(raws[0])
        src, _ = _unit_source(raws[0])
        meta = _base_meta(raws[0])
        lo, hi = value_range(src, raws[0].spatial_ndim)
        meta["intensity_range"] = (np.asarray(lo, np.float64).tolist(), np.asarray(hi, np.float64).tolist())
        if len(raws) > 1:
            meta["channel_files"] = json.dumps([r.path for r in raws])
        return MetaTensor(torch.from_numpy(unit), meta=meta)


class LoadMask(Transform):
    """Load a mask -- one path, or a list of paths whose union is the case's mask -- as ``[1, H, W]`` float32.

    Values follow :func:`mask_to_labels` (binary 0/255 or 0/1 -> {0, 1}; multi-class labels kept; colour
    masks -> max over colour channels, alpha ignored). Meta data: ``filename_or_obj`` (the first file),
    ``mask_files`` (JSON list of all files), ``num_mask_files``, ``format``, ``spatial_shape`` and, for
    NIfTI, ``affine``.

    Args:
        max_labels: most distinct values a mask may hold (see :data:`MAX_MASK_LABELS`).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, max_labels: int = MAX_MASK_LABELS) -> None:
        self.max_labels = max_labels

    def __call__(self, paths: PathLike | Sequence[PathLike]) -> MetaTensor:
        labels, raws = read_mask(paths, self.max_labels)
        meta = _base_meta(raws[0])
        meta.pop("mode")
        meta.pop("original_channel_dim")
        meta["raw_dtype"] = str(raws[0].array.dtype)
        meta["mask_files"] = json.dumps([r.path for r in raws])
        meta["num_mask_files"] = len(raws)
        return MetaTensor(torch.from_numpy(labels.astype(np.float32)[None]), meta=meta)


class LoadImageUnitd(MapTransform):
    """Dictionary version of :class:`LoadImageUnit`: replaces each path under ``keys`` by its ``MetaTensor``."""

    backend = LoadImageUnit.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadImageUnit()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadMaskd(MapTransform):
    """Dictionary version of :class:`LoadMask`: each value is one mask path or a list of them (union)."""

    backend = LoadMask.backend

    def __init__(
        self, keys: KeysCollection, max_labels: int = MAX_MASK_LABELS, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMask(max_labels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d

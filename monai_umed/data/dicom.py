# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""DICOM series folders: one image (a volume, or a 2D image for a single slice) per folder of single-frame DICOM
files, read and written back file for file with pydicom.

A series is read into the same layout as SimpleITK gives (and as NRRD / MetaImage volumes are read here): an array
``(z, y, x)`` whose slices are sorted along the slice normal (``ImagePositionPatient`` projected on the cross
product of ``ImageOrientationPatient``; ``InstanceNumber`` when the geometry tags are missing), the values a reader
gets (``stored * RescaleSlope + RescaleIntercept``, e.g. Hounsfield units), and a voxel-to-world affine in RAS like
NIfTI's. Masks of a series are therefore NRRD or MetaImage volumes on the same grid (the SimpleITK axis order).

Writing keeps every data element of every file (patient, study, geometry, private tags, transfer syntax) except
the pixel data, which gets the protected stored values in the file's own dtype, and the instance identifiers: a
protected copy is a new image, so each file gets a new ``SOPInstanceUID`` (also in its file meta) and the series a
new ``SeriesInstanceUID``, both derived deterministically from the originals (a re-run writes the same bytes).

Refused with a message naming the folder (or file): several series in one folder, compressed or big-endian
transfer syntaxes (decompress first, e.g. ``gdcmconv --raw``), multi-frame or colour files, slices of different
sizes, pixel types or rescale parameters, two slices at one position.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DICOM_FORMAT", "is_dicom_file", "is_dicom_series", "dicom_series_files", "read_dicom_series",
           "write_dicom_series", "dicom_voxel_count", "folder_sha256"]

#: :attr:`~monai_umed.data.RawImage.format` of a DICOM series.
DICOM_FORMAT = "DICOM"
_SUFFIX = ".dcm"
#: identifiers derived from the original ones for the protected copy (deterministic, see the module docstring)
_UID_SALT = "monai_umed protected copy"


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file that starts like a DICOM Part 10 file (``DICM`` at byte 128) or is named
    ``*.dcm``."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.name.lower().endswith(_SUFFIX):
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_series_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files of a series folder (regular, non-hidden files, :func:`is_dicom_file`), by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def is_dicom_series(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that holds DICOM files (a series to read as one image)."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        return any(not c.name.startswith(".") and is_dicom_file(c) for c in p.iterdir())
    except OSError:
        return False


def folder_sha256(folder: str | os.PathLike) -> str:
    """One SHA-256 for a folder of files: over each regular file's relative path and content, in sorted order."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _error(path: Any, problem: str) -> Exception:
    from monai_umed.data.io import ImageReadError

    return ImageReadError(path, problem)


def _read_slices(folder: Path, stop_before_pixels: bool) -> list[tuple[Path, Any]]:
    import pydicom

    files = dicom_series_files(folder)
    if not files:
        raise _error(folder, "no DICOM files in this folder")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=stop_before_pixels, force=f.name.lower().endswith(_SUFFIX))
        except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ... for broken files
            raise _error(f, f"cannot read DICOM: {type(exc).__name__}: {exc}") from exc
        if "PixelData" in ds or (stop_before_pixels and "Rows" in ds):
            slices.append((f, ds))  # a DICOMDIR or a structured report in the folder holds no image: skipped
    if not slices:
        raise _error(folder, "no DICOM image in this folder (files without pixel data only)")
    series = sorted({str(ds.get("SeriesInstanceUID", "")) for _, ds in slices})
    if len(series) > 1:
        raise _error(folder, f"holds {len(series)} DICOM series ({', '.join(series)}); put each series in its own folder")
    return slices


def _check_slices(folder: Path, slices: list[tuple[Path, Any]]) -> None:
    first_path, first = slices[0]
    for f, ds in slices:
        missing = [t for t in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation") if t not in ds]
        if missing:
            raise _error(f, f"DICOM image without {', '.join(missing)}; cannot interpret its pixel data")
        ts = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
        if ts is not None and (ts.is_compressed or not ts.is_little_endian):
            raise _error(f, f"transfer syntax {ts.name} is not supported (compressed or big endian): decompress the "
                            "series first, e.g. with `gdcmconv --raw`")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise _error(f, f"multi-frame DICOM ({ds.NumberOfFrames} frames); only single-frame slices are supported")
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise _error(f, f"{ds.SamplesPerPixel} samples per pixel; only grey DICOM slices are supported")
        for tag in ("Rows", "Columns", "BitsAllocated", "PixelRepresentation"):
            if ds.get(tag) != first.get(tag):
                raise _error(f, f"{tag} {ds.get(tag)} differs from {first_path.name} ({first.get(tag)}); the slices "
                                "of one series share one size and pixel type")
        if _rescale(ds) != _rescale(first):
            raise _error(f, f"rescale slope / intercept {_rescale(ds)} differ from {first_path.name} "
                            f"({_rescale(first)}); slices with their own scaling are not supported")


def _rescale(ds: Any) -> tuple[float, float]:
    return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)


def _geometry(slices: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], np.ndarray | None]:
    """Slices sorted along the slice normal and the RAS affine of the ``(z, y, x)`` array, or sorted by
    ``InstanceNumber`` and ``None`` without geometry tags."""
    if not all("ImageOrientationPatient" in ds and "ImagePositionPatient" in ds for _, ds in slices):
        return sorted(slices, key=lambda s: (int(s[1].get("InstanceNumber", 0) or 0), s[0].name)), None
    iop = np.asarray(slices[0][1].ImageOrientationPatient, np.float64)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ordered = sorted(slices, key=lambda s: float(np.dot(np.asarray(s[1].ImagePositionPatient, np.float64), normal)))
    pos = [np.asarray(ds.ImagePositionPatient, np.float64) for _, ds in ordered]
    for (fa, _), (fb, _), a, b in zip(ordered, ordered[1:], pos, pos[1:]):
        if abs(float(np.dot(b - a, normal))) < 1e-4:
            raise _error(fb, f"lies at the same position as {fa.name}; one series cannot hold two slices at one place")
    spacing = np.asarray(slices[0][1].get("PixelSpacing", [1.0, 1.0]), np.float64)
    step = (pos[-1] - pos[0]) / (len(pos) - 1) if len(pos) > 1 else normal * float(slices[0][1].get("SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = step  # array axis 0: the slices
    affine[:3, 1] = col * spacing[0]  # axis 1: the rows, along the column direction cosine
    affine[:3, 2] = row * spacing[1]  # axis 2: the columns, along the row direction cosine
    affine[:3, 3] = pos[0]
    affine[:2] *= -1  # DICOM's patient coordinates are LPS; RAS like NIfTI
    affine[3] = (0, 0, 0, 1)
    return ordered, affine


def _stored_dtype(ds: Any) -> np.dtype:
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32):
        raise _error(getattr(ds, "filename", "?"), f"{bits} bits allocated per pixel is not supported (8, 16, 32)")
    return np.dtype(f"<{'i' if int(ds.PixelRepresentation) else 'u'}{bits // 8}")


def read_dicom_series(folder: str | os.PathLike) -> Any:
    """Read a DICOM series folder as a :class:`~monai_umed.data.RawImage` (format :data:`DICOM_FORMAT`).

    ``array`` is ``(z, y, x)`` (a single slice: ``(y, x)``) holding the values a reader gets: the stored integers
    when the rescale is the identity, else ``stored * slope + intercept`` as float64 (``slope`` / ``inter`` set, and
    ``stored()`` gives the stored integers); ``files`` lists the slice files in array order; ``affine`` is RAS.

    Raises:
        ImageReadError: naming the folder or the file, for the cases of the module docstring.
    """
    from monai_umed.data.io import RawImage

    folder = Path(folder)
    slices = _read_slices(folder, stop_before_pixels=False)
    _check_slices(folder, slices)
    ordered, affine = _geometry(slices)
    dtype = _stored_dtype(ordered[0][1])
    planes = []
    for f, ds in ordered:
        try:
            plane = np.asarray(ds.pixel_array)
        except Exception as exc:  # missing or truncated pixel data
            raise _error(f, f"cannot decode the pixel data: {type(exc).__name__}: {exc}") from exc
        planes.append(plane.astype(dtype, copy=False))
    stored = np.stack(planes) if len(planes) > 1 else planes[0]
    slope, inter = _rescale(ordered[0][1])
    scaled = slope != 1.0 or inter != 0.0
    return RawImage(
        array=stored.astype(np.float64) * slope + inter if scaled else stored,
        format=DICOM_FORMAT,
        mode=None,
        path=str(folder),
        affine=affine if len(planes) > 1 else None,
        native_shape=tuple(stored.shape),
        slope=slope,
        inter=inter,
        spatial_ndim=3 if len(planes) > 1 else 2,
        files=tuple(str(f) for f, _ in ordered),
        stored_array=stored if scaled else None,
    )


def dicom_voxel_count(folder: str | os.PathLike) -> int:
    """Number of voxels of a series from its headers (no pixel data read)."""
    slices = _read_slices(Path(folder), stop_before_pixels=True)
    ds = slices[0][1]
    return int(ds.Rows) * int(ds.Columns) * len(slices)


def _derived_uid(uid: Any) -> str:
    """A UID under the ``2.25`` root (a 128-bit number, as for UUIDs), taken from a hash of the original UID: the same
    original gives the same new UID, so every file of a series gets one new series UID and re-runs agree."""
    digest = hashlib.sha256(f"{_UID_SALT}\0{uid}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def write_dicom_series(stored: np.ndarray, raw: Any, tmp: Path) -> None:
    """Write the protected ``stored`` values (``raw``'s layout, the stored integers) as a copy of ``raw``'s series
    in the new folder ``tmp``: each slice file under its own name, every data element kept but the pixel data and
    the instance identifiers (module docstring)."""
    import pydicom

    tmp = Path(tmp)
    tmp.mkdir()
    planes = stored.reshape(raw.native_shape)
    planes = planes[None] if planes.ndim == 2 else planes
    for src, plane in zip(raw.files, planes):
        ds = pydicom.dcmread(src)
        dtype = _stored_dtype(ds)
        ds.PixelData = np.ascontiguousarray(plane.astype(dtype)).tobytes()
        for tag in ("SOPInstanceUID", "SeriesInstanceUID"):
            if tag in ds:
                setattr(ds, tag, _derived_uid(ds.get(tag)))
        if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp / Path(src).name, enforce_file_format=False)

"""Shared pytest fixtures for monai_umed tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

#: ``../shared/data`` beside the repository (or ``$UMED_SHARED_DATA``); tests that need it skip when absent.
SHARED_DATA = Path(os.environ.get("UMED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path to the real BUSI / CVC-ClinicDB data; skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def load_script():
    """Import a script of the repository that is not part of the package (``examples/X.py``, ``benchmarks/X.py``)
    from its path relative to the repository root, as a module."""

    def load(relpath: str):
        path = Path(__file__).resolve().parents[1] / relpath
        spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


# One intra-op thread: tests use tiny tensors, and on a shared 2-core machine several threads per process
# oversubscribe the cores and make small convolutions orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def write_ellipses(root: Path, n: int = 16, size: int = 32, seed: int = 0) -> Path:
    """Bright ellipses (0.8) on a dark background (0.15) with mild noise, ``images/`` + ``masks/`` 8-bit PNGs: an
    easy segmentation task that a tiny U-Net learns in a few epochs."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        ay, ax = rng.uniform(size * 0.12, size * 0.28, 2)
        m = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1
        img = np.where(m, 0.8, 0.15) + rng.normal(0, 0.05, m.shape)
        Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(root / "images" / f"e_{i:02d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / f"e_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def ellipses():
    """:func:`write_ellipses`, for tests that need an easy real-looking dataset on disk."""
    return write_ellipses


def write_two_classes(root: Path, n: int = 10, size: int = 32) -> Path:
    """Grey 8-bit images with a bright square (mask value 1) and a dim disc (mask value 2) at random places:
    an easy task with two foreground classes."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = rng.uniform(0.0, 0.15, (size, size))
        mask = np.zeros((size, size), np.uint8)
        r, c = rng.integers(2, size // 2 - 8, 2)
        mask[r : r + 8, c : c + 8] = 1
        cy, cx = rng.integers(size // 2 + 5, size - 5, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 2
        img[mask == 1] += 0.8
        img[mask == 2] += 0.4
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"case_{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def two_classes():
    """:func:`write_two_classes`: masks with values 0/1/2 (two foreground classes)."""
    return write_two_classes


def write_volumes(root: Path, n: int = 8, shape: tuple[int, int, int] = (20, 24, 18), seed: int = 0) -> Path:
    """3D NIfTI volumes (float32) with a bright ball (label 1) and a dimmer one (label 2), ``v/i<k>.nii.gz`` and
    ``v/l<k>.nii.gz``, plus ``split.json`` (the last quarter as test cases)."""
    import json

    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "v").mkdir(parents=True)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    entries = []
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        c = rng.integers(6, 11, 3)
        lab[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16] = 1
        lab[(zz - c[0] - 5) ** 2 + (yy - c[1] - 6) ** 2 + (xx - c[2] - 4) ** 2 <= 9] = 2
        img = rng.random(shape).astype(np.float32) * 0.2 + (lab == 1) * 0.8 + (lab == 2) * 0.4
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), root / "v" / f"i{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "v" / f"l{i}.nii.gz")
        entries.append({"image": f"v/i{i}.nii.gz", "label": f"v/l{i}.nii.gz"})
    k = n - max(1, n // 4)
    (root / "split.json").write_text(json.dumps({"training": entries[:k], "test": entries[k:]}))
    return root


@pytest.fixture(scope="session")
def volumes():
    """:func:`write_volumes`: a tiny 3D two-class dataset with its split."""
    return write_volumes


def write_dicom_series(
    folder: Path, volume: np.ndarray, slope: float = 1.0, intercept: float = -1024.0, spacing=(0.7, 0.8),
    thickness: float = 2.5, series_uid: str | None = None, order: list[int] | None = None, **extra,
) -> Path:
    """One CT-like DICOM series (``volume``: ``(z, y, x)`` stored integers, int16 or uint16) as single-frame files
    ``IM<n>.dcm`` in ``folder``, numbered in ``order`` (a permutation of the slices, so that a reader must sort by
    position), explicit VR little endian; ``extra`` data elements are set on every file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    order = order if order is not None else list(range(volume.shape[0]))
    for k, plane in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", series_uid
        ds.PatientName, ds.PatientID, ds.Modality = "Test^Case", "P1", "CT"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if volume.dtype == np.int16 else 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, 5.0, 100.0 + k * thickness]
        ds.PixelSpacing, ds.SliceThickness = list(spacing), thickness
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.InstanceNumber = k + 1
        for key, value in extra.items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        ds.save_as(folder / f"IM{order[k]}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="session")
def dicom_series():
    """:func:`write_dicom_series`."""
    return write_dicom_series

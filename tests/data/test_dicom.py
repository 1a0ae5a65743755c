# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""DICOM series folders: read like SimpleITK reads them, refused with a message naming the folder or file, written
back file for file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monai_umed.data import ImageReadError, is_dicom_series, read_raw, write_dicom_series
from monai_umed.data.io import _itk_affine
from monai_umed.utils import atomic_write


def _volume(seed: int = 0, shape=(5, 12, 14), dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2000, shape).astype(dtype)


@pytest.mark.parametrize("slope, intercept, dtype", [(1.0, -1024.0, np.int16), (1.0, 0.0, np.uint16), (0.5, -10.0, np.uint16)])
def test_series_reads_like_simpleitk(tmp_path: Path, dicom_series, slope, intercept, dtype):
    """Slices sorted by position whatever the file names, the rescaled values, the RAS affine of the ``(z, y, x)``
    array: all as SimpleITK's series reader gives them."""
    import SimpleITK as sitk

    vol = _volume(dtype=dtype)
    folder = dicom_series(tmp_path / "s", vol, slope=slope, intercept=intercept, order=[3, 0, 4, 1, 2])
    assert is_dicom_series(folder) and not is_dicom_series(tmp_path)
    raw = read_raw(folder)
    assert raw.format == "DICOM" and raw.spatial_ndim == 3 and raw.spatial_shape == vol.shape
    np.testing.assert_array_equal(raw.stored(), vol)
    np.testing.assert_allclose(raw.array, vol * slope + intercept)
    assert [Path(f).name for f in raw.files] == ["IM3.dcm", "IM0.dcm", "IM4.dcm", "IM1.dcm", "IM2.dcm"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    np.testing.assert_allclose(raw.array, sitk.GetArrayFromImage(img))
    np.testing.assert_allclose(raw.affine, _itk_affine(img, [2, 1, 0]), atol=1e-6)


def test_series_problems_name_the_folder_or_file(tmp_path: Path, dicom_series):
    from pydicom.uid import JPEGLosslessSV1

    two = tmp_path / "two"
    dicom_series(two, _volume(), series_uid="1.2.3.4")
    dicom_series(tmp_path / "tmp", _volume(1), series_uid="1.2.3.5")
    for f in (tmp_path / "tmp").iterdir():
        f.rename(two / f"B{f.name}")
    with pytest.raises(ImageReadError, match=r"two: holds 2 DICOM series \(1.2.3.4, 1.2.3.5\)"):
        read_raw(two)
    packed = dicom_series(tmp_path / "packed", _volume())
    import pydicom
    from pydicom.encaps import encapsulate

    f = packed / "IM2.dcm"
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([ds.PixelData])  # not a real JPEG stream: the reader refuses before decoding
    ds["PixelData"].VR = "OB"
    ds.save_as(f, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"IM2.dcm: transfer syntax .*gdcmconv --raw"):
        read_raw(packed)
    stacked = dicom_series(tmp_path / "stacked", _volume())
    ds = pydicom.dcmread(stacked / "IM1.dcm")
    ds.ImagePositionPatient = pydicom.dcmread(stacked / "IM0.dcm").ImagePositionPatient
    ds.save_as(stacked / "IM1.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="same position"):
        read_raw(stacked)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(ImageReadError, match="not a regular file .*DICOM series"):
        read_raw(empty)
    bare = dicom_series(tmp_path / "bare", _volume())
    ds = pydicom.dcmread(bare / "IM3.dcm")
    del ds.BitsAllocated
    ds.save_as(bare / "IM3.dcm", enforce_file_format=True)
    with pytest.raises(ImageReadError, match="IM3.dcm: DICOM image without BitsAllocated"):
        read_raw(bare)


def test_a_nifti_mask_of_a_series_is_named_with_the_axis_order(tmp_path: Path, dicom_series):
    """A series is read in SimpleITK's (z, y, x) order, a NIfTI mask in (x, y, z): validation says so."""
    import nibabel as nib

    from monai_umed.data import DatasetValidationError, validate_datalist

    vol = _volume()
    dicom_series(tmp_path / "images" / "ct", vol)
    (tmp_path / "masks").mkdir()
    lab = np.zeros(vol.shape[::-1], np.uint8)
    lab[4:8, 4:8, 1:3] = 1
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "masks" / "ct.nii.gz")
    with pytest.raises(DatasetValidationError, match=r"ct.nii.gz: mask size .* reverse order.*\.nrrd"):
        validate_datalist([{"image": str(tmp_path / "images" / "ct"), "label": str(tmp_path / "masks" / "ct.nii.gz")}])


def test_written_series_keeps_every_element_but_pixels_and_instance_uids(tmp_path: Path, dicom_series):
    """Each slice goes back to its own file; the tags are kept, the SOP instance and series UIDs are new and
    deterministic; a folder replaces an earlier output as a whole (atomic_write)."""
    import pydicom

    vol = _volume(2)
    src = dicom_series(tmp_path / "s", vol, order=[1, 0, 2, 4, 3], InstitutionName="Test Hospital")
    raw = read_raw(src)
    new = raw.stored().copy()
    new[2, 3, 4] += 7
    dst = tmp_path / "out" / "s"
    dst.parent.mkdir()
    for _ in range(2):  # the second write replaces the first
        atomic_write(dst, lambda tmp: write_dicom_series(new, raw, tmp))
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(".")], "no temporary folder left"
    back = read_raw(dst)
    np.testing.assert_array_equal(back.stored(), new)
    np.testing.assert_allclose(back.affine, raw.affine)
    uids = []
    for f in sorted(src.iterdir()):
        a, b = pydicom.dcmread(f), pydicom.dcmread(dst / f.name)
        assert b.SOPInstanceUID != a.SOPInstanceUID and b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
        assert b.SeriesInstanceUID != a.SeriesInstanceUID
        uids.append((b.SOPInstanceUID, b.SeriesInstanceUID))
        for elem in a:
            if elem.keyword not in ("PixelData", "SOPInstanceUID", "SeriesInstanceUID"):
                assert b[elem.tag].value == elem.value, elem.keyword
    assert len({u[1] for u in uids}) == 1 and len({u[0] for u in uids}) == len(uids)
    again = tmp_path / "again"
    atomic_write(again, lambda tmp: write_dicom_series(new, raw, tmp))
    assert [pydicom.dcmread(again / f.name).SOPInstanceUID for f in sorted(src.iterdir())] == [u[0] for u in uids]

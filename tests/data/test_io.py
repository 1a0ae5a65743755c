# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.data.io: raw reading, [0, 1] scale round trip, mask conversion, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from PIL import Image

from monai_umed.data.io import (
    ImageReadError,
    LoadImageUnit,
    LoadImageUnitd,
    LoadMask,
    LoadMaskd,
    MaskValueError,
    from_unit,
    intensity_range,
    value_range,
    is_nifti,
    mask_to_labels,
    output_mode,
    read_mask,
    read_raw,
    stem_of,
    suffix_of,
    to_unit,
    unit_channels,
)

H, W = 7, 5  # non-square on purpose: catches transposes


def _rng():
    return np.random.default_rng(0)


def _write(tmp_path: Path, kind: str) -> tuple[Path, np.ndarray]:
    """Write one tiny test file of ``kind``; returns (path, the array written)."""
    rng = _rng()
    g8 = rng.integers(0, 256, (H, W), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if kind == "png_L":
        p, a = tmp_path / "a.png", g8
        Image.fromarray(a, "L").save(p)
    elif kind == "png_RGB":
        p, a = tmp_path / "a.png", rgb8
        Image.fromarray(a, "RGB").save(p)
    elif kind == "png_RGBA":
        p, a = tmp_path / "a.png", rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
        Image.fromarray(a, "RGBA").save(p)
    elif kind == "png_LA":
        p, a = tmp_path / "a.png", rng.integers(0, 256, (H, W, 2), dtype=np.uint8)
        Image.fromarray(a, "LA").save(p)
    elif kind == "png_I16":
        p, a = tmp_path / "a.png", rng.integers(0, 65536, (H, W), dtype=np.uint16)
        Image.fromarray(a).save(p)  # mode I;16
    elif kind == "png_1":
        p, a = tmp_path / "a.png", rng.integers(0, 2, (H, W)).astype(bool)
        Image.fromarray(a).save(p)
    elif kind == "jpg_L":
        p, a = tmp_path / "a.jpg", g8
        Image.fromarray(a, "L").save(p, quality=95)
    elif kind == "jpg_RGB":
        p, a = tmp_path / "a.jpeg", rgb8
        Image.fromarray(a, "RGB").save(p, quality=95)
    elif kind == "bmp_RGB":
        p, a = tmp_path / "a.bmp", rgb8
        Image.fromarray(a, "RGB").save(p)
    elif kind == "tif_L":
        p, a = tmp_path / "a.tif", g8
        Image.fromarray(a, "L").save(p)
    elif kind == "tif_I16":
        p, a = tmp_path / "a.tiff", rng.integers(0, 65536, (H, W), dtype=np.uint16)
        Image.fromarray(a).save(p)
    elif kind == "nii_f32":
        p, a = tmp_path / "a.nii.gz", rng.normal(size=(H, W)).astype(np.float32)
        nib.save(nib.Nifti1Image(a[..., None], np.diag([0.5, 0.7, 1.0, 1.0])), p)
    elif kind == "nii_i16":
        p, a = tmp_path / "a.nii", rng.integers(-1000, 2000, (H, W), dtype=np.int16)
        nib.save(nib.Nifti1Image(a, np.eye(4)), p)
    elif kind == "nii_u8":
        p, a = tmp_path / "a.nii.gz", g8
        nib.save(nib.Nifti1Image(a[None], np.eye(4)), p)
    else:
        raise KeyError(kind)
    return p, a


LOSSLESS = ["png_L", "png_RGB", "png_RGBA", "png_LA", "png_I16", "png_1", "bmp_RGB", "tif_L", "tif_I16",
            "nii_f32", "nii_i16", "nii_u8"]
ALL = LOSSLESS + ["jpg_L", "jpg_RGB"]
EXPECTED = {  # kind: (format, mode, dtype, unit channels)
    "png_L": ("PNG", "L", np.uint8, 1),
    "png_RGB": ("PNG", "RGB", np.uint8, 3),
    "png_RGBA": ("PNG", "RGBA", np.uint8, 3),
    "png_LA": ("PNG", "LA", np.uint8, 1),
    "png_I16": ("PNG", "I;16", np.uint16, 1),
    "png_1": ("PNG", "1", np.bool_, 1),
    "jpg_L": ("JPEG", "L", np.uint8, 1),
    "jpg_RGB": ("JPEG", "RGB", np.uint8, 3),
    "bmp_RGB": ("BMP", "RGB", np.uint8, 3),
    "tif_L": ("TIFF", "L", np.uint8, 1),
    "tif_I16": ("TIFF", "I;16", np.uint16, 1),
    "nii_f32": ("NIFTI", None, np.float32, 1),
    "nii_i16": ("NIFTI", None, np.int16, 1),
    "nii_u8": ("NIFTI", None, np.uint8, 1),
}


@pytest.mark.parametrize("kind", ALL)
def test_read_raw_native(tmp_path, kind):
    p, a = _write(tmp_path, kind)
    raw = read_raw(p)
    fmt, mode, dtype, channels = EXPECTED[kind]
    assert (raw.format, raw.mode, raw.array.dtype) == (fmt, mode, np.dtype(dtype))
    assert raw.spatial_shape == (H, W)
    assert raw.channels == unit_channels(raw) == channels
    assert raw.path == str(p)
    if fmt == "NIFTI":
        assert raw.affine.shape == (4, 4) and raw.nifti_header is not None
        assert raw.array.ndim == 2 and np.prod(raw.native_shape) == H * W
    else:
        assert raw.affine is None and raw.nifti_header is None
        with Image.open(p) as im:
            np.testing.assert_array_equal(raw.array, np.asarray(im))
    if kind in LOSSLESS:
        np.testing.assert_array_equal(raw.array, a)


@pytest.mark.parametrize("kind", LOSSLESS + ["jpg_RGB"])
def test_unit_round_trip_exact(tmp_path, kind):
    p, _ = _write(tmp_path, kind)
    raw = read_raw(p)
    unit = to_unit(raw)
    assert unit.dtype == np.float32 and unit.shape == (EXPECTED[kind][3], H, W)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    back = from_unit(unit, raw)
    assert back.dtype == raw.array.dtype and back.shape == raw.array.shape
    if raw.array.dtype.kind == "f":
        np.testing.assert_allclose(back, raw.array, rtol=0, atol=1e-6 * float(np.ptp(raw.array)))
    else:
        np.testing.assert_array_equal(back, raw.array)
    # torch input (e.g. a perturbed MetaTensor) works too
    np.testing.assert_array_equal(from_unit(torch.from_numpy(unit), raw), back)


def test_unit_scale_values(tmp_path):
    p, a = _write(tmp_path, "png_I16")  # 16-bit: the image's own range (a 12-bit image in 16 bits is not squeezed)
    lo, hi = float(a.min()), float(a.max())
    np.testing.assert_allclose(to_unit(read_raw(p))[0], (a - lo) / (hi - lo), atol=1e-7)
    p, a = _write(tmp_path, "png_RGB")
    np.testing.assert_allclose(to_unit(read_raw(p)), np.moveaxis(a, -1, 0) / 255.0, atol=1e-7)


def test_rgba_alpha_dropped_and_reattached(tmp_path):
    p, a = _write(tmp_path, "png_RGBA")
    raw = read_raw(p)
    unit = to_unit(raw)
    np.testing.assert_allclose(unit, np.moveaxis(a[..., :3], -1, 0) / 255.0, atol=1e-7)
    perturbed = np.clip(unit + 1 / 255.0, 0, 1)
    out = from_unit(perturbed, raw)
    assert out.shape == (H, W, 4)
    np.testing.assert_array_equal(out[..., 3], a[..., 3])
    np.testing.assert_array_equal(out[..., :3], np.minimum(a[..., :3].astype(int) + 1, 255))


def test_palette_to_rgb(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), dtype=np.uint8)).convert("P").save(p)
    raw = read_raw(p)
    assert raw.mode == "P" and raw.array.ndim == 2 and raw.channels == 3 and output_mode(raw) == "RGB"
    with Image.open(p) as im:
        rgb = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(from_unit(to_unit(raw), raw), rgb)


def test_from_unit_rounds_and_clips(tmp_path):
    p, _ = _write(tmp_path, "png_L")
    raw = read_raw(p)
    assert (from_unit(np.full((1, H, W), 2.5 / 255.0), raw) == 2).all()  # half to even (float64 input exact)
    assert (from_unit(np.full((1, H, W), 3.5 / 255.0), raw) == 4).all()
    assert (from_unit(np.full((1, H, W), 3.0, np.float32), raw) == 255).all()
    assert (from_unit(np.full((1, H, W), -1.0, np.float32), raw) == 0).all()
    with pytest.raises(ValueError, match="expected an array of shape"):
        from_unit(np.zeros((3, H, W), np.float32), raw)


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([3, 9], np.uint8), (0.0, 255.0)),
        (np.array([3, 9], np.uint16), (3.0, 9.0)),
        (np.array([0, 4095], np.uint16), (0.0, 4095.0)),
        (np.array([True, False]), (0.0, 1.0)),
        (np.array([-100, 900], np.int16), (-100.0, 900.0)),
        (np.array([5, 9], np.int32), (5.0, 9.0)),
        (np.array([0.5, 2.5], np.float32), (0.5, 2.5)),
        (np.array([4.0, 4.0]), (4.0, 5.0)),
        (np.array([np.nan, 1.0, 3.0]), (1.0, 3.0)),
    ],
)
def test_intensity_range(array, expected):
    assert intensity_range(array) == expected
    assert intensity_range(torch.as_tensor(array)) == expected


def test_volumes_use_their_own_range_whatever_the_dtype():
    """An 8-bit MR volume spanning 0-139 (an MSD hippocampus case reaches only 112) is scaled by 139, not 255: epsilon is a fraction of each
    case's range; a 2D 8-bit picture keeps 0-255 (4/255 = 4 grey levels)."""
    vol = np.zeros((4, 5, 6), np.uint8)
    vol[1, 2, 3] = 139
    assert value_range(vol, spatial_ndim=3) == (0.0, 139.0)
    assert value_range(vol[0], spatial_ndim=2) == (0.0, 255.0)
    lo, hi = value_range(np.stack([vol, vol // 2], -1), spatial_ndim=3)  # one range per modality
    assert lo.tolist() == [0.0, 0.0] and hi.tolist() == [139.0, 69.0]


def test_paths():
    assert stem_of("/x/a.nii.gz") == "a" and stem_of("benign (4)_mask_1.png") == "benign (4)_mask_1"
    assert stem_of("a.b.PNG") == "a.b" and suffix_of("X.NII.GZ") == ".nii.gz"
    assert is_nifti("a.nii") and is_nifti("a.NII.GZ") and not is_nifti("a.png") and not is_nifti("a.gz")


def test_read_errors(tmp_path):
    cases = {}
    cases["missing.png"] = "file not found"
    (tmp_path / "empty.png").write_bytes(b"")
    cases["empty.png"] = "empty (0 bytes)"
    (tmp_path / "junk.png").write_bytes(b"not an image at all" * 10)
    cases["junk.png"] = "cannot read image"
    p, _ = _write(tmp_path, "png_RGB")
    data = p.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    cases["trunc.png"] = "cannot read image"
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    cases["a.gif"] = "unsupported file type"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3, 2, 2), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    cases["vol.nii.gz"] = "not a 2D image or a 3D volume"
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    cases["bad.nii.gz"] = "cannot read NIfTI"
    for name, msg in cases.items():
        with pytest.raises(ImageReadError) as info:
            read_raw(tmp_path / name)
        assert msg in str(info.value)
        assert isinstance(info.value, ValueError) and str(tmp_path / name) in str(info.value)
        assert info.value.path == str(tmp_path / name)


def _mask_file(tmp_path: Path, name: str, array: np.ndarray, mode: str | None = None) -> Path:
    p = tmp_path / name
    if name.endswith((".nii", ".nii.gz")):
        nib.save(nib.Nifti1Image(array, np.eye(4)), p)
    else:
        Image.fromarray(array, mode).save(p)
    return p


def _blob(value=255, dtype=np.uint8):
    m = np.zeros((H, W), dtype)
    m[2:5, 1:3] = value
    return m


@pytest.mark.parametrize(
    "name, array, mode, expected_values",
    [
        ("m255.png", _blob(255), "L", [0, 1]),
        ("m1.png", _blob(1), "L", [0, 1]),
        ("m2.png", _blob(2), "L", [0, 2]),  # one class of a label map keeps its value
        ("m128.png", _blob(128), "L", [0, 1]),  # an intensity-coded binary mask
        ("m16.png", _blob(65535, np.uint16), None, [0, 1]),
        ("mbool.png", _blob(1).astype(bool), None, [0, 1]),
        ("mrgb.png", np.stack([_blob(255), _blob(0), _blob(0)], -1), "RGB", [0, 1]),
        ("mrgba.png", np.stack([_blob(0), _blob(255), _blob(0), np.full((H, W), 255, np.uint8)], -1), "RGBA", [0, 1]),
        ("mempty.png", np.zeros((H, W), np.uint8), "L", [0]),
        ("mmulti.png", np.pad(np.array([[0, 1], [2, 2]], np.uint8), ((0, H - 2), (0, W - 2))), "L", [0, 1, 2]),
        ("mfloat.nii.gz", _blob(1.0, np.float32), None, [0, 1]),
    ],
)
def test_mask_to_labels(tmp_path, name, array, mode, expected_values):
    labels = mask_to_labels(read_raw(_mask_file(tmp_path, name, array, mode)))
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    assert np.unique(labels).tolist() == expected_values


def test_jpeg_mask_binarised(tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 6:25] = 255
    p = tmp_path / "m.jpg"
    Image.fromarray(m).save(p, quality=70)
    with Image.open(p) as im:
        assert len(np.unique(np.asarray(im))) > 2  # compression noise
    labels = mask_to_labels(read_raw(p))
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert (labels == (m > 0)).mean() > 0.98


@pytest.mark.parametrize(
    "name, array, msg",
    [
        ("grey.png", np.arange(H * W, dtype=np.uint8).reshape(H, W) * 7, "not a label mask"),
        ("frac.nii.gz", _blob(0.5, np.float32), "non-integer"),
        ("neg.nii.gz", np.pad(np.array([[-1, 0], [1, 2]], np.int16), ((0, 1), (0, 1))), "negative"),
    ],
)
def test_mask_not_labels(tmp_path, name, array, msg):
    p = _mask_file(tmp_path, name, array)
    with pytest.raises(MaskValueError, match=msg) as info:
        mask_to_labels(read_raw(p))
    assert str(p) in str(info.value)


def test_read_mask_union_and_size_mismatch(tmp_path):
    a = np.zeros((H, W), np.uint8)
    a[0, 0] = 255
    b = np.zeros((H, W), bool)
    b[H - 1, W - 1] = True
    pa, pb = _mask_file(tmp_path, "a.png", a, "L"), _mask_file(tmp_path, "b.png", b)
    labels, raws = read_mask([pa, pb])
    assert labels.sum() == 2 and labels[0, 0] == 1 and labels[H - 1, W - 1] == 1 and len(raws) == 2
    pc = _mask_file(tmp_path, "c.png", np.zeros((H + 1, W), np.uint8), "L")
    with pytest.raises(ImageReadError, match="cannot take their union"):
        read_mask([pa, pc])


def test_array_loaders(tmp_path):
    p, a = _write(tmp_path, "png_RGB")
    img = LoadImageUnit()(p)
    assert isinstance(img, MetaTensor) and img.shape == (3, H, W) and img.dtype == torch.float32
    assert img.meta["filename_or_obj"] == str(p) and img.meta["intensity_range"] == (0.0, 255.0)
    assert img.meta["raw_dtype"] == "uint8" and img.meta["format"] == "PNG"
    assert tuple(img.meta["spatial_shape"]) == (H, W)
    np.testing.assert_allclose(img[:, 3, 2].numpy(), a[3, 2] / 255.0, atol=1e-7)
    p16, _ = _write(tmp_path / "", "nii_i16")
    img16 = LoadImageUnit()(p16)
    assert img16.meta["format"] == "NIFTI" and img16.meta["raw_dtype"] == "int16"
    assert torch.allclose(img16.affine, torch.eye(4, dtype=torch.float64))
    mask = LoadMask()(_mask_file(tmp_path, "m.png", _blob(255), "L"))
    assert mask.shape == (1, H, W) and mask.dtype == torch.float32 and set(mask.unique().tolist()) == {0.0, 1.0}


def test_dict_loaders_in_dataloader(tmp_path):
    data = []
    for i in range(3):
        img = _rng().integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"i{i}.png")
        m1 = np.zeros((H, W), np.uint8)
        m1[i, :] = 255
        Image.fromarray(m1).save(tmp_path / f"m{i}.png")
        m2 = np.zeros((H, W, 4), np.uint8)
        m2[:, i, :] = 255
        m2[..., 3] = 255
        Image.fromarray(m2, "RGBA").save(tmp_path / f"m{i}_1.png")
        label = str(tmp_path / f"m{i}.png") if i == 0 else [str(tmp_path / f"m{i}.png"), str(tmp_path / f"m{i}_1.png")]
        data.append({"image": str(tmp_path / f"i{i}.png"), "label": label, "name": f"c{i}"})
    transform = Compose([LoadImageUnitd("image"), LoadMaskd("label"), LoadMaskd("missing", allow_missing_keys=True)])
    out = transform(data[1])
    assert out["label"].meta["num_mask_files"] == 2
    assert json.loads(out["label"].meta["mask_files"]) == data[1]["label"]
    assert out["label"].sum() == H + W - 1  # union of a row and a column
    batch = next(iter(DataLoader(Dataset(data, transform), batch_size=3, num_workers=0)))
    assert batch["image"].shape == (3, 3, H, W) and batch["label"].shape == (3, 1, H, W)
    assert list(batch["name"]) == ["c0", "c1", "c2"]
    assert list(batch["image"].meta["filename_or_obj"]) == [d["image"] for d in data]


# ------------------------------------------------------------------------------------------ 3D volumes
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_volume_round_trip(tmp_path, dtype):
    """A 3D NIfTI volume reads as a volume ``[1, X, Y, Z]`` on the [0, 1] scale (per-case range for int16 and
    float), and ``from_unit`` gives the stored values back exactly."""
    rng = np.random.default_rng(0)
    hi = 255 if dtype == np.uint8 else 3000
    vol = rng.integers(0, hi, (12, 10, 8)).astype(dtype)
    if dtype == np.float32:
        vol = vol * np.float32(1.7)
    p = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.5, 2.0, 1.0])), p)
    raw = read_raw(p)
    assert raw.spatial_ndim == 3 and raw.spatial_shape == (12, 10, 8) and raw.channels == 1
    unit = to_unit(raw)
    assert unit.shape == (1, 12, 10, 8) and unit.min() >= 0 and unit.max() <= 1
    if dtype != np.uint8:
        assert unit.min() == 0 and unit.max() == pytest.approx(1.0)  # per-case range
    back = from_unit(unit, raw)
    assert back.dtype == vol.dtype and back.shape == vol.shape
    np.testing.assert_allclose(back.astype(np.float64), vol.astype(np.float64), rtol=1e-6, atol=1e-3)
    img = LoadImageUnit()(p)
    assert tuple(img.shape) == (1, 12, 10, 8) and tuple(img.meta["spatial_shape"]) == (12, 10, 8)
    assert img.meta["original_channel_dim"] == "no_channel"


def test_volume_with_modalities_and_label_volume(tmp_path):
    """4D NIfTI: the last axis holds the modalities (channels); a label volume keeps its classes per voxel
    (the last axis of a volume is a spatial axis, not colour channels to take the max over)."""
    vol = np.random.default_rng(1).random((9, 10, 11, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "mm.nii.gz")
    raw = read_raw(tmp_path / "mm.nii.gz")
    assert raw.spatial_shape == (9, 10, 11) and raw.channels == 2 and to_unit(raw).shape == (2, 9, 10, 11)
    lab = np.zeros((9, 10, 11), np.uint8)
    lab[2:4, 2:4, 1:3] = 1
    lab[5:7, 5:7, 6:9] = 2
    nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "lab.nii.gz")
    labels, _ = read_mask(tmp_path / "lab.nii.gz")
    np.testing.assert_array_equal(labels, lab)
    mask = LoadMask()(tmp_path / "lab.nii.gz")
    assert tuple(mask.shape) == (1, 9, 10, 11) and sorted(mask.unique().tolist()) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_volumes_and_images(tmp_path, suffix):
    """NRRD and MetaImage through SimpleITK: the array in SimpleITK's (z, y, x) order with its dtype, an affine whose
    columns carry the spacing, singleton axes squeezed, vector pixels as channels; unreadable files are named."""
    import SimpleITK as sitk

    vol = (np.random.default_rng(0).random((7, 9, 11)) * 1000 - 200).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.7, 0.9, 3.0))
    img.SetOrigin((10.0, -5.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / f"v{suffix}"))
    raw = read_raw(tmp_path / f"v{suffix}")
    assert raw.format == "ITK" and raw.spatial_ndim == 3 and raw.array.dtype == np.int16
    np.testing.assert_array_equal(raw.array, vol)
    # array axis 0 is ITK's z (spacing 3.0), axis 2 is x (0.7)
    np.testing.assert_allclose(np.linalg.norm(raw.affine[:3, :3], axis=0), [3.0, 0.9, 0.7])
    unit = LoadImageUnit()(tmp_path / f"v{suffix}")
    assert tuple(unit.shape) == (1, 7, 9, 11) and float(unit.min()) == 0.0 and float(unit.max()) == 1.0
    flat = sitk.GetImageFromArray(np.arange(120, dtype=np.uint8).reshape(1, 10, 12))  # one slice: a 2D image
    sitk.WriteImage(flat, str(tmp_path / f"f{suffix}"))
    raw2 = read_raw(tmp_path / f"f{suffix}")
    assert raw2.spatial_ndim == 2 and raw2.array.shape == (10, 12) and raw2.native_shape == (1, 10, 12)
    rgb = sitk.GetImageFromArray(np.zeros((10, 12, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / f"c{suffix}"))
    raw3 = read_raw(tmp_path / f"c{suffix}")
    assert raw3.spatial_ndim == 2 and raw3.channels == 3 and to_unit(raw3).shape == (3, 10, 12)
    (tmp_path / f"bad{suffix}").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=rf"bad\{suffix}: cannot read"):
        read_raw(tmp_path / f"bad{suffix}")

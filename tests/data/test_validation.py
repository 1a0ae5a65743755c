# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.data.validation: every problem reported at once, each naming its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_umed.data.adapters import load_datalist
from monai_umed.data.io import ImageReadError
from monai_umed.data.validation import DatasetValidationError, ValidationReport, image_header, validate_datalist

H, W = 8, 10


def _img(path: Path, shape=(H, W, 3), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _mask(path: Path, size=(H, W), empty=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, np.uint8)
    if not empty:
        m[1:4, 2:5] = 255
    Image.fromarray(m).save(path)
    return path


def _good(root: Path, n: int = 3) -> Path:
    for i in range(n):
        _img(root / "images" / f"ok{i}.png")
        _mask(root / "masks" / f"ok{i}.png")
    return root


@pytest.fixture
def broken(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder with many problems at once; returns (root, {file that must be named: why})."""
    root = _good(tmp_path / "broken")
    img, msk = root / "images", root / "masks"
    expect = {}
    _img(img / "lonely.png")
    expect[str(img / "lonely.png")] = "image has no mask"
    _mask(msk / "stray.png")
    expect[str(msk / "stray.png")] = "mask has no image"
    _img(img / "dup.png"), _img(img / "dup.jpg"), _mask(msk / "dup.png")
    expect[str(img / "dup.jpg")] = "duplicate image stem 'dup'"
    _img(img / "size.png"), _mask(msk / "size.png", size=(H + 2, W))
    expect[str(msk / "size.png")] = f"mask size {H + 2}x{W} (HxW) does not match image {img / 'size.png'} ({H}x{W})"
    (img / "empty.png").write_bytes(b""), _mask(msk / "empty.png")
    expect[str(img / "empty.png")] = "file is empty (0 bytes)"
    data = _img(img / "trunc.png").read_bytes()
    (img / "trunc.png").write_bytes(data[: len(data) - 30]), _mask(msk / "trunc.png")
    expect[str(img / "trunc.png")] = "cannot read image"
    Image.new("CMYK", (W, H)).save(img / "cmyk.tif"), _mask(msk / "cmyk.png")
    expect[str(img / "cmyk.tif")] = "unsupported channel count 4 (mode CMYK); allowed: 1, 3"
    _img(img / "grey.png"), _img(msk / "grey.png", shape=(H, W), mode="L")
    expect[str(msk / "grey.png")] = "not a label mask"
    _img(img / "junkmask.png")
    (msk / "junkmask.png").write_bytes(b"\x89PNG not really")
    expect[str(msk / "junkmask.png")] = "cannot read image"
    _img(img / "zero.png"), _mask(msk / "zero.png", empty=True)  # allowed: warning only
    return root, expect


def _check_all_reported(err: DatasetValidationError, expect: dict[str, str]) -> None:
    lines = str(err).splitlines()
    assert lines[0].startswith("Dataset validation failed:")
    for path, why in expect.items():
        hits = [line for line in lines if path in line and why in line]
        assert hits, f"{path}: '{why}' not reported in:\n{err}"
    assert all(not ("zero.png" in p) for p in err.problems)
    assert any("1 of" in w and "empty (all zero)" in w for w in err.warnings)
    assert len(err.problems) == len(lines) - 1 - len(err.warnings)


def test_all_problems_in_one_error(broken):
    root, expect = broken
    with pytest.raises(DatasetValidationError) as info:
        validate_datalist(load_datalist(root))
    err = info.value
    assert isinstance(err, ValueError) and len(err.problems) == len(expect)
    _check_all_reported(err, expect)


def test_plain_list_with_dataset_dir_scans_orphans(broken):
    root, expect = broken
    plain = list(load_datalist(root))  # attributes (problems) lost
    with pytest.raises(DatasetValidationError) as info:
        validate_datalist(plain, dataset_dir=root)
    _check_all_reported(info.value, expect)
    # without dataset_dir only the per-case problems are visible
    with pytest.raises(DatasetValidationError) as info:
        validate_datalist(plain)
    assert not any("stray.png" in p for p in info.value.problems)


def test_clean_dataset_passes(tmp_path, caplog):
    root = _good(tmp_path / "clean")
    _img(root / "images" / "normal.png"), _mask(root / "masks" / "normal.png", empty=True)
    report = validate_datalist(load_datalist(root), dataset_dir=root)
    assert isinstance(report, ValidationReport) and report.num_cases == 4
    assert report.empty_masks == ["normal"] and report.label_values == [0, 1]
    assert "1 of 4 mask(s) are empty" in report.warnings[0] and "empty" in caplog.text
    with pytest.raises(DatasetValidationError, match="allowed: 1"):
        validate_datalist(load_datalist(root), allowed_channels=(1,))
    assert validate_datalist(load_datalist(root), decode_images=True).num_cases == 4


def test_entry_level_problems(tmp_path):
    root = _good(tmp_path / "d", 2)
    jf = root / "list.json"
    jf.write_text(json.dumps({"training": [
        {"image": "images/ok0.png", "label": "masks/ok0.png"},
        {"image": "images/ok1.png", "label": "masks/ok1.png", "name": "ok0"},
        {"image": "images/ok1.png"},
        {"image": "images/gone.png", "label": ["masks/ok0.png", "masks/gone.png"]},
    ]}))
    with pytest.raises(DatasetValidationError) as info:
        validate_datalist(load_datalist(datalist=jf))
    text = str(info.value)
    assert "duplicate case name 'ok0'" in text
    assert f"{root / 'images' / 'ok1.png'}: image listed twice" in text
    assert f"{root / 'images' / 'ok1.png'}: image has no mask" in text
    assert f"{root / 'images' / 'gone.png'}: file not found" in text
    assert f"{root / 'masks' / 'gone.png'}: file not found" in text
    with pytest.raises(DatasetValidationError, match="datalist is empty"):
        validate_datalist([])


def test_stems_not_found_reported(tmp_path):
    root = _good(tmp_path / "d", 2)
    with pytest.raises(DatasetValidationError, match="nope: selected stem has no case"):
        validate_datalist(load_datalist(root, stems=["ok0", "nope"]))


def test_image_header(tmp_path):
    p = _img(tmp_path / "a.png", shape=(H, W, 4), mode="RGBA")
    assert image_header(p) == (H, W, 3, "RGBA")
    assert image_header(_img(tmp_path / "b.png", shape=(H, W, 2), mode="LA")) == (H, W, 1, "LA")
    with pytest.raises(ImageReadError, match="file not found"):
        image_header(tmp_path / "none.png")


def test_shared_busi_original_valid(shared_data):
    root = shared_data / "busi_original_sample" / "Dataset_BUSI_with_GT"
    report = validate_datalist(load_datalist(root), dataset_dir=root)
    assert report.num_cases == 50 and len(report.empty_masks) == 6
    assert all(n.startswith("normal") for n in report.empty_masks)


def test_shared_busi_224_valid_and_fast(shared_data):
    root = shared_data / "busi_224"
    dl = load_datalist(root, stems=root / "benign_malignant_stems.txt")
    report = validate_datalist(dl, dataset_dir=root)
    assert report.num_cases == 647 and report.empty_masks == [] and report.label_values == [0, 1]


def test_volumes_are_validated(tmp_path):
    """3D NIfTI pairs: sizes compared voxel by voxel, the message names both files and sizes."""
    import nibabel as nib

    def save(name, a):
        nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / name)
        return str(tmp_path / name)

    img = save("a.nii.gz", np.random.default_rng(0).random((12, 10, 9)).astype(np.float32))
    lab = np.zeros((12, 10, 9), np.uint8)
    lab[3:6, 3:6, 3:6] = 2
    good = save("a_seg.nii.gz", lab)
    report = validate_datalist([{"image": img, "label": good, "name": "a"}])
    assert report.label_values == [0, 2]
    bad = save("b_seg.nii.gz", np.zeros((12, 10, 8), np.uint8))
    with pytest.raises(DatasetValidationError, match=r"12x10x8 \(voxels\) does not match image .*a.nii.gz \(12x10x9\)"):
        validate_datalist([{"image": img, "label": bad, "name": "b"}])
    assert image_header(img) == (12, 10, 9, 1, "NIFTI")
    for modalities in (2, 4):  # a volume's channels are its modalities: any number (MSD BrainTumour has 4)
        four_d = save(f"m{modalities}.nii.gz", np.random.default_rng(1).random((12, 10, 9, modalities)).astype(np.float32))
        assert validate_datalist([{"image": four_d, "label": good, "name": "m"}]).spatial_dims == 3

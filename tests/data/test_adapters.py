# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.data.adapters: folders / BUSI / JSON datalists, layout detection, stem selection."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_umed.data.adapters import (
    Datalist,
    DatasetError,
    datalist_from_busi,
    datalist_from_folders,
    datalist_from_json,
    detect_layout,
    find_orphans,
    load_datalist,
    read_stems,
    select_stems,
)
from monai_umed.data.io import LoadMaskd

H, W = 6, 8
KEYS = {"image", "label", "image_rel", "label_rel", "name"}


def _png(path: Path, value: int = 0, mode: str = "L", size=(H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, len(mode))
    Image.fromarray(np.full(shape, value, np.uint8), mode).save(path)
    return path


def _mask(path: Path, rows: slice, size=(H, W), mode="L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(size, np.uint8)
    m[rows] = 255
    if mode == "RGBA":
        m = np.stack([m, m, m, np.full(size, 255, np.uint8)], -1)
    Image.fromarray(m, mode).save(path)
    return path


@pytest.fixture
def folders(tmp_path) -> Path:
    root = tmp_path / "kvasir"
    for i in (1, 2, 10):
        Image.fromarray(np.full((H, W, 3), 9 * i, np.uint8)).save(_png(root / "images" / f"case{i}.png"), format="JPEG")
        os.replace(root / "images" / f"case{i}.png", root / "images" / f"case{i}.jpg")
        _mask(root / "masks" / f"case{i}.png", slice(0, i % 5 + 1))
    nib.save(nib.Nifti1Image(np.zeros((H, W), np.float32), np.eye(4)), root / "images" / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((H, W), np.uint8), np.eye(4)), root / "masks" / "ct.nii")
    (root / "images" / ".DS_Store").write_bytes(b"x")
    (root / "images" / "sub").mkdir()
    return root


def test_folders(folders):
    dl = datalist_from_folders(folders)
    assert isinstance(dl, Datalist) and isinstance(dl, list) and dl.layout == "folders" and dl.problems == []
    assert dl.root == str(folders)
    assert [e["name"] for e in dl] == ["case1", "case2", "case10", "ct"]  # natural order
    for e in dl:
        assert set(e) == KEYS
        assert os.path.isabs(e["image"]) and os.path.isfile(e["image"]) and isinstance(e["label"], str)
        assert e["image_rel"] == Path(e["image"]).relative_to(folders).as_posix()
        assert e["label_rel"] == [Path(e["label"]).relative_to(folders).as_posix()]
    assert dl[0]["image_rel"] == "images/case1.jpg" and dl[0]["label_rel"] == ["masks/case1.png"]
    assert dl[3]["image_rel"] == "images/ct.nii.gz" and dl[3]["label_rel"] == ["masks/ct.nii"]
    assert detect_layout(folders) == "folders"
    assert load_datalist(folders) == dl
    assert pickle.loads(pickle.dumps(dl)).problems == [] and pickle.loads(pickle.dumps(dl)).root == dl.root


def test_folders_problems_recorded(folders):
    _png(folders / "images" / "lonely.png")
    _mask(folders / "masks" / "stray.png", slice(0, 1))
    _png(folders / "images" / "case2.png")  # duplicate stem with case2.jpg
    (folders / "masks" / "notes.txt").write_text("x")
    dl = datalist_from_folders(folders)
    assert [e["name"] for e in dl] == ["case1", "case10", "ct"]
    text = "\n".join(dl.problems)
    assert len(dl.problems) == 4
    assert "lonely.png: image has no mask" in text
    assert "stray.png: mask has no image" in text
    assert "duplicate image stem 'case2'" in text and "case2.jpg" in text and "case2.png" in text
    assert "notes.txt: unsupported file type" in text
    assert find_orphans(folders) == dl.problems


def test_folders_custom_dirs_and_errors(tmp_path):
    root = tmp_path / "cvc"
    _png(root / "Original" / "1.tif")
    _mask(root / "Ground Truth" / "1.tif", slice(0, 2))
    assert detect_layout(root) == "folders"
    assert load_datalist(root)[0]["label_rel"] == ["Ground Truth/1.tif"]
    assert len(datalist_from_folders(root, "Original", "Ground Truth")) == 1
    with pytest.raises(DatasetError, match="image folder not found"):
        datalist_from_folders(root)
    with pytest.raises(DatasetError, match="not found"):
        load_datalist(tmp_path / "nope")
    (tmp_path / "weird" / "stuff").mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        load_datalist(tmp_path / "weird")
    assert "unrecognised dataset layout" in str(info.value)
    assert "'folders'" in str(info.value) and "'busi'" in str(info.value) and "JSON" in str(info.value)
    with pytest.raises(DatasetError):
        load_datalist()


@pytest.fixture
def busi(tmp_path) -> Path:
    root = tmp_path / "Dataset_BUSI_with_GT"
    _png(root / "benign" / "x (1).png", 50)
    _mask(root / "benign" / "x (1)_mask.png", slice(0, 1))
    _mask(root / "benign" / "x (1)_mask_1.png", slice(4, 6), mode="RGBA")
    _png(root / "benign" / "x (2).png", 60)
    _mask(root / "benign" / "x (2)_mask.png", slice(1, 2))
    _png(root / "normal" / "normal (1).png", 70)
    _mask(root / "normal" / "normal (1)_mask.png", slice(0, 0))
    return root


def test_busi(busi):
    assert detect_layout(busi) == "busi"
    dl = load_datalist(busi)
    assert dl.layout == "busi" and dl.problems == []
    assert [e["name"] for e in dl] == ["x (1)", "x (2)", "normal (1)"]
    first = dl[0]
    assert set(first) == KEYS
    assert first["label"] == [str(busi / "benign" / "x (1)_mask.png"), str(busi / "benign" / "x (1)_mask_1.png")]
    assert first["label_rel"] == ["benign/x (1)_mask.png", "benign/x (1)_mask_1.png"]
    assert first["image_rel"] == "benign/x (1).png"
    assert dl[1]["label"] == str(busi / "benign" / "x (2)_mask.png")
    label = LoadMaskd("label")(first)["label"]
    assert label.shape == (1, H, W) and label[0, 0].all() and label[0, 4:].all() and label.sum() == 3 * W
    assert [e["name"] for e in datalist_from_busi(busi, classes=["benign"])] == ["x (1)", "x (2)"]
    assert len(datalist_from_busi(busi / "benign")) == 2  # one class folder
    with pytest.raises(DatasetError, match="class folder 'malignant'"):
        datalist_from_busi(busi, classes=["malignant"])


def test_busi_problems(busi):
    _png(busi / "benign" / "x (3).png")
    _mask(busi / "benign" / "y (9)_mask.png", slice(0, 1))
    dl = datalist_from_busi(busi)
    assert len(dl) == 3
    text = "\n".join(dl.problems)
    assert "x (3).png: image has no mask" in text and "y (9)_mask.png: mask has no image" in text


def test_json(tmp_path, folders):
    content = {
        "training": [
            {"image": "images/case1.jpg", "label": "masks/case1.png"},
            {"image": str(folders / "images" / "case2.jpg"), "label": ["masks/case2.png", "masks/case10.png"],
             "name": "two", "fold": 1},
        ],
        "test": ["images/case10.jpg"],
    }
    jf = folders / "dataset.json"
    jf.write_text(json.dumps(content))
    dl = datalist_from_json(jf)
    assert dl.layout == "json" and dl.root == str(folders)
    assert dl[0]["image"] == str(folders / "images" / "case1.jpg")
    assert dl[0]["label"] == str(folders / "masks" / "case1.png")
    assert dl[0]["image_rel"] == "images/case1.jpg" and dl[0]["name"] == "case1"
    assert dl[1]["label"] == [str(folders / "masks" / "case2.png"), str(folders / "masks" / "case10.png")]
    assert dl[1]["label_rel"] == ["masks/case2.png", "masks/case10.png"]
    assert dl[1]["name"] == "two" and dl[1]["fold"] == 1
    test = load_datalist(datalist=jf, key="test")
    assert test[0]["label_rel"] == [] and "label" not in test[0]
    # relative to dataset_dir instead of the JSON file's folder
    other = tmp_path / "elsewhere.json"
    other.write_text(json.dumps(content))
    dl2 = load_datalist(folders, datalist=other)
    assert [e["image"] for e in dl2] == [e["image"] for e in dl]
    # a file outside the base folder: rel paths are taken from the common folder, never with '..'
    third = tmp_path / "third.json"
    third.write_text(json.dumps({"training": [{"image": "case1.jpg", "label": str(folders / "masks" / "case1.png")}]}))
    dl3 = datalist_from_json(third, dataset_dir=folders / "images")
    assert dl3.root == str(folders) and dl3[0]["image_rel"] == "images/case1.jpg"
    assert dl3[0]["label_rel"] == ["masks/case1.png"]
    assert all(".." not in r for e in dl3 for r in [e["image_rel"], *e["label_rel"]])
    with pytest.raises(DatasetError, match="no 'validation' list"):
        datalist_from_json(jf, key="validation")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"label": "x.png"}, {"image": "a.png", "label": 3}]}))
    with pytest.raises(DatasetError, match="entry 0") as info:
        datalist_from_json(bad)
    assert "entry 1" in str(info.value)
    with pytest.raises(DatasetError, match="not found"):
        datalist_from_json(tmp_path / "none.json")


def test_stems(tmp_path, folders):
    dl = load_datalist(folders, stems=["case10", "ct"])
    assert [e["name"] for e in dl] == ["case10", "ct"] and dl.problems == []
    f = tmp_path / "stems.txt"
    f.write_text("# selection\ncase2\n\n  ct  \nmissing one\n")
    assert read_stems(f) == ["case2", "ct", "missing one"]
    dl = load_datalist(folders, stems=f)
    assert [e["name"] for e in dl] == ["case2", "ct"]
    assert dl.problems == [f"missing one: selected stem has no case in {folders}"]
    assert select_stems(list(datalist_from_folders(folders)), ["case1"])[0]["name"] == "case1"


def test_shared_busi_original(shared_data):
    root = shared_data / "busi_original_sample" / "Dataset_BUSI_with_GT"
    dl = load_datalist(root)
    assert len(dl) == 50 and dl.problems == [] and dl.layout == "busi"
    classes = [e["image_rel"].split("/")[0] for e in dl]
    assert (classes.count("benign"), classes.count("malignant"), classes.count("normal")) == (30, 14, 6)
    multi = {e["name"]: e["label"] for e in dl if isinstance(e["label"], list)}
    assert set(multi) == {"benign (4)", "benign (25)", "benign (54)", "benign (58)", "benign (83)", "benign (92)"}
    assert all(len(v) == 2 for v in multi.values())
    loader = LoadMaskd("label")
    for name in ("benign (4)", "benign (54)"):  # their _mask_1 files are RGBA
        entry = next(e for e in dl if e["name"] == name)
        union = loader(entry)["label"]
        parts = [loader({"label": p})["label"] for p in entry["label"]]
        assert union.shape[0] == 1 and set(union.unique().tolist()) == {0.0, 1.0}
        assert all(p.sum() > 0 for p in parts) and (union == np.maximum(parts[0], parts[1])).all()
        assert union.sum() > max(p.sum() for p in parts)


def test_shared_busi_224_stems(shared_data):
    root = shared_data / "busi_224"
    dl = load_datalist(root, stems=root / "benign_malignant_stems.txt")
    assert len(dl) == 647 and dl.problems == []
    assert not any(e["name"].startswith("normal") for e in dl)
    assert len(load_datalist(root)) == 780


def _nnunet(root, cases=("la_003", "la_004", "la_007"), channels=1):
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for c in cases:
        lab = np.zeros((10, 12, 8), np.uint8)
        lab[3:6, 3:6, 2:5] = 1
        for k in range(channels):
            nib.save(nib.Nifti1Image(np.random.default_rng(0).random((10, 12, 8)).astype(np.float32), np.eye(4)),
                     root / "imagesTr" / f"{c}_{k:04d}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "labelsTr" / f"{c}.nii.gz")
    names = {str(k): f"mod{k}" for k in range(channels)}
    (root / "dataset.json").write_text(json.dumps({"channel_names": names, "labels": {"background": 0, "atrium": 1},
                                                   "numTraining": len(cases), "file_ending": ".nii.gz"}))
    return root


def test_nnunet_v2_layout(tmp_path):
    from monai_umed.data import datalist_from_nnunet, detect_layout, load_datalist, validate_datalist

    root = _nnunet(tmp_path / "Dataset002_Heart")
    assert detect_layout(root) == "nnunet"
    dl = load_datalist(dataset_dir=root)
    assert [e["name"] for e in dl] == ["la_003", "la_004", "la_007"] and not dl.problems
    assert dl[0]["image_rel"] == "imagesTr/la_003_0000.nii.gz" and dl[0]["label_rel"] == ["labelsTr/la_003.nii.gz"]
    assert validate_datalist(dl, dataset_dir=root).spatial_dims == 3
    (root / "labelsTr" / "la_009.nii.gz").write_bytes((root / "labelsTr" / "la_003.nii.gz").read_bytes())
    problems = datalist_from_nnunet(root).problems
    assert any("la_009.nii.gz: label has no image" in p for p in problems)


def test_nnunet_v2_channel_files(tmp_path):
    """Several channels: one image is the list of its channel files in channel order; a missing channel file, a
    channel beyond channel_names and channel files on different grids are reported with the file named."""
    import nibabel as nib

    from monai_umed.data import LoadImageUnit, datalist_from_nnunet, load_datalist, validate_datalist

    root = _nnunet(tmp_path / "Dataset001_BrainTumour", channels=2)
    dl = load_datalist(dataset_dir=root)
    assert not dl.problems and len(dl) == 3
    assert dl[0]["image_rel"] == [f"imagesTr/la_003_{k:04d}.nii.gz" for k in range(2)]
    assert [Path(p).name for p in dl[0]["image"]] == [f"la_003_{k:04d}.nii.gz" for k in range(2)]
    assert validate_datalist(dl, dataset_dir=root).spatial_dims == 3  # a volume may have any number of modalities
    img = LoadImageUnit()(dl[0]["image"])
    assert tuple(img.shape) == (2, 10, 12, 8) and json.loads(img.meta["channel_files"]) == dl[0]["image"]
    from monai_umed.apps.exploit_data import resolve_exploit_data
    from monai_umed.apps.split import make_split

    split = make_split(root, test_fraction=0.34, seed=0)  # a split keeps the channel lists, relative to the folder
    assert all(isinstance(e["image"], list) and e["image"][1].endswith("_0001.nii.gz") for e in split["training"])
    train, test = resolve_exploit_data(root, split)
    assert [len(e["image"]) for e in train + test] == [2, 2, 2] and os.path.isabs(train[0]["image"][1])
    (root / "imagesTr" / "la_004_0001.nii.gz").unlink()
    (root / "imagesTr" / "la_007_0002.nii.gz").write_bytes((root / "imagesTr" / "la_007_0000.nii.gz").read_bytes())
    problems = datalist_from_nnunet(root).problems
    assert any("la_004.nii.gz: label lacks 1 of its 2 channel files (imagesTr/la_004_0001.nii.gz" in p for p in problems)
    assert any("la_007_0002.nii.gz: channel 2 beyond the 2 channel(s)" in p for p in problems)
    assert [e["name"] for e in datalist_from_nnunet(root)] == ["la_003", "la_007"]
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 9), np.float32), np.eye(4)), root / "imagesTr" / "la_003_0001.nii.gz")
    with pytest.raises(Exception, match=r"la_003_0001.nii.gz.*does not match the first channel file"):
        validate_datalist(load_datalist(dataset_dir=root))

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests of monai_umed.apps.split: random train/test split into a MONAI JSON datalist."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_umed.apps.split import make_split, write_split
from monai_umed.data import datalist_from_json, make_synthetic_dataset


@pytest.fixture(scope="module")
def folders_ds(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("split") / "ds", num_images=20, size=(16, 16))


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def busi_ds(tmp_path_factory) -> Path:
    """BUSI layout: <class>/<name>.png beside <name>_mask.png (+ <name>_mask_1.png for two cases)."""
    root = tmp_path_factory.mktemp("split") / "busi"
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        for i in range(1, 6):
            name = f"{cls} ({i})"
            _png(root / cls / f"{name}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
            mask = np.zeros((16, 16), np.uint8)
            mask[2:6, 2:6] = 255
            _png(root / cls / f"{name}_mask.png", mask)
            if i in (2, 4):
                extra = np.zeros((16, 16), np.uint8)
                extra[10:14, 10:14] = 255
                _png(root / cls / f"{name}_mask_1.png", extra)
    return root


def _names(entries):
    return [e["name"] for e in entries]


@pytest.mark.parametrize("fraction,n_test", [(0.2, 4), (0.25, 5), (0.5, 10), (0.01, 1)])
def test_fraction_and_disjoint_cover(folders_ds, fraction, n_test):
    split = make_split(folders_ds, test_fraction=fraction, seed=0)
    train, test = _names(split["training"]), _names(split["test"])
    assert len(test) == n_test == split["numTest"]
    assert len(train) == 20 - n_test == split["numTraining"]
    assert not set(train) & set(test)
    assert sorted(train + test) == [f"synthetic_{i:03d}" for i in range(20)]


def test_deterministic_for_a_seed(folders_ds):
    a = make_split(folders_ds, seed=3)
    b = make_split(folders_ds, seed=3)
    assert a == b
    others = {tuple(_names(make_split(folders_ds, seed=s)["test"])) for s in range(4)}
    assert len(others) > 1  # the seed changes the split


def test_relative_paths(folders_ds):
    split = make_split(folders_ds)
    for e in split["training"] + split["test"]:
        assert not os.path.isabs(e["image"]) and not os.path.isabs(e["label"])
        assert e["image"] == f"images/{e['name']}.png" and e["label"] == f"masks/{e['name']}.png"
        assert (folders_ds / e["image"]).is_file()


def test_write_split_reads_back_with_label_lists(busi_ds, tmp_path):
    out = write_split(busi_ds, tmp_path / "sub" / "S.json", test_fraction=0.2, seed=0)
    assert out == tmp_path / "sub" / "S.json"
    assert sorted(p.name for p in out.parent.iterdir()) == ["S.json"]  # no temporary file left
    content = json.loads(out.read_text())
    assert content["numTraining"] == 8 and content["numTest"] == 2
    lists = [e["label"] for e in content["training"] + content["test"] if isinstance(e["label"], list)]
    assert len(lists) == 4 and all(len(x) == 2 for x in lists)
    for key in ("training", "test"):
        back = datalist_from_json(out, dataset_dir=busi_ds, key=key)
        assert [e["name"] for e in back] == [e["name"] for e in content[key]]
        for e in back:
            labels = e["label"] if isinstance(e["label"], list) else [e["label"]]
            assert os.path.isabs(e["image"]) and all(os.path.isfile(p) for p in [e["image"], *labels])
            if e["name"] in ("benign (2)", "benign (4)", "malignant (2)", "malignant (4)"):
                assert isinstance(e["label"], list) and e["label"][1].endswith("_mask_1.png")


def test_stems_selection(folders_ds, tmp_path):
    stems = tmp_path / "stems.txt"
    stems.write_text("# keep ten\n" + "\n".join(f"synthetic_{i:03d}" for i in range(10)) + "\n")
    split = make_split(folders_ds, stems=str(stems))
    assert split["numTraining"] + split["numTest"] == 10
    assert all(int(n[-3:]) < 10 for n in _names(split["training"] + split["test"]))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(folders_ds, fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        make_split(folders_ds, test_fraction=fraction)


def test_too_few_cases(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "one", num_images=1, size=(16, 16))
    with pytest.raises(ValueError, match="cannot split 1"):
        make_split(ds)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""``benchmarks/gradient_alignment.py``: the cosine between the exploiter's gradients on protected and clean files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_umed.apps.split import write_split
from monai_umed.data import make_synthetic_dataset


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("ga")
    ds = make_synthetic_dataset(root / "ds", num_images=10, size=(32, 32), channels=1)
    return ds, write_split(ds, root / "split.json", test_fraction=0.2, seed=0)


def _copy(ds: Path, dst: Path, shift: int) -> Path:
    """A copy of the dataset whose images are brighter by ``shift`` grey levels inside the mask (a shortcut)."""
    shutil.copytree(ds, dst)
    for img_path in (dst / "images").iterdir():
        mask = np.asarray(Image.open(dst / "masks" / img_path.name)) > 0
        img = np.asarray(Image.open(img_path)).astype(np.int32)
        Image.fromarray(np.clip(img + shift * mask, 0, 255).astype(np.uint8)).save(img_path)
    return dst


@pytest.mark.parametrize("shift", [0, 60])
def test_cosine_is_one_for_the_clean_files_and_drops_for_a_shortcut(split, tmp_path, shift, load_script):
    ds, split_file = split
    train_dir = _copy(ds, tmp_path / "train", shift)
    out = tmp_path / "ga.json"
    ga = load_script("benchmarks/gradient_alignment.py")
    result = ga.main(["--dataset_dir", str(ds), "--datalist", str(split_file), "--train_dir", str(train_dir),
                      "--image_size", "32", "--epochs", "2", "--batch_size", "4", "--output", str(out)])
    assert json.loads(out.read_text())["steps"] == result["steps"]
    assert result["n_train"] == 8 and len(result["steps"]) == 2 * 2  # 8 images, batches of 4, two epochs
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert all(0.0 <= e["test_dsc"] <= 1.0 for e in result["epochs"])
    cos = np.array([s["cos"] for s in result["steps"]])
    rel = np.array([s["rel"] for s in result["steps"]])
    if shift == 0:  # the same files: the same gradients
        np.testing.assert_allclose(cos, 1.0, atol=1e-5)
        np.testing.assert_allclose(rel, 0.0, atol=1e-3)
    else:  # a large label-coloured shift changes what the network learns from
        assert cos.min() < 0.99 and rel.max() > 0.05

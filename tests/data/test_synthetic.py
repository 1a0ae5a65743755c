# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.data.synthetic.make_synthetic_dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from monai_umed.data import load_datalist, make_synthetic_dataset, validate_datalist


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_synthetic_valid(tmp_path, channels, mode):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=4, size=(32, 40), num_objects=2, seed=3,
                                  channels=channels)
    assert root == tmp_path / "syn"
    expected = [f"{d}/synthetic_{i:03d}.png" for d in ("images", "masks") for i in range(4)]
    assert _files(root) == ["README.txt"] + expected
    assert "SYNTHETIC" in (root / "README.txt").read_text() and "monai_umed" in (root / "README.txt").read_text()
    for i in range(4):
        with Image.open(root / "images" / f"synthetic_{i:03d}.png") as im:
            img = np.asarray(im)
            assert im.mode == mode and im.size == (40, 32)
        with Image.open(root / "masks" / f"synthetic_{i:03d}.png") as im:
            mask = np.asarray(im)
            assert im.mode == "L"
        assert img.dtype == np.uint8 and img.min() == 0 and img.max() >= 200
        assert set(np.unique(mask).tolist()) == {0, 255}
        fg = mask > 0
        grey = img if img.ndim == 2 else img.mean(-1)
        assert grey[fg].mean() > grey[~fg].mean() + 40  # objects are bright
    report = validate_datalist(load_datalist(root), dataset_dir=root)
    assert report.num_cases == 4 and report.empty_masks == []


def test_synthetic_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", num_images=3, size=(24, 24), seed=7)
    b = make_synthetic_dataset(tmp_path / "b", num_images=3, size=(24, 24), seed=7)
    c = make_synthetic_dataset(tmp_path / "c", num_images=3, size=(24, 24), seed=8)
    names = _files(a)
    assert names == _files(b) and not any(".tmp" in n for n in names)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "images/synthetic_000.png").read_bytes() != (c / "images/synthetic_000.png").read_bytes()
    make_synthetic_dataset(a, num_images=3, size=(24, 24), seed=7)  # rewriting in place is idempotent
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


@pytest.mark.parametrize("kwargs", [{"channels": 2}, {"num_images": 0}, {"size": (8, 8)}])
def test_synthetic_bad_args(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, **kwargs)

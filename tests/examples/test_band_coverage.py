# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""``benchmarks/band_coverage.py``: the share of each ROI that the contour band and the texture term cover."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


def _pair(size: int = 96, side: int = 40, channels: int = 3):
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, size=(channels, size, size)).astype(np.float32)
    label = np.zeros((1, size, size), dtype=np.float32)
    label[0, 20 : 20 + side, 30 : 30 + side] = 1
    return image, label


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("width", [2, 3, 6])
def test_square_roi(load_script, width, channels):
    bc = load_script("benchmarks/band_coverage.py")
    image, label = _pair(channels=channels)
    interior, perturbed, bound_roi, bound_all = bc.coverage(image, label, 96, width)
    # erosion and dilation by a (2w + 1) square: the interior is the square shrunk by w on each side, the perturbed
    # region the square grown by w
    assert interior == pytest.approx((40 - 2 * width) ** 2 / 40**2)
    assert perturbed == pytest.approx((40 + 2 * width) ** 2 / 96**2)
    # the band is at the full epsilon, the interior at epsilon times an LBP map in [0, 1] that is not all ones
    assert 1 - interior <= bound_roi < 1
    assert bound_roi < bound_all < 1


def test_band_over_the_whole_roi_and_empty_mask(load_script):
    bc = load_script("benchmarks/band_coverage.py")
    image, label = _pair(side=10)
    interior, _, bound_roi, bound_all = bc.coverage(image, label, 96, 5)
    assert interior == 0 and bound_roi == pytest.approx(1.0) and bound_all == pytest.approx(1.0)
    assert bc.coverage(image, np.zeros_like(label), 96, 3) is None


def test_main_prints_one_row_per_width(tmp_path, capsys, monkeypatch, load_script):
    bc = load_script("benchmarks/band_coverage.py")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    entries = []
    for k in range(2):
        image, label = _pair(size=64, side=20 + 4 * k)
        Image.fromarray((np.moveaxis(image, 0, -1) * 255).astype(np.uint8)).save(tmp_path / f"images/{k}.png")
        Image.fromarray((label[0] * 255).astype(np.uint8)).save(tmp_path / f"masks/{k}.png")
        entries.append({"image": f"images/{k}.png", "label": f"masks/{k}.png"})
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "masks/empty.png")
    entries.append({"image": "images/0.png", "label": "masks/empty.png"})
    (tmp_path / "split.json").write_text(json.dumps({"training": entries}))
    argv = ["band_coverage.py", "--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json"),
            "--image_size", "64", "--band_widths", "2", "4"]
    monkeypatch.setattr("sys.argv", argv)
    bc.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 ") or line.startswith("| 4 ")]
    assert len(rows) == 2
    shares = [float(r.split("|")[2]) for r in rows]
    # the two squares (sides 20 and 24): the mean interior share at each width; the empty mask is left out
    for width, share in zip((2, 4), shares):
        assert share == pytest.approx(np.mean([(s - 2 * width) ** 2 / s**2 for s in (20, 24)]), abs=1e-3)
    assert rows[0].rstrip().endswith("| 2 |")


def test_main_refuses_a_split_without_any_roi(tmp_path, monkeypatch, load_script):
    bc = load_script("benchmarks/band_coverage.py")
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image, _ = _pair(size=32)
    Image.fromarray((np.moveaxis(image, 0, -1) * 255).astype(np.uint8)).save(tmp_path / "images/0.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks/0.png")
    (tmp_path / "split.json").write_text(json.dumps({"training": [{"image": "images/0.png", "label": "masks/0.png"}]}))
    argv = ["band_coverage.py", "--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="no training image has a non-empty mask"):
        bc.main()


def test_main_names_a_missing_file(tmp_path, monkeypatch, load_script):
    bc = load_script("benchmarks/band_coverage.py")
    (tmp_path / "split.json").write_text(json.dumps({"training": [{"image": "images/0.png", "label": "masks/0.png"}]}))
    argv = ["band_coverage.py", "--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="0.png"):
        bc.main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""``benchmarks/oracle_shortcut.py``: hand-made codes inside UMed's feasible set (band at epsilon, ROI interior at
epsilon times the LBP map), here the patterns and what the writer puts on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import distance_transform_edt


def _disk(size: int, radius: float) -> np.ndarray:
    yy, xx = np.indices((size, size))
    return (((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) <= radius**2).astype(np.float32)


def _rings_by_distance(p: np.ndarray, roi: np.ndarray) -> tuple[dict, dict]:
    """The pattern's values at each whole distance to the contour, inside and outside the ROI."""
    inside, outside = distance_transform_edt(roi > 0), distance_transform_edt(roi == 0)
    by_in = {k: set(np.unique(p[(roi > 0) & (np.round(inside) == k)]).tolist()) for k in range(1, 13)}
    by_out = {k: set(np.unique(p[(roi == 0) & (np.round(outside) == k)]).tolist()) for k in range(1, 13)}
    return by_in, by_out


@pytest.mark.parametrize("period", [6.0, 8.0])
def test_rings_follow_the_contour_and_flip_across_it(load_script, period):
    oracle = load_script("benchmarks/oracle_shortcut.py")
    roi = _disk(96, 30)
    p = oracle.pattern("rings", roi, period)
    assert set(np.unique(p).tolist()) == {-1.0, 1.0}
    by_in, by_out = _rings_by_distance(p, roi)
    half = period / 2
    checked = 0
    for k in range(1, 13):
        # a square wave of the signed distance d = k - 0.5 inside and -(k - 0.5) outside: one value per ring
        # away from the wave's own edges, the sign of sin(2 pi d / period), opposite on the two sides
        d = k - 0.5
        if abs(d / half - round(d / half)) < 0.2:
            continue  # a pixel ring that straddles an edge of the wave (Euclidean distances are not whole)
        want = 1.0 if np.sin(2 * np.pi * d / period) > 0 else -1.0
        assert by_in[k] == {want}, (k, by_in[k])
        assert by_out[k] == {-want}, (k, by_out[k])
        checked += 1
    assert checked >= 4  # at least two rings of each sign on each side were compared


def test_rings_period_is_on_the_96_pixel_grid(load_script):
    oracle = load_script("benchmarks/oracle_shortcut.py")
    small, large = _disk(96, 30), _disk(192, 60)
    for roi, first, second in ((small, (1, 3), (5, 7)), (large, (1, 7), (10, 15))):
        # period 8 pixels at 96, 16 at 192: the first half-wave inside the contour is +1, the second -1
        p = oracle.pattern("rings", roi, 8.0)
        inside = distance_transform_edt(roi > 0)
        for (lo, hi), want in ((first, 1.0), (second, -1.0)):
            ring = (roi > 0) & (inside >= lo) & (inside <= hi)
            assert set(np.unique(p[ring]).tolist()) == {want}


@pytest.mark.parametrize("kind", ["offset", "check96", "check48", "native", "rings"])
def test_every_written_pixel_stays_in_umeds_region_and_bound(tmp_path, monkeypatch, load_script, kind):
    oracle = load_script("benchmarks/oracle_shortcut.py")
    root, out = tmp_path / "data", tmp_path / "out"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for k, radius in enumerate((14, 20)):
        image = rng.integers(40, 200, size=(64, 64, 3), dtype=np.uint8)
        mask = (_disk(64, radius) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"images/{k}.png")
        Image.fromarray(mask).save(root / f"masks/{k}.png")
        entries.append({"image": f"images/{k}.png", "label": f"masks/{k}.png"})
    (tmp_path / "split.json").write_text(json.dumps({"training": entries}))
    argv = ["oracle_shortcut.py", "--dataset_dir", str(root), "--datalist", str(tmp_path / "split.json"),
            "--output_dir", str(out), "--pattern", kind]
    monkeypatch.setattr("sys.argv", argv)
    oracle.main()
    for e in entries:
        before = np.asarray(Image.open(root / e["image"]), dtype=np.int16)
        after = np.asarray(Image.open(out / e["image"]), dtype=np.int16)
        delta = after - before
        roi = np.asarray(Image.open(root / e["label"])) > 0
        # the band reaches 3 pixels at 96 (2 at 64) outside the ROI; nothing moves further out
        near = distance_transform_edt(~roi) <= 3
        assert np.abs(delta).max() <= 4 and np.abs(delta).max() >= 3  # epsilon = 4/255, used in the band
        assert not delta[~near].any()
        assert (delta == delta[..., :1]).all()  # one grey code on every channel
        assert np.array_equal(np.asarray(Image.open(out / e["label"])), np.asarray(Image.open(root / e["label"])))


def test_output_inside_the_dataset_is_refused(tmp_path, monkeypatch, load_script):
    oracle = load_script("benchmarks/oracle_shortcut.py")
    (tmp_path / "split.json").write_text(json.dumps({"training": []}))
    argv = ["oracle_shortcut.py", "--dataset_dir", str(tmp_path), "--datalist", str(tmp_path / "split.json"),
            "--output_dir", str(tmp_path / "oracle"), "--pattern", "rings"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="never write into an input dataset"):
        oracle.main()


@pytest.mark.parametrize("period", ["0", "-6", "nan"])
def test_bad_period_is_refused(tmp_path, monkeypatch, load_script, period):
    oracle = load_script("benchmarks/oracle_shortcut.py")
    argv = ["oracle_shortcut.py", "--dataset_dir", str(tmp_path / "d"), "--datalist", str(tmp_path / "s.json"),
            "--output_dir", str(tmp_path / "o"), "--pattern", "rings", "--period", period]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit, match="--period must be > 0"):
        oracle.main()

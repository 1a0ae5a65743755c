# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""``benchmarks/jpeg_survival.py``: how much of a perturbation the exploiter's JPEG round trip keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image


def _smooth_image(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (0.4 + 0.2 * torch.sin(xx / 9.0) * torch.cos(yy / 7.0)).to(torch.float64)[None]


def test_block_shift_survives_checkerboard_does_not(load_script):
    js = load_script("benchmarks/jpeg_survival.py")
    x = (_smooth_image() * 255).round() / 255
    blocks = torch.from_numpy(np.random.default_rng(0).choice([-8.0, 8.0], size=(8, 8))).repeat_interleave(8, 0)
    block_shift = blocks.repeat_interleave(8, 1)[None] / 255  # constant on JPEG's 8x8 blocks
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 2 - 1).to(torch.float64)[None] * 4 / 255
    proj_b, ratio_b, snr_b = js.survival(x, (x + block_shift).clamp(0, 1), 30)
    proj_c, _, snr_c = js.survival(x, (x + checker).clamp(0, 1), 30)
    assert proj_b > 0.8 and snr_b > 2.0 and ratio_b < 1.5
    assert proj_c < 0.3 and snr_c < snr_b / 4
    assert js.survival(x, x.clone(), 30) is None


@pytest.mark.parametrize("size", [None, 32])
def test_main_reads_a_manifest(tmp_path, capsys, monkeypatch, size, load_script):
    js = load_script("benchmarks/jpeg_survival.py")
    rng = np.random.default_rng(1)
    images = []
    for k, mode in enumerate(["L", "RGB"]):
        base = (_smooth_image()[0].numpy() * 255).astype(np.uint8)
        src = np.stack([base] * 3, -1) if mode == "RGB" else base
        out = np.clip(src.astype(int) + rng.choice([-6, 6], size=src.shape), 0, 255).astype(np.uint8)
        Image.fromarray(src).save(tmp_path / f"s{k}.png")
        Image.fromarray(out).save(tmp_path / f"o{k}.png")
        images.append({"source": str(tmp_path / f"s{k}.png"), "output": str(tmp_path / f"o{k}.png")})
    Image.fromarray(base).save(tmp_path / "same.png")
    images.append({"source": str(tmp_path / "same.png"), "output": str(tmp_path / "same.png")})
    (tmp_path / "manifest.json").write_text(json.dumps({"images": images}))
    argv = ["jpeg_survival.py", str(tmp_path / "manifest.json")] + (["--size", str(size)] if size else [])
    monkeypatch.setattr("sys.argv", argv)
    js.main()
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 2 and res["size"] == size and res["quality"] == 30
    assert 0 <= res["projection_median"] < 1 and res["snr_median"] > 0


def test_perturbation_erased_by_jpeg_has_no_signal(load_script):
    js = load_script("benchmarks/jpeg_survival.py")
    x = torch.full((1, 16, 16), 0.5, dtype=torch.float64)
    y = x.clone()
    y[0, 3, 5] += 1 / 255  # one grey level in one pixel: quantised away at quality 10
    proj, ratio, snr = js.survival(x, y, 10)
    assert proj == 0 and ratio == 0 and snr == 0

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""How much of a written perturbation survives JPEG compression: for each (original, protected) pair of a protect
manifest, with ``J`` the exploiter's JPEG round trip (:class:`monai_umed.defenses.JPEGDefense`; colour files in
colour, 4:2:0 chroma as the exploiter's):

- ``projection``: ``<J(x + d) - J(x), d> / <d, d>`` (1: the perturbation passes unchanged, 0: nothing is left);
- ``norm_ratio``: ``|J(x + d) - J(x)| / |d|`` (what JPEG returns around it, noise included);
- ``snr``: ``|projection * d| / |J(x + d) - J(x) - projection * d|``, the surviving perturbation against the part of
  the difference that is not along it (quantisation noise the exploiter sees as random).

``--size N`` first resizes both images to ``N x N`` as the exploiter does (anti-aliased bilinear,
:func:`monai_umed.defenses.antialiased_resize`, the operation of ``Resized(..., anti_aliasing=True)``), so JPEG acts on
the exploiter's 8x8 blocks; without it JPEG acts on the files at their own size.

Each is printed as the median over the files (one file with a tiny perturbation can have any ratio).

    python benchmarks/jpeg_survival.py P/manifest.json [--quality 30] [--images N] [--size 96]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image

from monai_umed.defenses import JPEGDefense, antialiased_resize


def load(path: str, size: int | None) -> torch.Tensor:
    """``[C, H, W]`` float on [0, 1] (C = 3 for colour files, else 1), resized to ``size`` when given."""
    with Image.open(path) as pil:
        arr = np.array(pil.convert("RGB" if len(pil.getbands()) >= 3 else "L"), dtype=np.float64)
    img = torch.as_tensor(arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]) / 255.0
    if size:
        img = antialiased_resize(img[None], (size, size))[0].clamp(0, 1)
    return img


def survival(x: torch.Tensor, y: torch.Tensor, quality: int) -> tuple[float, float, float] | None:
    """``(projection, norm_ratio, snr)`` of ``d = y - x`` through JPEG at ``quality``; ``None`` when ``d`` is 0."""
    d = (y - x).flatten()
    dd = float(d @ d)
    if not dd:
        return None
    jpeg = JPEGDefense(quality)
    jd = (jpeg(y) - jpeg(x)).flatten()
    proj = float(jd @ d) / dd
    residual = float(torch.linalg.norm(jd - proj * d))
    if not residual:  # JPEG returned exactly proj * d: all of it (inf) or, when proj is 0, nothing (0)
        return proj, abs(proj), float("inf") if proj else 0.0
    snr = abs(proj) * dd**0.5 / residual
    return proj, float(torch.linalg.norm(jd)) / dd**0.5, snr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest")
    p.add_argument("--quality", type=int, default=30)
    p.add_argument("--images", type=int, default=None, help="the first N files of the manifest (default: all)")
    p.add_argument("--size", type=int, default=None, help="resize to SIZE x SIZE first, as the exploiter does")
    args = p.parse_args()
    with open(args.manifest) as f:
        entries = json.load(f)["images"][: args.images]
    rows = [survival(load(e["source"], args.size), load(e["output"], args.size), args.quality) for e in entries]
    rows = np.array([r for r in rows if r is not None])
    if not len(rows):
        raise SystemExit(f"{args.manifest}: no file differs from its source.")
    print(json.dumps({"images": len(rows), "quality": args.quality, "size": args.size,
                      "projection_median": round(float(np.median(rows[:, 0])), 3),
                      "norm_ratio_median": round(float(np.median(rows[:, 1])), 3),
                      "snr_median": round(float(np.median(rows[:, 2])), 3)}))


if __name__ == "__main__":
    main()

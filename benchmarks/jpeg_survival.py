# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""How much of a written perturbation survives JPEG compression: for each (original, protected) pair of a protect
manifest, the projection of ``JPEG(x + delta) - JPEG(x)`` on ``delta``, ``<J(x+d) - J(x), d> / <d, d>`` (1: the
perturbation passes unchanged, 0: nothing of it is left), and the norm ratio ``|J(x+d) - J(x)| / |d|`` (JPEG's own
noise around it). Grey-scale (PIL "L"), PIL's JPEG encoder.

    python benchmarks/jpeg_survival.py P/manifest.json [--quality 30] [--images 40]
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
from PIL import Image


def jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf)).astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest")
    p.add_argument("--quality", type=int, default=30)
    p.add_argument("--images", type=int, default=40)
    args = p.parse_args()
    entries = json.load(open(args.manifest))["images"][: args.images]
    proj, ratio = [], []
    for e in entries:
        x = np.asarray(Image.open(e["source"]).convert("L"))
        y = np.asarray(Image.open(e["output"]).convert("L"))
        d = y.astype(np.float64) - x
        if not (d * d).sum():
            continue
        jd = jpeg(y, args.quality) - jpeg(x, args.quality)
        proj.append((jd * d).sum() / (d * d).sum())
        ratio.append(np.linalg.norm(jd) / np.linalg.norm(d))
    print(json.dumps({"images": len(proj), "quality": args.quality, "projection_mean": round(float(np.mean(proj)), 3),
                      "norm_ratio_mean": round(float(np.mean(ratio)), 3)}))


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Memory that protect's training cache holds per volume, with and without keeping only the foreground's
neighbourhood (``ForegroundNeighbourhoodd``), for a CT-sized synthetic volume with an organ-sized structure.

    python benchmarks/volume_cache.py --shape 512 512 100 --organ 60 --patch 32

Prints the cached bytes (image, label and the three priors, float32) of one volume either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_umed.transforms import ForegroundNeighbourhoodd, prior_transforms  # noqa: E402

KEYS = ["image", "label", "contour_band", "roi_interior", "texture_map"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 100])
    p.add_argument("--organ", type=int, default=60, help="edge of the cubic structure, voxels")
    p.add_argument("--patch", type=int, default=32, help="training patch edge (protect's --volume_size)")
    args = p.parse_args(argv)
    shape, o = tuple(args.shape), args.organ
    label = torch.zeros(1, *shape)
    c = [s // 2 for s in shape]
    label[(0, *(slice(ci - o // 2, ci + o // 2) for ci in c))] = 1
    data = {"image": torch.rand(1, *shape), "label": label}
    t0 = time.perf_counter()
    whole = prior_transforms(shape, 1)(data)  # the priors on the native grid
    seconds = time.perf_counter() - t0
    kept = ForegroundNeighbourhoodd(KEYS, margin=(args.patch,) * 3)(whole)
    size = {name: sum(d[k].numel() * d[k].element_size() for k in KEYS) for name, d in (("whole", whole), ("kept", kept))}
    result = {"shape": list(shape), "organ": o, "patch": args.patch, "priors_seconds": round(seconds, 1),
              "cached_MB_whole_volume": round(size["whole"] / 2**20, 1),
              "cached_MB_neighbourhood": round(size["kept"] / 2**20, 1),
              "kept_shape": list(kept["image"].shape[1:])}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

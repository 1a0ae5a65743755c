# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Time of the SSIM the writer records per image: MONAI's ``SSIMMetric`` against ``monai_umed.handlers.ssim_map``
(separable Gaussian filters), on one thread, same images, alternating; prints the median milliseconds of each and
the largest difference of the two metric values.

    python benchmarks/ssim_speed.py --size 224 --channels 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from monai.metrics import SSIMMetric

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_umed.handlers import ssim_map  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, args.channels, args.size, args.size, generator=g)
    y = (x + (torch.rand(x.shape, generator=g) - 0.5) * 8 / 255).clamp(0, 1)
    monai_metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=11)
    times: dict[str, list[float]] = {"monai_ssim_ms": [], "ssim_map_ms": []}
    values: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in (("monai_ssim_ms", lambda: monai_metric(y, x).mean()), ("ssim_map_ms", lambda: ssim_map(y, x).mean())):
            t0 = time.perf_counter()
            values[name] = float(fn())
            times[name].append(1000 * (time.perf_counter() - t0))
    result = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result["value_difference"] = abs(values["monai_ssim_ms"] - values["ssim_map_ms"])
    result.update(size=args.size, channels=args.channels, threads=args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Speed of the batched torch LBP (monai_umed.transforms.local_binary_pattern) against scikit-image.

    python benchmarks/lbp_speed.py [--size 224] [--batch 32] [--repeats 5]

Prints the median wall time per batch for scikit-image (one image at a time, as it must) and for the torch
implementation on the CPU (and CUDA when present), and checks that both give the same codes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from skimage.feature import local_binary_pattern as sk_lbp

from monai_umed.transforms import local_binary_pattern


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size)).astype(np.float64)
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch} x {args.size}x{args.size}")
    for method, p, r in (("uniform", 8, 1.0), ("default", 8, 1.0), ("uniform", 16, 2.0)):
        ref = np.stack([sk_lbp(im, p, r, method) for im in images])
        t_sk = _median_time(lambda: [sk_lbp(im, p, r, method) for im in images], args.repeats)
        x = torch.as_tensor(images)
        ours = local_binary_pattern(x, p, r, method).numpy()
        agree = float((ours == ref).mean())
        t_cpu = _median_time(lambda: local_binary_pattern(x, p, r, method), args.repeats)
        line = f"{method:8s} P={p:2d} R={r}: skimage {1e3 * t_sk:8.1f} ms | torch CPU {1e3 * t_cpu:8.1f} ms"
        if torch.cuda.is_available():
            xc = x.cuda()
            local_binary_pattern(xc, p, r, method)
            torch.cuda.synchronize()

            def gpu():
                local_binary_pattern(xc, p, r, method)
                torch.cuda.synchronize()

            line += f" | torch CUDA {1e3 * _median_time(gpu, args.repeats):8.2f} ms"
        print(line + f" | agreement with skimage {agree:.6f}")


if __name__ == "__main__":
    main()

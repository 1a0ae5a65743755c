# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Time of one UMedTrainer iteration per phase (generators / surrogate) at a given image size.

    python benchmarks/epoch_time.py --size 96 224 [--batch 16] [--iters 5] [--images 517]

Builds the protect job's networks as ``bundles/umed/configs/protect.json`` configures them (CDC U-Net G_c and
U-Net G_t from its ``perturbator_args``, U-Net surrogate), on one channel, times ``--iters``
iterations of each phase on random data after one warm-up iteration, and prints the median time per iteration
and the implied time per epoch for ``--images`` images (BUSI benign+malignant training split: 517).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from monai_umed.protectors import build_perturbator

CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "umed" / "configs" / "protect.json"


def config_perturbator_args() -> dict:
    """The literal ``perturbator_args`` of the protect config (references such as ``@channels`` left out)."""
    args = json.loads(CONFIG.read_text())["perturbator_args"]
    return {k: v for k, v in args.items() if not (isinstance(v, str) and v.startswith("@"))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--images", type=int, default=517)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    for size in args.size:
        torch.manual_seed(0)
        pert = build_perturbator(**{**config_perturbator_args(), "in_channels": 1}).to(device)
        sur = UNet(2, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).to(device)
        g_opt, s_opt = torch.optim.Adam(pert.parameters(), 1e-4), torch.optim.Adam(sur.parameters(), 1e-4)
        x = torch.rand(args.batch, 1, size, size, device=device)
        y = (torch.rand(args.batch, 1, size, size, device=device) > 0.7).float()
        band, tex, roi = y, torch.rand_like(x), y

        def gen_step():
            g_opt.zero_grad()
            protected, _, _ = pert(x, band, tex, roi)
            loss_fn(sur(protected), y).backward()
            g_opt.step()

        def sur_step():
            with torch.no_grad():
                protected, _, _ = pert(x, band, tex, roi)
            s_opt.zero_grad()
            loss_fn(sur(protected), y).backward()
            s_opt.step()

        steps_per_epoch = math.ceil(args.images / args.batch)
        for name, step in (("generators", gen_step), ("surrogate", sur_step)):
            step()
            times = []
            for _ in range(args.iters):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            it = statistics.median(times)
            print(f"{size}x{size} {name:10s}: {it:7.3f} s/iteration -> {it * steps_per_epoch:7.1f} s/epoch ({steps_per_epoch} it)")


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Train UMed for a few steps in one process or, under ``torchrun``, in several (DDP, gloo on the CPU), and save the
final generator and surrogate weights; used by ``test_distributed.py`` (not a test itself).

Usage: ``[torchrun --nproc_per_node=N] ddp_worker.py DATASET_DIR OUTPUT_FILE_PREFIX`` (environment: ``S`` steps,
``R`` surrogate_reset). SGD, not Adam: Adam's first steps move a parameter by about ``lr`` whatever the size of its
gradient, so parameters whose gradient is zero up to rounding (a convolution bias before an instance norm) would
move by +-lr on float noise and hide the comparison.
"""

from __future__ import annotations

import os
import sys

import torch
from monai.data import DataLoader, Dataset
from monai.networks.nets import UNet
from monai.utils import set_determinism

from monai_umed.apps import umed_transforms
from monai_umed.data import load_datalist
from monai_umed.distributed import (
    ddp,
    distributed_sampler,
    init_distributed,
    per_rank_batch,
    rank_and_world,
    shutdown_distributed,
)
from monai_umed.engines import UMedTrainer
from monai_umed.protectors import build_perturbator

GLOBAL_BATCH = 4


def main(dataset_dir: str, prefix: str) -> None:
    device = init_distributed("cpu")
    rank, world = rank_and_world()
    set_determinism(0)
    data = list(load_datalist(dataset_dir=dataset_dir))
    ds = Dataset(data, transform=umed_transforms(32, 1, band_width=1))
    sampler = distributed_sampler(ds, shuffle=False)
    loader = DataLoader(ds, batch_size=per_rank_batch(GLOBAL_BATCH), shuffle=False, sampler=sampler, num_workers=0)
    pert = build_perturbator(contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8),
                             texture_strides=(2,))
    sur = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    trainer = UMedTrainer(
        device=device, train_data_loader=loader, perturbator=ddp(pert), surrogate=ddp(sur),
        g_optimizer=torch.optim.SGD(pert.parameters(), lr=0.5), s_optimizer=torch.optim.SGD(sur.parameters(), lr=0.5),
        steps=int(os.environ.get("S", 12)), phase_steps=2, generator_epochs=1, surrogate_reset=int(os.environ.get("R", 2)), stop_ratio=1e-6,
    )
    init = {"perturbator": {k: v.clone() for k, v in pert.state_dict().items()},
            "surrogate": {k: v.clone() for k, v in sur.state_dict().items()}}
    trainer.run()
    torch.save({"perturbator": pert.state_dict(), "surrogate": sur.state_dict(), "init": init, "epochs": trainer.state.epoch,
                "loss_ratio": getattr(trainer.state, "loss_ratio", None)}, f"{prefix}{rank}.pt")
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""How differently does a fresh exploiter learn from the protected files than from the clean ones, step by step?

A U-Net exploiter (the ``train_exploiter`` network, loss and optimiser) is trained on the **protected** training
files of a split. At every step the same batch is also read from the **clean** originals, and the loss gradient
with respect to the network's weights is taken on both:

* ``cos``: cosine between the two gradients. Near 1, a step on the protected files moves the network as a step on
  the clean files would: the exploiter is learning the anatomy, and the perturbation has no say yet.
* ``rel``: ``|g_protected - g_clean| / |g_clean|``, the part of the step that comes from the perturbation.

Then the optimiser steps with the protected gradient, as the exploiter does. The clean test images are scored
(``train_exploiter``'s own evaluation) after every epoch. The curve shows
*when* a protection starts to act: a perturbation that protects from the first epoch must take over the gradient
in the first steps.

    python benchmarks/gradient_alignment.py --dataset_dir D --datalist S.json --train_dir P/protected \
        --epochs 3 --output O.json

Prints, per epoch, the mean ``cos`` and ``rel`` and the clean test DSC, and writes every step to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.utils import set_determinism

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_umed.apps.exploit import evaluate_exploiter  # noqa: E402
from monai_umed.apps.exploit_data import exploit_items, exploit_transforms, resolve_exploit_data  # noqa: E402
from monai_umed.apps.protect import dataset_classes, infer_channels  # noqa: E402
from monai_umed.networks import get_exploiter  # noqa: E402
from monai_umed.utils import atomic_write_text  # noqa: E402


def flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The gradient of ``loss`` with respect to ``params``, as one vector."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", required=True, help="the clean dataset folder")
    p.add_argument("--datalist", required=True, help="split file (its training and test entries)")
    p.add_argument("--train_dir", required=True, help="the protected copy of the dataset (protect's O/protected)")
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file for the per-step record")
    args = p.parse_args(argv)

    train_items, test_items = resolve_exploit_data(args.dataset_dir, args.datalist, args.train_dir,
                                                   check_duplicates=False)
    channels = infer_channels(train_items + test_items)
    classes = dataset_classes(train_items + test_items, "auto")  # as train_exploiter
    num_classes = len(classes) + 1 if classes else 2
    clean_items = [{**e, "image": e["source_image"]} for e in train_items]
    tf = exploit_transforms(args.image_size, channels, None, classes, 2)
    set_determinism(seed=args.seed)
    protected = CacheDataset(exploit_items(train_items), tf, progress=False)
    clean = CacheDataset(exploit_items(clean_items), tf, progress=False)
    test = CacheDataset(exploit_items(test_items), exploit_transforms(args.image_size, channels, None, classes, 2,
                                                                      train=False), progress=False)
    test_loader = DataLoader(test, batch_size=args.batch_size, shuffle=False)
    network = get_exploiter("unet", spatial_dims=2, in_channels=channels, out_channels=num_classes,
                            img_size=args.image_size)
    params = [q for q in network.parameters() if q.requires_grad]
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(params, lr=args.lr)
    order = torch.Generator().manual_seed(args.seed)
    steps, epochs = [], []
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(protected), generator=order).tolist()
        for start in range(0, len(perm), args.batch_size):
            idx = perm[start:start + args.batch_size]
            xp = torch.stack([protected[i]["image"] for i in idx])
            xc = torch.stack([clean[i]["image"] for i in idx])
            y = torch.stack([protected[i]["label"] for i in idx])
            loss_c = loss_function(network(xc), y)
            g_c = flat_grad(loss_c, params)
            loss_p = loss_function(network(xp), y)
            g_p = flat_grad(loss_p, params)
            gp, gc = g_p.double(), g_c.double()  # float32 sums of ~1e6 terms miss 1 by 1e-4
            cos = float(torch.dot(gp, gc) / (gp.norm() * gc.norm()).clamp_min(1e-12))
            rel = float((gp - gc).norm() / gc.norm().clamp_min(1e-12))
            steps.append({"step": len(steps) + 1, "epoch": epoch, "cos": cos, "rel": rel,
                          "loss_protected": loss_p.item(), "loss_clean": loss_c.item()})
            optimizer.zero_grad(set_to_none=True)
            offset = 0
            for q in params:
                q.grad = g_p[offset:offset + q.numel()].view_as(q).clone()
                offset += q.numel()
            optimizer.step()
        these = [s for s in steps if s["epoch"] == epoch]
        row = {"epoch": epoch, "cos_mean": float(np.mean([s["cos"] for s in these])),
               "rel_mean": float(np.mean([s["rel"] for s in these])),
               "cos_first5": float(np.mean([s["cos"] for s in these[:5]])),
               "test_dsc": evaluate_exploiter(network, test_loader, num_classes=num_classes)[0]["dsc"]}
        network.train()  # the evaluator leaves it in eval mode
        epochs.append(row)
        print(f"epoch {epoch}: cos {row['cos_mean']:.3f} (first 5 steps {row['cos_first5']:.3f}), rel "
              f"{row['rel_mean']:.3f}, clean test DSC {row['test_dsc']:.3f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    result = {"args": vars(args), "n_train": len(train_items), "n_test": len(test_items), "epochs": epochs,
              "steps": steps}
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()

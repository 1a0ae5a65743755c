# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""TAP and SEP, targeted adversarial poisons, adapted to segmentation as the UMed paper does (Sec. 4.1).

**TAP** (Fowl et al., NeurIPS 2021) trains a model on the clean data, then moves every training image by targeted
PGD towards another class; **SEP** (Chen et al., ICLR 2023) does the same against an ensemble of checkpoints of one
clean training run, with the gradient averaged over the ensemble. For segmentation the target is a permuted label
map: with one foreground class, ROI and background swapped (:func:`swapped_labels`). Both are sample-wise (one
perturbation per training image, :class:`SampleWiseProtector`) and perturb the whole image within ``epsilon``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

import torch
import torch.nn as nn

from monai_umed.defenses.adversarial import pgd_linf
from monai_umed.protectors.base import register_protector
from monai_umed.protectors.samplewise import SampleWiseProtector

__all__ = ["TAPProtector", "SEPProtector", "swapped_labels", "train_snapshots", "optimize_targeted"]

logger = logging.getLogger("monai_umed")


@register_protector
class TAPProtector(SampleWiseProtector):
    """TAP's targeted adversarial poison: one perturbation per training image, optimised by
    :func:`optimize_targeted` against one model trained on the clean data."""

    name: ClassVar[str] = "tap"


@register_protector
class SEPProtector(SampleWiseProtector):
    """SEP's self-ensemble poison: one perturbation per training image, optimised by :func:`optimize_targeted`
    against the checkpoints of one clean training run (:func:`train_snapshots`)."""

    name: ClassVar[str] = "sep"


def swapped_labels(label: torch.Tensor) -> torch.Tensor:
    """The target label map of the targeted poisons: ROI and background swapped (``1 - (label > 0)``)."""
    return (label <= 0).to(label.dtype)


def train_snapshots(
    model: nn.Module,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    snapshots: int = 1,
    device: str | torch.device = "cpu",
) -> list[nn.Module]:
    """Train ``model`` on clean batches (``image``, ``label``) for ``steps`` optimiser steps (the loader cycled) and
    return ``snapshots`` copies in eval mode, taken at evenly spaced steps, the last one at the end of training.

    TAP uses the final model (``snapshots=1``); SEP the checkpoints along the run as its ensemble.
    """
    if steps < 1 or snapshots < 1 or snapshots > steps:
        raise ValueError(f"need 1 <= snapshots <= steps, got steps={steps}, snapshots={snapshots}.")
    device = torch.device(device)
    model.to(device).train()
    marks = {round(steps * (k + 1) / snapshots) for k in range(snapshots)}
    taken: list[nn.Module] = []
    step = 0
    while step < steps:
        for batch in loader:
            x, y = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            if step in marks:
                taken.append(copy.deepcopy(model).eval())
                logger.info("clean model snapshot %d/%d at step %d (loss %.4f)", len(taken), snapshots, step, loss.item())
            if step >= steps:
                break
    return taken


class _Ensemble(nn.Module):
    """The members' logits stacked on a new first axis."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])


@torch.no_grad()
def optimize_targeted(
    protector: SampleWiseProtector,
    models: Sequence[nn.Module],
    loader: Iterable[dict],
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int = 250,
    step_size: float | None = None,
    device: str | torch.device = "cpu",
    index_key: str = "em_index",
) -> dict:
    """Fill ``protector.deltas`` by targeted PGD towards :func:`swapped_labels` (TAP with one model, SEP with several).

    For every batch: ``steps`` sign-gradient steps of ``step_size`` that *decrease* the mean over ``models`` of
    ``loss_function(model(x + delta), swapped_labels(y))`` (the gradient averaged over the ensemble), each projected
    onto ``|delta| <= epsilon`` and ``x + delta`` in [0, 1], starting from the clean image
    (:func:`~monai_umed.defenses.adversarial.pgd_linf` with ``minimize=True``). Defaults as the public code:
    TAP 250 steps of 5 % of epsilon; SEP's step is 1/255 (pass ``step_size``).

    Args:
        loader: batches of ``image`` at the protector's size, ``label`` and ``index_key`` (the row in ``deltas``).

    Returns:
        ``{"target_loss_clean", "target_loss_poisoned"}``: the mean target loss before and after, over all images.
    """
    device = torch.device(device)
    step = 0.05 * protector.epsilon if step_size is None else float(step_size)
    ensemble = _Ensemble(models).to(device).eval()
    for p in ensemble.parameters():
        p.requires_grad_(False)

    def mean_loss(stacked: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss_function(out, target) for out in stacked]).mean()

    before = after = 0.0
    count = 0
    total = len(loader) if hasattr(loader, "__len__") else None
    for batch_no, b in enumerate(loader, 1):
        x, y = b["image"].to(device), b["label"].to(device)
        idx = b[index_key].long()
        target = swapped_labels(y)
        x_p = pgd_linf(ensemble, x, target, mean_loss, protector.epsilon, steps=steps, step_size=step,
                       random_start=False, minimize=True, mask=protector.region_mask(y))
        protector.deltas[idx] = (x_p - x).to(protector.deltas.device)
        n = len(idx)
        before += float(mean_loss(ensemble(x), target)) * n
        after += float(mean_loss(ensemble(x_p), target)) * n
        count += n
        if batch_no % 10 == 0 or batch_no == total:
            logger.info("%s: %d/%s batches poisoned", protector.name, batch_no, total if total is not None else "?")
    result = {"target_loss_clean": before / max(count, 1), "target_loss_poisoned": after / max(count, 1)}
    logger.info(
        "%s: loss towards the swapped labels %.4f on clean images -> %.4f on poisoned images (%d models, %d images)",
        protector.name, result["target_loss_clean"], result["target_loss_poisoned"], len(models), count,
    )
    return result

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""EM, sample-wise error-minimizing noise (Huang et al., ICLR 2021), adapted to segmentation.

One of the baseline protectors of the UMed paper's Table 1 (the best-known one there). EM solves the min-min
problem ``min_theta (1/n) sum_i min_{||delta_i|| <= eps} L(f_theta(x_i + delta_i), y_i)`` by alternating a few
training steps of a surrogate model on the perturbed data with projected sign-gradient steps that *decrease* the
loss of every sample's own perturbation, until the surrogate fits the perturbed data. For segmentation the loss
is UMed's ``L_seg`` (MONAI ``DiceCELoss``), and the stop test is the mean loss on the perturbed training set
instead of the classification accuracy of the original.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
import torch.nn as nn

from monai_umed.defenses.adversarial import pgd_linf
from monai_umed.protectors.base import register_protector
from monai_umed.protectors.samplewise import SampleWiseProtector

__all__ = ["EMProtector", "optimize_error_minimizing"]

logger = logging.getLogger("monai_umed")


@register_protector
class EMProtector(SampleWiseProtector):
    """EM's error-minimizing noise: one perturbation per training image (:class:`SampleWiseProtector`), optimised by
    :func:`optimize_error_minimizing`."""

    name: ClassVar[str] = "em"


def optimize_error_minimizing(
    protector: EMProtector,
    surrogate: nn.Module,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: str | torch.device = "cpu",
    max_rounds: int = 10,
    train_steps: int = 10,
    pgd_steps: int = 20,
    step_size: float | None = None,
    stop_loss: float = 0.05,
    index_key: str = "em_index",
) -> list[dict]:
    """Optimise ``protector.deltas`` by EM's min-min alternation (Huang et al. 2021, sample-wise).

    Each round: (1) ``train_steps`` batches of surrogate training on ``clip(x + delta)``; (2) for every sample,
    ``pgd_steps`` sign-gradient steps of size ``step_size`` (default ``epsilon / 10``, the original's) that
    decrease the surrogate's loss, each projected onto ``|delta| <= epsilon``, ``x + delta`` in [0, 1]
    (:func:`~monai_umed.defenses.adversarial.pgd_linf` with ``minimize=True``, started at the previous delta); (3) the mean loss on the perturbed
    training set, which stops the rounds once below ``stop_loss`` (the original stops at 99 % training accuracy).

    Args:
        loader: batches of ``image`` ``[B, C, H, W]`` at the protector's size, ``label`` ``[B, 1, H, W]`` and
            ``index_key``, the row of each sample in ``protector.deltas``.

    Returns:
        one record per round: ``{"round", "loss"}`` (mean loss on the perturbed training set).
    """
    device = torch.device(device)
    step = protector.epsilon / 10 if step_size is None else float(step_size)
    deltas = protector.deltas
    surrogate.to(device)
    history: list[dict] = []

    def batches():
        while True:
            yield from loader

    stream = batches()
    for r in range(1, max_rounds + 1):
        surrogate.train()
        for _ in range(train_steps):
            b = next(stream)
            x, y = b["image"].to(device), b["label"].to(device)
            idx = b[index_key].long()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(surrogate((x + deltas[idx].to(device)).clamp(0, 1)), y)
            loss.backward()
            optimizer.step()
        surrogate.eval()
        for b in loader:
            x, y = b["image"].to(device), b["label"].to(device)
            idx = b[index_key].long()
            x_p = pgd_linf(
                surrogate, x, y, loss_function, protector.epsilon, steps=pgd_steps, step_size=step,
                minimize=True, start=x + deltas[idx].to(device), mask=protector.region_mask(y),
            )
            deltas[idx] = (x_p - x).to(deltas.device)
        total, count = 0.0, 0
        with torch.no_grad():
            for b in loader:
                x, y = b["image"].to(device), b["label"].to(device)
                idx = b[index_key].long()
                total += float(loss_function(surrogate(x + deltas[idx].to(device)), y)) * len(idx)
                count += len(idx)
        mean = total / max(count, 1)
        history.append({"round": r, "loss": mean})
        logger.info("EM round %d/%d: surrogate loss on the perturbed training set %.4f", r, max_rounds, mean)
        if mean < stop_loss:
            break
    return history

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

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_umed.defenses.adversarial import pgd_linf
from monai_umed.protectors.base import Protector, register_protector

__all__ = ["EMProtector", "optimize_error_minimizing"]

logger = logging.getLogger("monai_umed")


@register_protector
class EMProtector(Protector):
    """One perturbation per training image, at the training size, bounded by ``epsilon`` in l-inf.

    The writer asks for an image's perturbation by its key (the datalist name); it is resized bilinearly to the
    image's own grid and clipped to ``[-epsilon, epsilon]`` again. EM is sample-wise: an image it was not
    optimised on has no perturbation, and asking for one is an error.

    Args:
        keys: the training images' names, in the order of the ``deltas`` rows.
        in_channels: channels of the perturbations.
        image_size: ``(H, W)`` the perturbations are optimised at.
        epsilon: l-inf bound on the [0, 1] scale (default 4/255).
    """

    name: ClassVar[str] = "em"

    def __init__(self, keys: Sequence[str], in_channels: int, image_size: Sequence[int], epsilon: float = 4 / 255):
        super().__init__()
        self.keys = [str(k) for k in keys]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("EM keys (image names) must be unique.")
        if not self.keys:
            raise ValueError("EM needs at least one training image.")
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1), got {epsilon}.")
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.epsilon = float(epsilon)
        self.in_channels = int(in_channels)
        self.image_size = [int(s) for s in image_size]
        self.register_buffer("deltas", torch.zeros(len(self.keys), int(in_channels), *[int(s) for s in image_size]))
        # which row belongs to which image is part of the protector (and of the writer's fingerprint)
        digest = hashlib.sha256("\n".join(self.keys).encode()).digest()
        self.register_buffer("keys_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def config(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "in_channels": self.in_channels, "image_size": self.image_size,
                "epsilon": self.epsilon}

    def extra_repr(self) -> str:
        return f"images={len(self.keys)}, shape={tuple(self.deltas.shape[1:])}, epsilon={self.epsilon:.6g}"

    @torch.no_grad()
    def native_delta(self, image: torch.Tensor, label: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbation of image ``key`` on the image's own grid (``image + delta`` kept in [0, 1]); every pixel
        may change."""
        if key not in self.index:
            raise ValueError(
                f"{key}: EM is sample-wise and has no perturbation for this image (optimised on {len(self.keys)} "
                "other images); run protect_em on the dataset that holds it."
            )
        d = self.deltas[self.index[key]]
        if image.ndim != 3 or image.shape[0] != d.shape[0]:
            raise ValueError(f"image must be [{d.shape[0]}, H, W], got {tuple(image.shape)}.")
        d = F.interpolate(d[None].float().cpu(), size=tuple(image.shape[1:]), mode="bilinear", align_corners=False)
        d = d[0].clamp(-self.epsilon, self.epsilon).to(image.device, image.dtype)
        return (image + d).clamp(0, 1) - image, torch.ones(image.shape[1:], dtype=torch.bool)


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
                minimize=True, start=x + deltas[idx].to(device),
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

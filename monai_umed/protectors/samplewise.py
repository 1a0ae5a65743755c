# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Storage of the sample-wise protectors: one perturbation per training image, looked up by the image's name."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai_umed.protectors.base import Protector

__all__ = ["SampleWiseProtector"]


class SampleWiseProtector(Protector):
    """One perturbation per training image, at the training size, bounded by ``epsilon`` in l-inf: the storage
    shared by the sample-wise protectors (EM, TAP, SEP), which differ only in how ``deltas`` is optimised.

    The writer asks for an image's perturbation by its key (the datalist name); it is resized bilinearly to the
    image's own grid and clipped to ``[-epsilon, epsilon]`` again. An image the protector was not optimised on has
    no perturbation, and asking for one is an error.

    Args:
        keys: the training images' names, in the order of the ``deltas`` rows.
        in_channels: channels of the perturbations.
        image_size: ``(H, W)`` the perturbations are optimised at.
        epsilon: l-inf bound on the [0, 1] scale (default 4/255).
    """

    def __init__(self, keys: Sequence[str], in_channels: int, image_size: Sequence[int], epsilon: float = 4 / 255):
        super().__init__()
        self.keys = [str(k) for k in keys]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"{self.name} keys (image names) must be unique.")
        if not self.keys:
            raise ValueError(f"{self.name} needs at least one training image.")
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
                f"{key}: {self.name} is sample-wise and has no perturbation for this image (optimised on "
                f"{len(self.keys)} other images); run protect_{self.name} on the dataset that holds it."
            )
        d = self.deltas[self.index[key]]
        if image.ndim != 3 or image.shape[0] != d.shape[0]:
            raise ValueError(f"image must be [{d.shape[0]}, H, W], got {tuple(image.shape)}.")
        d = F.interpolate(d[None].float().cpu(), size=tuple(image.shape[1:]), mode="bilinear", align_corners=False)
        d = d[0].clamp(-self.epsilon, self.epsilon).to(image.device, image.dtype)
        return (image + d).clamp(0, 1) - image, torch.ones(image.shape[1:], dtype=torch.bool)

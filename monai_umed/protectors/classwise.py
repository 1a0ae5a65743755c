# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""What the class-wise protectors (LSP, AR) share: each pixel takes the pattern of its own class."""

from __future__ import annotations

from abc import abstractmethod

import torch

from monai_umed.protectors.base import Protector

__all__ = ["ClassWiseProtector"]


class ClassWiseProtector(Protector):
    """A protector that draws one pattern per class for each image (:meth:`class_patterns`); UMed's adaptation to
    segmentation (Sec. 4.1 of the paper) makes the pixels outside and inside the ROI the two classes, and each pixel
    takes its class's pattern. Subclasses set ``in_channels``, ``epsilon`` and ``num_classes``."""

    num_classes: int

    @abstractmethod
    def class_patterns(self, shape: tuple[int, int], key: str) -> torch.Tensor:
        """The image's pattern of every class, ``[num_classes, C, H, W]``, each within ``epsilon``."""

    @torch.no_grad()
    def native_delta(self, image: torch.Tensor, label: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbation of one image on its own grid: each pixel takes its class's pattern.

        Args:
            image: ``[C, H, W]`` on the [0, 1] scale.
            label: ``[1, H, W]``; with ``num_classes=2`` every non-zero value is the ROI, otherwise the values
                ``0 .. num_classes - 1`` are the classes.
            key: the image's name, which seeds its draw.

        Returns:
            ``(delta, allowed)``: ``delta`` ``[C, H, W]`` with ``|delta| <= epsilon`` and ``image + delta`` in
            [0, 1]; ``allowed`` is every pixel (class-wise protectors perturb the whole image).
        """
        if image.ndim != 3 or image.shape[0] != self.in_channels:
            raise ValueError(f"image must be [{self.in_channels}, H, W], got {tuple(image.shape)}.")
        classes = (label[0] > 0).long().cpu() if self.num_classes == 2 else label[0].round().long().cpu()
        if classes.shape != image.shape[1:]:
            raise ValueError(f"label {tuple(label.shape)} does not match image {tuple(image.shape)}.")
        if int(classes.min()) < 0 or int(classes.max()) >= self.num_classes:
            raise ValueError(f"label values must be in 0..{self.num_classes - 1}, got {classes.unique().tolist()}.")
        patterns = self.class_patterns(tuple(classes.shape), key)
        delta = torch.gather(patterns, 0, classes.expand(1, self.in_channels, *classes.shape)).squeeze(0)
        delta = delta.to(image.device, image.dtype)
        # the protected image stays in [0, 1] (as Eq. 6 clips UMed's)
        return (image + delta).clamp(0, 1) - image, torch.ones(classes.shape, dtype=torch.bool)

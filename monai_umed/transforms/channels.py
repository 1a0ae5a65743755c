# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Bring images to the channel count the networks work on (grey stored as RGB -> one channel, and back)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_to_tensor

__all__ = ["MatchChannels", "MatchChannelsd"]


class MatchChannels(Transform):
    """Bring a channel-first image to ``channels`` channels.

    ``[3, *spatial]`` -> ``[1, *spatial]`` keeps the first channel (a grey image stored as RGB has three equal
    channels); ``[1, *spatial]`` -> ``[3, *spatial]`` repeats the channel. An image that already has ``channels``
    channels passes unchanged (the same object).

    Args:
        channels: 1 or 3 (or any count an input already has).
        convert_to_tensor: return a torch tensor also for numpy input (default: keep the input's type).

    Raises:
        ValueError: any other pair of channel counts.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channels: int, convert_to_tensor: bool = False) -> None:
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}.")
        self.channels = int(channels)
        self.convert_to_tensor = convert_to_tensor

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.convert_to_tensor:
            img = convert_to_tensor(img)
        have = img.shape[0]
        if have == self.channels:
            return img
        if self.channels == 1 and have == 3:
            return img[:1]
        if self.channels == 3 and have == 1:
            reps = (3, *([1] * (img.ndim - 1)))
            return img.repeat(*reps) if isinstance(img, torch.Tensor) else img.repeat(3, axis=0)
        raise ValueError(f"cannot bring an image with {have} channels to {self.channels}.")


class MatchChannelsd(MapTransform):
    """Dictionary-based wrapper of :class:`MatchChannels`."""

    backend = MatchChannels.backend

    def __init__(
        self, keys: KeysCollection, channels: int, convert_to_tensor: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MatchChannels(channels, convert_to_tensor)

    @property
    def channels(self) -> int:
        return self.converter.channels

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

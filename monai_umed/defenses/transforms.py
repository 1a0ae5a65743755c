# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Exploiter-side input-transformation defenses of Lin et al., IJCAI 2024 (Sec. 4.4, Table 3).

An exploiter who suspects the dataset is protected can degrade the *training* images before fitting the model,
hoping to destroy the protective perturbations (Liu et al., "Image Shortcut Squeezing", ICML 2023). These
transforms are applied to training images only (test images stay clean). All work on float images ``[C, H, W]``
on the [0, 1] scale, accept numpy or torch (CPU or CUDA) and keep ``MetaTensor`` metadata; each has an array and
a dictionary version:

- :class:`GaussianBlurDefense` -- 3x3 Gaussian filtering (Table 3: "kernel size 3x3").
- :class:`JPEGDefense` -- JPEG compression. Sec. 4.4 says quality 30, the Table 3 caption says 60; the
  default here follows the text (30).
- :class:`GrayscaleDefense` -- grayscale "image shortcut squeezing" (Liu et al., 2023) for colour images.
- :class:`MedianDefense` -- 3x3 median filtering, a classic denoiser against additive noise patterns.
- :class:`ResampleDefense` -- down-sampling by 0.5 and back (``downsample_upsample``), a low-pass that keeps the
  image size.
- :func:`augment_defense` (``augment``) -- strong random data augmentation in the spirit of UEraser-lite / ARMOR
  (flips, rotations, elastic deformation, contrast, gamma, noise, channel shuffle), on image and label together.

The ISS setting of JPEG (Liu et al., 2023) is ``jpeg`` at quality 10.

Adversarial training, the fourth defense of Table 3, changes the training loop instead; see
:func:`monai_umed.defenses.adversarial.pgd_linf`.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = [
    "DEFENSES",
    "GaussianBlurDefense",
    "GaussianBlurDefensed",
    "GrayscaleDefense",
    "GrayscaleDefensed",
    "JPEGDefense",
    "JPEGDefensed",
    "MedianDefense",
    "MedianDefensed",
    "ResampleDefense",
    "ResampleDefensed",
    "augment_defense",
    "AUGMENT_PARTS",
    "parse_augment_parts",
    "RandChannelShuffled",
    "LUMA_WEIGHTS",
    "gaussian_kernel_1d",
    "get_defense_transform",
]

#: Names accepted by :func:`get_defense_transform`.
DEFENSES: tuple[str, ...] = ("none", "gaussian_blur", "jpeg", "grayscale", "median", "downsample_upsample", "augment")

#: The parts of the ``augment`` recipe (:func:`augment_defense`), in the order they are applied.
AUGMENT_PARTS: tuple[str, ...] = ("flip", "affine", "elastic", "gamma", "intensity", "noise", "shuffle")

#: ITU-R BT.601 luma weights (R, G, B), as used by PIL's ``convert("L")``; they sum to 1.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def _as_float_tensor(img: NdarrayOrTensor) -> tuple[NdarrayOrTensor, torch.Tensor]:
    """``(img as tensor keeping metadata when tracking is on, plain floating tensor of the same values)``."""
    img = convert_to_tensor(img, track_meta=get_track_meta())
    img_t = convert_to_tensor(img, track_meta=False)
    if not torch.is_floating_point(img_t):
        img_t = img_t.float()
    return img, img_t


def gaussian_kernel_1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Normalised sampled Gaussian ``exp(-x^2 / (2 sigma^2))``, ``x = -(k-1)/2 .. (k-1)/2`` (torchvision's kernel)."""
    half = (kernel_size - 1) / 2.0
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


class GaussianBlurDefense(Transform):
    """Gaussian blur defense (Sec. 4.4 / Table 3 of Lin et al., IJCAI 2024: kernel size 3x3).

    The kernel is the normalised sampled Gaussian of size ``kernel_size`` in every spatial dimension (the outer
    product of :func:`gaussian_kernel_1d`), applied per channel with reflect padding (``d c b | a b c d``,
    i.e. ``scipy.ndimage`` mode ``"mirror"``), so the output has the input shape. For float images this equals
    ``torchvision.transforms.functional.gaussian_blur``. MONAI's ``GaussianSmooth`` is not used because it
    truncates at 4 sigma (a 9-tap kernel for sigma 0.8) and zero-pads.

    Args:
        kernel_size: odd kernel size (3 in the paper).
        sigma: standard deviation in pixels. The paper gives only the kernel size; the default 0.8 is torchvision's
            default for a 3-tap kernel, ``0.3 * ((k - 1) * 0.5 - 1) + 0.8``; ``None`` uses that formula for any
            ``kernel_size``. For k=3, sigma=0.8 the 1-D kernel is about ``(0.2186, 0.5628, 0.2186)``.

    Input ``[C, *spatial]`` (1-3 spatial dims), float on [0, 1]; output of the same shape and type (a convex
    combination of input pixels, so it stays in [0, 1] and preserves constant images).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, kernel_size: int = 3, sigma: float | None = 0.8) -> None:
        kernel_size = int(kernel_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        if sigma is None:
            sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}.")
        self.kernel_size = kernel_size
        self.sigma = float(sigma)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Blur every channel of ``img`` ``[C, *spatial]``."""
        img, img_t = _as_float_tensor(img)
        spatial = img_t.ndim - 1
        if spatial not in (1, 2, 3):
            raise ValueError(f"expected a channel-first image [C, *spatial] with 1-3 spatial dims, got {img_t.shape}.")
        pad = self.kernel_size // 2
        if pad == 0:
            out_t = img_t.clone()
        else:
            if min(img_t.shape[1:]) <= pad:
                raise ValueError(f"reflect padding of {pad} needs every spatial size > {pad}, got {img_t.shape}.")
            channels = img_t.shape[0]
            k1 = gaussian_kernel_1d(self.kernel_size, self.sigma, dtype=img_t.dtype, device=img_t.device)
            kernel = k1
            for _ in range(spatial - 1):
                kernel = kernel[..., None] * k1
            weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
            x = F.pad(img_t.unsqueeze(0), [pad] * (2 * spatial), mode="reflect")
            conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
            out_t = conv(x, weight, groups=channels).squeeze(0)
        out, *_ = convert_to_dst_type(out_t, dst=img, dtype=out_t.dtype)
        return out


class JPEGDefense(Transform):
    """JPEG compression defense (Sec. 4.4 / Table 3 of Lin et al., IJCAI 2024; Liu et al., ICML 2023).

    The image is quantised to 8 bits (``round(clip(x, 0, 1) * 255)``), encoded with PIL at ``quality`` (PIL's
    default chroma subsampling, 4:2:0 for colour images), decoded, and divided by 255, so the output is
    8-bit quantised.

    Args:
        quality: JPEG quality in [1, 100]; 30 as in the text of Sec. 4.4 (the Table 3 caption says 60).

    Input ``[C, H, W]`` with C = 1 (grayscale) or 3 (RGB), float on [0, 1]; output float on [0, 1] with the same
    shape, type, floating dtype and device.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, quality: int = 30) -> None:
        quality = int(quality)
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in [1, 100], got {quality}.")
        self.quality = quality

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """JPEG round trip of ``img`` ``[C, H, W]`` (C in {1, 3})."""
        img, img_t = _as_float_tensor(img)
        if img_t.ndim != 3 or img_t.shape[0] not in (1, 3):
            raise ValueError(f"JPEGDefense expects a 2D image [C, H, W] with C in (1, 3), got {tuple(img_t.shape)}.")
        arr = (img_t.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        pil = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0)))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=self.quality)
        buf.seek(0)
        with Image.open(buf) as dec_img:
            dec = np.asarray(dec_img.convert("L" if arr.shape[0] == 1 else "RGB"))
        dec = dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1)
        out_t = torch.as_tensor(np.array(dec), device=img_t.device).to(img_t.dtype) / 255.0
        out, *_ = convert_to_dst_type(out_t, dst=img, dtype=out_t.dtype)
        return out


class GrayscaleDefense(Transform):
    """Grayscale defense ("image shortcut squeezing", Liu et al., ICML 2023), for colour datasets (Kvasir-SEG).

    A 3-channel RGB image is replaced by its luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, PIL's
    ``convert("L")``) replicated to 3 channels, so the network's input channel count is unchanged. A 1-channel
    image is already grayscale and is returned unchanged (identity); other channel counts raise ``ValueError``.

    Input ``[C, *spatial]`` float on [0, 1]; output of the same shape and type, on [0, 1].
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Luminance of ``img`` replicated to 3 channels (identity for 1 channel)."""
        img, img_t = _as_float_tensor(img)
        channels = img_t.shape[0]
        if channels == 1:
            out_t = img_t.clone()
        elif channels == 3:
            w = torch.tensor(LUMA_WEIGHTS, dtype=img_t.dtype, device=img_t.device).view(3, *([1] * (img_t.ndim - 1)))
            lum = (img_t * w).sum(dim=0, keepdim=True).clamp(0, 1)
            out_t = lum.expand_as(img_t).clone()
        else:
            raise ValueError(f"GrayscaleDefense expects 1 or 3 channels, got {channels} (shape {tuple(img_t.shape)}).")
        out, *_ = convert_to_dst_type(out_t, dst=img, dtype=out_t.dtype)
        return out


class MedianDefense(Transform):
    """Median filter defense: each pixel becomes the median of its ``kernel_size`` neighbourhood, per channel, with
    mirror padding (``d c b | a b c d``), as ``scipy.ndimage.median_filter(mode="mirror")``.

    Input ``[C, *spatial]`` (2 or 3 spatial dims), float on [0, 1]; output of the same shape and type.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, kernel_size: int = 3) -> None:
        kernel_size = int(kernel_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.kernel_size = kernel_size

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Median-filter every channel of ``img``."""
        img, img_t = _as_float_tensor(img)
        spatial = img_t.ndim - 1
        if spatial not in (2, 3):
            raise ValueError(f"expected a channel-first image [C, *spatial] with 2 or 3 spatial dims, got {img_t.shape}.")
        pad = self.kernel_size // 2
        if pad == 0:
            out_t = img_t.clone()
        else:
            if min(img_t.shape[1:]) <= pad:
                raise ValueError(f"mirror padding of {pad} needs every spatial size > {pad}, got {img_t.shape}.")
            x = F.pad(img_t.unsqueeze(0), [pad] * (2 * spatial), mode="reflect").squeeze(0)
            for dim in range(1, spatial + 1):
                x = x.unfold(dim, self.kernel_size, 1)
            out_t = x.reshape(*img_t.shape, -1).median(dim=-1).values
        out, *_ = convert_to_dst_type(out_t, dst=img, dtype=out_t.dtype)
        return out


class ResampleDefense(Transform):
    """Down-sample / up-sample defense: resize by ``scale`` (area averaging, i.e. anti-aliased) and back to the
    original size (bilinear / trilinear, ``align_corners=False``); what is finer than the coarse grid is lost.

    Input ``[C, *spatial]`` (2 or 3 spatial dims), float on [0, 1]; output of the same shape and type, on [0, 1].
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, scale: float = 0.5) -> None:
        if not 0 < float(scale) < 1:
            raise ValueError(f"scale must be in (0, 1), got {scale}.")
        self.scale = float(scale)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Resample ``img`` down by ``scale`` and back up."""
        img, img_t = _as_float_tensor(img)
        spatial = img_t.ndim - 1
        if spatial not in (2, 3):
            raise ValueError(f"expected a channel-first image [C, *spatial] with 2 or 3 spatial dims, got {img_t.shape}.")
        size = img_t.shape[1:]
        small = [max(1, int(round(s * self.scale))) for s in size]
        x = F.interpolate(img_t.unsqueeze(0), size=small, mode="area")
        x = F.interpolate(x, size=list(size), mode="bilinear" if spatial == 2 else "trilinear", align_corners=False)
        out_t = x.squeeze(0).clamp(0, 1)
        out, *_ = convert_to_dst_type(out_t, dst=img, dtype=out_t.dtype)
        return out


class RandChannelShuffled(RandomizableTransform, MapTransform):
    """With probability ``prob``, put the channels of a 3-channel image in a random order (the same order for
    every key); images with another channel count are left as they are. Part of the ``augment`` defense."""

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, prob: float = 0.3, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.order = np.arange(3)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.order = self.R.permutation(3)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            if d[key].shape[0] == 3:
                d[key] = d[key][torch.as_tensor(self.order)]
        return d


def parse_augment_parts(parts: Any = None) -> tuple[str, ...]:
    """The parts of the ``augment`` recipe to apply, in the recipe's order: ``None`` or ``"all"`` -> every part of
    :data:`AUGMENT_PARTS`; otherwise a comma-separated string or a sequence of names from it.

    Raises:
        ValueError: an unknown or repeated name, or an empty selection.
    """
    if parts is None or (isinstance(parts, str) and parts.strip().lower() == "all"):
        return AUGMENT_PARTS
    items = parts if isinstance(parts, (list, tuple)) else str(parts).split(",")
    names = [str(n).strip().lower() for n in items]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in AUGMENT_PARTS]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {unknown}" if unknown else ("nothing selected" if not names else "a name is repeated")
        raise ValueError(
            f"augment parts: {problem} in {parts!r}; give 'all' or a comma list of {', '.join(AUGMENT_PARTS)}."
        )
    return tuple(n for n in AUGMENT_PARTS if n in names)


def augment_defense(
    keys: KeysCollection = "image", label_key: str | None = "label", channels: int | None = None, parts: Any = None
):
    """The ``augment`` defense: one strong random augmentation recipe with MONAI transforms, applied to 2D training
    images (and, for the spatial parts, their labels with nearest interpolation) anew in every epoch.

    Recipe (each with its probability): a flip along each axis (0.5 each), an affine transform (rotation up to 15
    degrees, scaling 0.85-1.15; 0.5), an elastic deformation (0.3), a gamma change (``RandAdjustContrastd``, gamma
    0.7-1.5; 0.5), intensity scaling (+-10 %; 0.5), Gaussian noise (std 0.03; 0.3), and for 3-channel images a
    random channel order (:class:`RandChannelShuffled`; 0.3); values are clipped to [0, 1]. It follows UEraser-lite
    and ARMOR: augmentation strong enough to move or mask a fixed pixel pattern, weak enough to keep the task
    learnable. The image size is kept.

    ``parts`` keeps a subset of the recipe (:data:`AUGMENT_PARTS`: ``flip``, ``affine``, ``elastic``, ``gamma``,
    ``intensity``, ``noise``, ``shuffle``) with the same probabilities and ranges, to find which part of it undoes a
    protection; the clipping is always applied.

    Args:
        keys: the image keys.
        label_key: the label key that follows the spatial transforms (``None``: images only).
        channels: image channels (1 leaves the channel shuffle out).
        parts: ``None`` / ``"all"`` (the whole recipe), or the names to keep (:func:`parse_augment_parts`).
    """
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        ScaleIntensityRanged,
    )

    image_keys = [keys] if isinstance(keys, str) else list(keys)
    spatial_keys = image_keys + ([label_key] if label_key else [])
    modes = ["bilinear"] * len(image_keys) + (["nearest"] if label_key else [])
    selected = parse_augment_parts(parts)
    recipe = {
        "flip": [RandFlipd(spatial_keys, prob=0.5, spatial_axis=0), RandFlipd(spatial_keys, prob=0.5, spatial_axis=1)],
        "affine": [RandAffined(spatial_keys, prob=0.5, rotate_range=np.pi / 12, scale_range=0.15, mode=modes,
                               padding_mode="border")],
        "elastic": [Rand2DElasticd(spatial_keys, spacing=16, magnitude_range=(1, 2), prob=0.3, mode=modes,
                                   padding_mode="border")],
        "gamma": [RandAdjustContrastd(image_keys, prob=0.5, gamma=(0.7, 1.5))],
        "intensity": [RandScaleIntensityd(image_keys, factors=0.1, prob=0.5)],
        "noise": [RandGaussianNoised(image_keys, prob=0.3, std=0.03)],
        "shuffle": [RandChannelShuffled(image_keys, prob=0.3)] if channels != 1 else [],
    }
    xforms = [t for name in selected for t in recipe[name]]
    xforms.append(ScaleIntensityRanged(image_keys, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return Compose(xforms)


class _DefenseDict(MapTransform):
    """Apply an array defense transform to every key."""

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection, transform: Transform, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Return a copy of ``data`` with the defense applied to ``self.keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class GaussianBlurDefensed(_DefenseDict):
    """Dictionary version of :class:`GaussianBlurDefense` (apply to image keys only, never to labels)."""

    def __init__(
        self, keys: KeysCollection, kernel_size: int = 3, sigma: float | None = 0.8, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, GaussianBlurDefense(kernel_size=kernel_size, sigma=sigma), allow_missing_keys)


class JPEGDefensed(_DefenseDict):
    """Dictionary version of :class:`JPEGDefense` (apply to image keys only, never to labels)."""

    def __init__(self, keys: KeysCollection, quality: int = 30, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, JPEGDefense(quality=quality), allow_missing_keys)


class GrayscaleDefensed(_DefenseDict):
    """Dictionary version of :class:`GrayscaleDefense` (apply to image keys only, never to labels)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, GrayscaleDefense(), allow_missing_keys)


class MedianDefensed(_DefenseDict):
    """Dictionary version of :class:`MedianDefense` (apply to image keys only, never to labels)."""

    def __init__(self, keys: KeysCollection, kernel_size: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, MedianDefense(kernel_size=kernel_size), allow_missing_keys)


class ResampleDefensed(_DefenseDict):
    """Dictionary version of :class:`ResampleDefense` (apply to image keys only, never to labels)."""

    def __init__(self, keys: KeysCollection, scale: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, ResampleDefense(scale=scale), allow_missing_keys)


def get_defense_transform(
    name: str, keys: KeysCollection = "image", allow_missing_keys: bool = False, **kwargs
) -> MapTransform | None:
    """Dictionary transform of an input-transformation defense, to append to the exploiter's *training* pipeline.

    Args:
        name: one of :data:`DEFENSES`: ``"none"`` (returns ``None``), ``"gaussian_blur"``
            (:class:`GaussianBlurDefensed`, kwargs ``kernel_size=3, sigma=0.8``), ``"jpeg"``
            (:class:`JPEGDefensed`, kwarg ``quality=30``), ``"grayscale"`` (:class:`GrayscaleDefensed`),
            ``"median"`` (:class:`MedianDefensed`, ``kernel_size=3``), ``"downsample_upsample"``
            (:class:`ResampleDefensed`, ``scale=0.5``), ``"augment"`` (:func:`augment_defense`, ``label_key="label"``,
            ``channels``; a ``Compose`` that also moves the labels).
        keys: image keys to transform (labels must not be transformed).
        allow_missing_keys: don't raise for missing keys.
        kwargs: arguments of the defense.

    Raises:
        ValueError: for an unknown name (``"adversarial_training"`` is a training-loop defense, see
            :func:`monai_umed.defenses.adversarial.pgd_linf`).
    """
    key = str(name).lower()
    if key == "none":
        if kwargs:
            raise ValueError(f"defense 'none' takes no arguments, got {sorted(kwargs)}.")
        return None
    if key == "gaussian_blur":
        return GaussianBlurDefensed(keys, allow_missing_keys=allow_missing_keys, **kwargs)
    if key == "jpeg":
        return JPEGDefensed(keys, allow_missing_keys=allow_missing_keys, **kwargs)
    if key == "grayscale":
        return GrayscaleDefensed(keys, allow_missing_keys=allow_missing_keys, **kwargs)
    if key == "median":
        return MedianDefensed(keys, allow_missing_keys=allow_missing_keys, **kwargs)
    if key == "downsample_upsample":
        return ResampleDefensed(keys, allow_missing_keys=allow_missing_keys, **kwargs)
    if key == "augment":
        return augment_defense(keys, **kwargs)
    hint = (
        " 'adversarial_training' is not a data transform but a training-loop defense: train on "
        "monai_umed.defenses.adversarial.pgd_linf(...) examples instead."
    )
    raise ValueError(f"Unknown defense {name!r}; valid names are {', '.join(DEFENSES)}.{hint}")

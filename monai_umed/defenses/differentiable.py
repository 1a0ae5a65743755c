# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Differentiable approximations of the exploiter's countermeasures, for training protectors through them.

A protector trained only against a surrogate that sees the protected image as it is learns a shortcut that the
exploiter can wash out (JPEG at quality 30 brings BUSI from 0.05 back to 0.77 DSC). Training the generators
through a random draw of the countermeasures -- expectation over transformations (EOT, Athalye et al., ICML 2018)
-- asks for a shortcut that survives them. Each transform here maps a batch ``[B, C, H, W]`` on the [0, 1] scale
to the same shape, lets gradients through to its input, and matches the exploiter-side defense of
:mod:`monai_umed.defenses.transforms` it stands for:

- :class:`DiffJPEG` -- JPEG (JFIF colour conversion, 4:2:0 chroma, 8x8 DCT, the IJG quantisation tables at a
  quality) with straight-through rounding of the quantised coefficients;
- :func:`gaussian_blur_batch`, :func:`median_batch`, :func:`resample_batch`, :func:`grayscale_batch`;
- :func:`augment_batch` -- the ``augment`` recipe (flips, affine, elastic, gamma, intensity scaling, noise, channel
  order), which moves the image and so returns the label moved with it;
- :class:`EOTDefense` draws one of them per image;
- :class:`RescaleView` -- the exploiter's choice of training size: the batch resized to a random smaller size as
  the exploiter's ``Resized(anti_aliasing=True)`` does (:func:`antialiased_resize`), the labels with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_umed.defenses.transforms import LUMA_WEIGHTS, gaussian_kernel_1d

__all__ = ["EOT_TRANSFORMS", "ROBUST_DEFAULT", "DiffJPEG", "EOTDefense", "RescaleView", "antialiased_resize",
           "augment_batch", "gaussian_blur_batch", "grayscale_batch", "median_batch", "resample_batch", "ste_round"]

#: the IJG (libjpeg) base quantisation tables, luminance and chrominance, row-major 8x8
_Q_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]
_Q_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32),
]


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _quality_table(base: Sequence[int], quality: float) -> torch.Tensor:
    """The IJG scaling of a base table to ``quality`` (1-100), as libjpeg's ``jpeg_quality_scaling``."""
    q = min(max(float(quality), 1.0), 100.0)
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    table = torch.tensor([max(1.0, min(255.0, math.floor((b * scale + 50) / 100))) for b in base])
    return table.reshape(8, 8)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.float()


class DiffJPEG(nn.Module):
    """Differentiable JPEG round trip at ``quality``: the forward pass is a JPEG codec's (JFIF YCbCr, chroma
    averaged over 2x2 and repeated, level shift, 8x8 DCT-II, quantisation by the IJG tables scaled to
    ``quality`` with rounding, and back, values rounded to 8 bits), the backward pass treats both roundings as the
    identity. Grey images (1 channel) use the luminance path only. Sizes that are not multiples of 8 (16 for colour)
    are padded by replication and cropped back.
    """

    def __init__(self, quality: float = 30.0) -> None:
        super().__init__()
        self.quality = float(quality)
        self.register_buffer("dct", _dct_matrix(8), persistent=False)
        self.register_buffer("q_luma", _quality_table(_Q_LUMA, quality), persistent=False)
        self.register_buffer("q_chroma", _quality_table(_Q_CHROMA, quality), persistent=False)

    def _code(self, plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Quantise and reconstruct ``[B, H, W]`` (level-shifted, H and W multiples of 8) block by block."""
        b, h, w = plane.shape
        blocks = plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)
        d = self.dct.to(plane.dtype)
        coef = d @ blocks @ d.T
        t = table.to(plane.dtype)
        coef = ste_round(coef / t) * t
        rec = d.T @ coef @ d
        return rec.permute(0, 1, 3, 2, 4).reshape(b, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"DiffJPEG expects [B, C, H, W] with C in (1, 3), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        m = 8 if x.shape[1] == 1 else 16
        ph, pw = (-h) % m, (-w) % m
        v = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        v = ste_round(v.clamp(0, 1) * 255.0)
        if x.shape[1] == 1:
            out = self._code(v[:, 0] - 128.0, self.q_luma)[:, None] + 128.0
        else:
            r, g, b = v[:, 0], v[:, 1], v[:, 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
            cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
            chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)  # 4:2:0: one chroma sample per 2x2 pixels
            y = self._code(y - 128.0, self.q_luma) + 128.0
            cb = self._code(chroma[:, 0] - 128.0, self.q_chroma) + 128.0
            cr = self._code(chroma[:, 1] - 128.0, self.q_chroma) + 128.0
            # libjpeg's "fancy" upsampling: the 3/4, 1/4 triangle filter, which is bilinear interpolation at 2x
            cb, cr = (
                F.interpolate(c[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0] - 128.0
                for c in (cb, cr)
            )
            out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
        out = ste_round(out.clamp(0, 255)) / 255.0
        return out[..., :h, :w]


def gaussian_blur_batch(x: torch.Tensor, sigma: float = 0.8, kernel_size: int = 3) -> torch.Tensor:
    """The ``gaussian_blur`` defense on a batch ``[B, C, H, W]`` (mirror padding), differentiable."""
    k1 = gaussian_kernel_1d(kernel_size, sigma, dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None]).expand(x.shape[1], 1, kernel_size, kernel_size).contiguous()
    pad = kernel_size // 2
    return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), kernel, groups=x.shape[1])


def median_batch(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """The ``median`` defense on a batch (mirror padding); gradients reach the selected pixels."""
    pad = kernel_size // 2
    v = F.pad(x, [pad] * 4, mode="reflect").unfold(2, kernel_size, 1).unfold(3, kernel_size, 1)
    return v.reshape(*x.shape, -1).median(dim=-1).values


def resample_batch(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """The ``downsample_upsample`` defense on a batch: area down-sampling by ``scale`` and bilinear back."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def grayscale_batch(x: torch.Tensor) -> torch.Tensor:
    """The ``grayscale`` defense on a batch: BT.601 luminance in every channel (identity for grey images)."""
    if x.shape[1] != 3:
        return x
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _chance(n: int, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) < prob


def augment_batch(
    x: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``augment`` defense (:func:`monai_umed.defenses.augment_defense`) on a batch ``[B, C, H, W]``, differentiable
    in ``x``, with the label ``[B, 1, H, W]`` moved by the same spatial transform (nearest neighbour).

    Per image, with the recipe's probabilities and ranges: a flip along each axis (0.5 each), an affine transform
    (0.5: rotation up to 15 degrees, scaling 0.85-1.15 per axis), an elastic displacement (0.3: control points every
    16 pixels, offsets of 1-2 pixels times a standard normal, bicubically interpolated), border padding; then a gamma
    change of the min-max normalised image (0.5: gamma 0.7-1.5), intensity scaling (0.5: +-10 %), Gaussian noise
    (0.3: std drawn in [0, 0.03]), a random channel order for 3-channel images (0.3), and clipping to [0, 1]. The
    spatial parts are composed into one resampling (the exploiter's pipeline resamples once per transform).

    Returns:
        ``(augmented images, moved labels)``, the labels in their input dtype.
    """
    if x.ndim != 4 or label.ndim != 4 or label.shape[0] != x.shape[0] or label.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"augment_batch expects images [B, C, H, W] and labels [B, 1, H, W] on the same grid, got "
                         f"{tuple(x.shape)} and {tuple(label.shape)}.")
    b, c, h, w = x.shape
    g, dev, dt = generator, x.device, x.dtype
    # spatial: output pixel -> input pixel, in pixel units about the centre, then to normalised coordinates
    flip = torch.stack([torch.where(_chance(b, 0.5, g), -1.0, 1.0) for _ in range(2)], 1)  # (x, y) axes
    affine = _chance(b, 0.5, g)
    angle = torch.where(affine, _uniform(b, -math.pi / 12, math.pi / 12, g), torch.zeros(b))
    scale = torch.where(affine[:, None], 1 + _uniform(2 * b, -0.15, 0.15, g).reshape(b, 2), torch.ones(b, 2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    mat = rot * scale[:, None, :] * flip[:, None, :]
    half = torch.tensor([w / 2.0, h / 2.0])
    theta = torch.zeros(b, 2, 3)
    theta[:, :, :2] = mat * half[None, None, :] / half[None, :, None]  # D^-1 M D with D = diag(W/2, H/2)
    grid = F.affine_grid(theta.to(dev, dt), [b, c, h, w], align_corners=False)
    elastic = _chance(b, 0.3, g)
    if bool(elastic.any()):
        ch, cw = max(2, h // 16 + 1), max(2, w // 16 + 1)
        mag = _uniform(b, 1.0, 2.0, g) * elastic
        offsets = torch.randn(b, 2, ch, cw, generator=g) * mag[:, None, None, None]
        field = F.interpolate(offsets, size=(h, w), mode="bicubic", align_corners=True)  # pixels, (x, y)
        field = field * torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
        grid = grid + field.permute(0, 2, 3, 1).to(dev, dt)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    moved = F.grid_sample(label.to(dt), grid, mode="nearest", padding_mode="border", align_corners=False)
    # intensity
    lo = out.amin(dim=(1, 2, 3), keepdim=True).detach()
    rng = (out.amax(dim=(1, 2, 3), keepdim=True).detach() - lo).clamp_min(1e-6)
    gamma = torch.where(_chance(b, 0.5, g), _uniform(b, 0.7, 1.5, g), torch.ones(b)).view(b, 1, 1, 1).to(dev, dt)
    out = torch.where(gamma != 1, ((out - lo) / rng).clamp_min(1e-4) ** gamma * rng + lo, out)
    factor = torch.where(_chance(b, 0.5, g), 1 + _uniform(b, -0.1, 0.1, g), torch.ones(b)).view(b, 1, 1, 1)
    out = out * factor.to(dev, dt)
    std = torch.where(_chance(b, 0.3, g), _uniform(b, 0.0, 0.03, g), torch.zeros(b)).view(b, 1, 1, 1)
    out = out + torch.randn(out.shape, generator=g).to(dev, dt) * std.to(dev, dt)
    if c == 3:
        shuffle = _chance(b, 0.3, g)
        orders = torch.stack([torch.randperm(3, generator=g) if s else torch.arange(3) for s in shuffle.tolist()])
        out = torch.gather(out, 1, orders.to(dev).view(b, 3, 1, 1).expand_as(out))
    return out.clamp(0.0, 1.0), moved.to(label.dtype)


#: every countermeasure :class:`EOTDefense` can draw
EOT_TRANSFORMS: tuple[str, ...] = (
    "identity", "jpeg", "gaussian_blur", "median", "downsample_upsample", "grayscale", "augment"
)
#: what :class:`EOTDefense` and ``--robust true`` draw from by default: every countermeasure but ``augment``, which, added on BUSI, traded the
#: undefended protection (0.09 -> 0.16 DSC) for a small gain under augmentation (0.40 -> 0.35; README, issue 13);
#: name it in the list to draw it
ROBUST_DEFAULT: tuple[str, ...] = ("identity", "jpeg", "gaussian_blur", "median", "downsample_upsample", "grayscale")


class EOTDefense(nn.Module):
    """Expectation over transformations of the exploiter's countermeasures: each image of a batch goes through one
    transform drawn uniformly from ``transforms`` -- ``identity`` (so the undefended shortcut is kept),
    ``jpeg`` (:class:`DiffJPEG` at a quality drawn from ``jpeg_qualities``), ``gaussian_blur`` (sigma drawn in
    ``blur_sigma``), ``median``, ``downsample_upsample``, ``grayscale`` (RGB only; identity for grey),
    ``augment`` (:func:`augment_batch`) -- all differentiable and keeping the image's size. ``augment`` moves the
    image, so its label must move with it: call ``defense(x, label)``, which returns ``(x', label')`` (the label is
    unchanged for every other transform); ``defense(x)`` returns ``x'`` and is refused when ``augment`` is drawable.

    Args:
        transforms: names from :data:`EOT_TRANSFORMS` (default :data:`ROBUST_DEFAULT`: all but ``augment``).
        jpeg_qualities: the JPEG qualities to draw from (the exploiter's 30 and ISS's 10 by default).
        blur_sigma: ``(low, high)`` of the uniform blur sigma.
        generator: random source (``None``: the global one).
    """

    #: called with the labels too (``augment`` moves them), see :func:`monai_umed.engines.countermeasure_view`
    moves_labels = True

    def __init__(
        self,
        transforms: Sequence[str] = ROBUST_DEFAULT,
        jpeg_qualities: Sequence[float] = (10, 30, 50),
        blur_sigma: tuple[float, float] = (0.5, 1.2),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        bad = [t for t in transforms if t not in EOT_TRANSFORMS]
        if bad or not transforms:
            raise ValueError(f"unknown EOT transforms {bad or 'none given'}; valid: {', '.join(EOT_TRANSFORMS)}.")
        self.transforms = tuple(transforms)
        self.jpegs = nn.ModuleList(DiffJPEG(q) for q in jpeg_qualities)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.generator = generator

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator)

    def apply(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Transform ``x`` ``[B, C, H, W]`` with the named transform (random parameters drawn here)."""
        if name == "identity":
            return x
        if name == "jpeg":
            return self.jpegs[int(self._rand(1).item() * len(self.jpegs)) % len(self.jpegs)](x)
        if name == "gaussian_blur":
            lo, hi = self.blur_sigma
            return gaussian_blur_batch(x, lo + (hi - lo) * float(self._rand(1).item()))
        if name == "median":
            return median_batch(x)
        if name == "downsample_upsample":
            return resample_batch(x)
        if name == "augment":
            raise ValueError("augment moves the image: apply it with its label, augment_batch(x, label).")
        return grayscale_batch(x)

    def forward(
        self, x: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"EOTDefense works on 2D image batches [B, C, H, W], got {tuple(x.shape)}.")
        if label is None and "augment" in self.transforms:
            raise ValueError("EOTDefense with 'augment' moves the images: call it as defense(images, labels).")
        choice = (self._rand(x.shape[0]) * len(self.transforms)).long().clamp(max=len(self.transforms) - 1)
        out, moved = x, label
        for k, name in enumerate(self.transforms):
            idx = torch.nonzero(choice == k).flatten().to(x.device)
            if name == "identity" or idx.numel() == 0:
                continue
            if name == "augment":
                aug, lab = augment_batch(x[idx], label[idx], self.generator)
                out = out.index_copy(0, idx, aug)
                moved = moved.index_copy(0, idx, lab)
            else:
                out = out.index_copy(0, idx, self.apply(name, x[idx]))
        return out if label is None else (out, moved)


def antialiased_resize(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resize a batch ``[B, C, *spatial]`` to ``size`` as MONAI's ``Resize(..., anti_aliasing=True)`` resizes one
    image, and differentiably: along every axis that shrinks by a factor ``f > 1`` a Gaussian of sigma
    ``(f - 1) / 2`` first (MONAI's ``GaussianFilter``, as ``GaussianSmooth`` applies it), then linear interpolation
    (``align_corners=False``). ``mode="nearest"`` resizes label maps without smoothing, as ``Resize(mode="nearest")``.
    """
    spatial = tuple(int(s) for s in x.shape[2:])
    size = tuple(int(s) for s in size)
    if len(size) != len(spatial):
        raise ValueError(f"size {size} does not match the batch's {len(spatial)} spatial axes.")
    if size == spatial:
        return x
    if mode == "nearest":
        return F.interpolate(x.float(), size=size, mode="nearest").to(x.dtype)
    if mode != "bilinear":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}.")
    factors = [i / o for i, o in zip(spatial, size)]
    if any(f > 1 for f in factors):
        from monai.networks.layers import GaussianFilter

        sigma = [max(0.0, (f - 1) / 2) for f in factors]
        x = GaussianFilter(len(size), sigma, approx="erf").to(x.device)(x)
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(x, size=size, mode=linear, align_corners=False)


class RescaleView(nn.Module):
    """The protected batch as an exploiter that trains at a smaller size sees it: the whole batch resized to a
    random smaller size with :func:`antialiased_resize` (the exploiter pipeline's ``Resized(anti_aliasing=True)``),
    the labels with nearest neighbour.

    An exploiter chooses the size it trains at, and a perturbation learnt on one grid is averaged away by a resize to
    half of it (README, issue 10: a 48-px U-Net learns from 96-px-protected BUSI files as from clean ones). Training
    the generators (and the surrogate) through this view -- expectation over the exploiter's training size --
    asks for a perturbation that survives the resize.

    A draw keeps the batch as it is with probability ``keep``; otherwise it resizes to one of the smaller sizes
    from ``min_scale`` times the batch's size up, in steps of ``multiple`` (the surrogate's total stride), drawn
    uniformly (at 96 px, ``min_scale=0.4``: 48, 64 or 80; never below ``2 * multiple``). The view is a ``moves_labels``
    transform: call ``view(images, labels)``, which returns both (see
    :func:`monai_umed.engines.countermeasure_view`).

    Args:
        min_scale: the smallest size as a fraction of the training size, in (0, 1).
        multiple: every resized axis is a multiple of this (e.g. 16 for a U-Net with four stride-2 levels).
        keep: probability of the batch's own size.
        countermeasure: optional view applied first (e.g. :class:`EOTDefense`), called like
            :func:`~monai_umed.engines.countermeasure_view`.
        generator: random source (``None``: the global one).
    """

    moves_labels = True

    def __init__(
        self,
        min_scale: float = 0.4,
        multiple: int = 16,
        keep: float = 0.5,
        countermeasure: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 0 < float(min_scale) < 1:
            raise ValueError(f"min_scale must be in (0, 1), got {min_scale}.")
        if int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}.")
        if not 0 <= float(keep) <= 1:
            raise ValueError(f"keep must be in [0, 1], got {keep}.")
        self.min_scale = float(min_scale)
        self.multiple = int(multiple)
        self.keep = float(keep)
        self.countermeasure = countermeasure
        self.generator = generator

    def candidates(self, length: int) -> list[int]:
        """The smaller sizes an axis of ``length`` can be resized to: multiples of ``multiple`` from
        ``min_scale * length`` (rounded up) to below ``length``, and at least ``2 * multiple`` (the deepest level of
        the surrogate keeps two pixels a side: instance norm needs more than one)."""
        m = self.multiple
        low = max(2 * m, -(-math.ceil(self.min_scale * length) // m) * m)
        return list(range(low, int(length), m))

    def draw_size(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """A random size for a batch of spatial size ``spatial``: ``spatial`` itself with probability ``keep``,
        else the same uniform draw among each axis's :meth:`candidates` (an axis without any keeps its length)."""
        spatial = tuple(int(s) for s in spatial)
        u = torch.rand(2, generator=self.generator).tolist()
        if u[0] < self.keep:
            return spatial
        sizes = []
        for s in spatial:
            c = self.candidates(s)
            sizes.append(c[min(len(c) - 1, int(u[1] * len(c)))] if c else s)
        return tuple(sizes)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.countermeasure is not None:
            from monai_umed.engines import countermeasure_view

            x, label = countermeasure_view(self.countermeasure, x, label)
        size = self.draw_size(x.shape[2:])
        return antialiased_resize(x, size), antialiased_resize(label, size, mode="nearest")

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale}, multiple={self.multiple}, keep={self.keep}"

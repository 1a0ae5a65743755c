# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Texture prior of UMed: the per-pixel LBP texture intensity map ``x_t`` of Eq. 5 (Lin et al., IJCAI 2024).

:func:`local_binary_pattern` is a batched torch re-implementation of
``skimage.feature.local_binary_pattern`` (same neighbour coordinates, same bilinear interpolation with a
constant-zero outside, same ``>= 0`` threshold, same codes), so it runs on CUDA tensors and on batches.
:class:`LBPTextureMap` / :class:`LBPTextureMapd` turn it into the texture map ``x_t`` in ``[0, 1]`` that scales
the adaptive perturbation bound ``eps * x_t * y_t`` of Eq. 5.

Grey-scale invariance (what holds exactly, measured against the implementation):

* Every neighbour sample is a bilinear interpolation ``sum_k w_k I(q_k)`` with weights summing to 1, so an
  increasing affine change ``a * x + b`` (``a > 0``) of the image maps every sample and the centre by the same
  affine map; ``sample - centre`` is multiplied by ``a`` and the sign test ``>= 0`` is unchanged. Hence all
  codes ("default", "ror", "uniform", "nri_uniform") are unchanged **on the interior**, i.e. for pixels whose
  whole circle lies in the image (at distance ``>= ceil(R)`` from every image edge).
* At the **border**, samples that touch the outside use the constant 0 of the padding, and that 0 is *not*
  shifted by ``b``: with ``b != 0`` the codes of border pixels can change (with ``b > 0`` the outside looks
  darker than before, bits that read outside pixels tend to switch from 1 to 0). A pure scaling ``a * x``
  (``b = 0``) keeps the outside at ``a * 0 = 0``, so it leaves every code unchanged, border included.
* In floating point the weights of one sample do not sum to exactly 1 after rounding, so a sample that equals
  the centre mathematically (a tie, e.g. a flat neighbourhood on a diagonal sample) can land on either side of
  0; ties can flip under ``a * x + b`` (and ``skimage`` has the same ties). Scaling by a power of two is
  bit-exact. On images without ties (continuous random values) the interior codes are identical.
* A non-linear increasing change ``f`` (gamma, log, ...) preserves the order of pixel values, so bits read at
  integer positions (``P = 4, R = 1``: the 4 axis neighbours) are unchanged, but an interpolated sample
  (the diagonals of ``P = 8, R = 1``) is not mapped to ``f(sample)``; those bits, hence the codes, can change.
* "var" (local variance of the samples) is not grey-scale invariant (it scales by ``a ** 2``).

Flat neighbourhoods: mathematically every sample equals the centre, so all bits are 1 ("uniform" code ``P``). A
sample at a non-integer position is a float64 interpolation that can round 1 ulp below the centre, so in flat areas
the code depends on rounding (``skimage`` behaves identically and warns on float input). Inputs that differ by
1 ulp therefore give different codes there: e.g. :func:`to_luminance` and ``skimage.color.rgb2gray`` agree to
1e-15 but not bit for bit, and on CVC-ClinicDB RGB images the resulting codes agree on 99.7 % of the pixels for
``P = 8, R = 1`` and only 93 % for ``P = 16, R = 2``; on the *same* grey image the codes are identical.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor
from monai.transforms.transform import MapTransform, Transform
from monai.utils.enums import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

__all__ = [
    "LBP_METHODS",
    "RGB_LUMINANCE_WEIGHTS",
    "lbp_max_code",
    "lbp_neighbour_offsets",
    "local_binary_pattern",
    "to_luminance",
    "LBPTextureMap",
    "LBPTextureMapd",
]

#: Methods supported by :func:`local_binary_pattern` (those of ``skimage.feature.local_binary_pattern``).
LBP_METHODS = ("default", "ror", "uniform", "nri_uniform", "var")

#: ``skimage.color.rgb2gray`` luminance weights (ITU-R BT.709) for R, G, B.
RGB_LUMINANCE_WEIGHTS = (0.2125, 0.7154, 0.0721)

_NORMALIZE_MODES = ("max_code", "minmax", "none")


def lbp_neighbour_offsets(num_points: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets of the ``P`` circular neighbours, exactly as ``skimage`` computes them.

    Neighbour ``i`` sits at angle ``2 * pi * i / P`` counter-clockwise from the column axis:
    ``dr = -R sin(angle)``, ``dc = R cos(angle)``, both rounded to 5 decimals (so that e.g. ``R sin(pi)``
    becomes exactly 0). ``R`` is first rounded to float32, as ``skimage``'s Cython signature does.

    Returns:
        ``(dr, dc)``, two float64 arrays of length ``num_points``.
    """
    r = float(np.float32(radius))
    angles = 2 * np.pi * np.arange(num_points, dtype=np.float64) / num_points
    return np.round(-r * np.sin(angles), 5), np.round(r * np.cos(angles), 5)


def lbp_max_code(num_points: int, method: str) -> int:
    """Largest code :func:`local_binary_pattern` can return for ``method`` (used for ``"max_code"`` scaling).

    ``"default"`` and ``"ror"``: ``2 ** P - 1``; ``"uniform"``: ``P + 1``; ``"nri_uniform"``: ``P (P - 1) + 2``.
    ``"var"`` is unbounded and raises ``ValueError``.
    """
    method = method.lower()
    if method in ("default", "ror"):
        return 2**num_points - 1
    if method == "uniform":
        return num_points + 1
    if method == "nri_uniform":
        return num_points * (num_points - 1) + 2
    raise ValueError(f"LBP method {method!r} has no bounded code range; use normalize='minmax' or 'none'.")


def _check_lbp_args(num_points: int, radius: float, method: str) -> str:
    method = method.lower()
    if method not in LBP_METHODS:
        raise ValueError(f"method must be one of {LBP_METHODS}, got {method!r}.")
    if int(num_points) != num_points or num_points < 1:
        raise ValueError(f"num_points must be a positive integer, got {num_points}.")
    if method in ("default", "ror") and num_points > 31:
        raise ValueError(f"method {method!r} keeps codes in 32-bit integers (as skimage): num_points <= 31.")
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}.")
    return method


def local_binary_pattern(
    image: torch.Tensor, num_points: int = 8, radius: float = 1.0, method: str = "default"
) -> torch.Tensor:
    """Local binary patterns of a batch of grey images, matching ``skimage.feature.local_binary_pattern``.

    For every pixel ``(r, c)`` the ``P`` neighbours ``(r + dr_i, c + dc_i)`` of :func:`lbp_neighbour_offsets`
    are sampled by bilinear interpolation (``(1 - dr) * ((1 - dc) I00 + dc I01) + dr * ((1 - dc) I10 + dc I11)``
    in float64, in the same order of operations as ``skimage``) with the value 0 outside the image, and
    bit ``i`` is ``sample_i - I(r, c) >= 0``. Codes:

    * ``"default"``: ``sum_i bit_i 2^i``;
    * ``"ror"``: the smallest value of the default code over the ``P`` circular bit rotations;
    * ``"uniform"``: number of 1 bits if the pattern has at most 2 bit transitions (counted along
      ``bit_0 .. bit_{P-1}``, which is equivalent to counting them circularly), else ``P + 1``;
    * ``"nri_uniform"``: ``skimage``'s non-rotation-invariant uniform index in ``[0, P (P - 1) + 2]``;
    * ``"var"``: biased variance of the ``P`` samples (NaN where it is 0); not grey-scale invariant.

    This is the texture feature extractor of UMed's texture perturbator (Eq. 5 of Lin et al., IJCAI 2024).

    Args:
        image: real tensor ``[..., H, W]`` (any leading batch dims, any device); computed in float64, so use
            a device with float64 support (CPU, CUDA).
        num_points: ``P``, number of circular neighbours (at most 31 for "default" and "ror").
        radius: ``R``, radius of the circle in pixels.
        method: one of :data:`LBP_METHODS`.

    Returns:
        float64 tensor of codes with the shape and device of ``image``.
    """
    method = _check_lbp_args(num_points, radius, method)
    if image.ndim < 2:
        raise ValueError(f"image must have shape [..., H, W], got {tuple(image.shape)}.")
    num_points = int(num_points)
    lead, (height, width) = image.shape[:-2], image.shape[-2:]
    device = image.device
    img = image.to(torch.float64).reshape(-1, height, width)
    n = img.shape[0]

    drs, dcs = lbp_neighbour_offsets(num_points, radius)
    pad = int(math.ceil(max(np.abs(drs).max(), np.abs(dcs).max()))) + 1
    padded = F.pad(img, (pad, pad, pad, pad), mode="constant", value=0.0).reshape(n, -1)
    padded_width = width + 2 * pad
    rows = torch.arange(height, dtype=torch.float64, device=device)[:, None]
    cols = torch.arange(width, dtype=torch.float64, device=device)[None, :]

    padded_3d = padded.reshape(n, height + 2 * pad, padded_width)
    row_ids = torch.arange(height, device=device)
    col_ids = torch.arange(width, device=device)

    def _pick(r_idx: torch.Tensor, c_idx: torch.Tensor) -> torch.Tensor:
        # r_idx [H, 1], c_idx [1, W]: the sampled row / column of every pixel. When they are the pixel's own row /
        # column plus one constant shift (always, unless float rounding of ``r + dr`` crosses an integer), the
        # samples are a shifted view of the padded image; otherwise index each pixel.
        shift_r = r_idx[:, 0].long() - row_ids
        shift_c = c_idx[0].long() - col_ids
        if bool((shift_r == shift_r[0]).all()) and bool((shift_c == shift_c[0]).all()):
            a, b = pad + int(shift_r[0]), pad + int(shift_c[0])
            return padded_3d[:, a : a + height, b : b + width]
        index = ((r_idx.long() + pad) * padded_width + (c_idx.long() + pad)).expand(height, width).reshape(-1)
        return padded[:, index].reshape(n, height, width)

    keep_bits = method in ("ror", "nri_uniform")
    bits = torch.empty((num_points if keep_bits else 0, n, height, width), dtype=torch.bool, device=device)
    # "uniform" needs only the number of 1 bits and of transitions: counted on the way, in uint8
    n_ones = changes = previous = codes_ = None
    sum_ = var_ = None
    for i in range(num_points):
        r = rows + float(drs[i])
        c = cols + float(dcs[i])
        min_r, max_r = torch.floor(r), torch.ceil(r)
        min_c, max_c = torch.floor(c), torch.ceil(c)
        d_r, d_c = r - min_r, c - min_c
        # (1 - 0) * a + 0 * b is exactly a for finite values: skip the interpolation along an axis the neighbour
        # lies on (the samples are still skimage's, bit for bit)
        if bool((d_c == 0).all()):
            top, bottom = _pick(min_r, min_c), _pick(max_r, min_c)
        else:
            top = (1 - d_c) * _pick(min_r, min_c) + d_c * _pick(min_r, max_c)
            bottom = (1 - d_c) * _pick(max_r, min_c) + d_c * _pick(max_r, max_c)
        sample = top if bool((d_r == 0).all()) else (1 - d_r) * top + d_r * bottom
        bit = (sample - img) >= 0
        if keep_bits:
            bits[i] = bit
        if method == "default":
            weighted = bit.to(torch.int64) << i
            codes_ = weighted if codes_ is None else codes_.add_(weighted)
        if method in ("uniform", "nri_uniform"):
            ones = bit.to(torch.uint8)
            n_ones = ones.clone() if n_ones is None else n_ones.add_(ones)
            if previous is not None:
                step = (bit != previous).to(torch.uint8)
                changes = step if changes is None else changes.add_(step)
            previous = bit
        if method == "var":
            sum_ = sample if sum_ is None else sum_ + sample
            var_ = sample * sample if var_ is None else var_ + sample * sample
    if changes is None and method in ("uniform", "nri_uniform"):  # one point: no transition
        changes = torch.zeros_like(n_ones)

    if method == "var":
        assert sum_ is not None and var_ is not None
        var_ = (var_ - (sum_ * sum_) / num_points) / num_points
        out = torch.where(var_ != 0, var_, torch.full_like(var_, float("nan")))
    elif method == "default":
        out = codes_.to(torch.float64)
    elif method == "ror":
        weights = (2 ** torch.arange(num_points, device=device, dtype=torch.int64)).view(-1, 1, 1, 1)
        codes = (bits.long() * weights).sum(0)
        for k in range(1, num_points):
            codes = torch.minimum(codes, (torch.roll(bits, shifts=-k, dims=0).long() * weights).sum(0))
        out = codes.to(torch.float64)
    else:
        assert n_ones is not None and changes is not None
        n_ones, changes = n_ones.long(), changes.long()
        if method == "uniform":
            codes = torch.where(changes <= 2, n_ones, torch.full_like(n_ones, num_points + 1))
        else:  # nri_uniform
            bits_i = bits.to(torch.int64)
            first_one = torch.argmax(bits_i, dim=0)  # first index of a 1 (0 if none)
            first_zero = torch.argmax(1 - bits_i, dim=0)  # first index of a 0 (0 if none)
            rot_index = torch.where(first_one == 0, n_ones - first_zero, num_points - first_one)
            codes = 1 + (n_ones - 1) * num_points + rot_index
            codes = torch.where(n_ones == 0, torch.zeros_like(codes), codes)
            codes = torch.where(n_ones == num_points, torch.full_like(codes, num_points * (num_points - 1) + 1), codes)
            codes = torch.where(changes <= 2, codes, torch.full_like(codes, num_points * (num_points - 1) + 2))
        out = codes.to(torch.float64)
    return out.reshape(*lead, height, width)


def to_luminance(img: torch.Tensor, channel_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Grey image ``[1, ...]`` from a channel-first image ``[C, ...]`` (float64).

    * ``channel_weights`` given: ``sum_c w_c img[c]`` (weights used as given, not renormalised);
    * 1 channel: the channel itself;
    * 3 channels: ``skimage.color.rgb2gray`` weights :data:`RGB_LUMINANCE_WEIGHTS` (RGB order);
    * any other number of channels: the channel mean.
    """
    img = img.to(torch.float64)
    num_channels = img.shape[0]
    if channel_weights is None:
        if num_channels == 1:
            return img[:1]
        if num_channels == 3:
            channel_weights = RGB_LUMINANCE_WEIGHTS
        else:
            return img.mean(dim=0, keepdim=True)
    if len(channel_weights) != num_channels:
        raise ValueError(f"channel_weights has {len(channel_weights)} entries, the image has {num_channels} channels.")
    grey = img[0] * float(channel_weights[0])
    for c in range(1, num_channels):
        grey = grey + img[c] * float(channel_weights[c])
    return grey[None]


class LBPTextureMap(Transform):
    """Texture intensity map ``x_t`` of UMed (Eq. 5 of Lin et al., IJCAI 2024) from LBP codes.

    Eq. 5 bounds the texture perturbation per pixel by ``eps * x_t * y_t``; the paper extracts ``x_t`` with the
    grey-scale-independent LBP descriptor. This transform converts the image to luminance
    (:func:`to_luminance`: 3 channels -> ``rgb2gray`` weights (0.2125, 0.7154, 0.0721), 1 channel -> as is,
    other channel counts -> channel mean, or ``channel_weights``), computes :func:`local_binary_pattern` and
    scales the codes to ``[0, 1]``. The map covers the whole image; the product with the ROI interior ``y_t``
    is left to the perturbator.

    Input ``[C, H, W]`` -> output ``[1, H, W]``; a volume ``[C, X, Y, Z]`` -> ``[1, X, Y, Z]``, LBP computed
    independently on each 2D slice across ``slice_axis``: by default (``"auto"``) the axis of lowest resolution
    (largest voxel spacing, from the affine of a ``MetaTensor``; the last such axis on a tie), and the last
    spatial axis when there is no affine (MONAI's ``[C, H, W, D]`` order, where D counts the slices). Anisotropic
    volumes (thick slices) thus get the 2D descriptor in their high-resolution planes, where the paper's 2D LBP
    applies; a 3D neighbourhood would mix the coarse axis into every code. Numpy or torch input, any
    device; output is a float32 tensor on the input's device, a ``MetaTensor`` with the input's metadata when
    metadata is tracked.

    Normalisation (``normalize``):

    * ``"max_code"``: codes divided by the largest code the method can produce (:func:`lbp_max_code`:
      ``2^P - 1`` for "default"/"ror", ``P + 1`` for "uniform", ``P (P - 1) + 2`` for "nri_uniform"), a fixed
      scale shared by all images. Not available for "var".
    * ``"minmax"``: ``(x - min) / (max - min)`` over the whole image (the whole volume for 3D input); a constant
      map gives zeros.
    * ``"none"``: the raw codes (as float32), for comparison with ``skimage``.

    For "var", NaN codes (flat neighbourhoods) become 0 with ``"minmax"`` and stay NaN with ``"none"``.
    See the module docstring for exactly which grey-level changes leave the codes unchanged.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        num_points: int = 8,
        radius: float = 1.0,
        method: str = "uniform",
        normalize: str = "max_code",
        channel_weights: Sequence[float] | None = None,
        slice_axis: int | str = "auto",
    ) -> None:
        """
        Args:
            num_points: ``P``, number of circular LBP neighbours.
            radius: ``R``, LBP radius in pixels.
            method: LBP method, one of :data:`LBP_METHODS` (default "uniform").
            normalize: "max_code", "minmax" or "none" (see the class docstring).
            channel_weights: optional per-channel weights for the luminance conversion.
            slice_axis: for volumes, the spatial axis (0, 1 or 2) across which the 2D slices are taken, or
                ``"auto"`` (see the class docstring).
        """
        if slice_axis != "auto" and (isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2)):
            raise ValueError(f"slice_axis must be 0, 1, 2 or 'auto', got {slice_axis!r}.")
        self.slice_axis = slice_axis
        self.method = _check_lbp_args(num_points, radius, method)
        self.num_points = int(num_points)
        self.radius = float(radius)
        normalize = normalize.lower()
        if normalize not in _NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {_NORMALIZE_MODES}, got {normalize!r}.")
        if normalize == "max_code":
            lbp_max_code(self.num_points, self.method)  # raises for "var"
        self.normalize = normalize
        self.channel_weights = None if channel_weights is None else tuple(float(w) for w in channel_weights)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the texture map ``[1, *spatial]`` (float32) of the channel-first image ``img``."""
        source = img
        img = convert_to_tensor(img, track_meta=get_track_meta())
        img_t = convert_to_tensor(img, track_meta=False)
        if img_t.ndim not in (3, 4):
            raise ValueError(f"expected a channel-first image [C, H, W] or [C, D, H, W], got {tuple(img_t.shape)}.")
        grey = to_luminance(img_t, self.channel_weights)
        axis = self.volume_slice_axis(source) if img_t.ndim == 4 else None
        if axis is not None:  # local_binary_pattern works on the last two dims: slices across dim 1 + axis
            grey = grey.movedim(1 + axis, 1)
        codes = local_binary_pattern(grey, self.num_points, self.radius, self.method)
        if axis is not None:
            codes = codes.movedim(1, 1 + axis)
        if self.normalize == "max_code":
            codes = codes / lbp_max_code(self.num_points, self.method)
        elif self.normalize == "minmax":
            codes = torch.nan_to_num(codes, nan=0.0)
            lo, hi = codes.min(), codes.max()
            codes = (codes - lo) / (hi - lo) if hi > lo else torch.zeros_like(codes)
        out = convert_to_dst_type(codes, dst=img, dtype=torch.float32)[0]
        return out


    def volume_slice_axis(self, img: NdarrayOrTensor) -> int:
        """The spatial axis (0-2) across which a volume's slices are taken (``slice_axis``, see the class docstring)."""
        if self.slice_axis != "auto":
            return int(self.slice_axis)
        affine = getattr(img, "affine", None) if isinstance(img, MetaTensor) else None
        if affine is None:
            return 2
        spacing = torch.linalg.norm(torch.as_tensor(affine, dtype=torch.float64)[:3, :3], dim=0)
        largest = torch.nonzero(torch.isclose(spacing, spacing.max())).flatten()
        return int(largest[-1])


class LBPTextureMapd(MapTransform):
    """Dictionary-based wrapper of :class:`LBPTextureMap` (texture map ``x_t`` of Eq. 5, Lin et al., IJCAI 2024).

    For each key the map ``[1, *spatial]`` is written under ``texture_key`` when one key is given, or under
    ``f"{key}_{texture_key}"`` when several keys are given (e.g. ``"image_texture_map"``); the input is kept.
    """

    backend = LBPTextureMap.backend

    def __init__(
        self,
        keys: KeysCollection,
        texture_key: str = "texture_map",
        num_points: int = 8,
        radius: float = 1.0,
        method: str = "uniform",
        normalize: str = "max_code",
        channel_weights: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
        slice_axis: int | str = "auto",
    ) -> None:
        """
        Args:
            keys: keys of the images to compute texture maps of.
            texture_key: output key (or suffix, with several keys).
            num_points, radius, method, normalize, channel_weights, slice_axis: see :class:`LBPTextureMap`.
            allow_missing_keys: don't raise an exception if a key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.texture_key = texture_key
        self.lbp = LBPTextureMap(num_points, radius, method, normalize, channel_weights, slice_axis)

    def _out_key(self, key: Hashable) -> Hashable:
        return self.texture_key if len(self.keys) == 1 else f"{key}_{self.texture_key}"

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self._out_key(key)] = self.lbp(d[key])
        return d

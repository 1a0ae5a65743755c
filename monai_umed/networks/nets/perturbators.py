# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""
UMed's contour and texture perturbators G_c, G_t (Eq. 4-6, Fig. 2 of Lin et al., IJCAI 2024).

Intensity scale: every tensor here is on the package's **[0, 1] scale** and ``epsilon`` (default ``4/255``) is an
l-inf bound on that scale:

* 8-bit 2D images are divided by 255, so ``epsilon = 4/255`` is exactly 4 grey levels;
* every other image (16-bit, int16 CT, float NIfTI, and every volume) is min-max scaled per image
  (``monai_umed.data.io.intensity_range``), so ``epsilon`` is a fraction of *that image's* intensity range
  (``4/255`` ~ 1.57 % of ``max - min``; a 12-bit image stored in 16 bits: 64 of its 4096 levels).

Bounds: the paper clips (``Clip``) the generator output. Clipping a freshly initialised generator's O(1) output to
``+-epsilon`` (0.0157) is active almost everywhere, and an active clip passes no gradient, so the generators do not
train (``docs/DESIGN.md``, "The bound"). The default ``bound="tanh"`` therefore parametrises
``delta = bound * tanh(raw)``, which satisfies the same bound exactly (``|tanh| <= 1`` and float rounding is
monotone, so ``|fl(b * tanh(r))| <= b``) and keeps gradients alive; ``bound="clip"`` is the paper's literal Clip,
kept for ablation (``tests/networks/test_perturbators.py::test_clip_kills_gradients`` measures how few pixels pass
gradient through a literal clip at initialisation, and that every generator weight gets a gradient with ``"tanh"``;
tanh saturates too if the raw output is driven very large, so keep the generators' outputs O(1)). Both modes
guarantee the bounds for *any* raw output, including non-finite values (NaN is mapped to 0, +-inf to the largest
finite value before bounding).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from monai_umed.networks.nets.cdc_unet import CDCUNet

__all__ = [
    "BOUND_MODES",
    "PARTS",
    "TEXTURE_BOUNDS",
    "DEFAULT_EPSILON",
    "contour_perturbation",
    "texture_bound",
    "texture_perturbation",
    "compose_protected",
    "keep_grey",
    "lowpass_field",
    "highpass_field",
    "write_round_trip",
    "fit_training_view",
    "ContourPerturbator",
    "TexturePerturbator",
    "UMedPerturbator",
]

#: Default l-inf budget on the [0, 1] scale (Sec. 3.2 of the paper): 4 grey levels of an 8-bit image.
DEFAULT_EPSILON = 4 / 255
#: Supported ways to enforce the bound: ``"tanh"`` (smooth, default) and ``"clip"`` (the paper's literal Clip).
BOUND_MODES = ("tanh", "clip")
#: Which perturbations :class:`UMedPerturbator` adds (Table 5 ablations "G_c only" / "G_t only").
PARTS = ("both", "contour", "texture")
#: The texture bound of Eq. 5: ``"lbp"`` (``eps * x_t * y_t``) or ``"fixed"`` (``eps * y_t``, Table 5 ablation).
TEXTURE_BOUNDS = ("lbp", "fixed")


def _check_bound(bound: str) -> str:
    if bound not in BOUND_MODES:
        raise ValueError(f"bound must be one of {BOUND_MODES}, got {bound!r}.")
    return bound


def _check_epsilon(epsilon: float) -> float:
    epsilon = float(epsilon)
    if not (epsilon > 0.0 and epsilon < float("inf")):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}.")
    return epsilon


def _positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as a whole number >= ``minimum`` (1: a positive integer), or a ``ValueError`` naming the setting
    (``--lowpass abc``, ``--lowpass 2.5``, ``--view_fit true``)."""
    try:
        number = float("nan") if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= minimum and number == int(number)):
        what = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}.")
    return int(number)


def _finite(raw: torch.Tensor) -> torch.Tensor:
    """NaN -> 0 and +-inf -> largest finite value, so that the bounds hold for any generator output."""
    return torch.nan_to_num(raw, nan=0.0)


def contour_perturbation(
    raw: torch.Tensor, contour_band: torch.Tensor, epsilon: float = DEFAULT_EPSILON, bound: str = "tanh"
) -> torch.Tensor:
    """
    Contour-aware perturbation, Eq. 4 of Lin et al., IJCAI 2024: ``delta_c = Clip_[-eps, eps](F_c(x) * y_c)``.

    Args:
        raw: raw generator output ``F_c(x)``, ``[B, C, *spatial]`` (unbounded).
        contour_band: contour band ``y_c`` in {0, 1}, broadcastable to ``raw`` (typically ``[B, 1, *spatial]``,
            shared by all image channels).
        epsilon: l-inf budget on the [0, 1] intensity scale (see the module docstring).
        bound: ``"tanh"`` (default): ``epsilon * tanh(raw) * y_c``, smooth, gradients alive at initialisation;
            ``"clip"``: ``clamp(raw * y_c, -epsilon, epsilon)``, the paper's literal Clip (ablation).

    Returns:
        ``delta_c`` with ``|delta_c| <= epsilon`` everywhere and ``delta_c == 0`` exactly where ``y_c == 0``.
    """
    raw = _finite(raw)
    epsilon = _check_epsilon(epsilon)
    if _check_bound(bound) == "tanh":
        return epsilon * torch.tanh(raw) * contour_band
    return torch.clamp(raw * contour_band, -epsilon, epsilon)


def texture_bound(
    texture_map: torch.Tensor, roi_interior: torch.Tensor, epsilon: float = DEFAULT_EPSILON
) -> torch.Tensor:
    """
    Texture-aware adaptive bound of Eq. 5 of Lin et al., IJCAI 2024: ``b = epsilon * x_t * y_t`` (computed in this
    order, so a check that recomputes ``epsilon * x_t * y_t`` gets the same float values).

    Args:
        texture_map: texture intensity ``x_t`` (LBP, in [0, 1], must be non-negative).
        roi_interior: ``y_t = (1 - y_c) * y`` in {0, 1}.
        epsilon: l-inf budget on the [0, 1] scale.
    """
    return _check_epsilon(epsilon) * texture_map * roi_interior


def texture_perturbation(
    raw: torch.Tensor,
    texture_map: torch.Tensor,
    roi_interior: torch.Tensor,
    epsilon: float = DEFAULT_EPSILON,
    bound: str = "tanh",
) -> torch.Tensor:
    """
    Texture-aware perturbation, Eq. 5 of Lin et al., IJCAI 2024:
    ``delta_t = Clip_[-eps x_t y_t, eps x_t y_t](F_t(x))``.

    Args:
        raw: raw generator output ``F_t(x)``, ``[B, C, *spatial]`` (unbounded).
        texture_map: texture intensity ``x_t`` in [0, 1] (non-negative), broadcastable to ``raw``
            (typically ``[B, 1, *spatial]``).
        roi_interior: ``y_t = (1 - y_c) * y`` in {0, 1}, broadcastable to ``raw``.
        epsilon: l-inf budget on the [0, 1] scale (see the module docstring).
        bound: ``"tanh"`` (default): ``epsilon * x_t * y_t * tanh(raw)``; ``"clip"``: ``clamp(raw, -b, b)`` with
            ``b = epsilon * x_t * y_t`` (the paper's literal Clip, ablation).

    Returns:
        ``delta_t`` with ``|delta_t| <= epsilon * x_t * y_t`` element-wise (exactly, no tolerance).
    """
    raw = _finite(raw)
    b = texture_bound(texture_map, roi_interior, epsilon)
    if _check_bound(bound) == "tanh":
        return b * torch.tanh(raw)
    return torch.maximum(torch.minimum(raw, b), -b)


def compose_protected(image: torch.Tensor, delta_c: torch.Tensor, delta_t: torch.Tensor) -> torch.Tensor:
    """
    Protected image, Eq. 6 of Lin et al., IJCAI 2024: ``x_p = Clip_[0, 1](x + delta_c + delta_t)``.

    ``image`` is on the [0, 1] scale (see the module docstring); the result is in [0, 1].
    """
    return torch.clamp(image + delta_c + delta_t, 0.0, 1.0)


def keep_grey(image: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """
    ``delta`` ``[B, C, *spatial]`` with, at every pixel where the C > 1 channels of ``image`` are all equal (a grey
    pixel: a grey image stored as RGB, or the grey anatomy of an ultrasound frame with coloured markers or Doppler),
    its mean over the channels in every channel, so that grey stays grey: a colour perturbation on grey content
    would be the first thing an exploiter's grey-scale conversion removes (BUSI, README issue 13) and a tell that the
    image was altered. Coloured pixels keep their perturbation.

    The bounds of Eq. 4-5 are per pixel and the same in every channel, so the mean keeps them. One-channel batches
    and images without a grey pixel are returned unchanged.
    """
    if image.shape[1] < 2:
        return delta
    grey = (image == image[:, :1]).all(dim=1, keepdim=True)
    if not bool(grey.any()):
        return delta
    return torch.where(grey, delta.mean(dim=1, keepdim=True), delta)


def lowpass_field(raw: torch.Tensor, factor: int) -> torch.Tensor:
    """
    ``raw`` ``[B, C, *spatial]`` averaged over ``factor``-wide blocks (the last block of an axis may be narrower)
    and interpolated back to its own grid (bilinear / trilinear), so that the field, and the sign pattern of the
    perturbation the bounds of Eq. 4-5 make of it, lives on a grid ``factor`` times coarser. ``factor=1`` returns
    ``raw`` unchanged.

    Not part of the paper: a parametrisation of the generators' output (:class:`UMedPerturbator`'s ``lowpass``),
    which leaves the feasible set of Eq. 4-5 as it is. A pattern without fine structure is what an exploiter's
    blur, median filter, down-sampling and JPEG leave alone; measured on two datasets, a fresh network does not
    learn it in place of the anatomy (README, issue 13, "A coarser or finer pattern").
    """
    factor = _positive_int(factor, "lowpass")
    if factor == 1:
        return raw
    dims = raw.ndim - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"raw must be [B, C, *spatial] with 1-3 spatial dims, got {tuple(raw.shape)}.")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
    coarse = pool(raw, factor, stride=factor, ceil_mode=True, count_include_pad=False)
    mode = ("linear", "bilinear", "trilinear")[dims - 1]
    return F.interpolate(coarse, size=tuple(raw.shape[2:]), mode=mode, align_corners=False)


def write_round_trip(delta: torch.Tensor, file_size: Sequence[int] | int) -> torch.Tensor:
    """
    ``delta`` ``[B, C, *spatial]`` at the training size as an exploiter that trains at that size sees it in a file
    of ``file_size``: resized to ``file_size`` (bilinear, as the writer resizes the generators' fields) and back
    with MONAI's anti-aliased resize (:func:`~monai_umed.defenses.antialiased_resize`). Each output value is a
    weighted mean of input values (non-negative weights summing to at most 1), so an l-inf bound on ``delta``
    holds for the result (a pixel-wise bound need not: values spread to the neighbours); a file no larger than
    the training size returns ``delta`` unchanged (nothing is averaged away on the way back).
    """
    from monai_umed.defenses.differentiable import antialiased_resize

    spatial = tuple(int(v) for v in delta.shape[2:])
    size = (int(file_size),) * len(spatial) if isinstance(file_size, int) else tuple(int(v) for v in file_size)
    if all(f <= s for f, s in zip(size, spatial)):
        return delta
    mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
    up = F.interpolate(delta, size=size, mode=mode, align_corners=False)
    return antialiased_resize(up, spatial)


@functools.lru_cache(maxsize=64)
def _resize_norm_sq(spatial: tuple[int, ...], size: tuple[int, ...]) -> float:
    """``||R||^2`` of the anti-aliased resize ``R`` from ``spatial`` to ``size`` (the largest eigenvalue of ``R^T
    R``, by power iteration from a fixed seed; ``R`` acts on each channel alike, so one channel suffices)."""
    from monai_umed.defenses.differentiable import antialiased_resize

    v = torch.randn((1, 1, *spatial), generator=torch.Generator().manual_seed(0))
    value = 0.0
    for _ in range(20):
        v = v / v.norm().clamp_min(1e-12)
        with torch.enable_grad():
            w = v.detach().requires_grad_(True)
            rv = antialiased_resize(w, size)
            v = torch.autograd.grad(rv, w, grad_outputs=rv.detach())[0]  # R^T R v
        value = float(v.norm())
    return value


def fit_training_view(
    delta: torch.Tensor,
    target: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    grey: torch.Tensor | None = None,
    steps: int = 50,
) -> torch.Tensor:
    """
    The delta on a file's own grid whose view at the training size is nearest to ``target``: the least-squares
    fit ``min_d ||R(d) - target||^2`` subject to ``lower <= d <= upper`` element-wise and, where ``grey`` is true,
    the same value in every channel, with ``R`` MONAI's anti-aliased resize to the training size
    (:func:`~monai_umed.defenses.antialiased_resize`: how the protect job's training pipeline and an exploiter at
    that size read the file). Not part of the paper: the writer's alternative to resizing the raw fields
    (:meth:`~monai_umed.protectors.UMedProtector.native_delta`), whose file, read back at the training size, does
    not carry the perturbation the surrogate was fooled by (README, issue 13, "What the written file loses").

    Solved by accelerated projected gradient (FISTA) from ``delta``, the step from a power-iteration estimate of
    ``||R||^2``; the projection (the channel mean on grey pixels, then the box) is exact because ``lower`` and
    ``upper`` are the same in every channel of a grey pixel. The result always lies in the constraint set, so any
    bound encoded in ``lower`` / ``upper`` (Eq. 4-5 per pixel, Eq. 6's [0, 1]) holds exactly.

    Args:
        delta: ``[B, C, *spatial]`` on the file's grid, the starting point.
        target: ``[B, C, *train_spatial]``, the perturbation as the training pipeline saw it.
        lower, upper: bounds broadcastable to ``delta`` with ``lower <= 0 <= upper``.
        grey: ``[B, 1, *spatial]`` bool, pixels whose channels must move together (``None``: none).
        steps: gradient steps (0 returns ``delta`` projected).
    """
    from monai_umed.defenses.differentiable import antialiased_resize

    steps = int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    size = tuple(int(s) for s in target.shape[2:])
    if target.shape[:2] != delta.shape[:2] or len(size) != delta.ndim - 2:
        raise ValueError(f"target {tuple(target.shape)} does not match delta {tuple(delta.shape)}.")
    lower, upper = torch.broadcast_to(lower, delta.shape), torch.broadcast_to(upper, delta.shape)
    if bool((lower > upper).any()):
        raise ValueError("lower must not exceed upper.")

    def project(d: torch.Tensor) -> torch.Tensor:
        if grey is not None and d.shape[1] > 1:
            d = torch.where(grey, d.mean(dim=1, keepdim=True), d)
        return torch.minimum(torch.maximum(d, lower), upper)

    def gradient(d: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            d = d.detach().requires_grad_(True)
            loss = 0.5 * (antialiased_resize(d, size) - target).pow(2).sum()
            return torch.autograd.grad(loss, d)[0]

    x = project(delta.detach().float())
    if steps == 0:
        return x
    lipschitz = _resize_norm_sq(tuple(int(n) for n in x.shape[2:]), size)
    step = 1.0 / max(1.05 * lipschitz, 1e-12)
    z, t = x, 1.0
    for _ in range(steps):
        x_next = project(z - step * gradient(z))
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = x_next + ((t - 1.0) / t_next) * (x_next - x)
        x, t = x_next, t_next
    return x


def highpass_field(raw: torch.Tensor, factor: int) -> torch.Tensor:
    """
    ``raw - lowpass_field(raw, factor)``: the part of the field that varies within ``factor``-wide blocks, so the
    perturbation's pattern keeps only its fine structure (the counterpart of :func:`lowpass_field`; ``factor=1``
    returns ``raw`` unchanged). Not part of the paper; the feasible set of Eq. 4-5 is unchanged.
    """
    if _positive_int(factor, "highpass") == 1:
        return raw
    return raw - lowpass_field(raw, factor)


class ContourPerturbator(nn.Module):
    """
    Contour perturbator G_c (Fig. 2b, Eq. 4 of Lin et al., IJCAI 2024): ``delta_c = bound(F_c(x) * y_c)``.

    The raw field :meth:`generator_output` and the bound :meth:`apply_bound` are kept separate so that a writer can
    compute ``F_c(x)`` at the training size, resize it to a file's native grid and apply Eq. 4 with native-resolution
    masks.

    Args:
        spatial_dims: number of spatial dimensions (for the default generator).
        in_channels: image channels (the perturbation has as many channels as the image).
        epsilon: l-inf budget on the [0, 1] scale (8-bit: ``4/255`` = 4 grey levels; 16-bit: 1028 levels;
            float images: a fraction of the per-image min-max range).
        generator: F_c; defaults to ``CDCUNet(spatial_dims, in_channels, in_channels, channels, strides,
            theta=theta)`` (all encoder convolutions are CDC, Eq. 3).
        bound: ``"tanh"`` (default) or ``"clip"`` (see :func:`contour_perturbation`).
        channels, strides, theta: passed to the default :class:`CDCUNet`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        epsilon: float = DEFAULT_EPSILON,
        generator: nn.Module | None = None,
        bound: str = "tanh",
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        theta: float = 1.0,
    ) -> None:
        super().__init__()
        self.epsilon = _check_epsilon(epsilon)
        self.bound = _check_bound(bound)
        if generator is None:
            generator = CDCUNet(spatial_dims, in_channels, in_channels, channels=channels, strides=strides, theta=theta)
        self.generator = generator

    def generator_output(self, image: torch.Tensor) -> torch.Tensor:
        """Raw, unbounded ``F_c(x)`` for ``image`` ``[B, C, *spatial]`` on the [0, 1] scale."""
        return self.generator(image)

    def apply_bound(self, raw: torch.Tensor, contour_band: torch.Tensor) -> torch.Tensor:
        """Eq. 4 on a (possibly precomputed / resized) raw field, with this perturbator's epsilon and bound."""
        return contour_perturbation(raw, contour_band, self.epsilon, self.bound)

    def forward(self, image: torch.Tensor, contour_band: torch.Tensor) -> torch.Tensor:
        """``delta_c = G_c(x)`` (Eq. 4); ``contour_band`` ``[B, 1, *spatial]`` broadcasts over image channels."""
        return self.apply_bound(self.generator_output(image), contour_band)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon:.6g}, bound={self.bound!r}"


class TexturePerturbator(nn.Module):
    """
    Texture perturbator G_t (Fig. 2c, Eq. 5 of Lin et al., IJCAI 2024):
    ``delta_t = bound_{eps x_t y_t}(F_t(x))``, non-zero only inside the ROI interior, scaled by the texture map.

    Args:
        spatial_dims: number of spatial dimensions (for the default generator).
        in_channels: image channels (the perturbation has as many channels as the image).
        epsilon: l-inf budget on the [0, 1] scale (see :class:`ContourPerturbator`).
        generator: F_t; defaults to MONAI's ``UNet(spatial_dims, in_channels, in_channels, channels, strides,
            num_res_units=num_res_units)`` (instance norm, PReLU).
        bound: ``"tanh"`` (default) or ``"clip"`` (see :func:`texture_perturbation`).
        channels, strides, num_res_units: passed to the default ``UNet``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        epsilon: float = DEFAULT_EPSILON,
        generator: nn.Module | None = None,
        bound: str = "tanh",
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 2,
    ) -> None:
        super().__init__()
        self.epsilon = _check_epsilon(epsilon)
        self.bound = _check_bound(bound)
        if generator is None:
            generator = UNet(
                spatial_dims, in_channels, in_channels, channels=channels, strides=strides, num_res_units=num_res_units
            )
        self.generator = generator

    def generator_output(self, image: torch.Tensor) -> torch.Tensor:
        """Raw, unbounded ``F_t(x)`` for ``image`` ``[B, C, *spatial]`` on the [0, 1] scale."""
        return self.generator(image)

    def apply_bound(self, raw: torch.Tensor, texture_map: torch.Tensor, roi_interior: torch.Tensor) -> torch.Tensor:
        """Eq. 5 on a (possibly precomputed / resized) raw field, with this perturbator's epsilon and bound."""
        return texture_perturbation(raw, texture_map, roi_interior, self.epsilon, self.bound)

    def forward(self, image: torch.Tensor, texture_map: torch.Tensor, roi_interior: torch.Tensor) -> torch.Tensor:
        """``delta_t = G_t(x)`` (Eq. 5); ``texture_map`` / ``roi_interior`` ``[B, 1, *spatial]`` broadcast."""
        return self.apply_bound(self.generator_output(image), texture_map, roi_interior)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon:.6g}, bound={self.bound!r}"


class UMedPerturbator(nn.Module):
    """
    Both UMed perturbators and Eq. 6 of Lin et al., IJCAI 2024:
    ``x_p = Clip_[0, 1](x + G_c(x) + G_t(x))`` (Fig. 2a).

    Args:
        contour: G_c; built as ``ContourPerturbator(spatial_dims, in_channels, epsilon, bound=bound)`` when None.
        texture: G_t; built as ``TexturePerturbator(spatial_dims, in_channels, epsilon, bound=bound)`` when None.
        spatial_dims, in_channels, bound: only used to build the default sub-perturbators (given ones keep their
            own bound, so mixed bounds are possible for ablations).
        parts: ``"both"`` (the method), ``"contour"`` (delta_t = 0: "G_c only") or ``"texture"`` (delta_c = 0:
            "G_t only"), the ablations of Table 5.
        texture_bound: ``"lbp"`` (Eq. 5) or ``"fixed"`` (``x_t`` replaced by 1: the uniform bound ``eps * y_t``,
            Table 5's "w/o texture prior").
        epsilon: the shared l-inf budget on the [0, 1] scale (8-bit: ``4/255`` = 4 grey levels; 16-bit: 1028
            levels; float images: a fraction of the per-image min-max range). Both sub-perturbators must use it.
        lowpass: the raw fields F_c(x), F_t(x) go through :func:`lowpass_field` with this factor before the bounds
            (1, the default: unchanged, the paper's generators). The bounds and masks of Eq. 4-5 are applied
            after it, so they hold as before.
        highpass: the raw fields go through :func:`highpass_field` with this factor (1, the default: unchanged).
        file_size: training only (:meth:`forward`; :meth:`perturb_fields`, the writer's path, is unchanged): the
            size of the files the perturbation is written to. ``delta_c`` and ``delta_t`` are then returned as an
            exploiter at the training size sees them in a written file: resized (bilinear) to ``file_size`` and
            back with the exploiter's anti-aliased resize (:func:`~monai_umed.defenses.antialiased_resize`), a
            low-pass of the pattern the generators must then survive (:func:`write_round_trip`). The l-inf bound
            ``epsilon`` holds for this view; the pixel-wise regions and bounds of Eq. 4-5 hold where the writer
            applies them, on the file's own grid. ``None`` (the default) or the training size: unchanged.

    Raises:
        ValueError: when a given sub-perturbator's epsilon differs from ``epsilon`` (or from the other's).
    """

    def __init__(
        self,
        contour: ContourPerturbator | None = None,
        texture: TexturePerturbator | None = None,
        spatial_dims: int = 2,
        in_channels: int = 1,
        epsilon: float = DEFAULT_EPSILON,
        bound: str = "tanh",
        parts: str = "both",
        texture_bound: str = "lbp",
        lowpass: int = 1,
        highpass: int = 1,
        file_size: Sequence[int] | int | None = None,
    ) -> None:
        super().__init__()
        epsilon = _check_epsilon(epsilon)
        self.lowpass, self.highpass = _positive_int(lowpass, "lowpass"), _positive_int(highpass, "highpass")
        if file_size is not None:
            file_size = (
                _positive_int(file_size, "file_size") if isinstance(file_size, (int, float, str))
                else tuple(_positive_int(v, "file_size") for v in file_size)
            )
        self.file_size = file_size
        if parts not in PARTS:
            raise ValueError(f"parts must be one of {PARTS}, got {parts!r}.")
        if texture_bound not in TEXTURE_BOUNDS:
            raise ValueError(f"texture_bound must be one of {TEXTURE_BOUNDS}, got {texture_bound!r}.")
        self.parts, self.texture_bound = parts, texture_bound
        if contour is None:
            contour = ContourPerturbator(spatial_dims, in_channels, epsilon=epsilon, bound=bound)
        if texture is None:
            texture = TexturePerturbator(spatial_dims, in_channels, epsilon=epsilon, bound=bound)
        self.contour = contour
        self.texture = texture
        for name, sub in (("contour", contour), ("texture", texture)):
            if sub.epsilon != epsilon:
                raise ValueError(
                    f"{name} perturbator has epsilon={sub.epsilon}, but UMedPerturbator epsilon={epsilon}: "
                    "both perturbators must share one epsilon (pass the same value to all three)."
                )

    @property
    def epsilon(self) -> float:
        """The l-inf budget shared by G_c and G_t (checked to be equal)."""
        return self._check_shared_epsilon()

    def _check_shared_epsilon(self) -> float:
        if self.contour.epsilon != self.texture.epsilon:
            raise ValueError(
                f"contour epsilon {self.contour.epsilon} != texture epsilon {self.texture.epsilon}: "
                "both perturbators must share one epsilon."
            )
        return self.contour.epsilon

    def generator_outputs(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw, unbounded fields ``(F_c(x), F_t(x))`` (through :func:`lowpass_field` / :func:`highpass_field` when
        ``lowpass`` / ``highpass`` > 1)."""
        raw_c, raw_t = self.contour.generator_output(image), self.texture.generator_output(image)
        return tuple(highpass_field(lowpass_field(r, self.lowpass), self.highpass) for r in (raw_c, raw_t))

    def perturb_fields(
        self,
        raw_c: torch.Tensor,
        raw_t: torch.Tensor,
        image: torch.Tensor,
        contour_band: torch.Tensor,
        texture_map: torch.Tensor,
        roi_interior: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Apply Eq. 4, 5 and 6 to precomputed raw fields (e.g. computed at the training size and resized to a
        file's native grid, with native-resolution masks); grey pixels of a colour batch get a grey perturbation
        (:func:`keep_grey`).

        Returns:
            ``(protected, delta_c, delta_t)``.
        """
        self._check_shared_epsilon()
        if self.texture_bound == "fixed":
            texture_map = torch.ones_like(texture_map)
        delta_c = self.contour.apply_bound(raw_c, contour_band)
        delta_t = self.texture.apply_bound(raw_t, texture_map, roi_interior)
        if self.parts == "texture":
            delta_c = torch.zeros_like(delta_c)
        elif self.parts == "contour":
            delta_t = torch.zeros_like(delta_t)
        delta_c, delta_t = keep_grey(image, delta_c), keep_grey(image, delta_t)
        return compose_protected(image, delta_c, delta_t), delta_c, delta_t

    def pixel_bound(
        self, contour_band: torch.Tensor, texture_map: torch.Tensor, roi_interior: torch.Tensor
    ) -> torch.Tensor:
        """The per-pixel l-inf bound of ``delta_c + delta_t`` that :meth:`perturb_fields` keeps: ``epsilon`` on the
        contour band (Eq. 4), ``epsilon * x_t`` on the ROI interior (Eq. 5; ``x_t = 1`` with
        ``texture_bound="fixed"``), 0 elsewhere and for a part switched off (``parts``). The band and the interior
        are disjoint, so the bound of the sum is the sum of the bounds."""
        eps = self._check_shared_epsilon()
        if self.texture_bound == "fixed":
            texture_map = torch.ones_like(texture_map)
        bound = torch.zeros_like(contour_band, dtype=torch.float32)
        if self.parts != "texture":
            bound = bound + eps * contour_band
        if self.parts != "contour":
            bound = bound + texture_bound(texture_map, roi_interior, eps)
        return bound

    def extra_repr(self) -> str:
        return (
            f"parts={self.parts!r}, texture_bound={self.texture_bound!r}, lowpass={self.lowpass}, "
            f"highpass={self.highpass}, file_size={self.file_size}"
        )

    def forward(
        self, image: torch.Tensor, contour_band: torch.Tensor, texture_map: torch.Tensor, roi_interior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Protect ``image`` ``[B, C, *spatial]`` (on the [0, 1] scale) given the priors ``y_c``, ``x_t``, ``y_t``
        (``[B, 1, *spatial]``, broadcast over image channels).

        Returns:
            ``(protected, delta_c, delta_t)`` with ``protected = Clip_[0, 1](image + delta_c + delta_t)`` (Eq. 6).
        """
        raw_c, raw_t = self.generator_outputs(image)
        protected, delta_c, delta_t = self.perturb_fields(raw_c, raw_t, image, contour_band, texture_map, roi_interior)
        if self.file_size is None:
            return protected, delta_c, delta_t
        delta_c, delta_t = write_round_trip(delta_c, self.file_size), write_round_trip(delta_t, self.file_size)
        return compose_protected(image, delta_c, delta_t), delta_c, delta_t

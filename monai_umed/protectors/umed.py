# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""UMed as a :class:`~monai_umed.protectors.Protector`: the two generators, their priors and the training size."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import convert_to_tensor

from monai_umed.networks import ContourPerturbator, TexturePerturbator, UMedPerturbator
from monai_umed.networks.nets.perturbators import _positive_int
from monai_umed.protectors.base import Protector, register_protector
from monai_umed.transforms import PriorSettings, prior_transforms

__all__ = ["UMedProtector", "build_perturbator", "native_band_width"]


def build_perturbator(
    spatial_dims: int = 2,
    in_channels: int = 1,
    epsilon: float = 4 / 255,
    bound: str = "tanh",
    contour_channels: Sequence[int] = (16, 32, 64, 128),
    contour_strides: Sequence[int] = (2, 2, 2),
    theta: float = 1.0,
    texture_channels: Sequence[int] = (16, 32, 64, 128),
    texture_strides: Sequence[int] = (2, 2, 2),
    texture_res_units: int = 2,
    parts: str = "both",
    texture_bound: str = "lbp",
    lowpass: int = 1,
    highpass: int = 1,
    file_size: Sequence[int] | int | None = None,
) -> UMedPerturbator:
    """Build G_c (CDC U-Net generator, Eq. 3-4) and G_t (MONAI U-Net generator, Eq. 5) from plain arguments.

    The Table 5 ablations are settings: ``parts="contour"`` / ``"texture"`` (one generator only),
    ``texture_bound="fixed"`` (no texture prior), ``theta=0`` (the contour encoder without central differences,
    i.e. a vanilla U-Net). ``lowpass`` / ``highpass`` > 1 filter the raw fields before the bounds, ``file_size``
    shows training the deltas through the write round trip (see :class:`~monai_umed.networks.UMedPerturbator`)."""
    contour = ContourPerturbator(
        spatial_dims, in_channels, epsilon=epsilon, bound=bound, channels=tuple(contour_channels),
        strides=tuple(contour_strides), theta=theta,
    )
    texture = TexturePerturbator(
        spatial_dims, in_channels, epsilon=epsilon, bound=bound, channels=tuple(texture_channels),
        strides=tuple(texture_strides), num_res_units=texture_res_units,
    )
    return UMedPerturbator(
        contour=contour, texture=texture, epsilon=epsilon, parts=parts, texture_bound=texture_bound, lowpass=lowpass,
        highpass=highpass, file_size=file_size,
    )


def plain(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor (no MONAI metadata: every operation on a MetaTensor pays for its metadata handling)."""
    return convert_to_tensor(t, track_meta=False)


def native_band_width(width: int, train_shape: Sequence[int], native_shape: Sequence[int]) -> int:
    """The contour band width on a file's native grid: the training width scaled by the linear size ratio
    ``(native_pixels / train_pixels) ** (1 / d)`` (``d`` spatial dims: the square root for images, the cube root
    for volumes), so the band covers the same fraction of the object."""
    ratio = (float(np.prod(native_shape)) / float(np.prod(train_shape))) ** (1.0 / len(native_shape))
    return max(1, int(round(width * ratio)))


@register_protector
class UMedProtector(Protector):
    """UMed (Lin et al., IJCAI 2024): contour perturbation (Eq. 3-4) + texture perturbation (Eq. 5), Eq. 6.

    **Training.** ``perturbator`` (:class:`~monai_umed.networks.UMedPerturbator`) is what
    :class:`~monai_umed.engines.UMedTrainer` optimises at ``image_size`` on the priors of :meth:`transforms`.

    **How delta reaches a file's own grid** (:meth:`native_delta`). The generators run at the training size:
    the image is resized (bilinear, anti-aliased) to ``image_size``, the *raw* generator outputs F_c(x), F_t(x)
    are resized back to the native grid (bilinear), and Eq. 4-6 (:meth:`UMedPerturbator.perturb_fields`) are
    applied there with the contour band, ROI interior and LBP texture map computed on the native mask and
    image (band width scaled by :func:`native_band_width`). The bounds therefore hold exactly on the native
    grid, and no pixel outside the native band and ROI changes. :meth:`native_delta_batch` runs the
    generators once for a batch of images (:meth:`native_delta_parts`: the rest runs per image, e.g. in the
    writer's threads) and computes the native priors only on the box around the ROI where anything may change
    (:meth:`_work_box`; exact, see there).

    Args:
        in_channels, spatial_dims, epsilon, bound, contour_*, theta, texture_*, parts, texture_bound, lowpass,
            highpass, file_size: the generators and the ablation switches, see :func:`build_perturbator`.
        image_size: the training size (an int or one size per spatial dimension).
        band_width, band_side, lbp_points, lbp_radius, lbp_method, lbp_normalize, lbp_grid: the priors
            (:class:`~monai_umed.transforms.PriorSettings`).
        class_values: the mask values that are the surrogate's classes 1..K (empty: binary), for the labels of
            :meth:`transforms` (:func:`~monai_umed.transforms.class_values`). The perturbation itself does not
            depend on them: the band surrounds every class region and the ROI is the whole foreground.
        native: train and apply on each file's own grid instead of resizing it (volumes): training draws
            ``image_size`` patches, and :meth:`native_delta_batch` runs the generators over the whole volume (one
            pass, or MONAI's ``SlidingWindowInferer`` for very large volumes, see :meth:`_native_fields`), so the
            generators meet the perturbation's own scale.
        view_fit: gradient steps of a refit of each delta on the native grid (0: off, the default), so that the
            file read back at the training size carries the perturbation of the training view (:meth:`_fit_view`,
            :func:`~monai_umed.networks.fit_training_view`); same bounds. Not for ``native`` protectors.
    """

    name: ClassVar[str] = "umed"
    #: ``native`` volumes up to this many training patches (in voxels) go through the generators in one pass
    WHOLE_PASS_FACTOR: ClassVar[int] = 64
    #: the keys of :class:`PriorSettings`, also settings keys of first-format protector files
    PRIOR_KEYS: ClassVar[tuple[str, ...]] = tuple(PriorSettings().as_dict())

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int | Sequence[int] = 96,
        epsilon: float = 4 / 255,
        spatial_dims: int = 2,
        bound: str = "tanh",
        contour_channels: Sequence[int] = (16, 32, 64, 128),
        contour_strides: Sequence[int] = (2, 2, 2),
        theta: float = 1.0,
        texture_channels: Sequence[int] = (16, 32, 64, 128),
        texture_strides: Sequence[int] = (2, 2, 2),
        texture_res_units: int = 2,
        parts: str = "both",
        texture_bound: str = "lbp",
        lowpass: int = 1,
        highpass: int = 1,
        file_size: Sequence[int] | int | None = None,
        band_width: int = 3,
        band_side: str = "both",
        lbp_points: int = 8,
        lbp_radius: float = 1.0,
        lbp_method: str = "uniform",
        lbp_normalize: str = "max_code",
        lbp_grid: str = "train",
        class_values: Sequence[int] = (),
        native: bool = False,
        view_fit: int = 0,
    ) -> None:
        super().__init__()
        self.class_values = [int(v) for v in class_values]
        self.native = bool(native)
        self.view_fit = _positive_int(view_fit, "view_fit", minimum=0)
        if self.view_fit and self.native:
            raise ValueError(
                f"view_fit={self.view_fit} refits a file's delta to its view at the training size; a native protector "
                "(volumes) trains on each file's own grid, so there is no such view: leave view_fit at 0."
            )
        self.perturbator_args = {
            "spatial_dims": int(spatial_dims), "in_channels": int(in_channels), "epsilon": float(epsilon),
            "bound": bound, "contour_channels": [int(c) for c in contour_channels],
            "contour_strides": [int(s) for s in contour_strides], "theta": float(theta),
            "texture_channels": [int(c) for c in texture_channels],
            "texture_strides": [int(s) for s in texture_strides], "texture_res_units": int(texture_res_units),
            "parts": str(parts), "texture_bound": str(texture_bound), "lowpass": lowpass, "highpass": highpass,
            "file_size": file_size,
        }
        self.perturbator = build_perturbator(**self.perturbator_args)
        # the settings as the perturbator checked them (plain ints / a list: the protector file holds plain data)
        checked = self.perturbator.file_size
        self.perturbator_args.update(
            lowpass=self.perturbator.lowpass, highpass=self.perturbator.highpass,
            file_size=list(checked) if isinstance(checked, tuple) else checked,
        )
        size = (image_size,) * spatial_dims if isinstance(image_size, (int, np.integer)) else tuple(image_size)
        self.image_size = tuple(int(s) for s in size)
        self.priors = PriorSettings(
            band_width, band_side, lbp_points, lbp_radius, lbp_method, lbp_normalize, lbp_grid
        )
        self.in_channels = int(in_channels)
        self.spatial_dims = int(spatial_dims)
        self._lbp = self.priors.lbp()

    @property
    def epsilon(self) -> float:  # type: ignore[override]
        return self.perturbator.epsilon

    def config(self) -> dict[str, Any]:
        return dict(
            self.perturbator_args, image_size=list(self.image_size), class_values=list(self.class_values),
            native=self.native, view_fit=self.view_fit,
            **self.priors.as_dict(),
        )

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, view_fit={self.view_fit}, {self.priors}"

    def transforms(self, track_meta: bool = False, train: bool = False):
        """The pipeline of this protector: resize an ``{"image", "label"}`` pair (or, ``native``, keep its grid: a
        training patch when ``train``, else the whole pair padded to multiples of 16) and add the priors
        (:func:`~monai_umed.transforms.prior_transforms`)."""
        return prior_transforms(
            self.image_size, self.in_channels, track_meta=track_meta, class_values=self.class_values,
            native=("train" if train else "apply") if self.native else None, **self.priors.as_dict(),
        )

    def native_delta(self, image: torch.Tensor, label: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.native_delta_batch([image], [label], [key])[0]

    def native_delta_parts(
        self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], keys: Sequence[str]
    ) -> list[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        """The generators on the batch now (:meth:`_resized_fields`, or :meth:`_native_fields` for ``native``);
        each image's rest (its fields on the native grid, the native priors and Eq. 4-6: :meth:`_finish_delta`)
        as a callable."""
        if not images:
            return []
        dev = self.device
        xs, ys = [], []
        for x, y in zip(images, labels):
            if x.ndim != self.spatial_dims + 1 or x.shape[0] != self.in_channels:
                raise ValueError(f"image must be [{self.in_channels}, *spatial], got {tuple(x.shape)}.")
            if tuple(y.shape[1:]) != tuple(x.shape[1:]):
                raise ValueError(f"label {tuple(y.shape)} does not match image {tuple(x.shape)}.")
            # plain tensors: MetaTensor bookkeeping on every small op below costs more than the ops
            xs.append(plain(torch.as_tensor(x)).to(device=dev, dtype=torch.float32))
            ys.append(plain(torch.as_tensor(y)).to(dev))
        with torch.no_grad():
            fields = self._native_fields(xs) if self.native else self._resized_fields(xs)
        return [functools.partial(self._finish_delta, x, y, f) for x, y, f in zip(xs, ys, fields)]

    @torch.no_grad()
    def _finish_delta(
        self, x: torch.Tensor, y: torch.Tensor, fields: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's ``(delta, allowed)`` from its raw generator outputs: resized to the native grid if they
        are not on it, then Eq. 4-6 with the priors of the native image, on the :meth:`_work_box` only."""
        dev = x.device
        native = tuple(x.shape[1:])
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        raw_c, raw_t = (
            r if tuple(r.shape[2:]) == native else F.interpolate(r.float(), size=native, mode=mode, align_corners=False)
            for r in fields
        )
        width = (
            self.priors.band_width if self.native
            else native_band_width(self.priors.band_width, self.image_size, native)
        )
        fg = (torch.as_tensor(y).to(dev) > 0).float()
        delta = torch.zeros_like(x)
        allowed = torch.zeros(native, dtype=torch.bool, device=dev)
        box = self._work_box(fg[0], width)
        if box is not None:
            crop = (slice(None), *box)
            x_c, fg_c = x[crop], fg[crop]
            band, interior = (plain(m) for m in self.priors.contour(width).band_and_interior(fg_c))
            texture = plain(self._lbp(x_c))
            protected, _, _ = self.perturbator.perturb_fields(
                raw_c[(slice(None), *crop)], raw_t[(slice(None), *crop)], x_c[None], band[None], texture[None],
                interior[None],
            )
            delta[crop] = protected[0] - x_c
            allowed[box] = ((band + interior) > 0)[0]
            if self.view_fit and not self.native and native != self.image_size:
                bound = torch.zeros((1, *native), device=dev)
                bound[(slice(None), *box)] = self.perturbator.pixel_bound(band, texture, interior)
                delta = self._fit_view(x, y, delta, bound)
        return delta.cpu(), allowed.cpu()

    def _fit_view(self, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        """``view_fit``: the native delta refitted (:func:`~monai_umed.networks.fit_training_view`) so that the
        file read at the training size (the pipeline of :meth:`transforms`, an exploiter's anti-aliased resize)
        carries the perturbation the generators give that training view, within the same per-pixel bounds of
        Eq. 4-5 (``bound``), Eq. 6's [0, 1] and :func:`~monai_umed.networks.nets.keep_grey`; starts from the
        resized-fields delta."""
        from monai_umed.networks import fit_training_view

        view = self.transforms()({"image": x.cpu(), "label": torch.as_tensor(y).cpu()})
        dev = x.device
        small = plain(view["image"])[None].to(dev)
        protected, _, _ = self.perturbator(
            small, *(plain(view[k])[None].to(dev) for k in ("contour_band", "texture_map", "roi_interior"))
        )
        grey = (x == x[:1]).all(dim=0, keepdim=True)[None] if x.shape[0] > 1 else None
        unit = x.clamp(0.0, 1.0)
        lower = torch.maximum(-bound, -unit)[None]
        upper = torch.minimum(bound, 1.0 - unit)[None]
        fitted = fit_training_view(delta[None], protected - small, lower, upper, grey, steps=self.view_fit)
        return fitted[0]

    def _resized_fields(self, xs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Raw generator outputs F_c(x), F_t(x) at the training size, one pair per image: the generators run on
        the images resized to the training size (one batch); :meth:`_finish_delta` resizes them back."""
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        small = torch.cat(
            [F.interpolate(x[None], size=self.image_size, mode=mode, antialias=mode == "bilinear", align_corners=False)
             for x in xs]
        ).clamp(0, 1)
        with torch.inference_mode():  # no autograd bookkeeping at all (about 15 % faster on the CPU than no_grad)
            raw_c_all, raw_t_all = self.perturbator.generator_outputs(small)
        return [(raw_c_all[i : i + 1], raw_t_all[i : i + 1]) for i in range(len(xs))]

    def _native_fields(self, xs: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Raw generator outputs on each file's own grid (``native``): one pass over the whole volume padded
        (symmetrically) to multiples of 16 when it has at most :attr:`WHOLE_PASS_FACTOR` times the voxels of a
        training patch, else MONAI's ``SlidingWindowInferer`` with training-patch windows. The whole pass is the
        default because the generators' instance normalisation makes their output depend on the window: on the MSD
        hippocampus, sliding-window fields were uncorrelated with the whole-volume ones, and only the latter fooled
        the surrogate (docs/DESIGN.md)."""
        from monai.inferers import SlidingWindowInferer

        c = self.in_channels

        def fields(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([r.float() for r in self.perturbator.generator_outputs(t)], 1)

        out = []
        patch = math.prod(self.image_size)
        for x in xs:
            shape = x.shape[1:]
            padded = [-(-s // 16) * 16 for s in shape]
            if math.prod(padded) <= self.WHOLE_PASS_FACTOR * patch:
                pads = []
                for s, ps in zip(reversed(shape), reversed(padded)):
                    pads += [(ps - s) // 2, ps - s - (ps - s) // 2]
                f = fields(F.pad(x[None], pads))
                crop = tuple(slice((ps - s) // 2, (ps - s) // 2 + s) for s, ps in zip(shape, padded))
                f = f[(slice(None), slice(None), *crop)]
            else:
                inferer = SlidingWindowInferer(roi_size=self.image_size, sw_batch_size=4, overlap=0.25, mode="gaussian")
                f = inferer(x[None], fields)
            out.append((f[:, :c], f[:, c:]))
        return out

    def _work_box(self, fg: torch.Tensor, width: int) -> tuple[slice, ...] | None:
        """The part of the native grid the priors are computed on: the foreground's bounding box grown by the
        band width plus the LBP reach (``ceil(R) + 1``), clipped to the image; ``None`` without foreground.

        Exact: outside it nothing may change (band and ROI lie inside), the band and ROI inside it are those of the
        whole image (the margin is background, as outside the box), and the LBP codes inside the grown box read
        only pixels of the box. With ``lbp_normalize="minmax"`` (scaled by the whole image's codes) the box is the
        whole image.
        """
        if not bool(fg.any()):
            return None
        if self.priors.lbp_normalize == "minmax":
            return tuple(slice(0, n) for n in fg.shape)
        margin = width + math.ceil(self.priors.lbp_radius) + 1
        box = []
        for axis in range(fg.ndim):
            other = tuple(a for a in range(fg.ndim) if a != axis)
            hit = torch.nonzero(fg.amax(dim=other) if other else fg).flatten()
            lo, hi = int(hit.min()) - margin, int(hit.max()) + margin + 1
            box.append(slice(max(lo, 0), min(hi, fg.shape[axis])))
        return tuple(box)

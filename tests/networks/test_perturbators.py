# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.networks.nets.perturbators (Eq. 4-6 of Lin et al., IJCAI 2024)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_umed.networks.nets import (
    DEFAULT_EPSILON,
    CDCUNet,
    ContourPerturbator,
    TexturePerturbator,
    UMedPerturbator,
    compose_protected,
    contour_perturbation,
    fit_training_view,
    highpass_field,
    keep_grey,
    lowpass_field,
    texture_perturbation,
    write_round_trip,
)

TINY = {"channels": (4, 8), "strides": (2,)}
SIZES = {2: (16, 16), 3: (16, 16, 16)}


def make_priors(batch: int, size: tuple[int, ...]):
    """Box ROI y, contour band y_c = dilate(y) - erode(y) (3^d kernel), y_t = (1 - y_c) y, LBP-like x_t in [0, 1]."""
    y = torch.zeros(batch, 1, *size)
    y[(slice(None), slice(None), *[slice(n // 4, 3 * n // 4 + 1) for n in size])] = 1
    pool = getattr(F, f"max_pool{len(size)}d")
    band = pool(y, 3, 1, 1) - (-pool(-y, 3, 1, 1))
    roi_interior = (1 - band) * y
    texture = torch.rand(batch, 1, *size)
    return band, texture, roi_interior


def make_umed(spatial_dims: int, chans: int, bound: str, epsilon: float = DEFAULT_EPSILON) -> UMedPerturbator:
    contour = ContourPerturbator(spatial_dims, chans, epsilon=epsilon, bound=bound, **TINY)
    texture = TexturePerturbator(spatial_dims, chans, epsilon=epsilon, bound=bound, num_res_units=1, **TINY)
    return UMedPerturbator(contour, texture, epsilon=epsilon)


def assert_bounds(image, band, texture, roi_interior, protected, dc, dt, eps):
    """The guarantees, checked exactly (no tolerance)."""
    assert torch.isfinite(protected).all() and torch.isfinite(dc).all() and torch.isfinite(dt).all()
    assert (dc.abs() <= eps).all()
    assert (dc[(band == 0).expand_as(dc)] == 0).all()
    b = eps * texture * roi_interior  # same expression (and order) as texture_bound -> same float values
    assert (dt.abs() <= b).all()
    assert (dt[(roi_interior == 0).expand_as(dt)] == 0).all()
    assert protected.min() >= 0 and protected.max() <= 1
    assert torch.equal(protected, torch.clamp(image + dc + dt, 0, 1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("chans", [1, 3])
@pytest.mark.parametrize("bound", ["tanh", "clip"])
def test_bounds_are_guarantees(spatial_dims, chans, bound):
    size = SIZES[spatial_dims]
    umed = make_umed(spatial_dims, chans, bound).eval()
    image = torch.rand(2, chans, *size)
    band, texture, roi_interior = make_priors(2, size)
    eps = umed.epsilon
    with torch.no_grad():
        protected, dc, dt = umed(image, band, texture, roi_interior)
        assert protected.shape == dc.shape == dt.shape == image.shape
        assert_bounds(image, band, texture, roi_interior, protected, dc, dt, eps)
        for scale in (1e3, -1e3):  # blow up every generator weight: the bounds must still hold exactly
            scaled = make_umed(spatial_dims, chans, bound).eval()
            scaled.load_state_dict(umed.state_dict())
            for p in scaled.parameters():
                p.mul_(scale)
            protected, dc, dt = scaled(image, band, texture, roi_interior)
            assert_bounds(image, band, texture, roi_interior, protected, dc, dt, eps)
            assert dc.abs().max() > 0.5 * eps  # the budget is actually used, not trivially zero


@pytest.mark.parametrize("bound", ["tanh", "clip"])
def test_functions_broadcast_and_nonfinite(bound):
    eps = 8 / 255
    raw = torch.randn(2, 3, 8, 8) * 10
    raw[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    band = (torch.rand(2, 1, 8, 8) > 0.5).float()
    texture, roi = torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    dc = contour_perturbation(raw, band, eps, bound)
    dt = texture_perturbation(raw, texture, roi, eps, bound)
    assert dc.shape == dt.shape == raw.shape
    assert torch.isfinite(dc).all() and torch.isfinite(dt).all()
    assert (dc.abs() <= eps).all() and (dc[(band == 0).expand_as(dc)] == 0).all()
    assert (dt.abs() <= eps * texture * roi).all()
    image = torch.rand(2, 3, 8, 8)
    assert torch.equal(compose_protected(image, dc, dt), torch.clamp(image + dc + dt, 0, 1))
    with pytest.raises(ValueError):
        contour_perturbation(raw, band, eps, "sigmoid")
    with pytest.raises(ValueError):
        texture_perturbation(raw, texture, roi, -1.0, bound)


def test_tanh_keeps_gradients_alive_at_init():
    """bound="tanh": every weight of both generators gets a non-zero gradient from a loss on the protected image."""
    umed = make_umed(2, 3, "tanh")
    image = torch.rand(2, 3, 16, 16) * 0.8 + 0.1  # away from the [0, 1] clip of Eq. 6
    band, texture, roi_interior = make_priors(2, (16, 16))
    protected, _, _ = umed(image, band, texture, roi_interior)
    (protected * torch.randn_like(protected)).sum().backward()
    for gen in (umed.contour.generator, umed.texture.generator):
        weights = [p for p in gen.parameters() if p.ndim > 1]
        assert weights and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def _pass_fraction(bound: str, head_scale: float):
    """Fraction of band / ROI-interior pixels through which d(loss)/d(raw) is non-zero, and the parameter grads."""
    umed = make_umed(2, 1, bound)
    with torch.no_grad():  # scale the generators' last layers -> large raw outputs
        umed.contour.generator.head.weight.mul_(head_scale)
        for p in umed.texture.generator.model[-1].parameters():
            p.mul_(head_scale)
    image = torch.rand(2, 1, 16, 16) * 0.8 + 0.1
    band, texture, roi_interior = make_priors(2, (16, 16))
    raw_c, raw_t = umed.generator_outputs(image)
    raw_c.retain_grad()
    raw_t.retain_grad()
    protected, _, _ = umed.perturb_fields(raw_c, raw_t, image, band, texture, roi_interior)
    (protected * torch.randn_like(protected)).sum().backward()
    frac_c = (raw_c.grad[band > 0] != 0).float().mean().item()
    frac_t = (raw_t.grad[roi_interior > 0] != 0).float().mean().item()
    grads = [p.grad for p in umed.parameters() if p.grad is not None]
    return frac_c, frac_t, grads


def test_clip_kills_gradients():
    """
    bound="clip" (the paper's literal Clip): the clip is active wherever |raw| > eps (band) or |raw| > eps * x_t
    (ROI), and an active clip passes no gradient. Measured here (tiny generators, 16x16, seed 0): at plain
    initialisation only ~6 % of the band pixels and ~1.4 % of the ROI-interior pixels pass gradient (~1.8 % / 1.3 %
    with the default generators at 64x64); with the last layers' weights x1e3 none do and every parameter gradient
    is exactly zero. With "tanh" all band / ROI pixels pass gradient at initialisation.
    """
    frac_c, frac_t, _ = _pass_fraction("clip", 1.0)
    assert frac_c < 0.15 and frac_t < 0.1
    frac_c, frac_t, grads = _pass_fraction("clip", 1e3)
    assert frac_c == 0 and frac_t == 0
    assert all((g == 0).all() for g in grads)
    frac_c, frac_t, _ = _pass_fraction("tanh", 1.0)
    assert frac_c == 1 and frac_t == 1


def test_epsilon_defaults_and_mismatch():
    assert ContourPerturbator(**TINY).epsilon == DEFAULT_EPSILON == 4 / 255
    assert TexturePerturbator(num_res_units=0, **TINY).epsilon == 4 / 255
    umed = UMedPerturbator(ContourPerturbator(**TINY), TexturePerturbator(num_res_units=0, **TINY))
    assert umed.epsilon == 4 / 255
    with pytest.raises(ValueError):
        UMedPerturbator(ContourPerturbator(epsilon=8 / 255, **TINY), TexturePerturbator(num_res_units=0, **TINY))
    with pytest.raises(ValueError):
        UMedPerturbator(ContourPerturbator(**TINY), TexturePerturbator(num_res_units=0, **TINY), epsilon=8 / 255)
    umed8 = UMedPerturbator(
        ContourPerturbator(epsilon=8 / 255, **TINY), TexturePerturbator(epsilon=8 / 255, num_res_units=0, **TINY),
        epsilon=8 / 255,
    )  # fmt: skip
    assert umed8.epsilon == 8 / 255
    umed8.texture.epsilon = 4 / 255
    with pytest.raises(ValueError):
        umed8.epsilon
    with pytest.raises(ValueError):
        ContourPerturbator(bound="sigmoid", **TINY)


def test_default_generators():
    umed = UMedPerturbator(spatial_dims=2, in_channels=3, bound="clip")
    assert isinstance(umed.contour.generator, CDCUNet) and umed.contour.bound == umed.texture.bound == "clip"
    assert umed.contour.generator.channels == (16, 32, 64, 128)
    from monai.networks.nets import UNet

    assert isinstance(umed.texture.generator, UNet)


def test_perturb_fields_on_resized_raw_fields():
    """The writer's path: raw fields at the training size, resized to a native grid, Eq. 4-6 with native masks."""
    umed = make_umed(2, 1, "tanh").eval()
    with torch.no_grad():
        raw_c, raw_t = umed.generator_outputs(torch.rand(1, 1, 16, 16))
        raw_c, raw_t = (F.interpolate(r, size=(20, 28), mode="bilinear") for r in (raw_c, raw_t))
        image = torch.rand(1, 1, 20, 28)
        band, texture, roi_interior = make_priors(1, (20, 28))
        protected, dc, dt = umed.perturb_fields(raw_c, raw_t, image, band, texture, roi_interior)
    assert_bounds(image, band, texture, roi_interior, protected, dc, dt, umed.epsilon)
    torch.testing.assert_close(dc, umed.contour.apply_bound(raw_c, band))


def test_keep_grey_averages_the_channels_of_grey_pixels_only():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 8, 8, generator=g)
    image[1] = image[1, :1].expand(3, -1, -1)  # grey stored as RGB
    delta = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    out = keep_grey(image, delta)
    torch.testing.assert_close(out[1], delta[1].mean(0, keepdim=True).expand(3, -1, -1))
    assert torch.equal(out[0], delta[0]) and torch.equal(out[2], delta[2])
    assert out.abs().max() <= delta.abs().max()
    one = torch.rand(2, 1, 8, 8)
    assert keep_grey(one, one) is one
    colour_only = delta[[0, 2]]
    assert keep_grey(image[[0, 2]], colour_only) is colour_only  # no grey pixel: unchanged
    # a grey frame with a coloured marker (ultrasound calipers, Doppler): grey pixels grey, the marker in colour
    frame = image[1:2].clone()
    frame[:, 0, 2:4, 2:4] += 0.2
    out = keep_grey(frame, delta[1:2])
    marker = torch.zeros(8, 8, dtype=torch.bool)
    marker[2:4, 2:4] = True
    mean = delta[1:2].mean(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(out[..., ~marker], mean[..., ~marker])
    assert torch.equal(out[..., marker], delta[1:2][..., marker])
    # the generators' gradient reaches every channel through the mean
    raw = delta.clone().requires_grad_(True)
    keep_grey(image, raw).sum().backward()
    assert torch.all(raw.grad[1] == 1.0)


def test_protected_grey_image_stays_grey_in_training():
    """UMedPerturbator.forward (the generators' training step) on a batch mixing a grey-as-RGB and a colour image."""
    umed = make_umed(2, 3, "tanh")
    image = torch.rand(2, 3, 16, 16)
    image[0] = image[0, :1].expand(3, -1, -1)
    band, texture, roi_interior = make_priors(2, (16, 16))
    protected, dc, dt = umed(image, band, texture, roi_interior)
    assert_bounds(image, band, texture, roi_interior, protected, dc, dt, umed.epsilon)
    assert torch.equal(protected[0, 0], protected[0, 1]) and torch.equal(protected[0, 0], protected[0, 2])
    assert not torch.equal(protected[1, 0], protected[1, 1])


@pytest.mark.parametrize("parts", ["both", "contour", "texture"])
@pytest.mark.parametrize("texture_bound", ["lbp", "fixed"])
def test_table5_ablation_switches(parts, texture_bound):
    """Table 5 ablations as settings: one generator only, or the texture bound without the LBP map."""
    from monai_umed.protectors import build_perturbator

    torch.manual_seed(0)
    p = build_perturbator(contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,),
                          parts=parts, texture_bound=texture_bound)
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)
    x = torch.rand(2, 1, 16, 16)
    band = torch.zeros(2, 1, 16, 16)
    band[..., 2:5, :] = 1
    interior = torch.zeros(2, 1, 16, 16)
    interior[..., 8:14, :] = 1
    texture = torch.full((2, 1, 16, 16), 0.1)
    protected, d_c, d_t = p(x, band, texture, interior)
    eps = p.epsilon
    assert (d_c.abs().max() > 0) == (parts != "texture") and (d_t.abs().max() > 0) == (parts != "contour")
    bound_t = eps * (1.0 if texture_bound == "fixed" else 0.1) * interior
    assert (d_t.abs() <= bound_t + 1e-9).all()
    if parts != "contour":
        assert (d_t.abs().max() > eps * 0.1 + 1e-6) == (texture_bound == "fixed"), "fixed: the bound is eps, not eps * x_t"
    assert torch.allclose(protected, (x + d_c + d_t).clamp(0, 1))
    with pytest.raises(ValueError, match="parts"):
        build_perturbator(parts="neither")


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("factor", [2, 4])
def test_lowpass_field_keeps_block_means_and_drops_fine_structure(spatial_dims, factor):
    """A field constant on factor-wide blocks keeps its block means; a pattern alternating at every pixel (the
    finest an exploiter's 3x3 filter removes) is averaged away; sizes that are not multiples of factor keep
    their shape; factor 1 is the identity."""
    g = torch.Generator().manual_seed(0)
    size = (12, 10, 8)[:spatial_dims]
    raw = torch.randn(2, 3, *size, generator=g)
    assert lowpass_field(raw, 1) is raw
    out = lowpass_field(raw, factor)
    assert out.shape == raw.shape
    # a ramp along the first axis (12 pixels: whole blocks) comes back exactly away from the borders
    ramp = torch.arange(size[0], dtype=torch.float32).reshape(1, 1, -1, *([1] * (spatial_dims - 1)))
    ramp = ramp.expand(1, 1, *size).contiguous()
    inner = slice(factor // 2, size[0] - factor // 2)
    torch.testing.assert_close(lowpass_field(ramp, factor)[:, :, inner], ramp[:, :, inner])
    constant = torch.full((1, 1, *size), -2.5)
    torch.testing.assert_close(lowpass_field(constant, factor), constant)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in size], indexing="ij")).sum(0)
    alternating = ((grid % 2) * 2 - 1).float()[None, None]
    assert lowpass_field(alternating, 2).abs().max() < 1e-6
    # the fine structure of random noise loses most of its energy
    assert lowpass_field(raw, factor).pow(2).mean() < 0.6 * raw.pow(2).mean()
    with pytest.raises(ValueError, match="lowpass"):
        lowpass_field(raw, 0)
    # highpass_field is the rest: it removes a constant, keeps the finest pattern, and sums with lowpass to raw
    assert highpass_field(raw, 1) is raw
    assert highpass_field(constant, factor).abs().max() < 1e-5
    torch.testing.assert_close(highpass_field(alternating, 2), alternating)
    torch.testing.assert_close(highpass_field(raw, factor) + lowpass_field(raw, factor), raw)


@pytest.mark.parametrize("bound", ["tanh", "clip"])
@pytest.mark.parametrize("option, factor", [("lowpass", 4), ("highpass", 2)])
def test_field_filter_keeps_the_bounds_and_is_saved(bound, option, factor):
    """UMedPerturbator(lowpass=4 / highpass=2): Eq. 4-6 hold exactly, the raw fields are the generators' through
    lowpass_field / highpass_field (coarse: neighbouring values differ less; fine: no block mean left), the saved
    settings rebuild it, and a bad factor is refused."""
    from monai_umed.protectors import UMedProtector, build_perturbator

    field = {"lowpass": lowpass_field, "highpass": highpass_field}[option]
    torch.manual_seed(0)
    kw = dict(contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    p = build_perturbator(bound=bound, **{option: factor}, **kw).eval()
    image = torch.rand(2, 1, 16, 16)
    band, texture, roi_interior = make_priors(2, (16, 16))
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(5.0)
        protected, dc, dt = p(image, band, texture, roi_interior)
        assert_bounds(image, band, texture, roi_interior, protected, dc, dt, p.epsilon)
        raw_c, raw_t = p.generator_outputs(image)
        own_c, own_t = p.contour.generator_output(image), p.texture.generator_output(image)
        torch.testing.assert_close(raw_c, field(own_c, factor))
        torch.testing.assert_close(raw_t, field(own_t, factor))
        if option == "lowpass":
            assert raw_c.diff(dim=-1).abs().mean() < 0.5 * own_c.diff(dim=-1).abs().mean()
        else:
            assert raw_c.mean().abs() < 0.1 * own_c.abs().mean()
    assert f"{option}={factor}" in repr(p)
    prot = UMedProtector(image_size=16, **{option: factor}, **kw)
    assert prot.config()[option] == factor and getattr(prot.perturbator, option) == factor
    assert getattr(UMedProtector(image_size=16, **kw).perturbator, option) == 1
    rebuilt = build_perturbator(**{k: prot.config()[k] for k in prot.perturbator_args})
    assert getattr(rebuilt, option) == factor
    for bad in (0, 2.5, -1, "abc", None):
        with pytest.raises(ValueError, match=f"{option} must be a positive integer"):
            build_perturbator(**{option: bad}, **kw)
    assert getattr(build_perturbator(**{option: "3"}, **kw), option) == 3  # a number given as text (command line)


def test_write_round_trip_is_the_exploiters_view_of_a_written_delta():
    """write_round_trip: bilinear up to the file's size, then MONAI's own anti-aliased Resize back (the exploiter's
    resize, compared with the transform itself); the l-inf bound holds, a pixel-scale pattern loses amplitude that
    a coarser one keeps, and a file no larger than the training size changes nothing."""
    from monai.transforms import Resize

    g = torch.Generator().manual_seed(0)
    delta = (torch.rand(2, 3, 24, 24, generator=g) * 2 - 1) * DEFAULT_EPSILON
    out = write_round_trip(delta, 56)
    assert out.shape == delta.shape and out.abs().max() <= DEFAULT_EPSILON
    up = F.interpolate(delta, size=(56, 56), mode="bilinear", align_corners=False)
    reference = torch.stack([torch.as_tensor(Resize((24, 24), mode="bilinear", anti_aliasing=True)(u)) for u in up])
    torch.testing.assert_close(out, reference.float(), atol=1e-6, rtol=1e-4)
    assert write_round_trip(delta, 24) is delta and write_round_trip(delta, (20, 24)) is delta
    rows = torch.ones(1, 1, 24, 24)
    rows[..., 1::2, :] = -1  # alternating at every pixel
    stripes = torch.ones(1, 1, 24, 24)
    stripes[..., 2::4, :] = -1
    stripes[..., 3::4, :] = -1  # period 4
    inner = (slice(None), slice(None), slice(4, 20), slice(4, 20))
    fine, coarse = write_round_trip(rows, 56)[inner].abs().mean(), write_round_trip(stripes, 56)[inner].abs().mean()
    assert fine < 0.6 and coarse > fine + 0.15


def test_file_size_is_a_training_view_only():
    """UMedPerturbator(file_size=...): forward (training) returns the round-tripped deltas within epsilon;
    perturb_fields (the writer's path) is unchanged; the setting is saved with the protector; bad sizes refused."""
    from monai_umed.protectors import UMedProtector, build_perturbator

    torch.manual_seed(0)
    kw = dict(contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    plain_p = build_perturbator(**kw).eval()
    viewed = build_perturbator(file_size=40, **kw).eval()
    viewed.load_state_dict(plain_p.state_dict())
    image = torch.rand(2, 1, 16, 16)
    band, texture, roi_interior = make_priors(2, (16, 16))
    with torch.no_grad():
        for param in plain_p.parameters():
            param.mul_(5.0)
        viewed.load_state_dict(plain_p.state_dict())
        _, dc0, dt0 = plain_p(image, band, texture, roi_interior)
        protected, dc, dt = viewed(image, band, texture, roi_interior)
        torch.testing.assert_close(dc, write_round_trip(dc0, 40))
        torch.testing.assert_close(dt, write_round_trip(dt0, 40))
        torch.testing.assert_close(protected, compose_protected(image, dc, dt))
        assert dc.abs().max() <= viewed.epsilon and dt.abs().max() <= viewed.epsilon
        raw_c, raw_t = viewed.generator_outputs(image)
        a = viewed.perturb_fields(raw_c, raw_t, image, band, texture, roi_interior)
        b = plain_p.perturb_fields(raw_c, raw_t, image, band, texture, roi_interior)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert UMedProtector(image_size=16, file_size=[40, 48], **kw).config()["file_size"] == [40, 48]
    assert UMedProtector(image_size=16, **kw).config()["file_size"] is None
    for bad in (0, "abc", [40, -2], [40, None]):
        with pytest.raises(ValueError, match="file_size must be a positive integer"):
            build_perturbator(file_size=bad, **kw)
    assert build_perturbator(file_size=(40, 48), **kw).file_size == (40, 48)


def _resize_matrix(native: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The anti-aliased resize as an explicit matrix (one column per native pixel), for a reference solver."""
    from monai_umed.defenses.differentiable import antialiased_resize

    eye = torch.eye(native[0] * native[1], dtype=torch.float64).reshape(-1, 1, *native)
    return antialiased_resize(eye.float(), size).reshape(eye.shape[0], -1).T.double()


@pytest.mark.parametrize("native, size", [((13, 11), (5, 6)), ((9, 9), (4, 4))])
def test_fit_training_view_matches_a_bounded_least_squares_solver(native, size):
    """fit_training_view solves min ||R d - target||^2 over the box: its objective reaches SciPy's ``lsq_linear``
    optimum (with R the explicit matrix of MONAI's anti-aliased resize), it stays inside the box exactly, it is
    never worse than its start, and where the box is all zero nothing moves."""
    from scipy.optimize import lsq_linear

    g = torch.Generator().manual_seed(0)
    bound = torch.rand(1, 1, *native, generator=g) * DEFAULT_EPSILON
    bound[..., : native[0] // 3, :] = 0  # outside the band and ROI
    target = (torch.rand(1, 1, *size, generator=g) * 2 - 1) * DEFAULT_EPSILON
    start = torch.zeros(1, 1, *native)
    got = fit_training_view(start, target, -bound, bound, steps=400)
    assert bool((got.abs() <= bound).all()) and bool((got[..., : native[0] // 3, :] == 0).all())
    matrix = _resize_matrix(native, size)
    b = bound.flatten().double().numpy()
    ref = lsq_linear(matrix.numpy(), target.flatten().double().numpy(), bounds=(-b, b + 1e-300), tol=1e-12)
    objective = float(((matrix @ got.flatten().double()) - target.flatten().double()).pow(2).sum())
    assert objective <= 2 * ref.cost + 1e-12 + 1e-3 * float(target.double().pow(2).sum())
    assert objective < float(target.double().pow(2).sum())  # zero start: the residual is the whole target


def test_fit_training_view_reaches_a_feasible_target_and_keeps_grey_pixels_grey():
    """A target that some feasible delta produces is reproduced (residual near 0); grey pixels get the same
    value in every channel; [lower, upper] (here Eq. 6's [0, 1] on top of a per-pixel bound) holds exactly;
    steps=0 only projects; bad arguments are refused."""
    from monai_umed.defenses.differentiable import antialiased_resize

    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 40, 40, generator=g)
    image[..., :20, :] = image[:, :1, :20, :]
    grey = (image == image[:, :1]).all(dim=1, keepdim=True)
    bound = torch.full((1, 1, 40, 40), DEFAULT_EPSILON)
    lower, upper = torch.maximum(-bound, -image), torch.minimum(bound, 1 - image)
    truth = torch.minimum(torch.maximum((torch.rand(1, 3, 40, 40, generator=g) * 2 - 1) * DEFAULT_EPSILON, lower), upper)
    truth = keep_grey(image, truth)
    target = antialiased_resize(truth, (16, 16))
    got = fit_training_view(torch.zeros_like(image), target, lower, upper, grey, steps=300)
    residual = antialiased_resize(got, (16, 16)) - target
    assert float(residual.norm() / target.norm()) < 0.02
    assert bool((got >= lower).all() and (got <= upper).all())
    assert torch.equal(got[:, 0][grey[:, 0]], got[:, 1][grey[:, 0]]) and torch.equal(got[:, 0][grey[:, 0]], got[:, 2][grey[:, 0]])
    wild = torch.full_like(image, 1.0)
    projected = fit_training_view(wild, target, lower, upper, grey, steps=0)
    assert torch.equal(projected, torch.minimum(torch.maximum(keep_grey(image, wild), lower), upper))
    with pytest.raises(ValueError, match="steps"):
        fit_training_view(wild, target, lower, upper, steps=-1)
    with pytest.raises(ValueError, match="does not match"):
        fit_training_view(wild, target[:, :1], lower, upper)
    with pytest.raises(ValueError, match="lower must not exceed upper"):
        fit_training_view(wild, target, upper + 1, upper)


@pytest.mark.parametrize("parts, texture_bound_mode", [("both", "lbp"), ("contour", "lbp"), ("texture", "fixed")])
def test_pixel_bound_is_the_bound_perturb_fields_keeps(parts, texture_bound_mode):
    """UMedPerturbator.pixel_bound: epsilon on the band, epsilon * x_t on the interior (1 with the fixed texture
    bound), 0 for a part switched off; perturb_fields' delta never exceeds it and reaches close to it for a large
    raw field."""
    from monai_umed.protectors import build_perturbator

    kw = dict(contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    p = build_perturbator(parts=parts, texture_bound=texture_bound_mode, **kw)
    band, texture, interior = make_priors(2, (16, 16))
    bound = p.pixel_bound(band, texture, interior)
    x_t = texture if texture_bound_mode == "lbp" else torch.ones_like(texture)
    expected = (DEFAULT_EPSILON * band if parts != "texture" else 0) + (
        DEFAULT_EPSILON * x_t * interior if parts != "contour" else 0)
    torch.testing.assert_close(bound, expected)
    image = torch.full((2, 1, 16, 16), 0.5)
    big = torch.full((2, 1, 16, 16), 50.0)
    _, dc, dt = p.perturb_fields(big, big, image, band, texture, interior)
    assert bool(((dc + dt).abs() <= bound + 1e-7).all())
    torch.testing.assert_close((dc + dt).abs(), bound, atol=1e-6, rtol=1e-5)

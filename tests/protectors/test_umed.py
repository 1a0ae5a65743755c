"""UMedProtector: the native-grid perturbation equals Eq. 4-6 computed on the whole image with the public pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_umed.protectors import UMedProtector, native_band_width
from monai_umed.transforms import ContourBand, LBPTextureMap


def _reference(p: UMedProtector, x: torch.Tensor, y: torch.Tensor):
    """Eq. 4-6 on the full native grid: generators at the training size, raw fields resized, whole-image priors."""
    native = tuple(x.shape[1:])
    small = F.interpolate(x[None], size=p.image_size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    raw_c, raw_t = p.perturbator.generator_outputs(small)
    raw_c = F.interpolate(raw_c, size=native, mode="bilinear", align_corners=False)
    raw_t = F.interpolate(raw_t, size=native, mode="bilinear", align_corners=False)
    width = native_band_width(p.priors.band_width, p.image_size, native)
    masks = torch.as_tensor(ContourBand(width, p.priors.band_side)((y > 0).float())).as_subclass(torch.Tensor)
    band, interior = masks[0:1], masks[1:2]
    texture = torch.as_tensor(LBPTextureMap(p.priors.lbp_points, p.priors.lbp_radius, p.priors.lbp_method,
                                            p.priors.lbp_normalize)(x)).as_subclass(torch.Tensor)
    protected, _, _ = p.perturbator.perturb_fields(raw_c, raw_t, x[None], band[None], texture[None], interior[None])
    return protected[0] - x, (band + interior)[0] > 0


def _labels(h: int, w: int) -> list[torch.Tensor]:
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h * 0.4) ** 2 + (xx - w * 0.6) ** 2 < (min(h, w) / 5) ** 2
    border = (yy < h // 3) & (xx < w // 4)  # touches two image borders
    two = disc | ((yy - h * 0.8) ** 2 + (xx - w * 0.2) ** 2 < 16)
    return [torch.as_tensor(m[None].astype(np.float32)) for m in (disc, border, two)]


@pytest.mark.parametrize("normalize", ["max_code", "minmax"])
@pytest.mark.parametrize(
    "channels, shape, side, width, radius",
    [(1, (64, 80), "both", 2, 2.0), (3, (70, 50), "inside", 2, 1.0), (1, (40, 40), "outside", 1, 3.0)],
)
def test_native_delta_equals_the_whole_image_reference(channels, shape, side, width, radius, normalize):
    torch.manual_seed(0)
    p = UMedProtector(in_channels=channels, image_size=16, contour_channels=(4, 8), contour_strides=(2,),
                      texture_channels=(4, 8), texture_strides=(2,), band_width=width, band_side=side,
                      lbp_radius=radius, lbp_points=8, lbp_normalize=normalize).eval()
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)
    x = torch.rand(channels, *shape, generator=torch.Generator().manual_seed(1))
    labels = _labels(*shape)
    got = p.native_delta_batch([x] * len(labels), labels, ["a", "b", "c"])
    for y, (delta, allowed) in zip(labels, got):
        ref_delta, ref_allowed = _reference(p, x, y)
        assert torch.equal(allowed, ref_allowed)
        assert torch.allclose(delta, ref_delta, atol=1e-6), float((delta - ref_delta).abs().max())
        assert delta.abs().max() > 0


def test_no_foreground_changes_nothing():
    p = UMedProtector(image_size=16, contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8),
                      texture_strides=(2,))
    delta, allowed = p.native_delta(torch.rand(1, 32, 32), torch.zeros(1, 32, 32), "empty")
    assert not delta.any() and not allowed.any()


def test_bad_shapes_are_named():
    p = UMedProtector(in_channels=3, image_size=16, contour_channels=(4, 8), contour_strides=(2,),
                      texture_channels=(4, 8), texture_strides=(2,))
    with pytest.raises(ValueError, match=r"\[3, \*spatial\]"):
        p.native_delta(torch.rand(1, 32, 32), torch.zeros(1, 32, 32), "grey")
    with pytest.raises(ValueError, match="does not match"):
        p.native_delta(torch.rand(3, 32, 32), torch.zeros(1, 16, 32), "mask")


def test_native_band_width_scales_linearly_in_2d_and_3d():
    assert native_band_width(3, (96, 96), (192, 192)) == 6
    assert native_band_width(3, (32, 32, 32), (64, 64, 64)) == 6  # the cube root of the voxel ratio
    assert native_band_width(3, (32, 32, 32), (20, 24, 18)) == 2
    assert native_band_width(1, (96, 96), (10, 10)) == 1  # never below one pixel


def test_native_volume_equals_eq_4_6_with_whole_volume_fields():
    """``native`` (volumes): the generators run on the volume's own grid (one pass over the volume padded to
    multiples of 16), Eq. 4-6 with the native band (width unscaled), interior and per-slice LBP map."""
    from monai.inferers import SlidingWindowInferer

    torch.manual_seed(0)
    p = UMedProtector(in_channels=1, image_size=16, spatial_dims=3, native=True, contour_channels=(4, 8),
                      contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,), texture_res_units=0).eval()
    x = torch.rand(1, 13, 15, 11)
    zz, yy, xx = np.mgrid[:13, :15, :11]
    y = torch.as_tensor(((zz - 6) ** 2 + (yy - 7) ** 2 + (xx - 5) ** 2 <= 12)[None].astype(np.float32))
    delta, allowed = p.native_delta(x, y, "v")
    with torch.no_grad():
        inferer = SlidingWindowInferer(roi_size=(16, 16, 16), overlap=0.25, mode="gaussian")
        fields = inferer(x[None], lambda t: torch.cat(p.perturbator.generator_outputs(t), 1))
        masks = torch.as_tensor(ContourBand(3, p.priors.band_side)((y > 0).float())).as_subclass(torch.Tensor)
        band, interior = masks[0:1], masks[1:2]
        texture = torch.as_tensor(LBPTextureMap()(x)).as_subclass(torch.Tensor)
        protected, _, _ = p.perturbator.perturb_fields(fields[:, :1], fields[:, 1:], x[None], band[None],
                                                       texture[None], interior[None])
    torch.testing.assert_close(delta, protected[0] - x, atol=1e-6, rtol=0)
    assert torch.equal(allowed, (band + interior)[0] > 0)
    assert delta.abs().max() <= 4 / 255 + 1e-7 and not delta[:, ~allowed].any()
    assert p.config()["native"] is True


def test_native_volume_larger_than_a_patch_is_one_pass():
    """A volume larger than a training patch still goes through the generators in one pass (the padded whole
    volume), not window by window; beyond WHOLE_PASS_FACTOR patches the sliding window takes over."""
    torch.manual_seed(0)
    p = UMedProtector(in_channels=1, image_size=16, spatial_dims=3, native=True, contour_channels=(4, 8),
                      contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,), texture_res_units=0).eval()
    x = torch.rand(1, 30, 20, 26)
    with torch.no_grad():
        (raw_c, raw_t), = p._native_fields([x])
        padded = F.pad(x[None], (3, 3, 6, 6, 1, 1))  # symmetric padding to 32 x 32 x 32
        whole_c, whole_t = p.perturbator.generator_outputs(padded)
    torch.testing.assert_close(raw_c, whole_c[:, :, 1:31, 6:26, 3:29])
    torch.testing.assert_close(raw_t, whole_t[:, :, 1:31, 6:26, 3:29])
    p.WHOLE_PASS_FACTOR = 1  # now too large for one pass: sliding window, a different result
    with torch.no_grad():
        (sw_c, _), = p._native_fields([x])
    assert sw_c.shape == raw_c.shape and not torch.allclose(sw_c, raw_c)


def test_grey_image_among_colour_ones_gets_a_grey_perturbation():
    """A grey image stored as RGB keeps equal channels after protection (a 3-channel protector: the dataset also
    holds colour images), as do the grey pixels of a grey frame with a coloured marker; a colour image of the same
    batch, and the marker, keep a colour perturbation."""
    torch.manual_seed(0)
    p = UMedProtector(in_channels=3, image_size=16, contour_channels=(4, 8), contour_strides=(2,),
                      texture_channels=(4, 8), texture_strides=(2,)).eval()
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)
    grey = torch.rand(1, 48, 40, generator=torch.Generator().manual_seed(1)).expand(3, -1, -1).clone()
    colour = torch.rand(3, 48, 40, generator=torch.Generator().manual_seed(2))
    y = _labels(48, 40)[0]
    marked = grey.clone()  # a grey frame with a coloured marker inside the lesion (calipers, Doppler)
    marked[0, 14:24, 20:28] = (marked[0, 14:24, 20:28] + 0.3).clamp(max=1.0)
    marker = torch.zeros(48, 40, dtype=torch.bool)
    marker[14:24, 20:28] = marked[0, 14:24, 20:28] != marked[1, 14:24, 20:28]
    (d_grey, _), (d_colour, _), (d_marked, _) = p.native_delta_batch(
        [grey, colour, marked], [y, y, y], ["grey", "colour", "marked"])
    assert d_grey.abs().max() > 0
    assert torch.equal(d_grey[0], d_grey[1]) and torch.equal(d_grey[0], d_grey[2])
    assert not torch.equal(d_colour[0], d_colour[1])
    assert d_grey.abs().max() <= p.perturbator.epsilon + 1e-7
    assert d_marked[:, ~marker].abs().max() > 0
    grey_part = d_marked[:, ~marker]
    assert torch.equal(grey_part[0], grey_part[1]) and torch.equal(grey_part[0], grey_part[2])
    assert not torch.equal(d_marked[0, marker], d_marked[1, marker])


def _view_target(p: UMedProtector, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The perturbation the generators give the training view of ``(x, y)`` (the protect job's pipeline)."""
    view = p.transforms()({"image": x, "label": y})
    small = torch.as_tensor(view["image"]).as_subclass(torch.Tensor)[None]
    priors = [torch.as_tensor(view[k]).as_subclass(torch.Tensor)[None] for k in ("contour_band", "texture_map", "roi_interior")]
    protected, _, _ = p.perturbator(small, *priors)
    return protected - small


@pytest.mark.parametrize("channels, shape", [(3, (60, 52)), (1, (48, 48))])
def test_view_fit_brings_the_training_view_of_the_file_to_the_trained_perturbation(channels, shape):
    """view_fit: the file's delta read back at the training size (MONAI's anti-aliased resize, as the protect job
    and an exploiter read it) is much nearer the perturbation of the training view than the resized-fields delta,
    while Eq. 4-5's per-pixel bounds on the native priors, Eq. 6's [0, 1], the changed-pixel mask and grey pixels
    all hold as without it; the setting is saved; a file of the training size is left as it was."""
    from monai_umed.defenses.differentiable import antialiased_resize

    kw = dict(in_channels=channels, image_size=16, contour_channels=(4, 8), contour_strides=(2,),
              texture_channels=(4, 8), texture_strides=(2,))
    torch.manual_seed(0)
    plain_p = UMedProtector(**kw).eval()
    fitted_p = UMedProtector(view_fit=30, **kw).eval()
    with torch.no_grad():
        for param in plain_p.parameters():
            param.mul_(3.0)
    fitted_p.load_state_dict(plain_p.state_dict())
    x = torch.rand(channels, *shape, generator=torch.Generator().manual_seed(1))
    if channels > 1:
        x[:, : shape[0] // 2] = x[:1, : shape[0] // 2]  # a grey part
    y = _labels(*shape)[0]
    with torch.no_grad():
        (d0, a0), = plain_p.native_delta_batch([x], [y], ["k"])
        (d1, a1), = fitted_p.native_delta_batch([x], [y], ["k"])
        target = _view_target(plain_p, x, y)[0]
    assert torch.equal(a0, a1)
    err0 = float((antialiased_resize(d0[None], (16, 16))[0] - target).norm())
    err1 = float((antialiased_resize(d1[None], (16, 16))[0] - target).norm())
    assert err1 < 0.9 * err0, (err0, err1)
    # the per-pixel bounds of Eq. 4-5 on the native priors (the reference's band width and LBP map)
    width = native_band_width(plain_p.priors.band_width, plain_p.image_size, shape)
    masks = torch.as_tensor(ContourBand(width, plain_p.priors.band_side)((y > 0).float())).as_subclass(torch.Tensor)
    texture = torch.as_tensor(LBPTextureMap(plain_p.priors.lbp_points, plain_p.priors.lbp_radius,
                                            plain_p.priors.lbp_method, plain_p.priors.lbp_normalize)(x))
    bound = plain_p.perturbator.pixel_bound(masks[0:1], texture.as_subclass(torch.Tensor), masks[1:2])
    assert bool((d1.abs() <= bound + 1e-7).all()) and bool((d1.abs().amax(0)[~a1] == 0).all())
    assert bool(((x + d1) >= -1e-7).all() and ((x + d1) <= 1 + 1e-7).all())
    if channels > 1:
        grey = (x == x[:1]).all(0)
        assert torch.equal(d1[0][grey], d1[1][grey]) and torch.equal(d1[0][grey], d1[2][grey])
    assert fitted_p.config()["view_fit"] == 30 and plain_p.config()["view_fit"] == 0
    assert UMedProtector(**fitted_p.config()).view_fit == 30
    same = torch.rand(channels, 16, 16, generator=torch.Generator().manual_seed(2))
    ys = _labels(16, 16)[0]
    with torch.no_grad():
        assert torch.equal(fitted_p.native_delta(same, ys, "s")[0], plain_p.native_delta(same, ys, "s")[0])
    for bad in (-1, "abc", 2.5, True, None):
        with pytest.raises(ValueError, match="view_fit must be"):
            UMedProtector(view_fit=bad, **kw)
    with pytest.raises(ValueError, match="native protector"):
        UMedProtector(view_fit=5, native=True, **kw)

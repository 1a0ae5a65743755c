# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests of monai_umed.transforms.texture: LBP vs skimage, grey-scale invariance, LBPTextureMap(d)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from skimage.color import rgb2gray
from skimage.feature import local_binary_pattern as sk_lbp

from monai_umed.transforms import (
    RGB_LUMINANCE_WEIGHTS,
    LBPTextureMap,
    LBPTextureMapd,
    lbp_max_code,
    local_binary_pattern,
    to_luminance,
)

METHODS = ["default", "ror", "uniform", "nri_uniform", "var"]
POINTS_RADII = [(8, 1.0), (16, 2.0), (8, 2.0)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _skimage(img: np.ndarray, p: int, r: float, method: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns on float input
        return sk_lbp(img, p, r, method)


def _agreement(ref: np.ndarray, out: np.ndarray) -> float:
    return float(((ref == out) | (np.isnan(ref) & np.isnan(out))).mean())


def _interior(shape, radius: float) -> np.ndarray:
    e = math.ceil(radius)
    mask = np.zeros(shape, dtype=bool)
    mask[..., e:-e, e:-e] = True
    return mask


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p,r", POINTS_RADII)
@pytest.mark.parametrize("levels", [256, 4])
def test_matches_skimage_on_random_integer_images(method, p, r, levels):
    """Raw codes equal skimage's, borders included (levels=4 gives many ties); measured: 100 % (bit-exact)."""
    rng = np.random.default_rng(p * 10 + int(r) + levels)
    imgs = rng.integers(0, levels, size=(3, 23, 29)).astype(np.float64)
    out = local_binary_pattern(torch.from_numpy(imgs), p, r, method).numpy()  # batched
    assert out.shape == imgs.shape and out.dtype == np.float64
    border = ~_interior(imgs.shape[1:], r)
    for img, code in zip(imgs, out):
        ref = _skimage(img, p, r, method)
        assert _agreement(ref, code) >= 0.999
        assert _agreement(ref[border], code[border]) >= 0.999


@pytest.mark.parametrize("method", ["default", "uniform"])
@pytest.mark.parametrize("radius", [1.1, 1.5, 3.0])
def test_matches_skimage_other_radii_and_leading_dims(method, radius):
    rng = np.random.default_rng(0)
    imgs = rng.random((2, 2, 17, 19))
    out = local_binary_pattern(torch.from_numpy(imgs), 12, radius, method).numpy()
    for idx in np.ndindex(2, 2):
        assert _agreement(_skimage(imgs[idx], 12, radius, method), out[idx]) >= 0.999


def _real_grey_images(shared_data, dataset: str, count: int = 2) -> list[np.ndarray]:
    from PIL import Image

    files = sorted((shared_data / dataset / "images").glob("*.png"))[:count]
    if not files:
        pytest.skip(f"no images in {dataset}")
    greys = []
    for f in files:
        arr = np.asarray(Image.open(f)).astype(np.float64) / 255.0
        if arr.ndim == 2:
            greys.append(arr)
        elif dataset.startswith("busi"):
            greys.append(arr[..., 0])  # BUSI is grey stored as RGB
        else:
            w = np.asarray(RGB_LUMINANCE_WEIGHTS)
            greys.append(arr[..., 0] * w[0] + arr[..., 1] * w[1] + arr[..., 2] * w[2])
    return greys


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", ["busi_224", "cvc_clinicdb_224"])
@pytest.mark.parametrize("method", ["default", "ror", "uniform", "var"])
def test_matches_skimage_on_real_images(shared_data, dataset, method):
    """Function and transform (normalize="none") reproduce skimage on the same grey image; measured: 100 %."""
    for grey in _real_grey_images(shared_data, dataset):
        for p, r in [(8, 1.0), (16, 2.0)]:
            ref = _skimage(grey, p, r, method)
            out = local_binary_pattern(torch.from_numpy(grey), p, r, method).numpy()
            assert _agreement(ref, out) >= 0.999
            tmap = LBPTextureMap(p, r, method, normalize="none")(torch.from_numpy(grey[None])).numpy()[0]
            if method == "var":  # float32 output
                np.testing.assert_allclose(tmap, ref.astype(np.float32), rtol=1e-6, equal_nan=True)
            else:
                assert _agreement(ref, tmap) >= 0.999


@pytest.mark.shared_data
def test_luminance_matches_rgb2gray(shared_data):
    from PIL import Image

    f = sorted((shared_data / "cvc_clinicdb_224" / "images").glob("*.png"))[0]
    rgb = np.asarray(Image.open(f))
    grey = to_luminance(torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0))
    assert grey.shape == (1, *rgb.shape[:2])
    np.testing.assert_allclose(grey[0].numpy(), rgb2gray(rgb), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- grey-scale invariance (see module docstring)

GREY_METHODS = ["default", "ror", "uniform", "nri_uniform"]


@pytest.mark.parametrize("method", GREY_METHODS)
@pytest.mark.parametrize("p,r", POINTS_RADII)
@pytest.mark.parametrize("a,b", [(0.37, 0.2), (3.0, -1.0), (1.0, 0.5)])
def test_affine_invariance_interior(method, p, r, a, b):
    """a*x + b (a > 0) leaves every interior code unchanged (tie-free continuous image)."""
    img = torch.from_numpy(np.random.default_rng(1).random((2, 24, 24)))
    c0 = local_binary_pattern(img, p, r, method)
    c1 = local_binary_pattern(a * img + b, p, r, method)
    inner = torch.from_numpy(_interior(img.shape, r))
    assert torch.equal(c0[inner], c1[inner])


@pytest.mark.parametrize("p,r", POINTS_RADII)
def test_affine_border_rule(p, r):
    """Outside zero is not shifted: with b > 0 border bits only switch 1 -> 0, with b < 0 only 0 -> 1."""
    img = torch.from_numpy(np.random.default_rng(2).random((24, 24)))
    border = ~torch.from_numpy(_interior(img.shape, r))
    c0 = local_binary_pattern(img, p, r, "default").long()
    for b, sign in [(0.5, 1), (-0.5, -1)]:
        c1 = local_binary_pattern(0.8 * img + b, p, r, "default").long()
        assert not torch.equal(c0[border], c1[border])  # the border is affected
        gained, lost = c1 & ~c0, c0 & ~c1
        assert (gained if sign > 0 else lost).eq(0).all()


@pytest.mark.parametrize("method", GREY_METHODS)
@pytest.mark.parametrize("p,r", POINTS_RADII)
def test_scaling_invariance_everywhere(method, p, r):
    """b = 0: the outside stays 0, so every code (border included) is unchanged; a power of 2 is bit-exact even
    with ties (integer image, few levels)."""
    ints = torch.from_numpy(np.random.default_rng(3).integers(0, 4, (20, 20)).astype(np.float64))
    assert torch.equal(local_binary_pattern(ints, p, r, method), local_binary_pattern(0.25 * ints, p, r, method))
    cont = torch.from_numpy(np.random.default_rng(4).random((20, 20)))
    assert torch.equal(local_binary_pattern(cont, p, r, method), local_binary_pattern(0.37 * cont, p, r, method))


def test_nonlinear_monotonic_change():
    """Integer-position samples (P=4, R=1) keep their order under x**2; interpolated diagonals (P=8) do not."""
    img = torch.from_numpy(np.random.default_rng(5).random((24, 24)))
    assert torch.equal(local_binary_pattern(img, 4, 1, "default"), local_binary_pattern(img**2, 4, 1, "default"))
    inner = torch.from_numpy(_interior(img.shape, 1))
    c0, c1 = local_binary_pattern(img, 8, 1, "default"), local_binary_pattern(img**2, 8, 1, "default")
    assert (c0[inner] != c1[inner]).any()
    changed_bits = (c0.long() ^ c1.long())[inner]
    assert (changed_bits & 0b01010101).eq(0).all()  # only diagonal bits (1, 3, 5, 7) change


# ---------------------------------------------------------------- transform


@pytest.mark.parametrize("method", ["default", "ror", "uniform", "nri_uniform"])
@pytest.mark.parametrize("p,r", [(8, 1.0), (16, 2.0)])
def test_texture_map_max_code(method, p, r):
    img = torch.rand(1, 16, 18)
    out = LBPTextureMap(p, r, method)(img)
    assert out.shape == (1, 16, 18) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    codes = local_binary_pattern(img[0], p, r, method)
    torch.testing.assert_close(out[0], (codes / lbp_max_code(p, method)).float())


@pytest.mark.parametrize("method", ["uniform", "var"])
def test_texture_map_minmax(method):
    out = LBPTextureMap(8, 1, method, normalize="minmax")(np.random.default_rng(0).random((1, 16, 16)))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 16, 16)
    assert torch.isfinite(out).all()
    assert out.min() == 0 and out.max() == 1
    flat = LBPTextureMap(8, 1, method, normalize="minmax")(torch.zeros(1, 8, 8))
    assert torch.equal(flat, torch.zeros(1, 8, 8))


def test_texture_map_3d_per_slice():
    vol = torch.rand(1, 3, 12, 14)
    out = LBPTextureMap(slice_axis=0)(vol)
    assert out.shape == (1, 3, 12, 14)
    for d in range(3):
        torch.testing.assert_close(out[:, d], LBPTextureMap()(vol[:, d]))
    last = LBPTextureMap()(vol)  # no affine: slices across the last axis
    for d in range(14):
        torch.testing.assert_close(last[..., d], LBPTextureMap()(vol[..., d]))


def test_texture_map_channels():
    rgb = torch.rand(3, 12, 12, dtype=torch.float64)
    grey = sum(w * rgb[c] for c, w in enumerate(RGB_LUMINANCE_WEIGHTS))[None]
    torch.testing.assert_close(LBPTextureMap()(rgb), LBPTextureMap()(grey))
    two = torch.rand(2, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(LBPTextureMap()(two), LBPTextureMap()(two.mean(0, keepdim=True)))
    weighted = LBPTextureMap(channel_weights=(0.0, 1.0, 0.0))(rgb)
    torch.testing.assert_close(weighted, LBPTextureMap()(rgb[1:2]))
    with pytest.raises(ValueError):
        LBPTextureMap(channel_weights=(1.0, 0.0))(rgb)


@pytest.mark.parametrize("device", DEVICES)
def test_texture_map_device_and_meta(device):
    img = MetaTensor(torch.rand(1, 10, 10), affine=torch.eye(4) * 2, meta={"filename_or_obj": "x.png"}).to(device)
    out = LBPTextureMap()(img)
    assert out.device == img.device
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png"
    torch.testing.assert_close(out.affine, img.affine)
    codes = local_binary_pattern(img.as_tensor()[0], 8, 1, "uniform")
    assert codes.device == img.device


def test_texture_mapd_compose_keeps_meta():
    img = MetaTensor(torch.rand(3, 12, 12), meta={"filename_or_obj": "a.png"})
    data = {"image": img, "label": torch.zeros(1, 12, 12)}
    out = Compose([LBPTextureMapd(keys="image")])(data)
    assert set(out) == {"image", "label", "texture_map"}
    assert out["texture_map"].shape == (1, 12, 12)
    assert isinstance(out["texture_map"], MetaTensor) and out["texture_map"].meta["filename_or_obj"] == "a.png"
    torch.testing.assert_close(out["texture_map"], LBPTextureMap()(img))
    out2 = LBPTextureMapd(keys=["image", "other"], texture_key="t", allow_missing_keys=True)(data)
    assert "image_t" in out2 and "other_t" not in out2


def test_invalid_arguments():
    with pytest.raises(ValueError):
        LBPTextureMap(method="bogus")
    with pytest.raises(ValueError):
        LBPTextureMap(method="var")  # no max code
    with pytest.raises(ValueError):
        LBPTextureMap(normalize="bogus")
    with pytest.raises(ValueError):
        local_binary_pattern(torch.rand(8, 8), 32, 2, "default")
    with pytest.raises(ValueError):
        LBPTextureMap()(torch.rand(8, 8))


# ------------------------------------------------------------------------------------------ volumes
@pytest.mark.parametrize("spacing, expected_axis", [((1.0, 1.0, 1.0), 2), ((3.0, 1.0, 1.0), 0), ((1.0, 2.5, 1.0), 1)])
def test_volume_lbp_per_slice_across_the_coarsest_axis(spacing, expected_axis):
    """A volume's texture map is scikit-image's LBP of each 2D slice taken across the axis of lowest resolution
    (the last axis when isotropic), as in the paper's 2D descriptor."""
    from monai.data import MetaTensor
    from skimage.feature import local_binary_pattern as sk_lbp

    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (1, 10, 12, 9)).astype(np.float32) / 255
    img = MetaTensor(torch.as_tensor(vol), affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))
    tm = LBPTextureMap(normalize="none")
    assert tm.volume_slice_axis(img) == expected_axis
    out = tm(img)
    assert tuple(out.shape) == (1, 10, 12, 9)
    grey = np.moveaxis(vol[0], expected_axis, 0)
    expected = np.stack([sk_lbp(s, 8, 1.0, "uniform") for s in grey])
    np.testing.assert_array_equal(np.moveaxis(np.asarray(out[0]), expected_axis, 0), expected)
    # no metadata: the last spatial axis; an explicit axis wins
    assert LBPTextureMap().volume_slice_axis(torch.as_tensor(vol)) == 2
    assert LBPTextureMap(slice_axis=1).volume_slice_axis(img) == 1
    with pytest.raises(ValueError, match="slice_axis"):
        LBPTextureMap(slice_axis=3)

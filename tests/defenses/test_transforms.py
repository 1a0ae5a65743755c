# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.defenses.transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from monai.data import MetaTensor

from monai_umed.defenses.transforms import (
    AUGMENT_PARTS,
    GaussianBlurDefense,
    GaussianBlurDefensed,
    GrayscaleDefense,
    GrayscaleDefensed,
    JPEGDefense,
    JPEGDefensed,
    MedianDefense,
    MedianDefensed,
    RandChannelShuffled,
    ResampleDefense,
    ResampleDefensed,
    gaussian_kernel_1d,
    get_defense_transform,
    parse_augment_parts,
)


def _smooth_image(channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """A natural-ish [0, 1] image: smooth gradients plus mild noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    chans = [0.5 + 0.3 * torch.sin(6 * xx + c) * torch.cos(4 * yy - c) for c in range(channels)]
    return (torch.stack(chans) + 0.05 * torch.rand(channels, size, size, generator=g)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------- Gaussian blur
def test_blur_kernel_values():
    k = gaussian_kernel_1d(3, 0.8, dtype=torch.float64)
    ref = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / 0.8) ** 2)
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-12)
    assert GaussianBlurDefense(sigma=None).sigma == pytest.approx(0.8)


@pytest.mark.parametrize("channels,kernel_size,sigma", [(1, 3, 0.8), (3, 3, 0.8), (2, 5, 1.3)])
def test_blur_matches_scipy_reference(channels, kernel_size, sigma):
    img = torch.rand(channels, 13, 17, dtype=torch.float64)
    out = GaussianBlurDefense(kernel_size=kernel_size, sigma=sigma)(img)
    k1 = gaussian_kernel_1d(kernel_size, sigma, dtype=torch.float64).numpy()
    k2 = np.outer(k1, k1)
    # torch "reflect" (d c b | a b c d) is scipy's "mirror" mode
    ref = np.stack([ndimage.convolve(img[c].numpy(), k2, mode="mirror") for c in range(channels)])
    assert out.shape == img.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_blur_constant_image_and_range():
    const = torch.full((3, 10, 10), 0.37)
    np.testing.assert_allclose(GaussianBlurDefense()(const).numpy(), 0.37, atol=1e-6)
    out = GaussianBlurDefense()(torch.rand(1, 16, 16))
    assert out.min() >= 0 and out.max() <= 1


def test_blur_numpy_metatensor_and_3d():
    arr = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    out = GaussianBlurDefense()(arr)  # numpy in -> tensor out, as MONAI transforms do
    assert isinstance(out, torch.Tensor) and out.shape == arr.shape and out.dtype == torch.float32
    mt = MetaTensor(torch.from_numpy(arr), meta={"filename_or_obj": "x.png"})
    out_mt = GaussianBlurDefense()(mt)
    assert isinstance(out_mt, MetaTensor) and out_mt.meta["filename_or_obj"] == "x.png"
    np.testing.assert_allclose(out_mt.as_tensor().numpy(), torch.as_tensor(out).numpy(), atol=1e-6)
    vol = torch.rand(1, 5, 6, 7)
    assert GaussianBlurDefense()(vol).shape == vol.shape


def test_blur_bad_args():
    with pytest.raises(ValueError, match="odd"):
        GaussianBlurDefense(kernel_size=4)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlurDefense(sigma=0)


# ------------------------------------------------------------------------------------------------------- JPEG
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quantised_and_changes_image(channels):
    img = _smooth_image(channels)
    out = JPEGDefense(quality=30)(img)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose((out * 255).numpy(), np.round((out * 255).numpy()), atol=1e-4)  # 8-bit levels
    assert not torch.allclose(out, img, atol=1 / 255)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_lower_quality_larger_error(channels):
    img = _smooth_image(channels, size=48)
    errors = [(JPEGDefense(quality=q)(img) - img).abs().mean().item() for q in (95, 60, 10)]
    assert errors[0] < errors[1] < errors[2]


def test_jpeg_numpy_metatensor_and_bad_inputs():
    arr = _smooth_image(3).numpy()
    out = JPEGDefense()(arr)
    assert isinstance(out, torch.Tensor) and out.shape == arr.shape
    mt = MetaTensor(torch.from_numpy(arr), meta={"filename_or_obj": "k.jpg"})
    out_mt = JPEGDefense()(mt)
    assert isinstance(out_mt, MetaTensor) and out_mt.meta["filename_or_obj"] == "k.jpg"
    with pytest.raises(ValueError, match="C in"):
        JPEGDefense()(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="quality"):
        JPEGDefense(quality=0)


# -------------------------------------------------------------------------------------------------- Grayscale
def test_grayscale_equal_channels_and_luma():
    img = torch.rand(3, 9, 11)
    out = GrayscaleDefense()(img)
    assert out.shape == img.shape
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    np.testing.assert_allclose(out[0].numpy(), (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).numpy(), atol=1e-6)


def test_grayscale_single_channel_identity_and_errors():
    img = torch.rand(1, 8, 8)
    assert torch.equal(GrayscaleDefense()(img), img)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        GrayscaleDefense()(torch.rand(2, 8, 8))


# ----------------------------------------------------------------------------------------- dict + factory
def test_dictionary_versions_touch_only_keys():
    label = torch.randint(0, 2, (1, 16, 16)).float()
    data = {"image": _smooth_image(3, 16), "label": label}
    for t in (GaussianBlurDefensed("image"), JPEGDefensed("image", quality=40), GrayscaleDefensed("image")):
        out = t(data)
        assert out["label"] is label
        assert out["image"].shape == data["image"].shape and not torch.equal(out["image"], data["image"])
    assert GrayscaleDefensed(["image", "other"], allow_missing_keys=True)(data)["label"] is label


def test_get_defense_transform():
    assert get_defense_transform("none") is None
    t = get_defense_transform("gaussian_blur", sigma=1.0)
    assert isinstance(t, GaussianBlurDefensed) and t.transform.sigma == 1.0
    t = get_defense_transform("jpeg", keys=("img",), quality=60)
    assert isinstance(t, JPEGDefensed) and t.transform.quality == 60 and tuple(t.keys) == ("img",)
    assert isinstance(get_defense_transform("grayscale"), GrayscaleDefensed)
    with pytest.raises(ValueError, match="training-loop defense"):
        get_defense_transform("adversarial_training")
    with pytest.raises(ValueError, match="none, gaussian_blur, jpeg, grayscale, median, downsample_upsample, augment"):
        get_defense_transform("bilateral")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_kept():
    img = _smooth_image(3).cuda()
    for t in (GaussianBlurDefense(), JPEGDefense(), GrayscaleDefense()):
        assert t(img).device == img.device


# ----------------------------------------------------------------------------------------------- median, resample
@pytest.mark.parametrize("shape", [(1, 13, 17), (3, 12, 12), (2, 7, 8, 9)])
def test_median_matches_scipy(shape):
    img = torch.rand(*shape, dtype=torch.float64)
    out = MedianDefense()(img)
    ref = ndimage.median_filter(img.numpy(), size=(1,) + (3,) * (len(shape) - 1), mode="mirror")
    np.testing.assert_array_equal(out.numpy(), ref)


def test_median_removes_salt_and_pepper_keeps_edges():
    img = torch.zeros(1, 16, 16)
    img[:, :, 8:] = 1.0
    noisy = img.clone()
    noisy[0, 3, 3] = 1.0
    noisy[0, 10, 12] = 0.0
    assert torch.equal(MedianDefense()(noisy), img)
    with pytest.raises(ValueError, match="odd"):
        MedianDefense(2)


def test_resample_is_a_low_pass_that_keeps_the_size():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2).float()[None]  # the finest pattern: gone after x0.5 and back
    out = ResampleDefense()(checker)
    assert out.shape == checker.shape and (out - 0.5).abs().max() < 1e-6
    smooth = _smooth_image(1, 32).double()
    assert (ResampleDefense()(smooth) - smooth).abs().mean() < 0.03  # a smooth image survives
    vol = torch.rand(1, 8, 8, 8)
    assert ResampleDefense()(vol).shape == vol.shape
    with pytest.raises(ValueError, match="scale"):
        ResampleDefense(1.0)


def test_channel_shuffle_permutes_rgb_only():
    t = RandChannelShuffled("image", prob=1.0)
    t.set_random_state(3)
    rgb = torch.stack([torch.full((4, 4), float(c)) for c in range(3)])
    out = t({"image": rgb})["image"]
    assert sorted(out[:, 0, 0].tolist()) == [0.0, 1.0, 2.0]
    grey = torch.rand(1, 4, 4)
    assert torch.equal(t({"image": grey})["image"], grey)


def test_augment_moves_image_and_label_together():
    """The spatial parts move image and label alike: a label that marks the bright square still marks it after
    augmentation; the image changes; a seed reproduces the draw."""
    img = torch.full((1, 32, 32), 0.2)
    img[:, 8:20, 10:22] = 0.9
    label = (img > 0.5).float()
    aug = get_defense_transform("augment", channels=1)
    changed = 0
    for seed in range(8):
        aug.set_random_state(seed)
        out = aug({"image": img.clone(), "label": label.clone()})
        assert out["image"].shape == img.shape and out["label"].shape == label.shape
        assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 1.0}
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
        inside = torch.as_tensor(out["image"])[torch.as_tensor(out["label"]) > 0]
        outside = torch.as_tensor(out["image"])[torch.as_tensor(out["label"]) == 0]
        assert inside.mean() > outside.mean() + 0.3  # the label still covers the bright square
        changed += not torch.equal(torch.as_tensor(out["image"]), img)
        aug.set_random_state(seed)
        again = aug({"image": img.clone(), "label": label.clone()})
        assert torch.equal(torch.as_tensor(again["image"]), torch.as_tensor(out["image"]))
    assert changed >= 6


def test_parse_augment_parts():
    """'all' / None is the whole recipe; a selection comes back in the recipe's order; bad selections are refused."""
    assert parse_augment_parts(None) == parse_augment_parts(" ALL ") == AUGMENT_PARTS
    assert parse_augment_parts("noise, flip") == ("flip", "noise")
    assert parse_augment_parts(["Gamma"]) == ("gamma",)
    for bad, msg in (("flip,blur", "unknown"), (" , ", "nothing selected"), ("flip,flip", "repeated"), (3, "unknown")):
        with pytest.raises(ValueError, match=msg):
            parse_augment_parts(bad)


def test_augment_parts_apply_only_what_they_name():
    """``flip`` alone: every output is one of the four flips of the input and its label the same flip; ``noise``
    alone: the label never moves and the image changes; every part named: the default recipe, draw for draw."""
    img = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    label = (img > 0.5).float()
    flips = [(), (1,), (2,), (1, 2)]
    flip_only = get_defense_transform("augment", channels=1, parts="flip")
    seen = set()
    for seed in range(8):
        flip_only.set_random_state(seed)
        out = flip_only({"image": img.clone(), "label": label.clone()})
        o_img, o_lab = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
        match = [f for f in flips if torch.allclose(o_img, img.flip(f) if f else img)]
        assert len(match) == 1, f"seed {seed}: not a flip of the input"
        assert torch.equal(o_lab, label.flip(match[0]) if match[0] else label)
        seen.add(match[0])
    assert len(seen) >= 3
    noise_only = get_defense_transform("augment", channels=1, parts="noise")
    changed = 0
    for seed in range(8):
        noise_only.set_random_state(seed)
        out = noise_only({"image": img.clone(), "label": label.clone()})
        assert torch.equal(torch.as_tensor(out["label"]), label)
        changed += not torch.allclose(torch.as_tensor(out["image"]), img)
    assert changed >= 1
    full, named = get_defense_transform("augment", channels=3), get_defense_transform("augment", channels=3,
                                                                                     parts=",".join(AUGMENT_PARTS))
    rgb = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    for seed in range(4):
        full.set_random_state(seed)
        named.set_random_state(seed)
        a = full({"image": rgb.clone(), "label": label.clone()})
        b = named({"image": rgb.clone(), "label": label.clone()})
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))


@pytest.mark.parametrize("defense", ["gaussian_blur", "jpeg", "grayscale", "median", "downsample_upsample", "augment"])
def test_each_defense_changes_the_exploiters_training_images(tmp_path, defense):
    """Through the exploiter's own training pipeline: the defended training batch differs from the undefended one
    (a defense that silently does nothing would make every robustness number meaningless), and the labels are
    unchanged unless the defense moves them with the image (augment)."""
    from monai_umed.apps.exploit import exploit_defense, exploit_transforms
    from monai_umed.data import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "ds", num_images=1, size=(32, 32), channels=3)
    item = {"image": str(ds / "images" / "synthetic_000.png"), "label": str(ds / "masks" / "synthetic_000.png"),
            "name": "a"}
    plain = exploit_transforms(32, 3)(dict(item))
    _, tf = exploit_defense(defense, jpeg_quality=10)
    pipeline = exploit_transforms(32, 3, tf)
    pipeline.set_random_state(1)
    outs = [pipeline(dict(item)) for _ in range(4)]
    assert all(o["image"].shape == plain["image"].shape for o in outs)
    assert any(not torch.allclose(o["image"], plain["image"]) for o in outs)
    if defense != "augment":
        assert all(torch.equal(o["label"], plain["label"]) for o in outs)
        assert all(torch.equal(o["image"], outs[0]["image"]) for o in outs)  # deterministic
    if defense == "jpeg":  # a real JPEG round trip: 8-bit values and blocking, not a no-op
        assert torch.allclose(outs[0]["image"] * 255, (outs[0]["image"] * 255).round(), atol=1e-4)

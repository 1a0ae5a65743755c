# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The differentiable countermeasures against which a robust protector is trained: each matches its exploiter-side
defense (PIL's JPEG codec for JPEG) and lets gradients through."""

from __future__ import annotations

import pytest
import torch

from monai_umed.defenses import (
    EOT_TRANSFORMS,
    DiffJPEG,
    EOTDefense,
    GaussianBlurDefense,
    JPEGDefense,
    MedianDefense,
    ResampleDefense,
    augment_batch,
    gaussian_blur_batch,
    median_batch,
    resample_batch,
)


def _image(channels: int, h: int = 64, w: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    chans = [0.5 + 0.3 * torch.sin(8 * xx + c) * torch.cos(5 * yy - c) for c in range(channels)]
    return (torch.stack(chans) + 0.05 * torch.rand(channels, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("channels, tol", [(1, 0.5), (3, 2.0)])
@pytest.mark.parametrize("quality", [10, 30, 75])
def test_diff_jpeg_matches_pil(channels, tol, quality):
    """Mean difference to PIL's JPEG round trip below half a grey level (grey) / two levels (colour, chroma
    handled slightly differently at the borders), while JPEG itself moves pixels by several levels."""
    img = _image(channels, 60, 52)  # not multiples of 8 / 16: padded and cropped back
    ref = JPEGDefense(quality)(img)
    out = DiffJPEG(quality)(img[None])[0]
    assert out.shape == img.shape
    assert float((out - ref).abs().mean()) * 255 < tol
    assert float((ref - img).abs().mean()) * 255 > 1.5 * tol  # the comparison is not trivial


def test_diff_jpeg_lets_gradients_through():
    x = _image(3)[None].requires_grad_(True)
    y = DiffJPEG(30)(x)
    (y * torch.linspace(0, 1, 64)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_defenses_equal_the_exploiters_transforms():
    x = _image(3, 32, 40)
    torch.testing.assert_close(gaussian_blur_batch(x[None], 0.8)[0], GaussianBlurDefense(3, 0.8)(x))
    torch.testing.assert_close(median_batch(x[None])[0], MedianDefense()(x))
    torch.testing.assert_close(resample_batch(x[None])[0], ResampleDefense()(x))


def _disc_labels(n: int, h: int = 48, w: int = 48) -> torch.Tensor:
    """``[n, 1, h, w]`` discs off the centre (so that flips and rotations move them)."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((yy - h // 3) ** 2 + (xx - w // 4) ** 2 < (h // 5) ** 2).float().expand(n, 1, h, w).clone()


def test_augment_moves_the_label_with_the_image():
    """The spatial transform is one grid for both: an image that *is* its label stays its label after augment_batch
    (up to interpolation at the edge and the intensity changes, which keep 0 and 1 apart), and the labels moved."""
    label = _disc_labels(16)
    image = label.expand(16, 3, 48, 48).clone()
    out, moved = augment_batch(image, label, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and moved.shape == label.shape and moved.dtype == label.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert set(torch.unique(moved).tolist()) <= {0.0, 1.0}
    agree = ((out.mean(1, keepdim=True) > 0.5).float() == moved).float().mean()
    assert float(agree) > 0.97
    moved_count = sum(not torch.equal(moved[i], label[i]) for i in range(16))
    assert moved_count >= 8  # flips (0.5 per axis) and affine (0.5): most of 16 draws move the disc
    changed = sum(not torch.allclose(out[i], image[i]) for i in range(16))
    assert changed >= 14


def test_augment_is_seeded_differentiable_and_checks_shapes():
    x = torch.stack([_image(1, 32, 32)] * 8).requires_grad_(True)
    label = _disc_labels(8, 32, 32)
    a, la = augment_batch(x, label, torch.Generator().manual_seed(3))
    b, lb = augment_batch(x, label, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(la, lb)
    (a * torch.linspace(0, 1, 32)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same grid"):
        augment_batch(x, label[:, :, :16])


def test_eot_draws_per_image_and_is_seeded():
    x = torch.stack([_image(3, 32, 32)] * 6).requires_grad_(True)
    label = _disc_labels(6, 32, 32)
    same = EOTDefense(transforms=("identity",))(x)
    assert torch.equal(same, x)
    a, la = EOTDefense(generator=torch.Generator().manual_seed(1))(x, label)
    b, lb = EOTDefense(generator=torch.Generator().manual_seed(1))(x, label)
    assert torch.equal(a, b) and torch.equal(la, lb) and a.shape == x.shape
    changed = [not torch.equal(a[i], x[i]) for i in range(6)]
    assert any(changed)  # images go through different transforms
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown EOT transforms"):
        EOTDefense(transforms=("jpeg", "sharpen"))
    with pytest.raises(ValueError, match="2D image batches"):
        EOTDefense()(torch.rand(1, 1, 8, 8, 8))
    assert EOTDefense()(x).shape == x.shape  # the default draws no augment: images alone are fine
    with pytest.raises(ValueError, match="call it as defense"):
        EOTDefense(transforms=EOT_TRANSFORMS)(x)  # augment is drawable: the labels must come along
    only_aug, moved = EOTDefense(transforms=("augment",), generator=torch.Generator().manual_seed(0))(x, label)
    assert any(not torch.equal(moved[i], label[i]) for i in range(6))
    kept, same_label = EOTDefense(transforms=("jpeg", "median"))(x, label)
    assert torch.equal(same_label, label)


@pytest.mark.parametrize("shape, size", [((2, 3, 64, 64), (32, 32)), ((2, 1, 60, 52), (24, 40)),
                                         ((1, 2, 64, 64), (64, 80)), ((1, 1, 24, 20, 16), (12, 10, 16))])
def test_antialiased_resize_matches_monai_resize(shape, size):
    """Images: the same as MONAI's ``Resize(mode="bilinear", anti_aliasing=True)``, the exploiter's own resize,
    image by image (down, mixed and up; 2D and 3D); labels: the same as ``Resize(mode="nearest")``."""
    from monai.transforms import Resize

    from monai_umed.defenses import antialiased_resize

    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    ref = torch.stack([torch.as_tensor(Resize(size, mode="bilinear", anti_aliasing=True)(xi)) for xi in x])
    out = antialiased_resize(x, size)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-5)
    label = (x[:, :1] > 0.5).float()
    ref = torch.stack([torch.as_tensor(Resize(size, mode="nearest")(yi)) for yi in label])
    assert torch.equal(antialiased_resize(label, size, mode="nearest"), ref)


def test_rescale_view_draws_smaller_sizes_and_moves_labels():
    """``RescaleView``: sizes are multiples of ``multiple`` from ``min_scale`` of the size up, kept with probability
    ``keep``; images and labels come back on the same grid, labels keep their values, gradients reach the input, the
    draws follow the generator, and a countermeasure is applied first."""
    from monai_umed.defenses import RescaleView

    view = RescaleView(0.4, multiple=16, keep=0.5, generator=torch.Generator().manual_seed(0))
    assert view.candidates(96) == [48, 64, 80] and view.candidates(224)[0] == 96 and view.candidates(32) == []
    draws = [view.draw_size((96, 96)) for _ in range(400)]
    assert {d[0] for d in draws} == {48, 64, 80, 96} and all(d[0] == d[1] for d in draws)
    assert 0.4 < sum(d == (96, 96) for d in draws) / len(draws) < 0.6
    x = _image(1, 96, 96)[None].repeat(2, 1, 1, 1).requires_grad_(True)
    label = (x.detach() > 0.5).long()
    never_keep = RescaleView(0.4, multiple=16, keep=0.0, generator=torch.Generator().manual_seed(3))
    out, moved = never_keep(x, label)
    assert out.shape[2:] == moved.shape[2:] and out.shape[2] in (48, 64, 80) and moved.dtype == label.dtype
    assert set(torch.unique(moved).tolist()) <= {0, 1}
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    again = RescaleView(0.4, multiple=16, keep=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again(x.detach(), label)[0], out.detach())
    erased, _ = RescaleView(0.4, keep=1.0, countermeasure=lambda t: t * 0)(x.detach(), label)
    assert erased.shape == x.shape and erased.abs().sum() == 0
    for bad in ({"min_scale": 1.0}, {"min_scale": 0}, {"multiple": 0}, {"keep": 1.5}):
        with pytest.raises(ValueError):
            RescaleView(**bad)

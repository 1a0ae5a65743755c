# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests of monai_umed.transforms.contour: contour band y_c, ROI interior y_t, ContourBand(d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from scipy import ndimage

from monai_umed.transforms import ContourBand, ContourBandd, contour_band, roi_interior

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _blobs(shape, seed: int, classes: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    label = np.zeros(shape, dtype=np.int64)
    qs = np.quantile(smooth, np.linspace(0.5, 0.9, classes + 1)[:-1])
    for c, q in enumerate(qs, start=1):
        label[smooth > q] = c
    return label


def _reference(label: np.ndarray, width: int, side: str) -> np.ndarray:
    """scipy reference: dilation with a zero outside, erosion with the edge-replicated outside."""
    if width == 0:
        return np.zeros(label.shape, dtype=bool)
    band = np.zeros(label.shape, dtype=bool)
    footprint = np.ones((2 * width + 1,) * label.ndim, dtype=bool)
    for c in np.unique(label[label > 0]):
        region = label == c
        dilated = ndimage.binary_dilation(region, structure=footprint, border_value=0)
        padded = np.pad(region, width, mode="edge")
        eroded = ndimage.binary_erosion(padded, structure=footprint)[(slice(width, -width),) * label.ndim]
        outer = region if side == "inside" else dilated
        inner = region if side == "outside" else eroded
        band |= outer & ~inner
    return band


@pytest.mark.parametrize("side", ["both", "inside", "outside"])
@pytest.mark.parametrize("width", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("shape,classes", [((32, 30), 1), ((32, 30), 2), ((10, 14, 12), 1), ((10, 14, 12), 2)])
def test_matches_scipy(side, width, shape, classes):
    label = _blobs(shape, seed=width + 3 * len(shape) + classes, classes=classes)
    assert label.max() == classes and label.min() == 0
    out = contour_band(torch.from_numpy(label), width, side, spatial_dims=len(shape))
    assert out.dtype == torch.float32 and out.shape == label.shape
    np.testing.assert_array_equal(out.numpy().astype(bool), _reference(label, width, side))
    if len(shape) == 3:  # a 3D volume needs a leading channel (or spatial_dims=3) for inference
        inferred = contour_band(torch.from_numpy(label[None]), width, side)
        np.testing.assert_array_equal(inferred[0].numpy(), out.numpy())


@pytest.mark.parametrize("side", ["both", "inside", "outside"])
def test_window_wider_than_the_image(side):
    """Boxes clipped at both ends of an axis (width 40 on a 32 x 30 image)."""
    label = _blobs((32, 30), seed=5, classes=2)
    out = contour_band(torch.from_numpy(label), 40, side, spatial_dims=2)
    np.testing.assert_array_equal(out.numpy().astype(bool), _reference(label, 40, side))


def test_scipy_border_value_equivalence():
    """The edge rule equals scipy's erosion with border_value=1."""
    label = _blobs((24, 24), seed=0)
    fp = np.ones((5, 5), dtype=bool)
    ref = ndimage.binary_dilation(label > 0, fp) & ~ndimage.binary_erosion(label > 0, fp, border_value=1)
    np.testing.assert_array_equal(contour_band(torch.from_numpy(label), 2).numpy().astype(bool), ref)


def test_batched_and_leading_dims():
    labels = np.stack([_blobs((20, 22), seed=s) for s in range(3)])[:, None]  # [B, 1, H, W]
    ref = np.stack([_reference(lab[0], 2, "both") for lab in labels])[:, None]
    for spatial_dims in (2, None):  # None reads [B, 1, H, W] as 3D with D = 1: same band
        out = contour_band(torch.from_numpy(labels), 2, spatial_dims=spatial_dims)
        np.testing.assert_array_equal(out.numpy().astype(bool), ref)


def test_empty_mask():
    for shape in [(1, 16, 16), (1, 6, 8, 8)]:
        out = contour_band(torch.zeros(shape), 3)
        assert out.shape == shape and out.sum() == 0
        assert roi_interior(torch.zeros(shape), out).sum() == 0


def test_mask_touching_the_border():
    label = torch.zeros(20, 20)
    label[:10] = 1  # top half, touches the top, left and right borders
    band = contour_band(label, width=2)
    rows = band.sum(1)
    assert torch.equal(torch.nonzero(rows).flatten(), torch.tensor([8, 9, 10, 11]))
    assert rows[8:12].eq(20).all()  # full rows: no gap at the left/right border either
    full = contour_band(torch.ones(1, 12, 12), 3)
    assert full.sum() == 0  # a region covering the image has no contour
    assert roi_interior(torch.ones(1, 12, 12), full).sum() == 144


def test_multi_class_touching_regions():
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[:, :, :8] = 1
    label[:, :, 8:] = 2  # two classes filling the image, touching along column 7 | 8
    band = contour_band(label, width=2)  # width 2 on each side of the shared boundary
    cols = band[0].sum(0)
    assert torch.equal(torch.nonzero(cols).flatten(), torch.tensor([6, 7, 8, 9]))
    assert cols[6:10].eq(16).all()
    assert contour_band((label > 0).long(), width=2).sum() == 0  # binary: no boundary at all
    inside = contour_band(label, width=1, side="inside")
    assert torch.equal(torch.nonzero(inside[0].sum(0)).flatten(), torch.tensor([7, 8]))


@pytest.mark.parametrize("side", ["both", "inside", "outside"])
def test_roi_interior_properties(side):
    label = torch.from_numpy(_blobs((1, 32, 32), seed=7, classes=2))
    band = contour_band(label, 3, side)
    y_t = roi_interior(label, band)
    assert y_t.dtype == torch.float32 and set(y_t.unique().tolist()) <= {0.0, 1.0}
    assert (y_t * band).sum() == 0  # disjoint
    assert (y_t <= (label > 0).float()).all()  # inside the ROI
    torch.testing.assert_close(y_t, (1 - band) * (label > 0).float())
    assert y_t.sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_contour_band_transform(device):
    label = MetaTensor(torch.from_numpy(_blobs((1, 24, 24), seed=1)), meta={"filename_or_obj": "m.png"}).to(device)
    out = ContourBand(width=2)(label)
    assert out.shape == (2, 24, 24) and out.dtype == torch.float32 and out.device == label.device
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "m.png"
    band = contour_band(label.as_tensor(), 2)
    torch.testing.assert_close(out[0:1].as_tensor(), band)
    torch.testing.assert_close(out[1:2].as_tensor(), roi_interior(label.as_tensor(), band))
    vol = ContourBand()(_blobs((1, 8, 16, 16), seed=2))  # numpy, 3D
    assert vol.shape == (2, 8, 16, 16)
    np.testing.assert_array_equal(vol[0].numpy().astype(bool), _reference(_blobs((1, 8, 16, 16), seed=2)[0], 3, "both"))
    with pytest.raises(ValueError):
        ContourBand()(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError):
        ContourBand(side="around")


def test_contour_bandd_compose():
    label = MetaTensor(torch.from_numpy(_blobs((1, 24, 24), seed=3)), meta={"filename_or_obj": "m.png"})
    data = {"image": torch.rand(3, 24, 24), "label": label}
    out = Compose([ContourBandd(keys="label", width=2)])(data)
    assert {"contour_band", "roi_interior", "label", "image"} <= set(out)
    for key in ("contour_band", "roi_interior"):
        assert out[key].shape == (1, 24, 24) and out[key].dtype == torch.float32
        assert isinstance(out[key], MetaTensor) and out[key].meta["filename_or_obj"] == "m.png"
    both = ContourBand(width=2)(label)
    torch.testing.assert_close(out["contour_band"].as_tensor(), both[0:1].as_tensor())
    torch.testing.assert_close(out["roi_interior"].as_tensor(), both[1:2].as_tensor())
    data["label2"] = label.clone()
    out2 = ContourBandd(keys=["label", "label2"], band_key="yc", interior_key="yt")(data)
    assert {"label_yc", "label_yt", "label2_yc", "label2_yt"} <= set(out2)

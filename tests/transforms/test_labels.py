# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Mask values -> class indices (binary or one class per value)."""

from __future__ import annotations

import pytest
import torch

from monai_umed.transforms import class_values, label_classes_transform, prior_transforms


@pytest.mark.parametrize(
    "values, mode, expected",
    [([0, 1], "auto", []), ([0, 255], "auto", []), ([0, 1, 2], "auto", [1, 2]), ([2, 0, 128, 2], "auto", [2, 128]),
     ([0, 1, 2], "binary", []), ([1, 2], "AUTO", [1, 2])],
)
def test_class_values(values, mode, expected):
    assert class_values(values, mode) == expected


def test_class_values_bad_mode():
    with pytest.raises(ValueError, match="labels must be one of"):
        class_values([0, 1], "multi")


def _label() -> torch.Tensor:
    lab = torch.zeros(1, 16, 16)
    lab[0, 2:6, 2:6] = 128
    lab[0, 8:14, 8:14] = 255
    return lab


def test_label_classes_transform():
    lab = _label()
    multi = label_classes_transform("label", [128, 255])({"label": lab})["label"]
    assert torch.equal(multi, (lab == 128).float() + 2 * (lab == 255).float())
    binary = label_classes_transform("label", [])({"label": lab})["label"]
    assert torch.equal(binary, (lab > 0).float())


def test_priors_keep_the_classes_and_the_band_is_the_same():
    """The classes reach the training pipeline; the contour band and the ROI interior do not depend on them."""
    data = {"image": torch.rand(1, 16, 16), "label": _label()}
    multi = prior_transforms(16, 1, class_values=[128, 255])(dict(data))
    binary = prior_transforms(16, 1)(dict(data))
    assert sorted(multi["label"].unique().tolist()) == [0.0, 1.0, 2.0]
    assert sorted(binary["label"].unique().tolist()) == [0.0, 1.0]
    for key in ("roi_interior", "texture_map"):
        assert torch.equal(multi[key], binary[key]), key
    # two separate regions: the union of per-class bands equals the band of the binary mask
    assert torch.equal(multi["contour_band"], binary["contour_band"])

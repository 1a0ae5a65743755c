"""ForegroundNeighbourhoodd: caching the foreground's neighbourhood gives the same training patches as the volume."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

from monai_umed.transforms import ForegroundNeighbourhoodd, prior_transforms

KEYS = ["image", "label", "contour_band", "roi_interior", "texture_map"]


def _volume(shape, box):
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(1, *shape)
    label[(0, *box)] = 1
    return {"image": torch.rand(1, *shape, generator=g), "label": label}


def _patches(chain, data, n=12):
    chain.set_random_state(seed=7)
    return [chain(dict(data)) for _ in range(n)]


@pytest.mark.parametrize(
    "shape, box",
    [
        ((60, 70, 50), (slice(25, 30), slice(30, 36), slice(20, 24))),  # small structure in a large volume
        ((60, 70, 50), (slice(0, 4), slice(66, 70), slice(10, 14))),  # touching the volume's borders
        ((20, 70, 50), (slice(12, 16), slice(30, 36), slice(20, 24))),  # one axis shorter than the patch
        ((60, 70, 50), (slice(0, 0), slice(0, 0), slice(0, 0))),  # no foreground: the whole volume
    ],
)
def test_same_patches_as_the_whole_volume(shape, box):
    size = (16, 16, 16)
    data = prior_transforms(shape, 1, band_width=1)(_volume(shape, box))  # the priors of the whole volume
    def sampler():
        crop = RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=size, pos=1, neg=0, num_samples=1)
        return Compose([SpatialPadd(KEYS, spatial_size=size), crop])

    cached = ForegroundNeighbourhoodd(KEYS, label_key="label", margin=size)(data)
    a, b = _patches(sampler(), data), _patches(sampler(), cached)
    for pa, pb in zip(a, b):
        for k in KEYS:
            assert torch.equal(torch.as_tensor(pa[0][k]), torch.as_tensor(pb[0][k])), k
    if box[0].stop > box[0].start and shape[0] > 2 * size[0] + 4:
        assert cached["image"].numel() < data["image"].numel()  # and it is smaller
    assert len({float(p[0]["image"].sum()) for p in a}) > 1  # different patches were drawn: the test can fail

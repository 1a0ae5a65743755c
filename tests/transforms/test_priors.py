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


def test_native_training_patches_meet_foreground_and_background():
    """protect's 3D training draws patches centred on the foreground and on the background (as the exploiter does):
    a surrogate trained on foreground-centred patches only never sees a whole volume's background."""
    shape, size = (60, 70, 50), 16
    box = (slice(25, 30), slice(30, 36), slice(20, 24))
    chain = prior_transforms((size,) * 3, 1, band_width=1, native="train")
    chain.set_random_state(seed=3)
    centres = []
    for _ in range(40):
        patch = chain(_volume(shape, box))[0]
        assert tuple(patch["image"].shape[1:]) == (size,) * 3
        for k in KEYS:  # all keys cropped alike
            assert tuple(patch[k].shape[1:]) == (size,) * 3, k
        centres.append(float(patch["label"][(0, *(size // 2,) * 3)]))
    fg = sum(c > 0 for c in centres)
    assert 8 <= fg <= 32, centres  # both kinds, about half each (binomial(40, 0.5): outside [8, 32] has p < 1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_lbp_grid_native_is_the_native_map_resized_as_the_image(channels):
    """``lbp_grid="native"``: the texture map is the LBP of the image on its own grid, resized to the training size
    with the image's own resize (what an exploiter at that size sees of the written bound); image, label, band
    and ROI are those of ``"train"``; volumes trained on their own grid are unaffected; a bad value is refused."""
    from monai.transforms import Resize

    from monai_umed.transforms import LBPTextureMap, PriorSettings

    g = torch.Generator().manual_seed(0)
    image = torch.rand(channels, 70, 52, generator=g)
    label = torch.zeros(1, 70, 52)
    label[:, 20:50, 10:40] = 1
    train = prior_transforms(32, channels)({"image": image, "label": label})
    native = prior_transforms(32, channels, lbp_grid="native")({"image": image, "label": label})
    for key in ("image", "label", "contour_band", "roi_interior"):
        assert torch.equal(train[key], native[key]), key
    expected = Resize((32, 32), mode="bilinear", anti_aliasing=True)(torch.as_tensor(LBPTextureMap()(image)))
    torch.testing.assert_close(native["texture_map"], torch.as_tensor(expected).float())
    # the native map, averaged by the resize, is smoother than the map of the small image, and no longer equal
    assert native["texture_map"].std() < train["texture_map"].std()
    assert native["texture_map"].shape == train["texture_map"].shape == (1, 32, 32)
    assert 0 <= native["texture_map"].min() and native["texture_map"].max() <= 1 + 1e-6
    volume = {"image": torch.rand(1, 20, 20, 20, generator=g), "label": torch.ones(1, 20, 20, 20)}
    a = prior_transforms(16, 1, native="apply")(dict(volume))
    b = prior_transforms(16, 1, native="apply", lbp_grid="native")(dict(volume))
    assert torch.equal(a["texture_map"], b["texture_map"])
    assert PriorSettings(lbp_grid="native").as_dict()["lbp_grid"] == "native"
    with pytest.raises(ValueError, match="lbp_grid"):
        prior_transforms(32, channels, lbp_grid="other")
    with pytest.raises(ValueError, match="lbp_grid"):
        PriorSettings(lbp_grid="other")

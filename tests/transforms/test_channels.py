"""MatchChannels / MatchChannelsd: grey stored as RGB -> one channel, one channel -> RGB."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_umed.transforms import MatchChannels, MatchChannelsd


@pytest.mark.parametrize("make", [torch.rand, lambda *s: np.random.default_rng(0).random(s)])
@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 5)])
def test_match_channels_array(make, shape):
    x = make(3, *shape)
    one = MatchChannels(1)(x)
    assert one.shape == (1, *shape) and type(one) is type(x)
    assert np.array_equal(np.asarray(one[0]), np.asarray(x[0])), "the first channel is kept"
    three = MatchChannels(3)(one)
    assert three.shape == (3, *shape) and all(np.array_equal(np.asarray(three[c]), np.asarray(one[0])) for c in range(3))
    assert MatchChannels(3)(x) is x, "a matching image passes unchanged"
    assert isinstance(MatchChannels(1, convert_to_tensor=True)(x), torch.Tensor)


def test_match_channels_refuses_other_counts():
    with pytest.raises(ValueError, match="2 channels to 3"):
        MatchChannels(3)(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="positive integer"):
        MatchChannels(0)


def test_match_channels_dict():
    d = MatchChannelsd(["image", "other"], 1, allow_missing_keys=True)({"image": torch.rand(3, 4, 4), "label": torch.ones(1, 4, 4)})
    assert d["image"].shape == (1, 4, 4) and d["label"].shape == (1, 4, 4)

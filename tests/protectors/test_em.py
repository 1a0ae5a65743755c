"""EM baseline protector (Huang et al. 2021): sample-wise error-minimizing noise for segmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.utils import set_determinism
from PIL import Image

from monai_umed.apps import umed_transforms
from monai_umed.protectors import EMProtector, optimize_error_minimizing
from monai_umed.data import load_datalist, make_synthetic_dataset
from monai_umed.apps import ProtectedDatasetWriter

EPS = 8 / 255


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    set_determinism(0)
    root = make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_images=8, size=(32, 32), seed=1)
    items = load_datalist(dataset_dir=str(root))
    data = [dict(d, em_index=i) for i, d in enumerate(items)]
    loader = DataLoader(Dataset(data, umed_transforms(32, 1, extra_keys=['em_index'], band_width=1)), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    protector = EMProtector([d["name"] for d in items], 1, (32, 32), epsilon=EPS)
    surrogate = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    history = optimize_error_minimizing(
        protector, surrogate, loader, torch.optim.Adam(surrogate.parameters(), 1e-3), loss,
        max_rounds=3, train_steps=4, pgd_steps=8, step_size=EPS / 4, stop_loss=0.0,
    )
    return root, items, loader, protector, surrogate, loss, history


def test_bound_and_feasible_set(em_run):
    _, _, loader, protector, _, _, history = em_run
    assert [h["round"] for h in history] == [1, 2, 3]
    assert protector.deltas.abs().max() <= EPS + 1e-7 and protector.deltas.abs().max() > EPS / 2
    for b in loader:
        x = b["image"] + protector.deltas[b["em_index"].long()]
        assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6


def test_noise_is_error_minimizing(em_run):
    """The point of EM: the surrogate's loss is lower on the perturbed images than on the clean ones, and lower
    than with random noise of the same bound."""
    _, _, loader, protector, surrogate, loss, _ = em_run
    surrogate.eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        clean, em, rand = [], [], []
        for b in loader:
            x, y, idx = b["image"], b["label"], b["em_index"].long()
            noise = (torch.rand(x.shape, generator=g) * 2 - 1) * EPS
            clean.append(float(loss(surrogate(x), y)))
            em.append(float(loss(surrogate(x + protector.deltas[idx]), y)))
            rand.append(float(loss(surrogate((x + noise).clamp(0, 1)), y)))
    assert np.mean(em) < np.mean(clean) - 0.01 and np.mean(em) < np.mean(rand) - 0.01


def test_writer_writes_em_for_known_images_only(em_run, tmp_path: Path):
    root, items, _, protector, _, _, _ = em_run
    out = tmp_path / "out"
    summary = ProtectedDatasetWriter(protector, items, root, out / "protected", manifest_dir=out)()
    assert summary["num_images"] == 8 and summary["linf_max"] <= EPS + 1e-6
    e = json.loads((out / "manifest.json").read_text())["images"][0]
    diff = np.asarray(Image.open(e["output"]), np.int16) - np.asarray(Image.open(e["source"]), np.int16)
    assert np.abs(diff).max() <= 8 and (diff != 0).mean() > 0.3
    # the written perturbation is the optimised one (same grid here: 32x32 files, 32x32 training size)
    row = protector.deltas[protector.index[e["name"]]][0].numpy() * 255
    assert np.abs(diff - row).max() <= 1.0 + 1e-4
    other = make_synthetic_dataset(tmp_path / "other", num_images=1, size=(32, 32), seed=9)
    new_items = [dict(d, name="not_seen") for d in load_datalist(dataset_dir=str(other))]
    with pytest.raises(ValueError, match="not_seen: em is sample-wise"):
        ProtectedDatasetWriter(protector, new_items, other, tmp_path / "o2")()


def test_keys_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        EMProtector(["a", "a"], 1, (8, 8))


@pytest.mark.parametrize("region", ["band", "roi"])
def test_em_restricted_to_a_region(em_run, region):
    """Table 5's "EM restricted to the contour band / the ROI": nothing changes outside the region, in training
    and on the native grid."""
    _, items, loader, _, _, loss, _ = em_run
    protector = EMProtector([d["name"] for d in items], 1, (32, 32), epsilon=EPS, region=region, band_width=1)
    surrogate = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    optimize_error_minimizing(protector, surrogate, loader, torch.optim.Adam(surrogate.parameters(), 1e-3), loss,
                              max_rounds=1, train_steps=2, pgd_steps=4, step_size=EPS / 2, stop_loss=0.0)
    for b in loader:
        mask = protector.region_mask(b["label"])
        expected = b["contour_band"] if region == "band" else (b["label"] > 0).float()
        assert torch.equal(mask, expected)
        d = protector.deltas[b["em_index"].long()]
        assert not d[mask.expand_as(d) == 0].any() and d.abs().max() > 0
    image = torch.rand(1, 64, 64)
    label = torch.zeros(1, 64, 64)
    label[:, 20:44, 16:40] = 1
    delta, allowed = protector.native_delta(image, label, items[0]["name"])
    assert not delta[:, ~allowed].any() and allowed.any()
    if region == "roi":
        assert torch.equal(allowed, label[0] > 0)
    else:
        assert not allowed[label[0] > 0].all() and allowed[19, 30], "a band on both sides of the contour"

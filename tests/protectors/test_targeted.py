"""TAP and SEP (targeted poisons towards the swapped label map), adapted to segmentation."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.utils import set_determinism

from monai_umed.apps import umed_transforms
from monai_umed.data import load_datalist, make_synthetic_dataset
from monai_umed.protectors import SEPProtector, TAPProtector, optimize_targeted, swapped_labels, train_snapshots

EPS = 8 / 255


def test_swapped_labels():
    y = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])
    assert torch.equal(swapped_labels(y), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    set_determinism(0)
    root = make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_images=8, size=(32, 32), seed=1)
    items = load_datalist(dataset_dir=str(root))
    data = [dict(d, em_index=i) for i, d in enumerate(items)]
    loader = DataLoader(Dataset(data, umed_transforms(32, 1, extra_keys=["em_index"], band_width=1)), batch_size=4,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    model = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    snaps = train_snapshots(model, loader, torch.optim.Adam(model.parameters(), 1e-2), loss, steps=12, snapshots=3)
    return items, loader, model, loss, snaps


def test_snapshots_are_taken_along_the_run(clean_run):
    _, _, model, _, snaps = clean_run
    assert len(snaps) == 3 and all(not s.training for s in snaps)
    last = dict(snaps[-1].named_parameters())
    assert all(torch.equal(p, last[n]) for n, p in model.named_parameters()), "the last snapshot is the final model"
    first = dict(snaps[0].named_parameters())
    assert any(not torch.equal(p, first[n]) for n, p in model.named_parameters()), "earlier snapshots differ"
    with pytest.raises(ValueError, match="snapshots <= steps"):
        train_snapshots(model, [], None, None, steps=2, snapshots=3)


@pytest.mark.parametrize("cls, members", [(TAPProtector, [-1]), (SEPProtector, [0, 1, 2])])
def test_targeted_poison_moves_towards_the_swapped_labels(clean_run, cls, members):
    items, loader, _, loss, snaps = clean_run
    models = [snaps[i] for i in members]
    protector = cls([d["name"] for d in items], 1, (32, 32), epsilon=EPS)
    result = optimize_targeted(protector, models, loader, loss, steps=10, step_size=EPS / 4)
    assert result["target_loss_poisoned"] < result["target_loss_clean"] - 0.01
    assert 0 < float(protector.deltas.abs().max()) <= EPS + 1e-7
    assert all(protector.deltas[i].abs().max() > 0 for i in range(len(items))), "every training image is poisoned"
    for b in loader:
        x = b["image"] + protector.deltas[b["em_index"].long()]
        assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6
        # each ensemble member, not only the mean, finds the poisoned batch closer to the swapped labels
        with torch.no_grad():
            for m in models:
                assert float(loss(m(x), swapped_labels(b["label"]))) < float(loss(m(b["image"]), swapped_labels(b["label"])))

"""Glue of the protect job: channel policy, flags, option checks."""

from __future__ import annotations

import json
import re

from pathlib import Path

import numpy as np
import pytest

from monai_umed.utils import UserInputError
import torch
from PIL import Image

from monai_umed.apps import (
    check_image_size,
    check_schedule,
    as_bool,
    infer_channels,
)


@pytest.mark.parametrize(
    "value, expected",
    [(True, True), ("false", False), ("False", False), ("true", True), ("1", True), (0, False), ("no", False), (None, None)],
)
def test_as_bool(value, expected):
    assert as_bool(value) is expected


def test_as_bool_rejects_garbage():
    with pytest.raises(ValueError, match="resume"):
        as_bool("maybe", "resume")


def _png(path: Path, array: np.ndarray) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return {"image": str(path)}


def test_infer_channels(tmp_path: Path):
    grey = np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)
    rgb_grey = np.stack([grey] * 3, -1)
    rgb = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    assert infer_channels([_png(tmp_path / "a.png", grey), _png(tmp_path / "b.png", rgb_grey)]) == 1
    assert infer_channels([_png(tmp_path / "a.png", grey), _png(tmp_path / "c.png", rgb)]) == 3


@pytest.mark.parametrize(
    "size,strides,expected",
    [(64, [(2, 2, 2, 2), (2, 2, 2)], (64, 64)), ((96, 48), [(2, 2, 2, 2)], (96, 48)), (24, [(2, 2, 2)], (24, 24))],
)
def test_check_image_size_accepts(size, strides, expected):
    assert check_image_size(size, *strides) == expected


@pytest.mark.parametrize("size,strides", [(90, [(2, 2, 2, 2)]), (24, [(2, 2, 2, 2), (2, 2, 2)]), (8, [(2, 2, 2, 2)])])
def test_check_image_size_rejects_with_a_suggestion(size, strides):
    with pytest.raises(ValueError, match="multiple of 16"):
        check_image_size(size, *strides)


def test_umed_transforms_are_cached_whole(tmp_path: Path):
    """CacheDataset must cache the priors too (a nested Compose would stop caching before the LBP)."""
    from monai.data import CacheDataset

    from monai_umed.apps import resolve_dataset, umed_transforms
    from monai_umed.data import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "in", num_images=3, size=(40, 40), seed=0)
    items, _ = resolve_dataset(str(data), None, str(tmp_path / "out"))[:2]
    ds = CacheDataset(items, umed_transforms(32, 1), progress=False)
    for cached in ds._cache:
        assert {"contour_band", "roi_interior", "texture_map"} <= set(cached)
        assert type(cached["image"]) is torch.Tensor  # plain tensors: cheap collation
    assert ds[0]["texture_map"].shape == (1, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "--steps 0: expected a whole number >= 1"),
        ({"steps": 2.5}, "--steps 2.5: expected a whole number >= 1"),
        ({"steps": "many"}, "--steps 'many'"),
        ({"phase_steps": 0}, "--phase_steps 0"),
        ({"verify_steps": -3}, "--verify_steps -3"),
        ({"surrogate_epochs": 0}, "--surrogate_epochs 0"),
        ({"generator_epochs": -1}, "--generator_epochs -1: expected a whole number >= 0"),
        ({"surrogate_reset": True}, "--surrogate_reset True"),
        ({"stop_ratio": 0}, "--stop_ratio 0: expected a number > 0"),
        ({"require_dsc": "abc"}, "--require_dsc 'abc': expected a DSC in [0, 1]"),
        ({"require_dsc": 1.5}, "--require_dsc 1.5"),
    ],
)
def test_check_schedule_refuses_bad_options_with_one_line(kwargs, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        check_schedule(**kwargs)


def test_check_schedule_accepts_the_defaults_and_the_paper():
    check_schedule(steps=2000, phase_steps=32, generator_epochs=1, verify_steps=500)
    check_schedule(surrogate_epochs=100, generator_epochs=4, surrogate_reset=0, stop_ratio=0.2, require_dsc=0.0)
    check_schedule(steps="2000", require_dsc="0.2")  # the command line may pass strings


def _msd_volumes(root, n=3):
    """A tiny MSD-layout dataset of 3D volumes (imagesTr/, labelsTr/, dataset.json)."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    training = []
    for i in range(n):
        lab = np.zeros((16, 18, 12), np.uint8)
        lab[4:9, 5:10, 3:8] = 1 + i % 2
        nib.save(nib.Nifti1Image(rng.random((16, 18, 12)).astype(np.float32), np.eye(4)), root / "imagesTr" / f"v_{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "labelsTr" / f"v_{i}.nii.gz")
        training.append({"image": f"./imagesTr/v_{i}.nii.gz", "label": f"./labelsTr/v_{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "labels": {"0": "bg", "1": "a", "2": "b"},
                                                    "training": training}))
    return root


def test_volumes_are_read_as_3d(tmp_path):
    """An MSD-layout dataset of volumes: classes per voxel, 3D sizes, the networks' training size a cube."""
    from monai_umed.apps import image_spatial_dims, infer_channels, resolve_dataset, training_size
    from monai_umed.data import datalist_from_json, validate_datalist

    root = _msd_volumes(tmp_path / "msd")
    items = datalist_from_json(root / "dataset.json", dataset_dir=root, key="training")
    report = validate_datalist(items)
    assert report.spatial_dims == 3 and len(report.volumes) == 3 and report.label_values == [0, 1, 2]
    resolved, _ = resolve_dataset(None, str(root / "dataset.json"), str(tmp_path / "out"))
    assert image_spatial_dims(resolved) == 3 and infer_channels(resolved) == 1
    assert training_size(96, 3) == (32, 32, 32) and training_size(96, 3, 48, "cuda") == (48, 48, 48)
    assert training_size(96, 2) == (96, 96) and training_size([64, 80], 2) == (64, 80)


def test_a_dataset_is_2d_or_3d(tmp_path):
    from monai_umed.data import DatasetValidationError, make_synthetic_dataset, validate_datalist

    ds = make_synthetic_dataset(tmp_path / "ds", num_images=1, size=(32, 32))
    vol = _msd_volumes(tmp_path / "msd", n=1)
    items = [{"image": str(ds / "images" / "synthetic_000.png"), "label": str(ds / "masks" / "synthetic_000.png"),
              "name": "a"},
             {"image": str(vol / "imagesTr" / "v_0.nii.gz"), "label": str(vol / "labelsTr" / "v_0.nii.gz"), "name": "b"}]
    with pytest.raises(DatasetValidationError, match="mixes 2D images .* and 3D volumes"):
        validate_datalist(items)


def test_robust_countermeasures():
    """``--robust``: a flag (every countermeasure, or none) or a comma list of countermeasures; anything else is one
    clear error. The transform draws only from the named countermeasures."""
    from monai_umed.apps import robust_countermeasures, robust_transform
    from monai_umed.defenses import EOT_TRANSFORMS, ROBUST_DEFAULT
    from monai_umed.utils import UserInputError

    assert robust_countermeasures("true") == list(ROBUST_DEFAULT) and robust_countermeasures(True) == list(ROBUST_DEFAULT)
    assert set(EOT_TRANSFORMS) - set(ROBUST_DEFAULT) == {"augment"}
    assert robust_countermeasures("identity,augment") == ["identity", "augment"]
    assert robust_countermeasures(" All ") == list(EOT_TRANSFORMS) and "augment" in EOT_TRANSFORMS
    assert robust_countermeasures("false") is None and robust_countermeasures(None) is None
    assert robust_countermeasures("identity, JPEG") == ["identity", "jpeg"] == robust_countermeasures(["identity", "jpeg"])
    assert robust_transform("identity,jpeg").transforms == ("identity", "jpeg")
    assert robust_transform("all").transforms == tuple(EOT_TRANSFORMS)
    for bad in ("jpg", "maybe", ","):
        with pytest.raises(UserInputError, match="comma list"):
            robust_countermeasures(bad)
    with pytest.raises(UserInputError, match="2D images only"):
        robust_transform("jpeg", spatial_dims=3)


def test_surrogate_view():
    """``--robust_surrogate``: true (and any run without ``--robust``) gives the surrogate the generators' view
    itself; false gives it the rest of the view without the countermeasures (nothing, ``--rescale``'s view,
    REM's attack), so only the generators meet the countermeasures. ``--rem_surrogate false`` takes REM's attack
    out of the surrogate's view the same way."""
    from monai.losses import DiceCELoss

    from monai_umed.apps import robust_transform, surrogate_view
    from monai_umed.defenses import AdversarialView, EOTDefense, RescaleView
    from monai_umed.utils import UserInputError

    view = robust_transform("true")
    assert surrogate_view(view, "true", True) is view and surrogate_view(view, "identity,jpeg", "yes") is view
    assert isinstance(view, EOTDefense) and surrogate_view(view, "true", "false") is None
    rescaled = robust_transform(False, rescale=0.5)
    assert surrogate_view(rescaled, False, False) is rescaled  # no --robust: the flag changes nothing
    both = robust_transform("identity,jpeg", rescale=0.5, multiple=8)
    alone = surrogate_view(both, "identity,jpeg", False, rescale=0.5, multiple=8)
    assert isinstance(both.countermeasure, EOTDefense)
    assert isinstance(alone, RescaleView) and alone.countermeasure is None and alone.min_scale == 0.5
    net, loss = torch.nn.Conv2d(1, 2, 3, padding=1), DiceCELoss(to_onehot_y=True, softmax=True)
    rem = surrogate_view(None, "true", False, surrogate=net, loss_function=loss, rem_epsilon="2/255")
    assert isinstance(rem, AdversarialView) and rem.countermeasure is None
    for robust in ("true", False):  # refused with or without --robust
        with pytest.raises(UserInputError, match="robust_surrogate"):
            surrogate_view(view, robust, "maybe")
    # --rem_surrogate false: the surrogate's view is the generators' without REM's attack (its last stage)
    rem_args = dict(surrogate=net, loss_function=loss, rem_epsilon="2/255")
    attacked = robust_transform("identity,jpeg", **rem_args)
    assert isinstance(attacked, AdversarialView) and isinstance(attacked.countermeasure, EOTDefense)
    assert surrogate_view(attacked, "identity,jpeg", True, True) is attacked
    assert surrogate_view(attacked, "identity,jpeg", True, False) is attacked.countermeasure  # the same draws
    assert surrogate_view(attacked, "identity,jpeg", False, "false", **rem_args) is None
    alone = robust_transform(False, **rem_args)
    assert surrogate_view(alone, False, True, False) is None and surrogate_view(alone, False, True, True) is alone
    assert surrogate_view(view, "true", True, False) is view  # no --rem_epsilon: the flag changes nothing
    with pytest.raises(UserInputError, match="rem_surrogate"):
        surrogate_view(alone, False, True, "maybe")


def test_rem_view():
    """``--rem_epsilon``: 0 (any spelling of off) is no view; a radius gives REM's adversarial view, after the
    ``--robust`` countermeasures when both are asked for; a bad radius is one clear error."""
    from monai.losses import DiceCELoss

    from monai_umed.apps import robust_transform
    from monai_umed.defenses import AdversarialView, EOTDefense
    from monai_umed.utils import UserInputError

    net, loss = torch.nn.Conv2d(1, 2, 3, padding=1), DiceCELoss(to_onehot_y=True, softmax=True)
    for off in (0, "0", None, False, "off"):
        assert robust_transform(False, surrogate=net, loss_function=loss, rem_epsilon=off) is None
    view = robust_transform(False, surrogate=net, loss_function=loss, rem_epsilon="2/255", rem_steps=5)
    assert isinstance(view, AdversarialView) and view.countermeasure is None
    assert view.epsilon == pytest.approx(2 / 255) and view.steps == 5
    view = robust_transform("identity,jpeg", surrogate=net, loss_function=loss, rem_epsilon=0.01)
    assert isinstance(view.countermeasure, EOTDefense) and view.countermeasure.transforms == ("identity", "jpeg")
    for bad in ("-1/255", "x", 2):
        with pytest.raises(UserInputError, match="rem_epsilon"):
            robust_transform(False, surrogate=net, loss_function=loss, rem_epsilon=bad)


def test_rescale_view():
    """``--rescale``: 0 (any spelling of off) is no view, ``auto`` is 0.4 for images and off for volumes; a fraction
    gives ``RescaleView`` with the surrogate's stride as its step, after the ``--robust`` countermeasures and before
    REM's attack; anything else is one clear error."""
    from monai.losses import DiceCELoss

    from monai_umed.apps import RESCALE_AUTO, rescale_scale, robust_transform
    from monai_umed.defenses import AdversarialView, EOTDefense, RescaleView
    from monai_umed.utils import UserInputError

    for off in (0, "0", None, False, "off", "none"):
        assert rescale_scale(off) is None and robust_transform(False, rescale=off) is None
    assert rescale_scale("auto") == RESCALE_AUTO and rescale_scale("auto", spatial_dims=3) is None
    assert robust_transform(False, spatial_dims=3, rescale="auto") is None
    view = robust_transform(False, rescale="0.4", multiple=8)
    assert isinstance(view, RescaleView) and view.min_scale == 0.4 and view.multiple == 8 and view.countermeasure is None
    view = robust_transform("identity,jpeg", rescale=0.5)
    assert isinstance(view.countermeasure, EOTDefense)
    net, loss = torch.nn.Conv2d(1, 2, 3, padding=1), DiceCELoss(to_onehot_y=True, softmax=True)
    view = robust_transform(False, surrogate=net, loss_function=loss, rem_epsilon="2/255", rescale=0.5)
    assert isinstance(view, AdversarialView) and isinstance(view.countermeasure, RescaleView)
    for bad in (1, 1.5, "-0.2", "half", True):
        with pytest.raises(UserInputError, match="--rescale"):
            rescale_scale(bad)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests of monai_umed.apps.verify: the hold-out fold, the two verification runs, the verdict, the manifest entry
and the release check."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import monai_umed.apps.verify as verify_mod
from monai_umed.apps import (
    VERIFICATION_KEYS,
    check_manifest_entries,
    manifest_settings,
    VERIFY_EXPLOITER_KWARGS,
    VERIFY_EVALUATIONS,
    defense_verdict,
    protection_verdict,
    report_verification,
    verification_split,
    verify_defenses,
    verify_protection,
)
from monai_umed.data import load_datalist
from monai_umed.utils import ProtectionCheckFailed, UserInputError, install_cli_error_hook

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "umed" / "configs"
#: tiny settings of the two verification runs (about a second each on one CPU thread)
TINY = dict(
    image_size=32,
    max_epochs=8,
    batch_size=4,
    lr=3e-3,
    exploiter_kwargs={"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 0},
    min_images=4,
    device="cpu",
)


@pytest.fixture
def verify_log(caplog, monkeypatch):
    """caplog at INFO on the module's logger, with propagation on (another test may have turned it off)."""
    for name in ("monai_umed", "monai_umed.apps", verify_mod.logger.name):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    with caplog.at_level(logging.INFO, logger=verify_mod.logger.name):
        yield caplog


def _entries(n: int) -> list[dict]:
    return [
        {
            "image": f"/data/images/case_{i:03d}.png",
            "label": f"/data/masks/case_{i:03d}.png",
            "image_rel": f"images/case_{i:03d}.png",
            "label_rel": [f"masks/case_{i:03d}.png"],
            "name": f"case_{i:03d}",
        }
        for i in range(n)
    ]


def _names(items: list[dict]) -> list[str]:
    return [e["name"] for e in items]


# ------------------------------------------------------------------------------------------------- split
def test_split_is_disjoint_and_covers_the_input():
    items = _entries(57)
    train, fold = verification_split(items, fraction=0.2, min_images=10, seed=0)
    assert len(fold) == 11 and len(train) == 46  # round(0.2 * 57) = 11
    assert not set(_names(train)) & set(_names(fold))
    assert sorted(_names(train) + _names(fold)) == _names(items)
    # both lists keep the input order
    assert _names(train) == [n for n in _names(items) if n in set(_names(train))]
    assert _names(fold) == [n for n in _names(items) if n in set(_names(fold))]


def test_split_is_deterministic_for_a_seed():
    items = _entries(60)
    train, fold = verification_split(items, seed=3)
    assert (_names(train), _names(fold)) == tuple(map(_names, verification_split(items, seed=3)))
    # the fold depends on the entries, not on their order
    shuffled = [items[i] for i in np.random.default_rng(0).permutation(len(items))]
    assert set(_names(verification_split(shuffled, seed=3)[1])) == set(_names(fold))
    other = {tuple(_names(verification_split(items, seed=s)[1])) for s in range(4, 8)}
    assert tuple(_names(fold)) not in other and len(other) > 1


@pytest.mark.parametrize(
    "n, fraction, min_images, n_fold",
    [(100, 0.2, 10, 20), (100, 0.3, 10, 30), (30, 0.2, 10, 10), (20, 0.2, 10, 10), (8, 0.2, 4, 4), (25, 0.1, 2, 3), (24, 0.1, 2, 2)],
)
def test_split_sizes(n, fraction, min_images, n_fold):
    train, fold = verification_split(_entries(n), fraction=fraction, min_images=min_images, seed=1)
    assert len(fold) == n_fold and len(train) == n - n_fold
    assert len(fold) >= min_images and len(train) >= min_images


@pytest.mark.parametrize("n, fraction, min_images", [(19, 0.2, 10), (0, 0.2, 10), (60, 0.9, 10), (7, 0.2, 4)])
def test_split_refuses_too_small_datasets(n, fraction, min_images):
    with pytest.raises(UserInputError, match=f"the dataset has {n} image") as info:
        verification_split(_entries(n), fraction=fraction, min_images=min_images)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"fraction": 0.0}, {"fraction": 1.0}, {"min_images": 0}, {"min_images": 2.5}])
def test_split_rejects_bad_settings(kwargs):
    with pytest.raises(UserInputError):
        verification_split(_entries(50), **kwargs)


# ------------------------------------------------------------------------------------------------- verdict
def test_verdict():
    ok, msg = protection_verdict(0.1, 0.9, 0.3, 0.9)
    assert ok and msg.startswith("protection verified") and "0.10" in msg and "0.90" in msg
    weak, msg = protection_verdict(0.91, 0.93, 0.92, 0.95)
    assert not weak and msg.startswith("THE DATA IS NOT PROTECTED: a U-Net trained on the protected files reaches DSC 0.91")
    assert "0.93 when trained on the originals" in msg and "Do not release it as protected" in msg
    # an exploiter that stops at its best epoch beats the protection: weak too
    early, msg = protection_verdict(0.1, 0.8, 0.6, 0.8, exploiter="transunet")
    assert not early and "TransUNet" in msg and "reaches 0.60 at its best epoch" in msg
    assert msg.startswith("THE DATA IS NOT PROTECTED AGAINST EARLY STOPPING") and "ends at DSC 0.10" in msg
    assert protection_verdict(0.4, 0.8)[0] and not protection_verdict(0.41, 0.8)[0]  # the bound is 0.5 x clean
    assert protection_verdict(None, 0.8)[0] is False and "COULD NOT BE VERIFIED" in protection_verdict(None, 0.8)[1]
    inconclusive, msg = protection_verdict(0.05, 0.3)
    assert inconclusive and "inconclusive" in msg and "--verify_steps" in msg
    # weak AND inconclusive (the reference did not learn the task): not protected, and the advice is to verify longer
    unknown, msg = protection_verdict(0.15, 0.14)
    assert not unknown and msg.startswith("THE DATA IS NOT VERIFIED AS PROTECTED") and "--verify_steps" in msg
    assert "train the protector longer" not in msg


# ------------------------------------------------------------------------------------------------- data
def _shortcut_copy(clean: Path, protected: Path, seed: int = 1) -> Path:
    """A "protected" copy whose images carry a shortcut instead of the object: the bright ellipse is removed
    (background noise everywhere) and the mask region is painted black. A network trained on it learns
    "black -> foreground" and finds nothing on the clean images (bright objects)."""
    rng = np.random.default_rng(seed)
    shutil.copytree(clean / "masks", protected / "masks")
    (protected / "images").mkdir(parents=True)
    for p in sorted((clean / "images").glob("*.png")):
        m = np.asarray(Image.open(clean / "masks" / p.name)) > 0
        img = np.where(m, 0.0, 0.15 + rng.normal(0, 0.05, m.shape))
        Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).save(protected / "images" / p.name)
    return protected


def _manifest(output: Path) -> Path:
    path = output / "manifest.json"
    path.write_text(json.dumps({"settings": {"epsilon": 8 / 255}, "summary": {"num_images": 16}, "images": [{"source": "a"}]}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ellipses) -> dict[str, tuple[Path, dict]]:
    """One verification of an UNPROTECTED dataset (the "protected" folder is an exact copy of the clean images)
    and one of a dataset whose "protected" files carry a shortcut; ``{kind: (output_dir, result)}``."""
    base = tmp_path_factory.mktemp("verify")
    clean = ellipses(base / "dataset")
    items = load_datalist(clean)
    out: dict[str, tuple[Path, dict]] = {}
    for kind in ("copy", "shortcut"):
        output = base / kind
        protected = output / "protected"
        if kind == "copy":
            shutil.copytree(clean, protected)
        else:
            _shortcut_copy(clean, protected)
        torch.set_num_threads(1)
        result = verify_protection(clean, items, protected, output / "verification", **TINY)
        out[kind] = (output, result)
    return out


# ------------------------------------------------------------------------------------------------- runs
def test_unprotected_dataset_is_flagged(runs, verify_log):
    output, result = runs["copy"]
    assert result["clean_dsc"] > 0.6, result  # the tiny exploiter learns the task from clean data
    assert result["protected_dsc"] == pytest.approx(result["clean_dsc"], abs=0.05)
    assert result["protected"] is False and result["message"].startswith("THE DATA IS NOT PROTECTED")
    report_verification(result, _manifest(output))
    warnings = [r for r in verify_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "THE DATA IS NOT PROTECTED: a U-Net trained on the protected files" in warnings[0].getMessage()
    assert "Do not release it as protected" in warnings[0].getMessage()
    summary = [r.getMessage() for r in verify_log.records if r.getMessage().startswith("VERIFICATION")]
    assert len(summary) == 1 and "FAILED" in summary[0]
    assert f"DSC {result['protected_dsc']:.2f} on 4 clean held-out images" in summary[0]
    assert "trained on 12 protected images" in summary[0] and f"(best {result['clean_dsc_best']:.2f})" in summary[0]


def test_shortcut_dataset_passes(runs, verify_log):
    output, result = runs["shortcut"]
    assert result["clean_dsc"] > 0.6, result
    assert result["protected_dsc"] < 0.5 * result["clean_dsc"], result
    assert result["protected_dsc_best"] <= 0.5 * result["clean_dsc"], result
    assert result["protected"] is True and result["conclusive"] is True
    report_verification(result, _manifest(output), require_dsc=0.3)  # passes the release check
    assert not [r for r in verify_log.records if r.levelno >= logging.WARNING]
    summary = [r.getMessage() for r in verify_log.records if r.getMessage().startswith("VERIFICATION")]
    assert len(summary) == 1 and "passed" in summary[0]


def test_runs_use_the_written_files_and_the_same_settings(runs):
    output, result = runs["shortcut"]
    work = output / "verification"
    p = json.loads((work / "protected" / "metrics.json").read_text())
    c = json.loads((work / "clean" / "metrics.json").read_text())
    assert p["train_dir"] == str((output / "protected").resolve()) and c["train_dir"] is None
    assert p["dataset_dir"] == c["dataset_dir"]  # both score the clean fold
    for key in ("seed", "max_epochs", "batch_size", "lr", "image_size", "exploiter", "n_train", "n_test"):
        assert p[key] == c[key], key
    assert p["seed"] == 1 == result["seed"]  # seed + 1: not the protect job's seed
    assert p["dsc"] == result["protected_dsc"] and c["dsc"] == result["clean_dsc"]
    assert result["n_train"] == 12 and result["n_test"] == 4 and len(result["fold"]) == 4
    assert result["steps"] == TINY["max_epochs"] * math.ceil(12 / TINY["batch_size"]) == 24
    assert result["exploiter_kwargs"] == {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def test_manifest_gains_a_complete_verification_entry(runs):
    output, result = runs["copy"]
    path = _manifest(output)
    before = json.loads(path.read_text())
    written = report_verification(result, path)
    on_disk = json.loads(path.read_text())
    assert on_disk == written
    assert set(VERIFICATION_KEYS) <= set(on_disk["verification"])
    assert on_disk["verification"] == json.loads(json.dumps(result))
    assert {k: v for k, v in on_disk.items() if k != "verification"} == before  # summary, images... kept
    for key in ("protected_dsc", "clean_dsc", "protected_dsc_best", "clean_dsc_best", "seconds"):
        assert isinstance(on_disk["verification"][key], float), key
    assert on_disk["verification"]["max_epochs"] == 8 and on_disk["verification"]["image_size"] == 32
    assert not [p for p in output.iterdir() if p.name.startswith(".manifest")], "no temporary file left"


def test_require_dsc_fails_the_job_with_one_line(runs, capsys, monkeypatch):
    output, result = runs["copy"]
    path = _manifest(output)
    with pytest.raises(ProtectionCheckFailed) as info:
        report_verification(result, path, require_dsc=0.3)
    exc = info.value
    assert isinstance(exc, UserInputError) and "\n" not in str(exc)
    assert str(exc).startswith("protection check failed") and "require_dsc=0.3" in str(exc)
    assert f"DSC {result['protected_dsc']:.2f}" in str(exc)
    assert "verification" in json.loads(path.read_text())  # recorded before failing
    # under the bundle runner the error is wrapped by MONAI's config parser; the CLI hook prints one line
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    install_cli_error_hook()
    try:
        raise RuntimeError("Failed to evaluate ConfigExpression") from exc
    except RuntimeError as wrapped:
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    err = capsys.readouterr().err
    assert err == f"monai_umed: error: {exc}\n"
    # a limit above the protected DSC passes
    report_verification(result, path, require_dsc=min(1.0, result["protected_dsc"] + 0.01))


def test_missing_manifest_is_a_clear_error(runs, tmp_path):
    _, result = runs["copy"]
    missing = tmp_path / "out" / "manifest.json"
    with pytest.raises(UserInputError, match=f"manifest not found: {missing}"):
        report_verification(result, missing)
    broken = tmp_path / "manifest.json"
    broken.write_text("{not json")
    with pytest.raises(UserInputError, match="unreadable"):
        report_verification(result, broken)
    with pytest.raises(UserInputError, match="lacks the key"):
        report_verification({"protected_dsc": 0.1}, broken)


# ------------------------------------------------------------------------------------------------- wiring
def test_default_exploiter_is_not_the_surrogate(tmp_path, monkeypatch):
    """Without exploiter_kwargs the U-Net is narrower than the protect job's surrogate, trained with seed + 1;
    the protected run reads the protected folder, the reference the clean one, both on the same images."""
    surrogate = json.loads((BUNDLE / "protect.json").read_text())["surrogate"]
    assert tuple(VERIFY_EXPLOITER_KWARGS["channels"]) != tuple(surrogate["channels"])
    calls = []

    def fake_train(dataset_dir, datalist, output_dir, train_dir=None, **kwargs):
        calls.append(dict(dataset_dir=dataset_dir, datalist=datalist, output_dir=output_dir, train_dir=train_dir, **kwargs))
        n = len(datalist["training"])
        return {"dsc": 0.2 if train_dir else 0.8, "n_train": n, "n_test": len(datalist["test"])}

    monkeypatch.setattr(verify_mod, "train_exploiter", fake_train)
    items = _entries(30)
    (tmp_path / "protected").mkdir()
    result = verify_protection("/data", items, tmp_path / "protected", tmp_path / "verification", seed=5, batch_size=8)
    assert [c["train_dir"] for c in calls] == [tmp_path / "protected", None]
    assert [Path(c["output_dir"]) for c in calls] == [tmp_path / "verification" / "protected", tmp_path / "verification" / "clean"]
    first, second = ({k: v for k, v in c.items() if k not in ("train_dir", "output_dir")} for c in calls)
    assert first == second
    assert first["seed"] == 6 and first["exploiter"] == "unet" and first["exploiter_kwargs"] == VERIFY_EXPLOITER_KWARGS
    train, fold = verification_split(items, seed=5)
    assert [e["name"] for e in first["datalist"]["training"]] == _names(train)
    assert [e["name"] for e in first["datalist"]["test"]] == _names(fold)
    assert first["datalist"]["test"][0] == {"image": fold[0]["image_rel"], "label": fold[0]["label_rel"][0], "name": fold[0]["name"]}
    # before the exploiter reports dsc_best, the final DSC stands in for it
    assert result["protected_dsc_best"] == 0.2 and result["clean_dsc_best"] == 0.8 and result["protected"] is True
    assert result["steps"] == first["max_epochs"] * math.ceil(24 / 8)
    assert set(VERIFICATION_KEYS) <= set(result)


def test_missing_protected_file_is_reported(tmp_path, ellipses):
    clean = ellipses(tmp_path / "dataset", n=8)
    protected = tmp_path / "out" / "protected"
    shutil.copytree(clean, protected)
    train, _ = verification_split(load_datalist(clean), min_images=4, seed=0)
    gone = Path(train[1]["image_rel"])  # a file the verification trains on
    (protected / gone).unlink()
    with pytest.raises(UserInputError, match=str(protected / gone)):
        verify_protection(clean, load_datalist(clean), protected, tmp_path / "out" / "verification", **TINY)


def test_defense_verdict_and_verify_defenses():
    """The verdict under a countermeasure uses the undefended clean reference and the same 0.5 rule (final or best
    epoch); ``--verify_defenses`` is ``auto`` (JPEG for images, nothing for volumes), ``none`` or a list."""
    ok, msg = defense_verdict("jpeg", 0.2, 0.8, 0.35)
    assert ok and msg.startswith("protected against JPEG compression")
    weak, msg = defense_verdict("jpeg", 0.2, 0.8, 0.45)
    assert not weak and msg.startswith("THE DATA IS NOT PROTECTED AGAINST JPEG COMPRESSION") and "0.45" in msg
    assert not defense_verdict("median", None, 0.8)[0]
    assert verify_defenses("auto") == ["jpeg"] and verify_defenses("auto", spatial_dims=3) == []
    assert verify_defenses("none") == [] and verify_defenses(None) == []
    assert verify_defenses("jpeg, median") == ["jpeg", "median"] == verify_defenses(["jpeg", "median"])
    with pytest.raises(UserInputError, match="unknown jpg"):
        verify_defenses("jpg")
    with pytest.raises(UserInputError, match="2D images only"):
        verify_defenses("jpeg", spatial_dims=3)


def test_defended_runs_are_recorded_and_reported(tmp_path, monkeypatch, verify_log):
    """``defenses=["jpeg"]``: one more run on the protected files with the defense, judged against the clean
    reference; the main verdict is unchanged, the weak defense is a WARNING naming it."""
    calls = []

    def fake_train(dataset_dir, datalist, output_dir, train_dir=None, defense="none", **kwargs):
        calls.append((Path(output_dir).name, train_dir, defense))
        dsc = {"none": 0.1, "jpeg": 0.7}[defense] if train_dir else 0.8
        return {"dsc": dsc, "dsc_best": dsc, "n_train": len(datalist["training"]), "n_test": len(datalist["test"])}

    monkeypatch.setattr(verify_mod, "train_exploiter", fake_train)
    (tmp_path / "protected").mkdir()
    result = verify_protection("/data", _entries(30), tmp_path / "protected", tmp_path / "v", defenses=["jpeg"])
    assert calls == [("protected", tmp_path / "protected", "none"), ("clean", None, "none"),
                     ("protected_jpeg", tmp_path / "protected", "jpeg")]
    assert result["protected"] is True and result["defenses"]["jpeg"]["protected"] is False
    assert result["defenses"]["jpeg"]["dsc"] == 0.7
    report_verification(result, _manifest(tmp_path))
    warnings = [r.getMessage() for r in verify_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("THE DATA IS NOT PROTECTED AGAINST JPEG COMPRESSION")


# ------------------------------------------------------------------------------------------------- resolution
def test_native_size_and_resolution_caveat(tmp_path, runs, verify_log):
    """The files' median size is read from their headers; a verification at a size well below it ends with a
    WARNING naming the size to verify at, and none when the sizes agree (the runs above: 32-pixel files at 32)."""
    from monai_umed.apps import native_image_size, resolution_caveat

    for i, (h, w) in enumerate([(224, 200), (230, 210), (220, 190)]):
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / f"img_{i}.png")
    items = [{"image": str(tmp_path / f"img_{i}.png")} for i in range(3)]
    assert native_image_size(items) == (224, 200)
    assert resolution_caveat(96, (224, 200)).startswith("The verification exploiter trained at 96x96, but the files are about 224x200")
    assert "--verify_image_size 192" in resolution_caveat(96, (224, 200))
    assert resolution_caveat(160, (224, 200)) is None and resolution_caveat(96, None) is None

    output, result = runs["shortcut"]
    assert result["native_size"] == [32, 32] and result["resolution_caveat"] is None
    flagged = dict(result, native_size=[224, 224], resolution_caveat=resolution_caveat(32, (224, 224)))
    report_verification(flagged, _manifest(output))
    warnings = [r.getMessage() for r in verify_log.records if r.levelno == logging.WARNING]
    assert warnings == [flagged["resolution_caveat"]]
    assert json.loads((output / "manifest.json").read_text())["verification"]["native_size"] == [224, 224]


def test_native_size_is_none_for_volumes(tmp_path):
    import nibabel as nib

    from monai_umed.apps import native_image_size

    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.int16), np.eye(4)), str(tmp_path / "v.nii.gz"))
    assert native_image_size([{"image": str(tmp_path / "v.nii.gz")}]) is None


@pytest.mark.parametrize("n, steps, epochs, interval", [(30, 500, 167, 6), (30, 60, 20, 1), (12, 500, 500, 16)])
def test_long_runs_on_few_images_score_the_fold_about_32_times(tmp_path, monkeypatch, n, steps, epochs, interval):
    """A run of many epochs (few images per step: small or 3D datasets) is scored every ceil(epochs / 32) epochs, a
    short one after every epoch; both runs alike, and the result says which."""
    calls = []

    def fake_train(dataset_dir, datalist, output_dir, train_dir=None, **kwargs):
        calls.append(kwargs)
        return {"dsc": 0.1 if train_dir else 0.8, "n_train": len(datalist["training"]), "n_test": len(datalist["test"])}

    monkeypatch.setattr(verify_mod, "train_exploiter", fake_train)
    (tmp_path / "protected").mkdir()
    result = verify_protection("/data", _entries(n), tmp_path / "protected", tmp_path / "v", steps=steps, batch_size=8,
                               min_images=4 if n < 20 else 10)
    assert [c["max_epochs"] for c in calls] == [epochs, epochs]
    assert [c["val_interval"] for c in calls] == [interval, interval]
    assert result["val_interval"] == interval and math.ceil(epochs / interval) <= VERIFY_EVALUATIONS


# ------------------------------------------------------------------------------------------------- other sizes
def test_verify_sizes_and_size_verdict():
    """``--verify_sizes auto`` is half the verification size (a multiple of 16, 32..96) for images and nothing for
    volumes; explicit sizes are checked; the verdict at a size uses the clean run at that size and the 0.5 rule."""
    from monai_umed.apps import size_verdict, verify_sizes

    assert verify_sizes("auto", 96) == [48] and verify_sizes("auto", 224) == [96] and verify_sizes("auto", 64) == [32]
    assert verify_sizes("auto", 32) == [] and verify_sizes("auto", 96, spatial_dims=3) == []
    assert verify_sizes("none", 96) == [] == verify_sizes(None, 96)
    assert verify_sizes("64, 128,96", 96) == [64, 128] == verify_sizes([64, 128], 96)
    for bad in ("50", "16", "big"):
        with pytest.raises(UserInputError, match="--verify_sizes"):
            verify_sizes(bad, 96)
    with pytest.raises(UserInputError, match="2D images only"):
        verify_sizes("64", 96, spatial_dims=3)
    ok, msg = size_verdict(96, 0.05, 0.8, 0.35)
    assert ok and msg.startswith("protected against an exploiter that trains at 96x96")
    weak, msg = size_verdict(96, 0.76, 0.76, 0.77)
    assert not weak and msg.startswith("THE DATA IS NOT PROTECTED AGAINST AN EXPLOITER THAT TRAINS AT 96x96") and "0.76" in msg
    assert not size_verdict(48, None, 0.8)[0]
    unknown, msg = size_verdict(48, 0.05, 0.3, 0.1)  # the clean run at that size did not learn the task
    assert unknown and "inconclusive" in msg and "--verify_steps" in msg


def test_other_sizes_are_verified_against_their_own_clean_reference(tmp_path, monkeypatch, verify_log):
    """``sizes=[48]``: a protected and a clean run at 48 px beside the main runs, with the same other settings; the
    verdict at 48 px uses the 48-px clean run; the main verdict is unchanged; a weak size is a WARNING naming it."""
    calls = []

    def fake_train(dataset_dir, datalist, output_dir, train_dir=None, defense="none", image_size=96, **kwargs):
        calls.append((Path(output_dir).name, train_dir, image_size, kwargs["seed"], kwargs["max_epochs"]))
        dsc = {(96, True): 0.05, (96, False): 0.8, (48, True): 0.6, (48, False): 0.7}[(image_size, train_dir is not None)]
        return {"dsc": dsc, "dsc_best": dsc, "n_train": len(datalist["training"]), "n_test": len(datalist["test"])}

    monkeypatch.setattr(verify_mod, "train_exploiter", fake_train)
    (tmp_path / "protected").mkdir()
    result = verify_protection("/data", _entries(30), tmp_path / "protected", tmp_path / "v", image_size=96, sizes=[48])
    assert [c[:3] for c in calls] == [("protected", tmp_path / "protected", 96), ("clean", None, 96),
                                      ("protected_48px", tmp_path / "protected", 48), ("clean_48px", None, 48)]
    assert len({c[3:] for c in calls}) == 1  # same seed and schedule for every run
    assert result["protected"] is True
    at48 = result["sizes"]["48"]
    assert at48["protected"] is False and at48["dsc"] == 0.6 and at48["clean_dsc"] == 0.7
    assert at48["metrics"].endswith("protected_48px/metrics.json") and at48["conclusive"] is True
    report_verification(result, _manifest(tmp_path))
    warnings = [r.getMessage() for r in verify_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("THE DATA IS NOT PROTECTED AGAINST AN EXPLOITER THAT TRAINS AT 48x48")
    assert json.loads((tmp_path / "manifest.json").read_text())["verification"]["sizes"]["48"]["clean_dsc"] == 0.7


def test_manifest_entries_must_be_the_protected_originals(tmp_path):
    """The verify job scores only originals that the manifest lists as protected sources; channel-file images match
    by their first file (the writer's ``source``), paths by their resolved location."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    files = {n: root / "images" / n for n in ("a_0000.nii.gz", "a_0001.nii.gz", "b.png", "c.png")}
    for f in files.values():
        f.write_bytes(b"x")
    path = tmp_path / "manifest.json"
    sources = [str(files["a_0000.nii.gz"]), str(files["b.png"])]
    path.write_text(json.dumps({"settings": {"seed": 3, "image_size": 64}, "images": [{"source": s} for s in sources]}))
    channels = {"image": [str(files["a_0000.nii.gz"]), str(files["a_0001.nii.gz"])]}
    via_link = {"image": str(root / "images" / ".." / "images" / "b.png")}
    assert check_manifest_entries(path, [channels, via_link]) == 2
    with pytest.raises(UserInputError, match=r"1 of 3 dataset image\(s\) are not in the protected dataset") as err:
        check_manifest_entries(path, [channels, via_link, {"image": str(files["c.png"])}])
    assert str(files["c.png"]) in str(err.value) and "b.png" not in str(err.value)
    assert manifest_settings(path) == {"seed": 3, "image_size": 64}
    path.write_text(json.dumps({"summary": {}}))
    with pytest.raises(UserInputError, match="not a protected-dataset manifest"):
        check_manifest_entries(path, [channels])

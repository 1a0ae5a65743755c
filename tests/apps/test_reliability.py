"""Bad inputs and faults of the jobs (issue 9): each one is refused with a message naming the file or option,
or handled, before any training."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from PIL import Image

from monai_umed.apps import check_cli_options, latest_checkpoint, parse_epsilon, resolve_dataset, umed_transforms
from monai_umed.apps.split import write_split
from monai_umed.data import DatasetValidationError, load_datalist, make_synthetic_dataset, validate_datalist
from monai_umed.handlers import CheckpointSaver
from monai_umed.protectors import UMedProtector, load_protector
from monai_umed.utils import UserInputError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "umed" / "configs"


def _pair(root: Path, stem: str, image: np.ndarray | Image.Image, mask: np.ndarray, mode: str | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")


def _mask(h: int = 32, w: int = 32) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    return m


# 1. security ------------------------------------------------------------------------------------------------
class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('UMED_PWNED', '/tmp/umed_pwned')}",))


def test_a_crafted_protector_file_cannot_run_code(tmp_path: Path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("UMED_PWNED", str(marker))
    evil = tmp_path / "protector.pt"
    torch.save({"format": "monai_umed.protector/1", "settings": _Exploit(), "state_dict": {}}, evil, pickle_module=pickle)
    with pytest.raises(UserInputError, match="refused to load"):
        load_protector(evil)
    assert not marker.exists(), "the pickled command must not run"


def test_protector_round_trip_and_truncated_file(tmp_path: Path):
    args = dict(in_channels=1, contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    p = UMedProtector(image_size=32, **args)
    path = p.save(tmp_path / "p.pt", {"image_size": 32, "epsilon": np.float64(4 / 255)})
    loaded, settings = load_protector(path)
    assert settings["image_size"] == 32 and type(settings["epsilon"]) is float
    assert all(torch.equal(a, b) for a, b in zip(p.state_dict().values(), loaded.state_dict().values()))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserInputError, match=str(broken)):
        load_protector(broken)


# 2. BUSI layout with extra lesion masks ----------------------------------------------------------------------
def test_busi_case_with_extra_masks_collates(tmp_path: Path):
    root = tmp_path / "busi" / "benign"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((32, 32)) * 255).astype(np.uint8)).save(root / f"benign ({i}).png")
        Image.fromarray(_mask() * 255).save(root / f"benign ({i})_mask.png")
    extra = np.zeros((32, 32), np.uint8)
    extra[2:6, 2:6] = 255
    Image.fromarray(extra).save(root / "benign (1)_mask_1.png")
    items = load_datalist(dataset_dir=str(tmp_path / "busi"))
    assert any(isinstance(e["label_rel"], list) and len(e["label_rel"]) == 2 for e in items)
    loader = DataLoader(CacheDataset(items, umed_transforms(32, 1, band_width=1), progress=False), batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 1, 32, 32) and set(batch) >= {"contour_band", "roi_interior", "texture_map"}


# 7. validation before training -------------------------------------------------------------------------------
def test_non_finite_nifti_and_tiny_images_are_refused_by_name(tmp_path: Path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, value in (("nan", np.nan), ("inf", np.inf)):
        a = np.random.default_rng(0).random((32, 32)).astype(np.float32)
        a[3, 3] = value
        nib.save(nib.Nifti1Image(a, np.eye(4)), str(root / "images" / f"{stem}.nii.gz"))
        nib.save(nib.Nifti1Image(_mask(), np.eye(4)), str(root / "masks" / f"{stem}.nii.gz"))
    _pair(root, "tiny", np.full((1, 1), 9, np.uint8), np.ones((1, 1), np.uint8))
    _pair(root, "fine", (np.random.default_rng(1).random((32, 32)) * 255).astype(np.uint8), _mask())
    with pytest.raises(DatasetValidationError) as err:
        validate_datalist(load_datalist(dataset_dir=str(root)), dataset_dir=root)
    text = str(err.value)
    assert f"{root}/images/nan.nii.gz: image has 1 non-finite" in text
    assert f"{root}/images/inf.nii.gz: image has 1 non-finite" in text
    assert f"{root}/images/tiny.png: image is 1x1" in text
    assert "fine.png" not in text


def test_palette_images_pass_validation(tmp_path: Path):
    rgb = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    _pair(tmp_path / "d", "p", Image.fromarray(rgb).convert("P"), _mask())
    validate_datalist(load_datalist(dataset_dir=str(tmp_path / "d")))


def test_dangling_symlink_is_named_as_such(tmp_path: Path):
    root = tmp_path / "d"
    _pair(root, "a", (np.random.default_rng(3).random((32, 32)) * 255).astype(np.uint8), _mask())
    Image.fromarray(_mask() * 255).save(root / "masks" / "b.png")
    os.symlink(tmp_path / "gone.png", root / "images" / "b.png")
    with pytest.raises(DatasetValidationError, match=r"images/b.png: broken symbolic link") as err:
        validate_datalist(load_datalist(dataset_dir=str(root)), dataset_dir=root)
    assert "mask has no image" not in str(err.value)


# 8. no ROI anywhere ------------------------------------------------------------------------------------------
def test_all_masks_empty_is_refused(tmp_path: Path):
    root = tmp_path / "d"
    for i in range(3):
        _pair(root, f"c{i}", (np.random.default_rng(i).random((32, 32)) * 255).astype(np.uint8), np.zeros((32, 32)))
    with pytest.raises(UserInputError, match="no image has an ROI: all 3 masks"):
        resolve_dataset(str(root), None, str(tmp_path / "out"))


# 9. epsilon -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("4 / 255", 4 / 255), (0.0157, 0.0157), ("0.03", 0.03)])
def test_epsilon_accepts_fractions(text, value):
    assert parse_epsilon(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", [1.5, 1, 0, -0.1, "abc", "1/0", float("nan")])
def test_epsilon_outside_0_1_is_refused(bad):
    with pytest.raises(UserInputError, match="--epsilon"):
        parse_epsilon(bad)


def test_large_epsilon_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="monai_umed"):
        parse_epsilon("32/255")
    assert "may be visible" in caplog.text


# 5. checkpoints ---------------------------------------------------------------------------------------------
def test_checkpoints_are_atomic_and_resume_skips_a_truncated_one(tmp_path: Path, caplog):
    from ignite.engine import Engine, Events

    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saver = CheckpointSaver(str(tmp_path), {"net": net}, save_interval=1, n_saved=2, epoch_level=True)
    saver.attach(engine)
    engine.run([0], max_epochs=2)
    files = sorted(tmp_path.glob("*.pt"))
    assert files and not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"
    good = max(files, key=lambda p: p.stat().st_mtime)
    truncated = tmp_path / "checkpoint_epoch=9.pt"
    truncated.write_bytes(good.read_bytes()[:100])  # what a kill during a non-atomic save leaves
    os.utime(truncated, (good.stat().st_mtime + 10,) * 2)
    with caplog.at_level(logging.WARNING, logger="monai_umed"):
        assert latest_checkpoint(tmp_path) == str(good)
    assert f"skipping checkpoint {truncated}" in caplog.text
    truncated.unlink()
    for p in tmp_path.glob("*.pt"):
        p.write_bytes(b"junk")
    with pytest.raises(UserInputError, match="no checkpoint in .* can be read"):
        latest_checkpoint(tmp_path)

    # a failure while saving leaves the previous checkpoint in place and no partial file
    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    net_saver = saver._interval_checkpoint.save_handler
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")}
    with pytest.raises(OSError):
        net_saver._save_func({"net": net.state_dict()}, tmp_path / "checkpoint_epoch=3.pt", boom)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.pt")} == before


# 11. options, folders ---------------------------------------------------------------------------------------
def test_unknown_options_are_refused():
    main = "/x/site-packages/monai/bundle/__main__.py"
    protect = str(CONFIGS / "protect.json")
    check_cli_options([main, "run", "protect", "--config_file", protect, "--epsilon", "8/255", "--perturbator_args#theta", "0.7"])
    with pytest.raises(UserInputError, match=r"unknown option --epsilom \(did you mean --epsilon\?\)"):
        check_cli_options([main, "run", "protect", "--config_file", protect, "--epsilom", "0.1"])
    with pytest.raises(UserInputError, match="unknown option --epsilon"):
        check_cli_options([main, "run", "apply", "--config_file", str(CONFIGS / "apply.json"), "--epsilon", "0.1"])
    merged = f"['{protect}','{CONFIGS / 'apply.json'}']"
    check_cli_options([main, "run", "protect", "--config_file", merged, "--protector_file", "p.pt"])
    check_cli_options(["pytest", "--epsilom", "1"])  # not the bundle command line: nothing to check


def test_output_folder_containing_the_input_is_refused(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "out" / "data", num_images=2, size=(32, 32), seed=0)
    with pytest.raises(UserInputError, match="contains the input dataset"):
        resolve_dataset(str(data), None, str(tmp_path / "out"))
    with pytest.raises(UserInputError, match="never writes into the input"):
        resolve_dataset(str(data), None, str(data / "o"))


def test_split_file_inside_the_dataset_is_refused(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "data", num_images=4, size=(32, 32), seed=0)
    before = sorted(p.name for p in data.rglob("*"))
    with pytest.raises(UserInputError, match="input dataset .* or inside it"):
        write_split(str(data), data / "split.json")
    assert sorted(p.name for p in data.rglob("*")) == before


# 10. messages under `python -m monai.bundle run` -------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_user_errors_end_with_one_message_and_no_traceback(tmp_path: Path):
    data = tmp_path / "d"
    _pair(data, "a", (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8), _mask())
    (data / "images" / "b.png").write_bytes(b"")
    Image.fromarray(_mask() * 255).save(data / "masks" / "b.png")
    cases = [
        (["protect", "--config_file", str(CONFIGS / "protect.json"), "--dataset_dir", str(data), "--output_dir",
          str(tmp_path / "o")], f"{data}/images/b.png: file is empty"),
        (["apply", "--config_file", str(CONFIGS / "apply.json"), "--protector_file", str(tmp_path / "nope.pt"),
          "--output_dir", str(tmp_path / "o2")], "protector file not found"),
        (["protect", "--config_file", str(CONFIGS / "protect.json"), "--output_dir", str(tmp_path / "o3"),
          "--synthetic_images", "2", "--synthetic_size", "32", "--steps", "0"], "--steps 0: expected a whole number"),
    ]
    for args, expected in cases:
        proc = _run(*args)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr and "Failed to evaluate" not in proc.stderr
        assert f"monai_umed: error:" in proc.stderr and expected in proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 8, proc.stderr
    assert not (tmp_path / "o" / "checkpoints").exists()


# 6. one run per output folder -------------------------------------------------------------------------------
def test_apply_into_a_folder_in_use_is_refused(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "data", num_images=2, size=(32, 32), seed=0)
    args = dict(in_channels=1, contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    protector = UMedProtector(image_size=32, band_width=1, **args).save(tmp_path / "p.pt")
    out = tmp_path / "o"
    hold = "import sys, time; from monai_umed.utils import OutputLock; OutputLock(sys.argv[1], 'apply').acquire(); print('ok', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        proc = _run("apply", "--config_file", str(CONFIGS / "apply.json"), "--verify", "false", "--protector_file", str(protector),
                    "--dataset_dir", str(data), "--output_dir", str(out))
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert proc.returncode == 1 and f"output folder {out} is in use by another monai_umed run" in proc.stderr
    assert not (out / "protected").exists() and not (out / "manifest.json").exists()

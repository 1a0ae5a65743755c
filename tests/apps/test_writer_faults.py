"""The writer against hostile inputs and faults: scaled NIfTI, rounding at the bound, palette PNGs, stale files,
leftover temporaries, nothing changed, and a kill -9 in the middle of writing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_umed.data import load_datalist, make_synthetic_dataset, read_raw
from monai_umed.apps import ProtectedDatasetWriter, quantize_protected
from monai_umed.protectors import UMedProtector
from monai_umed.utils import UserInputError, temp_path


def _perturbator(channels: int = 1, epsilon: float = 4 / 255) -> UMedProtector:
    torch.manual_seed(0)
    p = UMedProtector(
        in_channels=channels, image_size=16, epsilon=epsilon, contour_channels=(4, 8), contour_strides=(2,),
        texture_channels=(4, 8), texture_strides=(2,), band_width=1,
    )
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)  # saturate the deltas at the bound
    return p.eval()


def _write(root: Path, out: Path, channels: int = 1, epsilon: float = 4 / 255) -> dict:
    writer = ProtectedDatasetWriter(
        _perturbator(channels, epsilon), load_datalist(dataset_dir=str(root)), root, out / "protected", manifest_dir=out,
    )
    return writer()


def _blob(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - h // 2) ** 2 + (xx - w // 2) ** 2) <= (min(h, w) // 4) ** 2).astype(np.uint8)


def _folders(tmp_path: Path) -> Path:
    root = tmp_path / "input"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


def test_scaled_int16_nifti_keeps_the_bound_on_read_values(tmp_path: Path):
    """scl_slope 0.5, scl_inter -1024: the bound and locality hold on the values a reader gets."""
    root = _folders(tmp_path)
    rng = np.random.default_rng(0)
    mask = _blob(32, 32)
    stored = (rng.integers(0, 1500, (32, 32)) + 600 * mask.astype(np.int64)).astype(np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(0.5, -1024.0)
    nib.save(img, str(root / "images" / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / "masks" / "ct.nii.gz"))
    out = tmp_path / "out"
    _write(root, out)
    src, dst = nib.load(str(root / "images" / "ct.nii.gz")), nib.load(str(out / "protected" / "images" / "ct.nii.gz"))
    assert dst.get_data_dtype() == np.int16 and (dst.dataobj.slope, dst.dataobj.inter) == (0.5, -1024.0)
    a, b = np.asarray(src.dataobj, np.float64), np.asarray(dst.dataobj, np.float64)
    bound = 4 / 255 * (a.max() - a.min())
    diff = np.abs(b - a)
    assert 0 < diff.max() <= bound
    entry = json.loads((out / "manifest.json").read_text())["images"][0]
    assert entry["linf"] <= 4 / 255 + 1e-9, "the manifest's own l-inf respects epsilon"
    # nothing changes far from the ROI (outside the band of the native grid)
    far = np.ones_like(mask, dtype=bool)
    far[4:-4, 4:-4] = False
    assert not (diff[far] > 0).any()


@pytest.mark.parametrize("channels", [1, 3])
def test_mha_images_keep_pixel_type_and_geometry(tmp_path: Path, channels: int):
    """2D MetaImage files (grey uint16, RGB vector uint8): written back with the same pixel type, spacing, origin and
    metadata, within the bound of each file's scale, nothing changed far from the ROI."""
    import SimpleITK as sitk

    root = _folders(tmp_path)
    rng = np.random.default_rng(3)
    mask = _blob(40, 40)
    if channels == 1:
        arr = (rng.integers(0, 3000, (40, 40)) + 2000 * mask.astype(np.int64)).astype(np.uint16)
        img = sitk.GetImageFromArray(arr)
    else:
        arr = (rng.random((40, 40, 3)) * 150 + 60 * mask[..., None]).astype(np.uint8)
        img = sitk.GetImageFromArray(arr, isVector=True)
    img.SetSpacing((0.3, 0.4))
    img.SetOrigin((5.0, -2.0))
    img.SetMetaData("device", "probe")
    sitk.WriteImage(img, str(root / "images" / "us.mha"))
    Image.fromarray(mask * 255).save(root / "masks" / "us.png")
    out = tmp_path / "out"
    _write(root, out, channels=channels)
    dst = sitk.ReadImage(str(out / "protected" / "images" / "us.mha"))
    assert dst.GetPixelID() == img.GetPixelID() and dst.GetSpacing() == img.GetSpacing()
    assert dst.GetOrigin() == img.GetOrigin() and dst.GetMetaData("device") == "probe"
    b = sitk.GetArrayFromImage(dst).astype(np.int64)
    diff = np.abs(b - arr.astype(np.int64))
    # uint16: the image's own range; uint8: the dtype's range
    lo, hi = (int(arr.min()), int(arr.max())) if channels == 1 else (0, 255)
    assert 0 < diff.max() <= np.floor(4 / 255 * (hi - lo) + 1e-6)
    far = np.ones((40, 40), dtype=bool)
    far[4:-4, 4:-4] = False
    assert not (diff.reshape(40, 40, -1).max(-1)[far] > 0).any()


@pytest.mark.parametrize("epsilon", [0.0235, 4 / 255, 0.0301, 5.5 / 255])
def test_rounding_never_crosses_the_bound(tmp_path: Path, epsilon: float):
    """epsilon x range need not be an integer: 8-bit PNG and int16 NIfTI (per-image range) both finish."""
    root = _folders(tmp_path)
    rng = np.random.default_rng(1)
    mask = _blob(40, 40)
    png = (rng.random((40, 40)) * 150 + 50 + 50 * mask).astype(np.uint8)
    Image.fromarray(png).save(root / "images" / "a.png")
    Image.fromarray(mask * 255).save(root / "masks" / "a.png")
    ct = (rng.integers(-1000, 1000, (40, 40)) + 500 * mask.astype(np.int64)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(root / "images" / "b.nii.gz"))
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(root / "masks" / "b.nii.gz"))
    out = tmp_path / "out"
    _write(root, out, epsilon=epsilon)
    d_png = np.abs(np.asarray(Image.open(out / "protected" / "images" / "a.png"), np.int64) - png)
    assert 0 < d_png.max() <= math.floor(epsilon * 255 + 1e-6)
    written = np.asarray(nib.load(str(out / "protected" / "images" / "b.nii.gz")).dataobj, np.int64)
    assert 0 < np.abs(written - ct).max() <= math.floor(epsilon * (int(ct.max()) - int(ct.min())) + 1e-6)


def test_quantize_caps_after_rounding():
    """A saturated delta of 5.99 levels is written as 5, never as the rounded 6."""
    raw = read_raw_array(np.full((8, 8), 100, np.uint8))
    eps = 5.99 / 255
    out, bound, q = quantize_protected(raw, np.full((1, 8, 8), eps, np.float32), eps)
    assert q == 1 and bound == pytest.approx(5.99) and int(out.max()) - 100 == 5


def test_volume_modalities_each_get_their_own_scale(tmp_path: Path):
    """A 4D NIfTI with an int16 modality of range ~2000 and one of range ~200: to_unit spans [0, 1] per modality,
    from_unit inverts it exactly, and a saturated delta moves each modality by epsilon times its own range, which
    check_written re-checks per modality on the written file."""
    from monai_umed.apps import check_written
    from monai_umed.data import from_unit, read_raw, to_unit
    from monai_umed.apps.writer import _write_nifti

    rng = np.random.default_rng(0)
    vol = np.stack([rng.integers(-1000, 1000, (9, 10, 11)), rng.integers(0, 200, (9, 10, 11))], axis=-1).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "mm.nii.gz"))
    raw = read_raw(tmp_path / "mm.nii.gz")
    unit = to_unit(raw)
    assert unit.shape == (2, 9, 10, 11) and np.allclose(unit.reshape(2, -1).min(1), 0) and np.allclose(unit.reshape(2, -1).max(1), 1)
    np.testing.assert_array_equal(from_unit(unit, raw), vol)
    eps = 4 / 255
    out, bound, q = quantize_protected(raw, np.full(unit.shape, eps, np.float32), eps)
    ranges = vol.reshape(-1, 2).max(0).astype(float) - vol.reshape(-1, 2).min(0)
    np.testing.assert_allclose(bound, eps * ranges)
    per = (out.astype(np.int64) - vol).reshape(-1, 2).max(0)
    assert per.tolist() == np.floor(eps * ranges + 1e-6).astype(int).tolist()  # 31 and 3 levels
    _write_nifti(out, raw, tmp_path / "w.nii.gz")
    linf, _ = check_written(raw, read_raw(tmp_path / "w.nii.gz"), np.ones((9, 10, 11), bool), bound, q)
    assert linf == per.tolist()
    with pytest.raises(RuntimeError, match="per modality"):
        check_written(raw, read_raw(tmp_path / "w.nii.gz"), np.ones((9, 10, 11), bool), bound / 2, q)


def read_raw_array(array: np.ndarray):
    from monai_umed.data import RawImage

    return RawImage(array=array, format="PNG", mode="L", path="mem.png")


def test_palette_png_is_written_as_rgb_within_the_bound(tmp_path: Path):
    root = _folders(tmp_path)
    rng = np.random.default_rng(2)
    mask = _blob(40, 40)
    rgb = (rng.random((40, 40, 3)) * 200 + 20).astype(np.uint8)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(root / "images" / "p.png")
    Image.fromarray(mask * 255).save(root / "masks" / "p.png")
    out = tmp_path / "out"
    _write(root, out, channels=3)
    colours = np.asarray(Image.open(root / "images" / "p.png").convert("RGB"), np.int64)
    written = Image.open(out / "protected" / "images" / "p.png")
    assert written.mode == "RGB"
    diff = np.abs(np.asarray(written, np.int64) - colours)
    assert 0 < diff.max() <= 4


def test_stale_files_are_listed_and_leftover_temporaries_removed(tmp_path: Path, caplog):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=3, size=(32, 32), seed=3)
    out = tmp_path / "out"
    (out / "protected" / "images").mkdir(parents=True)
    (out / "protected" / "images" / "old_case.png").write_bytes(b"from an earlier run")
    leftover = temp_path(out / "protected" / "images" / "img_0.png")
    leftover.write_bytes(b"half")
    _write(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stale_files"] == ["images/old_case.png"]
    assert "not part of the protected dataset" in caplog.text
    assert not leftover.exists()


def test_nothing_changed_is_an_error(tmp_path: Path):
    """epsilon below one grey level on 8-bit files: every image is written unchanged, which is no protection."""
    root = make_synthetic_dataset(tmp_path / "syn", num_images=2, size=(32, 32), seed=3)
    with pytest.raises(UserInputError, match="NOT protected"):
        _write(root, tmp_path / "out", epsilon=0.5 / 255)


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    import monai_umed.apps.writer as writer_mod
    from test_writer_faults import _write
    real, calls = writer_mod._write_raster, {"n": 0}

    def dying(array, raw, tmp):
        calls["n"] += 1
        if "synthetic_003" in Path(tmp).name:  # half of the 4th image is on disk when the process is killed
            Path(tmp).write_bytes(b"\\x89PNG half")
            os.kill(os.getpid(), signal.SIGKILL)
        real(array, raw, tmp)

    writer_mod._write_raster = dying
    _write(Path(sys.argv[1]), Path(sys.argv[2]))
    """
)


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_kill_9_mid_write_then_rerun_equals_an_uninterrupted_run(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=6, size=(32, 32), seed=4)
    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_RUN, str(root), str(killed), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    names = sorted(p.name for p in (killed / "protected" / "images").iterdir())
    finished = [n for n in names if not n.startswith(".")]
    # the writer threads work on neighbouring images at once: how many finished before the kill varies (with the
    # load of the machine), but the half-written 4th file lies under a temporary name only and every file under a
    # final name is complete
    assert len(finished) <= 5 and "synthetic_003.png" not in finished
    assert len(names) > len(finished), "the half-written file lies under a temporary name"
    for name in finished:
        Image.open(killed / "protected" / "images" / name).load()  # each one decodes
    _write(root, killed)  # the re-run
    _write(root, tmp_path / "straight")
    assert _tree(killed / "protected") == _tree(tmp_path / "straight" / "protected"), "byte for byte"


def test_per_rank_manifests_are_merged_not_stale(tmp_path: Path):
    """A per-rank manifest left by an interrupted multi-process run, in a manifest folder that is the output folder:
    it is read for resuming, not listed as a stale file, and removed once manifest.json holds everything."""
    root = make_synthetic_dataset(tmp_path / "syn", num_images=3, size=(32, 32), seed=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.rank1.json").write_text(json.dumps({"protector_fingerprint": "another run", "images": []}))
    writer = ProtectedDatasetWriter(_perturbator(1, 4 / 255), load_datalist(dataset_dir=str(root)), root, out)
    writer()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "stale_files" not in manifest and len(manifest["images"]) == 3
    assert not (out / "manifest.rank1.json").exists()

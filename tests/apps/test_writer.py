"""ProtectedDatasetWriter: bound on written values, locality, lossless formats, manifest, resume, no writes into input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_umed.data import LoadMaskd, load_datalist, make_synthetic_dataset
from monai_umed.apps import ProtectedDatasetWriter, sha256_file
from monai_umed.protectors import UMedProtector, native_band_width
from monai_umed.transforms import ContourBand

EPS = 4 / 255


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _strong_perturbator(channels: int, band_width: int = 1) -> UMedProtector:
    """Untrained generators with their weights scaled up so that deltas saturate at the bound (trained at 16 px)."""
    torch.manual_seed(0)
    p = UMedProtector(
        in_channels=channels, image_size=16, contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8),
        texture_strides=(2,), band_width=band_width,
    )
    with torch.no_grad():
        for param in p.parameters():
            param.mul_(3.0)
    return p.eval()


def _blob(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


@pytest.fixture
def mixed_dataset(tmp_path: Path) -> Path:
    """images/ + masks/ with 8-bit grey PNG, RGB PNG (grey content), 16-bit PNG, JPEG, BMP, and masks."""
    root = tmp_path / "input"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    h, w = 40, 48
    mask = _blob(h, w, 20, 22, 9)
    base = (rng.random((h, w)) * 120 + 60 + 60 * mask).astype(np.uint8)
    Image.fromarray(base).save(root / "images" / "grey8.png")
    Image.fromarray(np.stack([base] * 3, -1)).save(root / "images" / "greyrgb.png")
    Image.fromarray(base.astype(np.uint16) * 257).save(root / "images" / "deep16.png")
    Image.fromarray(base).save(root / "images" / "photo.jpg", quality=95)
    Image.fromarray(base).save(root / "images" / "bitmap.bmp")
    for stem in ("grey8", "greyrgb", "deep16", "photo", "bitmap"):
        Image.fromarray(mask * 255).save(root / "masks" / f"{stem}.png")
    return root


def _run_writer(root: Path, out: Path, channels: int = 1, **kwargs) -> dict:
    datalist = load_datalist(dataset_dir=str(root))
    writer = ProtectedDatasetWriter(
        _strong_perturbator(channels), datalist, root, out / "protected", manifest_dir=out, **kwargs,
    )
    return writer()


def test_written_files_keep_guarantees(mixed_dataset: Path, tmp_path: Path):
    before = _hash_tree(mixed_dataset)
    out = tmp_path / "out"
    summary = _run_writer(mixed_dataset, out)
    assert _hash_tree(mixed_dataset) == before, "the input dataset must be untouched"
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["num_images"] == 5 and len(manifest["images"]) == 5
    for entry in manifest["images"]:
        src, dst = Path(entry["source"]), Path(entry["output"])
        assert dst.is_file() and dst.parent == out / "protected" / "images"
        assert entry["sha256_output"] == hashlib.sha256(dst.read_bytes()).hexdigest()
        assert entry["sha256_source"] == hashlib.sha256(src.read_bytes()).hexdigest()
        orig = np.asarray(Image.open(src)).astype(np.int64)
        prot = np.asarray(Image.open(dst)).astype(np.int64)
        assert orig.shape == prot.shape, "native resolution and channel count are kept"
        # 8-bit: the dtype's range; 16-bit: the image's own (min, max)
        lo, hi = (int(orig.min()), int(orig.max())) if orig.max() > 255 else (0, 255)
        bound = int(np.floor(EPS * (hi - lo) + 1e-6))
        diff = np.abs(prot - orig)
        assert diff.max() <= bound, f"{dst}: l-inf {diff.max()} > {bound}"
        assert diff.max() > 0, "a saturated generator must change some pixels"
        # no change outside the contour band (width scaled to the native grid) and the ROI
        label = LoadMaskd("label")({"label": str(mixed_dataset / "masks" / f"{src.stem}.png")})["label"]
        width = native_band_width(1, (16, 16), label.shape[1:])
        masks = ContourBand(width=width)(torch.as_tensor(label))
        allowed = ((masks[0] + masks[1]) > 0).numpy()
        changed = diff.reshape(*diff.shape[:2], -1).max(-1) > 0
        assert not (changed & ~allowed).any()
        assert 0 < entry["changed_fraction"] < 1 and entry["linf"] <= EPS + 1e-7 and entry["ssim"] > 0.9
        # masks copied unchanged
        for m in entry["masks"]:
            assert hashlib.sha256(Path(m["output"]).read_bytes()).hexdigest() == hashlib.sha256(
                Path(m["source"]).read_bytes()
            ).hexdigest()
    modes = {Path(e["source"]).name: (Image.open(e["output"]).mode, Path(e["output"]).suffix) for e in manifest["images"]}
    assert modes["grey8.png"] == ("L", ".png")
    assert modes["greyrgb.png"] == ("RGB", ".png")
    assert modes["deep16.png"][0].startswith("I;16") and modes["deep16.png"][1] == ".png"
    assert modes["photo.jpg"] == ("L", ".png"), "JPEG input is written as PNG"
    assert modes["bitmap.bmp"] == ("L", ".bmp")
    # grey stored as RGB stays grey: the same delta in all three channels
    rgb = np.asarray(Image.open(out / "protected" / "images" / "greyrgb.png"))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert not list(out.rglob("*partial*")), "no temporary files are left behind"
    assert (out / "manifest.csv").read_text().count("\n") == 6


def test_nifti_keeps_header_and_affine(tmp_path: Path):
    root = tmp_path / "nii"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    mask = _blob(32, 32, 16, 15, 7)
    img = (rng.random((32, 32)) * 400 - 100 + 300.0 * mask).astype(np.float32)
    affine = np.diag([0.7, 0.8, 2.0, 1.0])
    affine[:3, 3] = [5.0, -3.0, 1.5]
    nib.save(nib.Nifti1Image(img, affine), str(root / "images" / "case.nii.gz"))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(root / "masks" / "case.nii.gz"))
    out = tmp_path / "out"
    _run_writer(root, out)
    src = nib.load(str(root / "images" / "case.nii.gz"))
    dst = nib.load(str(out / "protected" / "images" / "case.nii.gz"))
    assert np.allclose(dst.affine, src.affine)
    assert dst.header.get_data_dtype() == src.header.get_data_dtype()
    diff = np.abs(np.asarray(dst.dataobj, np.float64) - np.asarray(src.dataobj, np.float64))
    span = float(img.max() - img.min())
    assert 0 < diff.max() <= EPS * span * (1 + 1e-5)


def test_refuses_output_inside_input(mixed_dataset: Path):
    datalist = load_datalist(dataset_dir=str(mixed_dataset))
    with pytest.raises(ValueError, match="never writes into the input"):
        ProtectedDatasetWriter(_strong_perturbator(1), datalist, mixed_dataset, mixed_dataset / "out")
    with pytest.raises(ValueError, match="never writes into the input"):
        ProtectedDatasetWriter(_strong_perturbator(1), datalist, mixed_dataset, mixed_dataset)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interruption(tmp_path: Path, monkeypatch, workers):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=6, size=(32, 32), seed=3)
    out = tmp_path / "out"
    import monai_umed.apps.writer as writer_mod

    real_write = writer_mod._write_raster
    calls = {"n": 0}

    def flaky(array, raw, tmp):
        calls["n"] += 1
        if "synthetic_003" in Path(tmp).name:
            # simulate a crash half-way through writing the 4th image (into its temporary name)
            Path(tmp).write_bytes(b"half")
            raise KeyboardInterrupt("interrupted")
        real_write(array, raw, tmp)

    monkeypatch.setattr(writer_mod, "_write_raster", flaky)
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        _run_writer(root, out, num_workers=workers, batch_size=2)
    written = sorted((out / "protected" / "images").glob("*.png"))
    if workers == 0:
        assert len(written) == 3, "only completed files carry their final name"
    else:  # files after the failing one may have been finished by the other thread: complete, not in the manifest
        assert 3 <= len(written) <= 5
    for path in written:
        Image.open(path).load()  # every file under its final name is complete
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 3, "the manifest holds the first three"
    assert not list(out.rglob(".*partial*")), "the half-written temporary file is removed"
    monkeypatch.setattr(writer_mod, "_write_raster", real_write)
    summary = _run_writer(root, out)
    assert summary["skipped_existing"] == 3 and summary["num_images"] == 6
    assert len(list((out / "protected" / "images").glob("*.png"))) == 6
    assert torch.get_num_threads() == threads, "the writer restores torch's thread count"
    # a fresh run in another folder writes byte-identical files (deterministic generators on the CPU)
    _run_writer(root, tmp_path / "again")
    assert _hash_tree(out / "protected") == _hash_tree(tmp_path / "again" / "protected")


@pytest.mark.parametrize("every, expected_saves", [(1, 7), (4, 2), (25, 1)])
def test_manifest_saved_every_n_images(tmp_path: Path, monkeypatch, every, expected_saves):
    """The in-progress manifest is saved every ``manifest_every`` images (plus the final one), not after each
    image: saving it per image made writing quadratic in the dataset size."""
    root = make_synthetic_dataset(tmp_path / "syn", num_images=6, size=(32, 32), seed=3)
    import monai_umed.apps.writer as writer_mod

    saved = []
    real = writer_mod.atomic_write_json

    def counting(path, obj, indent=1):
        if Path(path).name == "manifest.json":
            saved.append(len(obj["images"]))
        real(path, obj, indent=indent)

    monkeypatch.setattr(writer_mod, "atomic_write_json", counting)
    summary = _run_writer(root, tmp_path / "out", manifest_every=every)
    assert summary["num_images"] == 6
    assert len(saved) == expected_saves
    assert saved[-1] == 6 and saved[:-1] == [every * k for k in range(1, len(saved))]


def test_manifest_every_must_be_positive(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=2, size=(32, 32), seed=3)
    with pytest.raises(ValueError, match="manifest_every"):
        _run_writer(root, tmp_path / "out", manifest_every=0)


def test_rerun_with_another_protector_writes_everything_anew(tmp_path: Path):
    """Outputs are kept on a re-run only if the manifest that recorded them came from the same protector:
    otherwise a changed protector (retrained, other epsilon) would leave the old perturbations in place."""
    root = make_synthetic_dataset(tmp_path / "syn", num_images=4, size=(32, 32), seed=3)
    out = tmp_path / "out"
    first = _run_writer(root, out)
    assert first["skipped_existing"] == 0
    assert _run_writer(root, out)["skipped_existing"] == 4, "same protector: everything is kept"
    datalist = load_datalist(dataset_dir=str(root))
    other = _strong_perturbator(1)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    writer = ProtectedDatasetWriter(other, datalist, root, out / "protected", manifest_dir=out)
    assert writer.fingerprint() != json.loads((out / "manifest.json").read_text())["protector_fingerprint"]
    assert writer()["skipped_existing"] == 0
    wider = ProtectedDatasetWriter(_strong_perturbator(1, band_width=2), datalist, root, out / "protected", manifest_dir=out)
    assert wider()["skipped_existing"] == 0, "same weights, other band width: written anew"


def test_rerun_rewrites_what_older_writing_rules_wrote(tmp_path: Path):
    """A manifest written under other writing rules (e.g. before 16-bit images were scaled by their own range) keeps
    nothing: its files may hold a larger change than the current bound allows."""
    from monai_umed.apps.writer import WRITE_RULES_VERSION

    root = make_synthetic_dataset(tmp_path / "syn", num_images=3, size=(32, 32), seed=3)
    out = tmp_path / "out"
    _run_writer(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["write_rules"] == WRITE_RULES_VERSION
    del manifest["write_rules"]  # as written by version 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert _run_writer(root, out)["skipped_existing"] == 0
    assert _run_writer(root, out)["skipped_existing"] == 3


def test_rerun_rewrites_an_image_whose_mask_changed(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=4, size=(32, 32), seed=3)
    out = tmp_path / "out"
    _run_writer(root, out)
    mask = sorted((root / "masks").glob("*.png"))[1]
    arr = np.array(Image.open(mask))
    arr[:4, :4] = arr.max()  # a corrected annotation: the band and ROI, and so the perturbation, move
    Image.fromarray(arr).save(mask)
    summary = _run_writer(root, out)
    assert summary["skipped_existing"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    entry = next(e for e in manifest["images"] if e["masks"][0]["source"] == str(mask))
    assert entry["masks"][0]["sha256"] == sha256_file(mask)
    # the rewritten image keeps its place among the kept ones: the manifest follows the datalist order
    assert [e["source"] for e in manifest["images"]] == [d["image"] for d in load_datalist(dataset_dir=str(root))]

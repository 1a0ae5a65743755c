# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Write a hand-made ("oracle") shortcut inside UMed's feasible set, to ask whether *any* pattern of UMed's form
protects a dataset.

For every training entry of a split, the image gets ``delta = bound * pattern``, with UMed's bound (Eq. 4-5):
``epsilon`` in the contour band and ``epsilon * x_t`` in the ROI interior (``x_t``: the LBP texture map; ``--full``
uses ``epsilon`` there too), and a pattern that carries the label:

* ``offset``: +1 inside the ROI, -1 in the outer band;
* ``check96`` / ``check48``: a checkerboard on a 96 / 48-pixel grid (upsampled to the file's size: bilinearly
  then signed / nearest neighbour), its phase flipped between the ROI and the outer band;
* ``native``: the same checkerboard on the file's own pixel grid (for an exploiter that trains at that size);
* ``rings``: a square wave of the signed distance to the ROI contour, ``sign(sin(2 pi d / period))`` with ``d``
  positive inside the ROI and ``--period`` in pixels of the 96-pixel grid (scaled to the file): rings parallel to
  the contour, so that a flip, rotation, scaling or elastic move of image and mask together moves the code with the
  label (the exploiter's ``augment`` recipe), and the phase is flipped across the contour by ``sin``'s symmetry.

Volumes (NIfTI, e.g. an MSD split) take ``native`` only, on the voxel grid with one pattern per region: class ``k``
of ``K`` gets the checkerboard shifted by ``k`` voxels along the first axis of a period-``K + 1`` comb (background
band: ``k = 0``), so that every region has its own phase; the band is 3 voxels wide (the protect job's width on a
volume's native grid), the bound is ``epsilon`` times each volume's own intensity range, and the values are written
back in the file's dtype with its header.

The files are rounded to 8 bits and written with the masks to ``--output_dir`` in the dataset's layout, so that
``train_exploiter --train_dir OUTPUT`` trains on them. The band width is 3 pixels at 96 pixels, scaled to the
file's size, as the protect job does.

    python benchmarks/oracle_shortcut.py --dataset_dir D --datalist S.json --output_dir O --pattern check96
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_umed.data.io import from_unit, is_itk, is_nifti, mask_to_labels, read_raw, to_unit  # noqa: E402
from monai_umed.protectors import native_band_width  # noqa: E402
from monai_umed.transforms import ContourBand, LBPTextureMap  # noqa: E402
from monai_umed.utils import atomic_write  # noqa: E402


def pattern(kind: str, roi: np.ndarray, period: float = 6.0) -> np.ndarray:
    """+-1 pattern of ``kind`` on the grid of ``roi`` (H, W), with its sign flipped outside the ROI."""
    sign = np.where(roi > 0, 1.0, -1.0)
    if kind == "rings":
        from scipy.ndimage import distance_transform_edt

        inside = roi > 0
        d = distance_transform_edt(inside) - distance_transform_edt(~inside) + np.where(inside, -0.5, 0.5)
        wave = np.sin(2 * np.pi * d / (period * roi.shape[0] / 96))
        return np.where(wave >= 0, 1.0, -1.0).astype(np.float32)
    if kind == "offset":
        return sign
    if kind == "native":
        return (np.indices(roi.shape).sum(0) % 2 * 2 - 1.0).astype(np.float32) * sign
    grid = {"check96": 96, "check48": 48}[kind]
    board = (np.indices((grid, grid)).sum(0) % 2 * 2 - 1.0).astype(np.float32)
    # as measured: the 96 grid upsampled bilinearly then signed, the 48 grid by nearest neighbour
    mode = "bilinear" if grid == 96 else "nearest"
    up = F.interpolate(torch.from_numpy(board)[None, None], size=roi.shape, mode=mode)[0, 0].numpy()
    return np.sign(up) * sign


def volume_pattern(labels: np.ndarray) -> np.ndarray:
    """+-1 voxel checkerboard on ``labels``' grid whose phase encodes the class: region ``k`` (0: background) uses
    the comb ``((i + k) mod (K + 1) == 0)`` along the first axis XOR the checkerboard of the other two."""
    k = int(labels.max()) + 1
    idx = np.indices(labels.shape)
    board = idx[1:].sum(0) % 2
    comb = ((idx[0] + labels.astype(np.int64)) % k == 0).astype(np.int64)
    return ((board ^ comb) * 2 - 1).astype(np.float32)


def write_volumes(root: Path, out: Path, entries: list, epsilon: float, full: bool) -> None:
    """The 3D oracle: ``delta = epsilon * (band + x_t * interior) * volume_pattern(labels)`` on the voxel grid."""
    import nibabel as nib

    psnr = []
    for e in entries:
        raw = read_raw(root / e["image"])
        x = to_unit(raw)  # [1, *spatial] on the volume's own [0, 1] range
        labels = mask_to_labels(read_raw(root / e["label"])).reshape(x.shape[1:])
        band, interior = ContourBand(width=3).band_and_interior(torch.from_numpy(labels)[None])
        band, interior = np.asarray(band[0]), np.asarray(interior[0])
        x_t = np.ones_like(band) if full else np.asarray(LBPTextureMap()(torch.from_numpy(x)))[0]
        delta = epsilon * (band + x_t * interior) * volume_pattern(labels)
        stored = from_unit(np.clip(x + delta[None], 0, 1), raw)
        lo, hi = float(raw.array.min()), float(raw.array.max())
        mse = float(((stored.astype(np.float64) - raw.array.astype(np.float64)) ** 2).mean())
        psnr.append(10 * np.log10((hi - lo) ** 2 / mse) if mse > 0 else float("inf"))
        src = nib.load(str(root / e["image"]))
        image = nib.Nifti1Image(stored.reshape(raw.native_shape), src.affine, src.header)
        image.set_data_dtype(raw.array.dtype)
        for rel, make in ((e["image"], lambda tmp: nib.save(image, tmp)),
                          (e["label"], lambda tmp, rel=e["label"]: shutil.copyfile(root / rel, tmp))):
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(dst, make)
    print(f"{len(entries)} volumes written to {out}; mean PSNR {np.mean(psnr):.2f} dB (on each volume's range)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True, help="split JSON; its training entries are written")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pattern", default="check96", choices=("offset", "check96", "check48", "native", "rings"))
    parser.add_argument("--period", type=float, default=6.0,
                        help="rings: period in pixels of the 96-pixel grid (scaled by the image height / 96)")
    parser.add_argument("--epsilon", type=float, default=4 / 255)
    parser.add_argument("--full", action="store_true", help="ROI interior at epsilon instead of epsilon * x_t")
    args = parser.parse_args()
    if not args.period > 0:
        raise SystemExit(f"--period must be > 0 (pixels of the 96-pixel grid), got {args.period}")
    root, out = Path(args.dataset_dir), Path(args.output_dir)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise SystemExit(f"--output_dir {out} is inside the dataset {root}: never write into an input dataset")
    entries = json.loads(Path(args.datalist).read_text())["training"]
    if entries and is_nifti(root / entries[0]["image"]):
        if args.pattern != "native":
            raise SystemExit(f"--pattern {args.pattern}: volumes take --pattern native only")
        return write_volumes(root, out, entries, args.epsilon, args.full)
    if entries and is_itk(root / entries[0]["image"]):
        raise SystemExit(f"{root / entries[0]['image']}: NRRD / MetaImage files are not supported here (NIfTI volumes "
                         "or 2D images only)")
    psnr = []
    for e in entries:
        img = Image.open(root / e["image"])
        x = np.asarray(img, dtype=np.float32) / 255
        roi = (np.asarray(Image.open(root / e["label"])) > 0).astype(np.float32)
        band = ContourBand(width=native_band_width(3, (96, 96), roi.shape))(torch.from_numpy(roi)[None]).numpy()[0]
        interior = (1 - band) * roi
        grey = x if x.ndim == 2 else x[..., :3].mean(-1)
        x_t = np.ones_like(roi) if args.full else LBPTextureMap()(torch.from_numpy(grey)[None]).numpy()[0]
        delta = args.epsilon * (band + x_t * interior) * pattern(args.pattern, roi, args.period)
        if x.ndim == 3:
            delta = delta[..., None]
        protected = np.clip(np.round((x + delta) * 255), 0, 255).astype(np.uint8)
        mse = float(((protected.astype(np.float64) - np.round(x * 255)) ** 2).mean())
        psnr.append(10 * np.log10(255**2 / mse) if mse > 0 else float("inf"))
        for rel, arr in ((e["image"], protected), (e["label"], None)):
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(arr, img.mode) if arr is not None else Image.open(root / rel)
            atomic_write(dst, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))
    print(f"{len(entries)} images written to {out}; mean PSNR {np.mean(psnr):.2f} dB")


if __name__ == "__main__":
    main()

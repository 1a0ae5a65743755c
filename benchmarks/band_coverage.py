# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""How much of each ROI the contour band (Eq. 4) and the LBP-bounded texture term (Eq. 5) cover, per band width.

For every training entry of a split (2D images, read as the protect job reads them), the pair goes through the
protect job's own priors at the training size (``monai_umed.transforms.prior_transforms``: image bilinear, label
nearest, contour band, ROI interior, LBP texture map) once per ``--band_widths`` value, and the script prints, as
means over the images with a non-empty mask:

* ``interior / ROI``: the share of the ROI's pixels left to the texture term (the rest of the ROI is band);
* ``perturbed / image``: the share of the image inside band or interior, where UMed may perturb at all;
* ``bound / eps (ROI)``: the mean per-pixel l-inf bound over the ROI as a fraction of epsilon (1 in the band,
  the LBP map ``x_t`` in the interior);
* ``bound / eps (perturbed)``: the same over band and interior together.

    python benchmarks/band_coverage.py --dataset_dir ../shared/data/busi_224 --datalist S.json --band_widths 3 6 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_umed.data import load_datalist, mask_to_labels, read_raw, to_unit  # noqa: E402
from monai_umed.transforms import prior_transforms  # noqa: E402
from monai_umed.utils import UserInputError  # noqa: E402


def coverage(image: np.ndarray, label: np.ndarray, size: int, width: int) -> tuple[float, ...] | None:
    """(interior / ROI, perturbed / image, bound / eps over the ROI, bound / eps over band + interior) of one pair
    (``image`` [C, H, W] in [0, 1], ``label`` [1, H, W]) at ``size``, or None for an empty mask."""
    out = prior_transforms(size, image.shape[0], band_width=width)(
        {"image": torch.from_numpy(image), "label": torch.from_numpy(label)}
    )
    roi = (out["label"][0] > 0).float()
    band, interior, x_t = out["contour_band"][0], out["roi_interior"][0], out["texture_map"][0]
    if roi.sum() == 0:
        return None
    bound = band + x_t * interior
    region = ((band + interior) > 0).float()
    return (
        float(interior.sum() / roi.sum()),
        float(region.mean()),
        float((bound * roi).sum() / roi.sum()),
        float(bound.sum() / region.sum()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", required=True, help="split JSON; its training entries are measured")
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--band_widths", type=int, nargs="+", default=[3, 6, 10])
    parser.add_argument("--limit", type=int, default=0, help="first N training entries only (0: all)")
    args = parser.parse_args()
    root = Path(args.dataset_dir)
    try:
        # the protect job's datalist and readers: any 2D format it takes, on its [0, 1] scale; masks by its rules
        entries = list(load_datalist(dataset_dir=str(root), datalist=args.datalist, key="training"))
        entries = entries[: args.limit] if args.limit else entries
        pairs = []
        for e in entries:
            raw = read_raw(e["image"])
            if raw.spatial_ndim != 2:
                raise SystemExit(f"{e['image']}: a {raw.spatial_ndim}D volume; this script measures 2D images")
            y = mask_to_labels(read_raw(e["label"])) > 0
            pairs.append((np.ascontiguousarray(to_unit(raw)), y[None].astype(np.float32)))
    except UserInputError as err:  # a missing or unreadable file, a bad datalist: the message names it
        raise SystemExit(str(err)) from None
    print(f"{root}: {len(pairs)} training images at {args.image_size} px")
    print("| band width | interior / ROI | perturbed / image | bound / eps (ROI) | bound / eps (perturbed) | images |")
    print("| --- | --- | --- | --- | --- | --- |")
    for width in args.band_widths:
        rows = [r for r in (coverage(x, y, args.image_size, width) for x, y in pairs) if r is not None]
        if not rows:
            raise SystemExit(f"{args.datalist}: no training image has a non-empty mask")
        m = np.mean(rows, axis=0)
        print(f"| {width} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} | {len(rows)} |")


if __name__ == "__main__":
    main()

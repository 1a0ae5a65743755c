# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Write a synthetic CT-like 3D dataset with two foreground classes in the MSD layout, to rehearse ``protect`` on
volumes of another kind than the MSD hippocampus (README, "Issue 12").

Each case is an ``int16`` NIfTI volume in Hounsfield-like units (air about -800, a body ellipse about 40, an
ellipsoidal organ about 120, a darker spherical lesion about 60 inside the organ, Gaussian noise) with spacing
0.8 x 0.8 x 3 mm, and a ``uint8`` label volume (0 background, 1 organ, 2 lesion); ``dataset.json`` lists the cases
under ``training``. The same arguments always give the same volumes.

    python benchmarks/make_ct_volumes.py --output_dir /tmp/ct3d/data --cases 24 --shape 160 160 48
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_umed.utils import atomic_write, atomic_write_text  # noqa: E402


def make_case(rng: np.random.RandomState, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One (image int16, label uint8) pair of ``shape``."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    sz, sy, sx = shape
    img = rng.normal(-800, 30, shape)
    body = ((z - sz / 2) / (0.4375 * sz)) ** 2 + ((y - sy / 2) / (0.375 * sy)) ** 2 < 1
    img[body] = rng.normal(40, 20, int(body.sum()))
    c = np.array([sz / 2 + rng.randint(-15, 15), 0.4375 * sy + rng.randint(-15, 15), sx / 2 + rng.randint(-5, 5)])
    r = np.array([0.175 * sz, 0.1375 * sy, 0.25 * sx]) * rng.uniform(0.8, 1.2, 3)
    organ = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1
    img[organ] = rng.normal(120, 15, int(organ.sum()))
    t = c + rng.randint(-6, 6, 3)
    lesion = ((z - t[0]) ** 2 + (y - t[1]) ** 2 + (x - t[2]) ** 2 < rng.uniform(4, 8) ** 2) & organ
    img[lesion] = rng.normal(60, 15, int(lesion.sum()))
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[lesion] = 2
    return img.astype(np.int16), label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 48))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.output_dir)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    rng = np.random.RandomState(args.seed)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    training = []
    for i in range(args.cases):
        image, label = make_case(rng, tuple(args.shape))
        name = f"ct_{i:03d}.nii.gz"
        # temporary name + rename: an interrupted run leaves no half-written volume
        atomic_write(root / "imagesTr" / name, lambda tmp: nib.save(nib.Nifti1Image(image, affine), str(tmp)))
        atomic_write(root / "labelsTr" / name, lambda tmp: nib.save(nib.Nifti1Image(label, affine), str(tmp)))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "synthetic CT-like volumes", "modality": {"0": "CT"},
            "labels": {"0": "background", "1": "organ", "2": "lesion"}, "numTraining": len(training),
            "training": training}
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=1))
    print(f"{len(training)} cases of {tuple(args.shape)} in {root}")


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Re-apply a trained UMed protector with its generators' raw fields multiplied by a gain, to ask whether a stronger
version of the same learnt pattern is learnt earlier by an exploiter (README, issue 10, "A stronger copy of the same
pattern").

Eq. 4 and 5 bound the raw fields with ``b * tanh(raw)``; here ``raw`` is multiplied by ``--gain`` before the bound, so
every pixel keeps its sign, moves towards ``+-b`` and the bounds hold exactly as in the protector (the writer
re-checks them on the written files). ``--gain 1`` writes the protector's own files. The files go to
``--output_dir/protected`` with the usual manifest (its PSNR says what the gain cost); train an exploiter on them with
``train_exploiter --train_dir OUTPUT/protected``.

    python benchmarks/amplified_apply.py --protector_file P/protector.pt --dataset_dir D --datalist S.json \
        --output_dir O --gain 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_umed.networks.nets import perturbators  # noqa: E402


def amplify(gain: float) -> None:
    """Multiply the raw fields by ``gain`` inside G_c's and G_t's ``apply_bound`` (Eq. 4 and 5) for this process."""
    contour, texture = perturbators.ContourPerturbator.apply_bound, perturbators.TexturePerturbator.apply_bound

    def contour_bound(self, raw, band):
        return contour(self, raw * gain, band)

    def texture_bound(self, raw, texture_map, roi_interior):
        return texture(self, raw * gain, texture_map, roi_interior)

    perturbators.ContourPerturbator.apply_bound = contour_bound
    perturbators.TexturePerturbator.apply_bound = texture_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protector_file", required=True)
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--datalist", default=None)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--gain", type=float, default=3.0)
    args = parser.parse_args()
    if not args.gain > 0:
        parser.error(f"--gain must be > 0, got {args.gain}")
    amplify(args.gain)
    from monai.bundle import run

    overrides = dict(protector_file=args.protector_file, dataset_dir=args.dataset_dir, output_dir=args.output_dir,
                     verify=False)
    if args.datalist:
        overrides["datalist"] = args.datalist
    run("apply", config_file=str(REPO / "bundles" / "umed" / "configs" / "apply.json"), **overrides)


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Cost of keeping the writer's manifest up to date while a dataset is written.

    python benchmarks/manifest_write.py [--images 517 2000] [--every 25] [--manifest O/manifest.json]

``ProtectedDatasetWriter`` saves an in-progress manifest so that an interrupted run can skip finished images.
Saving the whole indented manifest after every image costs time that grows with the square of the number of
images (each save re-encodes every entry so far, with the pure-Python JSON encoder that ``indent`` selects);
the writer now saves it compactly every ``--every`` images (and on interruption) and indented once at the end.
This script times both schemes through ``atomic_write_json`` into a temporary folder, with entries copied from
a real manifest (``--manifest``) or, without one, a synthetic entry of the same fields and surrogate losses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from monai_umed.handlers.writer import atomic_write_json


def synthetic_entry(n: int) -> dict:
    """An entry shaped like the writer's (one mask, surrogate losses measured)."""
    src = f"/data/busi_224/images/benign_{n:03d}.png"
    return {
        "name": f"benign_{n:03d}",
        "source": src,
        "output": src.replace("/data/", "/out/protected/"),
        "sha256_source": "0" * 64,
        "sha256_output": "1" * 64,
        "format_in": "PNG",
        "format_out": "PNG",
        "dtype": "uint8",
        "psnr": 52.98123456789,
        "ssim": 0.99823456789,
        "linf": 0.01568627450980392,
        "linf_units": 4.0,
        "bound_units": 4,
        "changed_fraction": 0.1341234567,
        "masks": [
            {"source": src.replace("images", "masks"), "output": src.replace("/data/", "/out/"), "sha256": "2" * 64}
        ],
        "surrogate_loss": {"clean": 1.178, "protected_train_size": 0.030, "written": 0.052},
    }


def time_scheme(entries: list[dict], settings: dict, every: int | None, folder: Path) -> float:
    """Seconds spent saving the manifest while ``len(entries)`` images are written.

    ``every=None``: the old scheme, indented after every image. Otherwise compact every ``every`` images and
    indented at the end (the writer's scheme)."""
    path = folder / "manifest.json"
    t0 = time.perf_counter()
    for n in range(1, len(entries) + 1):
        if every is None:
            atomic_write_json(path, {"settings": settings, "images": entries[:n]})
        elif n % every == 0:
            atomic_write_json(path, {"settings": settings, "images": entries[:n]}, indent=None)
    if every is not None:
        atomic_write_json(path, {"settings": settings, "summary": {}, "images": entries})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[517, 2000])
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--manifest", type=Path, default=None, help="a real manifest.json to copy entries from")
    args = parser.parse_args()
    if args.manifest is not None:
        real = json.loads(args.manifest.read_text())
        template, settings = real["images"], real.get("settings", {})
        if not template:
            raise SystemExit(f"{args.manifest} lists no images.")
    else:
        template, settings = [synthetic_entry(i) for i in range(64)], {"epsilon": 4 / 255, "image_size": 96}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            entries = [dict(template[i % len(template)], name=f"case_{i}") for i in range(n)]
            old = time_scheme(entries, settings, None, Path(tmp))
            new = time_scheme(entries, settings, args.every, Path(tmp))
            print(
                f"{n} images: indented after every image {old:.2f} s, compact every {args.every} + final "
                f"{new:.3f} s ({old / new:.0f}x)"
            )


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Wall time of the default ``protect`` job (training, writing, self-verification) for N images.

Writes a synthetic dataset of N images (MONAI's ``create_test_image_2d``, ``--size`` pixels, grey or RGB) to a
scratch folder, runs ``python -m monai.bundle run protect --config_file bundles/umed/configs/protect.json
--dataset_dir D --output_dir O`` with nothing else (the defaults a publisher gets), and reports the whole command's
wall time and the time of each part, read from the timestamps of the job's own log lines (end of training, end of
writing, end of the verification). Run it alone: the machine's two cores are the budget being measured.

    python benchmarks/protect_time.py --images 1000 --size 224 --channels 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai_umed.data import make_synthetic_dataset  # noqa: E402

STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
MARKS = {
    "start": r"Engine run resuming from iteration 0",
    "trained": r"UMed training stopped",
    "written": r"protected dataset: ",
    "verified": r"VERIFICATION (passed|FAILED)",
}


def _times(log: str) -> dict[str, dt.datetime]:
    found: dict[str, dt.datetime] = {}
    for line in re.split(r"[\r\n]", log):
        m = re.search(STAMP, line.strip())
        if not m:
            continue
        for name, pattern in MARKS.items():
            if name not in found and re.search(pattern, line):
                found[name] = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--work_dir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="extra protect overrides, e.g. --steps 500")
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="protect_time_"))
    data = make_synthetic_dataset(
        work / "input", num_images=args.images, size=(args.size, args.size), channels=args.channels, seed=0
    )
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "protect",
        "--config_file", str(REPO / "bundles" / "umed" / "configs" / "protect.json"),
        "--dataset_dir", str(data), "--output_dir", str(work / "out"), *args.extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log[-3000:])
        raise SystemExit(f"protect failed (exit {proc.returncode})")
    t = _times(log)
    part = lambda a, b: (t[b] - t[a]).total_seconds() if a in t and b in t else float("nan")  # noqa: E731
    print(
        f"protect, default config, {args.images} images of {args.size}x{args.size}x{args.channels}: "
        f"wall {wall:.0f} s ({wall / 60:.1f} min) | training {part('start', 'trained'):.0f} s | "
        f"writing {part('trained', 'written'):.0f} s | verification {part('written', 'verified'):.0f} s"
    )


if __name__ == "__main__":
    main()

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Throughput of the protected-dataset writer against the I/O floor of the same images, in the same run.

The I/O floor is a plain PIL decode + PNG encode of every image (nothing else); the writer additionally runs the
protector (batched), re-reads and re-checks every written file, hashes inputs and outputs, measures PSNR / SSIM
and copies the masks. Both run on the same N images, one after the other, in this process; the ratio
``writer images/s / floor images/s`` is the figure of merit (target >= 0.5 on 2 CPU cores, 224x224 RGB). The two
are timed ``--repeats`` times, alternating, and the median ratio is reported (these machines are noisy). The JSON
also gives the CPU time per image of both (all threads) and the cores the writer kept busy: a slower machine shows
as the same CPU per image at fewer images/s, a slower writer as more CPU per image. To compare two versions of
the code, alternate single runs of each (``--repeats 1``) and compare the medians.

The protector is UMed with the default generators of ``protect.json``, trained ``--train_steps`` steps at
``--image_size`` (its speed does not depend on how long it was trained). Images: ``--dataset_dir`` (e.g. the 224x224
RGB CVC-ClinicDB set) or, by default, synthetic ones (``--images`` of ``--size`` pixels, RGB).

    python benchmarks/writer_throughput.py --dataset_dir ../shared/data/cvc_clinicdb_224 --images 200
    python benchmarks/writer_throughput.py --images 200 --size 224
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monai.data import CacheDataset, DataLoader  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.networks.nets import UNet  # noqa: E402

from monai_umed.apps import ProtectedDatasetWriter, infer_channels, umed_transforms  # noqa: E402
from monai_umed.data import load_datalist, make_synthetic_dataset  # noqa: E402
from monai_umed.engines import UMedTrainer  # noqa: E402
from monai_umed.protectors import UMedProtector  # noqa: E402

CONFIG = REPO / "bundles" / "umed" / "configs" / "protect.json"


def io_floor(items: list[dict], out: Path) -> float:
    """Seconds to decode every image and encode it as PNG (the least any writer must do)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        with Image.open(item["image"]) as img:
            img.load()
            img.save(out / f"{i}.png", format="PNG")
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def trained_protector(items: list[dict], channels: int, image_size: int, steps: int) -> UMedProtector:
    config = json.loads(CONFIG.read_text())
    args = {k: v for k, v in config["perturbator_args"].items() if not str(v).startswith("@")}
    torch.manual_seed(0)
    protector = UMedProtector(in_channels=channels, image_size=image_size, **args)
    surrogate = UNet(2, channels, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    data = CacheDataset(items[: max(16, min(len(items), 64))], umed_transforms(image_size, channels), progress=False)
    trainer = UMedTrainer(
        device="cpu", train_data_loader=DataLoader(data, batch_size=16, shuffle=True),
        perturbator=protector.perturbator, surrogate=surrogate,
        g_optimizer=torch.optim.Adam(protector.perturbator.parameters(), 1e-3),
        s_optimizer=torch.optim.Adam(surrogate.parameters(), 1e-3),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True), steps=steps, phase_steps=max(1, steps // 4),
    )
    trainer.run()
    return protector.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", default=None, help="a dataset folder (default: synthetic images)")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="synthetic image size")
    parser.add_argument("--image_size", type=int, default=96, help="the protector's training size")
    parser.add_argument("--train_steps", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="alternating floor / writer runs (median ratio)")
    parser.add_argument("--serial", action="store_true", help="also time the writer with batch 1 and no threads")
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="writer_throughput_"))
    try:
        if args.dataset_dir:
            root = Path(args.dataset_dir)
        else:
            root = make_synthetic_dataset(work / "data", num_images=args.images, size=(args.size, args.size),
                                          channels=3, seed=0)
        items = list(load_datalist(dataset_dir=str(root)))[: args.images]
        channels = infer_channels(items)
        protector = trained_protector(items, channels, args.image_size, args.train_steps)
        n = len(items)
        floors, writers, floor_cpu, writer_cpu, summary = [], [], [], [], {}
        for r in range(args.repeats):  # alternate, so that a slow spell of the machine hits both
            for old in (work / f"floor{r}", work / f"out{r}"):  # a reused --work_dir: nothing may be skipped
                shutil.rmtree(old, ignore_errors=True)
            c0 = cpu_seconds()
            floors.append(io_floor(items, work / f"floor{r}"))
            floor_cpu.append(cpu_seconds() - c0)
            writer = ProtectedDatasetWriter(protector, items, root, work / f"out{r}" / "protected",
                                            manifest_dir=work / f"out{r}", batch_size=args.batch_size,
                                            num_workers=args.num_workers)
            t0, c0 = time.perf_counter(), cpu_seconds()
            summary = writer()
            writers.append(time.perf_counter() - t0)
            writer_cpu.append(cpu_seconds() - c0)
        ratios = sorted(f / w for f, w in zip(floors, writers))
        result = {
            "images": n, "source": str(root), "channels": channels, "protector_image_size": args.image_size,
            "floor_images_per_s": [round(n / f, 1) for f in floors],
            "writer_images_per_s": [round(n / w, 1) for w in writers],
            "ratios": [round(x, 3) for x in ratios],
            # CPU time per image (all threads) and the cores the writer kept busy: tells a slower machine (same
            # CPU per image, fewer cycles) from a slower writer (more CPU per image)
            "floor_cpu_ms_per_image": [round(1000 * c / n, 1) for c in floor_cpu],
            "writer_cpu_ms_per_image": [round(1000 * c / n, 1) for c in writer_cpu],
            "writer_busy_cores": [round(c / w, 2) for c, w in zip(writer_cpu, writers)], "median_ratio": round(statistics.median(ratios), 3),
            "batch_size": args.batch_size, "num_workers": args.num_workers, "psnr_mean": summary["psnr_mean"],
        }
        if args.serial:
            serial = ProtectedDatasetWriter(protector, items, root, work / "serial" / "protected",
                                            manifest_dir=work / "serial", batch_size=1, num_workers=0)
            t0 = time.perf_counter()
            serial()
            result["serial_writer_images_per_s"] = n / (time.perf_counter() - t0)
        print(json.dumps(result, indent=1))
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

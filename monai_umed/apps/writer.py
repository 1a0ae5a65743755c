# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Write the protected dataset: every image plus its perturbation, losslessly, beside a manifest."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import nibabel as nib
import torch
from monai.utils import convert_to_tensor
from PIL import Image

from monai_umed.distributed import all_gather_objects, barrier, rank_and_world, shard
from monai_umed.data import (
    DICOM_FORMAT,
    LoadMaskd,
    RawImage,
    case_name,
    folder_sha256,
    image_key,
    image_paths,
    label_paths,
    protected_name,
    read_channel_files,
    read_raw,
    to_unit,
    value_range,
    write_dicom_series,
)
from monai_umed.handlers.metrics import invisibility_metrics
from monai_umed.protectors import Protector, UMedProtector
from monai_umed.transforms import MatchChannels
from monai_umed.utils import (
    OutputLock,
    UserInputError,
    atomic_copy,
    atomic_write,
    atomic_write_json,
    check_output_dir,
    is_temp_path,
    is_within,
    lock_output_dir,
)

__all__ = [
    "ProtectedDatasetWriter",
    "sha256_file",
    "file_values",
    "quantize_protected",
    "check_written",
]

logger = logging.getLogger("monai_umed")

#: Version of the rules that turn a protector's delta into written values (intensity scale, rounding, bound),
#: recorded in the manifest as ``"write_rules"``: a re-run keeps earlier outputs only when they were written under
#: the same rules. 2: 16-bit images and volumes are scaled by their own range (1: 16-bit by 65535, 8-bit volumes by
#: 255), so outputs of version 1 may hold a larger change than the current bound allows.
WRITE_RULES_VERSION = 2


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file; of a folder (a DICOM series), :func:`~monai_umed.data.folder_sha256`."""
    if os.path.isdir(path):
        return folder_sha256(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_values(raw: RawImage) -> np.ndarray:
    """The values a reader gets from an image file, in the file's layout: ``raw.array`` (NIfTI: after
    ``scl_slope`` / ``scl_inter``), except palette images, whose values are their RGB colours."""
    return raw.converted if raw.converted is not None else raw.array


def _stored_parts(raw: RawImage) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour array as it will be stored, alpha channel or ``None``); palette images are stored as RGB."""
    if raw.converted is not None:
        return raw.converted, None
    if raw.has_alpha:
        return raw.array[..., :-1], raw.array[..., -1]
    return raw.stored(), None


def _ranges(raw: RawImage) -> tuple[Any, Any]:
    """The file's [0, 1] scale on the values a reader gets (alpha excluded): :func:`~monai_umed.data.value_range`."""
    values = file_values(raw)
    return value_range(values[..., :-1] if raw.has_alpha else values, raw.spatial_ndim)


def quantize_protected(raw: RawImage, delta: np.ndarray, epsilon: float) -> tuple[np.ndarray, Any, float]:
    """The protected image in the file's stored dtype and layout, inside the bound on the values a reader gets.

    ``delta`` is ``[C, H, W]`` on the [0, 1] scale (C = the file's colour channels). With ``(lo, hi) =
    value_range`` of the colour values (one pair, or one per modality of a volume), the bound is ``B = epsilon *
    (hi - lo)`` in the file's value units. Integer storage has a quantum ``q`` (1, or ``|scl_slope|`` for a scaled
    NIfTI): the change is rounded to the nearest whole number of quanta and then capped at ``floor(B / q)`` quanta,
    so rounding can never cross the bound (a tolerance of 1e-6 quanta absorbs float error such as ``4/255 * 255 =
    3.9999999999999996``). Float storage adds the change clipped to ``[-B, B]``. Values stay inside ``[lo, hi]``;
    alpha is kept.

    Returns:
        ``(array to write, B, q)``, ``B`` a float (or an array per modality), ``q = 0`` for float storage.
    """
    colour, alpha = _stored_parts(raw)
    lo, hi = _ranges(raw)
    bound = float(epsilon) * (hi - lo)
    d = np.asarray(delta, dtype=np.float64)
    d = (d[0] if colour.ndim == raw.spatial_ndim else np.moveaxis(d, 0, -1)) * (hi - lo)
    slope, inter = raw.slope, raw.inter
    a, b = (lo - inter) / slope, (hi - inter) / slope
    s_lo, s_hi = np.minimum(a, b), np.maximum(a, b)
    stored = colour.astype(np.float64)
    if colour.dtype == np.bool_ or np.issubdtype(colour.dtype, np.integer):
        q = abs(slope)
        levels = np.floor(bound / q + 1e-6)
        step = np.clip(np.rint(d / slope), -levels, levels)
        info = np.iinfo(colour.dtype) if colour.dtype != np.bool_ else None
        s_lo = np.ceil(s_lo - 1e-9) if info is None else np.maximum(np.ceil(s_lo - 1e-9), info.min)
        s_hi = np.floor(s_hi + 1e-9) if info is None else np.minimum(np.floor(s_hi + 1e-9), info.max)
        out = np.clip(stored + step, s_lo, s_hi).astype(colour.dtype)
    else:
        q = 0.0
        out = np.clip(stored + np.clip(d, -bound, bound) / slope, s_lo, s_hi).astype(colour.dtype)
    if alpha is not None:
        out = np.concatenate([out if out.ndim == raw.spatial_ndim + 1 else out[..., None], alpha[..., None]], axis=-1)
    return np.ascontiguousarray(out), (bound if np.ndim(bound) else float(bound)), q


def check_written(
    raw: RawImage, written: RawImage, allowed: np.ndarray, bound: Any, quantum: float
) -> tuple[Any, np.ndarray]:
    """Check a written protected file against its original on the values a reader gets from both files.

    Checks: same layout and dtype (and NIfTI scaling); ``max |written - original| <= bound`` (per modality when
    ``bound`` is an array, see :func:`quantize_protected`; plus 1e-6 quanta,
    see :func:`quantize_protected`, and for float values four float spacings of the largest magnitude);
    no pixel (voxel) outside ``allowed`` (the spatial shape, bool) changed in any channel.

    Returns:
        ``(l-inf in value units -- a list per modality when ``bound`` is one --, the written values as read, in the
        file layout and dtype)``.

    Raises:
        RuntimeError: a check failed (the message names the file).
    """
    old, new = file_values(raw), file_values(written)
    if old.shape != new.shape or old.dtype != new.dtype or (raw.slope, raw.inter) != (written.slope, written.inter):
        raise RuntimeError(
            f"{raw.path}: the written file reads back as {new.shape} {new.dtype} (scaling {written.slope}, "
            f"{written.inter}), not as the original {old.shape} {old.dtype} ({raw.slope}, {raw.inter}); not written."
        )
    if old.dtype.kind in "biu" and old.dtype.itemsize <= 2:  # exact in int32, without float64 copies
        diff = np.abs(new.astype(np.int32) - old.astype(np.int32))
    else:
        diff = np.abs(new.astype(np.float64) - old.astype(np.float64))
    tol = 1e-6 * quantum
    if np.issubdtype(old.dtype, np.floating) and old.size:
        tol += 4 * float(np.spacing(np.abs(old).max().astype(old.dtype)))
    if np.ndim(bound):  # one bound per modality of a volume
        per = diff.reshape(-1, diff.shape[-1]).max(axis=0) if diff.size else np.zeros(diff.shape[-1])
        if not np.all(per <= np.asarray(bound) + tol):
            raise RuntimeError(f"{raw.path}: written l-inf per modality {per.tolist()} exceeds the bounds "
                               f"{np.asarray(bound).tolist()}; not written.")
        linf: Any = per.astype(np.float64).tolist()
    else:
        linf = float(diff.max()) if diff.size else 0.0
        if not linf <= bound + tol:
            raise RuntimeError(f"{raw.path}: written l-inf {linf} exceeds the bound {bound}; not written.")
    changed = diff.max(axis=-1) > 0 if diff.ndim > raw.spatial_ndim else diff > 0
    outside = changed & ~np.asarray(allowed, dtype=bool)
    if outside.any():
        raise RuntimeError(f"{raw.path}: {int(outside.sum())} pixels outside the contour band and ROI changed; not written.")
    return linf, new


def _write_raster(array: np.ndarray, raw: RawImage, tmp: Path) -> None:
    fmt = {"PNG": "PNG", "TIFF": "TIFF", "BMP": "BMP"}.get(raw.format, "PNG")
    Image.fromarray(array).save(tmp, format=fmt)  # the array has the file's dtype and layout: PIL infers the mode


def _write_nifti(stored: np.ndarray, raw: RawImage, tmp: Path) -> None:
    src = nib.load(str(raw.path))
    data = stored.reshape(src.shape).astype(src.get_data_dtype(), copy=False)
    out = nib.Nifti1Image(data, src.affine, header=src.header.copy())
    if raw.scaled:  # keep the stored integers and their scaling, so that a reader gets exactly the checked values
        out.header.set_slope_inter(raw.slope, raw.inter)
    nib.save(out, str(tmp))


def _write_itk(stored: np.ndarray, raw: RawImage, tmp: Path) -> None:
    import SimpleITK as sitk

    src = sitk.ReadImage(str(raw.path))
    comps = src.GetNumberOfComponentsPerPixel()
    out = sitk.GetImageFromArray(stored.reshape(raw.native_shape), isVector=comps > 1)
    out = sitk.Cast(out, src.GetPixelID())
    out.CopyInformation(src)  # spacing, origin, direction
    for key in src.GetMetaDataKeys():
        out.SetMetaData(key, src.GetMetaData(key))
    sitk.WriteImage(out, str(tmp), useCompression=True)


_WRITERS = {"NIFTI": _write_nifti, "ITK": _write_itk, DICOM_FORMAT: write_dicom_series}


class ProtectedDatasetWriter:
    """Apply a :class:`~monai_umed.protectors.Protector` to every image of a datalist and write the protected dataset.

    The protector gives each image's perturbation on the image's own grid (``native_delta``); the writer owns
    everything else: reading, writing, the checks, the manifest.

    **Lossless output.** PNG stays PNG with the same mode and bit depth (8 and 16 bit), TIFF and BMP keep their
    format, JPEG input is written as PNG (:func:`~monai_umed.data.protected_name`; JPEG compression would wash
    the perturbation out; a log line says so), NIfTI keeps its header and affine. Values are rounded to the
    file's own integer grid and the bound ``|protected - original| <= epsilon * (hi - lo)`` (``value_range``, per
    modality of a volume) and "no change outside the protector's allowed region" are re-checked on the values
    actually written; a
    violation raises and nothing is written for that image. Masks are copied unchanged. An image whose channels
    are separate files (nnU-Net ``{CASE}_0000``, ``{CASE}_0001``, ...: ``image`` a list) is protected as one image
    and each channel is written back to its own file, on that file's own intensity scale and with its own checks;
    its manifest entry lists every file under ``channel_files`` (the top-level paths and hashes are the first's).

    **Nothing lost.** The output folder may not be, be inside, or contain the input dataset
    (:func:`~monai_umed.utils.check_output_dir`). Every file is written under a temporary name and renamed. The
    manifest (``manifest.json`` + ``manifest.csv``) records per image the source and output paths, SHA-256 of
    both, PSNR, SSIM, l-inf and the changed fraction; a re-run skips images whose output, image and masks still
    match the manifest's hashes, provided the manifest was written by the same protector (its
    :meth:`~monai_umed.protectors.Protector.fingerprint`); otherwise every image is written anew. While writing,
    the manifest is saved every ``manifest_every`` images and whenever the loop stops on an exception (Ctrl-C
    included), so a resumed run redoes at most ``manifest_every - 1`` images after a hard kill.

    **Throughput.** Reading, hashing and decoding the next images, and encoding, re-reading, checking and
    measuring the written ones, run in a pool of ``num_workers`` threads (PNG/zlib, hashing and torch release
    the GIL) while the protector runs on batches of ``batch_size`` images; at most about three batches are in
    flight, so memory does not grow with the dataset. Entries keep the datalist order. While the pool runs,
    torch uses one intra-op thread per Python thread (restored afterwards).

    **Several processes** (``torchrun``, :mod:`monai_umed.distributed`): rank 0 locks and cleans the folders, each
    rank writes every world-th image (temporary names are unique per process) and saves its in-progress entries to
    ``manifest.rank<r>.json``; at the end rank 0 writes the one manifest in datalist order (atomically) and removes
    the per-rank files. A re-run (with any number of processes) keeps what the per-rank manifests record.

    If a ``surrogate`` is given (UMed only), the summary also reports its ``L_seg`` on the clean images, on the
    protected images as computed in training, and on the files as written (re-read and resized to the training
    size): the protection survives the native-grid resampling and quantization when the last two agree.

    Args:
        protector: any :class:`~monai_umed.protectors.Protector` (on the device it should run on).
        datalist: entries with ``image``, ``label`` (path or list), ``image_rel``, ``label_rel``.
        dataset_dir: root of the input dataset (to refuse writing inside it).
        output_dir: folder receiving the protected dataset (same relative layout).
        manifest_dir: where ``manifest.json``/``.csv`` go (default ``output_dir``).
        surrogate: optional trained surrogate to measure that protection survives writing (UMed only).
        settings: protector settings recorded in the manifest.
        manifest_every: save the in-progress manifest every this many images.
        batch_size: images per protector call.
        num_workers: reader / writer threads (0: everything in the calling thread).
    """

    def __init__(
        self,
        protector: Protector,
        datalist: Sequence[dict],
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        manifest_dir: str | os.PathLike | None = None,
        surrogate: torch.nn.Module | None = None,
        settings: dict | None = None,
        manifest_every: int = 25,
        batch_size: int = 16,
        num_workers: int = 3,
    ) -> None:
        if not isinstance(protector, Protector):
            raise TypeError(f"protector must be a monai_umed.protectors.Protector, got {type(protector).__name__}.")
        self.protector = protector
        self.datalist = list(datalist)
        self.dataset_dir = Path(dataset_dir)
        self.output_dir = Path(output_dir)
        check_output_dir(self.dataset_dir, self.output_dir)
        self.manifest_dir = Path(manifest_dir) if manifest_dir is not None else self.output_dir
        if surrogate is not None and not isinstance(protector, UMedProtector):
            raise ValueError(f"measuring survival with a surrogate needs the UMed protector, not {protector.name!r}.")
        self.surrogate = surrogate
        self.settings = settings or {}
        for name, value, least in (("manifest_every", manifest_every, 1), ("batch_size", batch_size, 1),
                                   ("num_workers", num_workers, 0)):
            if int(value) != value or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value}.")
        self.manifest_every = int(manifest_every)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.load_mask = LoadMaskd("label")
        self.match_channels = MatchChannels(protector.in_channels)

    # ------------------------------------------------------------------ per image
    def _output_paths(self, item: dict) -> list[Path]:
        """Where the image's file (or each of its channel files) is written."""
        return [self.output_dir / protected_name(rel) for rel in image_paths(item["image_rel"])]

    def _prepare(self, item: dict, previous: dict) -> dict:
        """Read one entry (worker thread): ``{"entry"}`` when its earlier output is kept, else what the protector
        and :meth:`_finish` need. An image whose channels are separate files (``image`` a list) is read as one
        image, each file on its own intensity scale."""
        srcs = [Path(p) for p in image_paths(item["image"])]
        raws = read_channel_files(srcs) if len(srcs) > 1 else [read_raw(srcs[0])]
        dsts = self._output_paths(item)
        src_hashes = [sha256_file(p) for p in srcs]
        old = previous.get(str(srcs[0]))
        if old is not None and self._still_valid(old, srcs, dsts, src_hashes, item):
            return {"entry": old}
        label = convert_to_tensor(self.load_mask({"label": item["label"]})["label"], torch.float32, track_meta=False)
        unit = np.concatenate([to_unit(r) for r in raws]) if len(raws) > 1 else to_unit(raws[0])
        x = self.match_channels(torch.as_tensor(unit, dtype=torch.float32))
        key = case_name(item)
        return {"item": item, "src": srcs[0], "srcs": srcs, "dsts": dsts, "raws": raws, "src_hashes": src_hashes,
                "label": label, "unit": unit, "x": x, "key": key}

    @staticmethod
    def _still_valid(old: dict, srcs: list[Path], dsts: list[Path], src_hashes: list[str], item: dict) -> bool:
        """Whether an earlier manifest entry still describes this image's sources, outputs and masks."""
        files = old.get("channel_files") or [old]
        return (
            [f.get("source") for f in files] == [str(p) for p in srcs]
            and [f.get("sha256_source") for f in files] == src_hashes
            and all(d.exists() and sha256_file(d) == f.get("sha256_output") for d, f in zip(dsts, files))
            and all(Path(m["output"]).is_file() for m in old.get("masks", []))
            and [m["source"] for m in old.get("masks", [])] == label_paths(item["label"])
            and all(sha256_file(m["source"]) == m.get("sha256") for m in old.get("masks", []))
        )

    def _deltas(self, batch: list[dict]) -> list[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        """The protector's batch stage (:meth:`~monai_umed.protectors.Protector.native_delta_parts`); each image's
        rest is a callable run by :meth:`_finish`. On an error, one image at a time so that the message names the
        file."""
        try:
            return self.protector.native_delta_parts([b["x"] for b in batch], [b["label"] for b in batch],
                                                     [b["key"] for b in batch])
        except ValueError:
            out = []
            for b in batch:
                try:
                    out.extend(self.protector.native_delta_parts([b["x"]], [b["label"]], [b["key"]]))
                except ValueError as e:
                    raise ValueError(f"{b['src']}: {e}") from e
            return out

    def _finish(self, prep: dict, part: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """The image's own part of the protector, then quantize, write, re-check and measure it and copy its masks
        (worker thread)."""
        with torch.no_grad():
            try:
                delta, allowed = part()
            except ValueError as e:
                raise ValueError(f"{prep['src']}: {e}") from e
            return self._finish_one(prep, delta, allowed)

    def _write_file(self, raw: RawImage, dst: Path, delta: torch.Tensor, allowed: np.ndarray) -> dict:
        """Quantize one file's protected values, write them atomically and re-check them as read back; returns the
        file's part of the manifest entry and its written values on the [0, 1] scale (``"unit"``)."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        out_array, bound_units, quantum = quantize_protected(raw, delta.numpy(), float(self.protector.epsilon))
        if raw.format == "JPEG":
            logger.info("%s is JPEG: writing %s as PNG, since JPEG compression would wash the perturbation out.", raw.path, dst.name)
        if raw.converted is not None:
            logger.info("%s is a palette image: writing %s as RGB.", raw.path, dst.name)
        checked: dict[str, Any] = {}

        def write_and_check(tmp: Path) -> None:
            # the checks run on the temporary file as a reader will read it; only a file that passes is renamed
            _WRITERS.get(raw.format, _write_raster)(out_array, raw, tmp)
            checked["linf"], checked["values"] = check_written(raw, read_raw(tmp), allowed, bound_units, quantum)

        atomic_write(dst, write_and_check)
        lo, hi = _ranges(raw)
        values = checked["values"]
        colour = (values[..., :-1] if raw.has_alpha else values).astype(np.float64)
        written_unit = ((colour - lo) / (hi - lo)).astype(np.float32)
        written_unit = (
            written_unit[None] if written_unit.ndim == raw.spatial_ndim else np.ascontiguousarray(np.moveaxis(written_unit, -1, 0))
        )
        return {"output": str(dst), "sha256_output": sha256_file(dst), "linf_units": checked["linf"],
                "bound_units": np.asarray(bound_units).tolist(), "unit": written_unit}

    def _finish_one(self, prep: dict, delta: torch.Tensor, allowed: torch.Tensor) -> dict:
        item, raws, unit = prep["item"], prep["raws"], prep["unit"]
        # delta of the model channels -> the file's channels (grey-as-RGB gets the same delta in each)
        file_c = unit.shape[0]
        delta = delta.float().cpu()
        if delta.shape[0] != file_c:
            delta = delta[:1].expand(file_c, *delta.shape[1:]) if delta.shape[0] == 1 else delta[:file_c]
        allowed_np = allowed.cpu().numpy()
        files, start = [], 0
        for raw, dst, src_path, src_hash in zip(raws, prep["dsts"], prep["srcs"], prep["src_hashes"]):
            c = raw.channels  # each channel file gets its own channels of the delta, on its own intensity scale
            part = self._write_file(raw, dst, delta[start:start + c], allowed_np)
            files.append(dict(part, source=str(src_path), sha256_source=src_hash))
            start += c
        written_unit = np.concatenate([f.pop("unit") for f in files]) if len(files) > 1 else files[0].pop("unit")
        metrics = invisibility_metrics(torch.as_tensor(unit), torch.as_tensor(written_unit))
        masks = []
        for m_src, m_rel in zip(label_paths(item["label"]), item["label_rel"]):
            m_dst = self.output_dir / m_rel
            m_dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(Path(m_src), m_dst)
            masks.append({"source": str(m_src), "output": str(m_dst), "sha256": sha256_file(m_dst)})
        raw, first = raws[0], files[0]
        entry = {
            "name": case_name(item),
            "source": first["source"],
            "output": first["output"],
            "sha256_source": first["sha256_source"],
            "sha256_output": first["sha256_output"],
            "format_in": raw.format,
            "format_out": "PNG" if raw.format == "JPEG" else raw.format,
            "dtype": str(raw.array.dtype),
            "psnr": metrics["psnr"],
            "ssim": metrics["ssim"],
            "linf": metrics["linf"],
            "linf_units": first["linf_units"],
            "bound_units": first["bound_units"],
            "changed_fraction": metrics["changed_fraction"],
            "masks": masks,
        }
        if len(files) > 1:  # an image whose channels are separate files: each file's record, in channel order
            entry["channel_files"] = files
        if self.surrogate is not None:
            entry["surrogate_loss"] = self._surrogate_losses(unit, written_unit, prep["label"])
        return entry

    def _surrogate_losses(self, clean_unit: np.ndarray, written_unit: np.ndarray, label: torch.Tensor) -> dict:
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        priors = self.protector.transforms()
        clean = priors({"image": torch.as_tensor(clean_unit), "label": label.clone()})
        written = priors({"image": torch.as_tensor(written_unit), "label": label.clone()})
        dev = self.protector.device
        img, lab = clean["image"][None].to(dev), clean["label"][None].to(dev)
        protected, _, _ = self.protector.perturbator(
            img, clean["contour_band"][None].to(dev), clean["texture_map"][None].to(dev), clean["roi_interior"][None].to(dev)
        )
        return {
            "clean": float(loss_fn(self.surrogate(img), lab)),
            "protected_train_size": float(loss_fn(self.surrogate(protected), lab)),
            "written": float(loss_fn(self.surrogate(written["image"][None].to(dev)), lab)),
        }

    def _load_manifest(self, name: str = "manifest.json") -> dict:
        path = self.manifest_dir / name
        if path.is_file():
            try:
                with open(path) as f:
                    return json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise UserInputError(f"existing manifest {path} is unreadable ({e}); move it away to start afresh.") from e
        return {}

    def _rank_manifests(self) -> list[Path]:
        """In-progress manifests of the ranks of an interrupted multi-process run (``manifest.rank<r>.json``)."""
        return sorted(self.manifest_dir.glob("manifest.rank*.json"))

    def fingerprint(self) -> str:
        """The protector's :meth:`~monai_umed.protectors.Protector.fingerprint`: a re-run keeps an existing output
        only if the manifest that recorded it carries the same one."""
        return self.protector.fingerprint()

    def _previous_entries(self, fingerprint: str) -> dict:
        """Entries of an existing manifest (and of the per-rank manifests of an interrupted multi-process run)
        that a re-run may keep: only those written by the same protector."""
        previous: dict = {}
        for name in ["manifest.json", *(p.name for p in self._rank_manifests())]:
            manifest = self._load_manifest(name)
            if not manifest:
                continue
            if manifest.get("protector_fingerprint") != fingerprint:
                logger.info(
                    "%s was written by another protector or with other settings: its images are written anew.",
                    self.manifest_dir / name,
                )
                continue
            if manifest.get("write_rules") != WRITE_RULES_VERSION:
                logger.info(
                    "%s was written under older writing rules (intensity scale and bound of 16-bit images and "
                    "volumes): its images are written anew.", self.manifest_dir / name,
                )
                continue
            previous.update({e["source"]: e for e in manifest.get("images", [])})
        return previous

    def _entries(self, previous: dict, datalist: Sequence[dict]):
        """Yield ``(manifest entry, kept)`` in ``datalist`` order; the pipeline of the class docstring."""
        pool = ThreadPoolExecutor(max_workers=self.num_workers) if self.num_workers else None

        def submit(fn, *args) -> Future:
            if pool is not None:
                return pool.submit(fn, *args)
            f: Future = Future()
            try:
                f.set_result(fn(*args))
            except BaseException as e:  # noqa: B036 - re-raised by result() in the caller's thread
                f.set_exception(e)
            return f

        def done(value: Any) -> Future:
            f: Future = Future()
            f.set_result(value)
            return f

        window = 2 * self.batch_size
        items = iter(datalist)
        threads = torch.get_num_threads()
        if pool is not None:
            # one torch thread per Python thread: the pool already keeps the cores busy, and nested intra-op
            # threads only compete with it (docs/DESIGN.md, "The writer")
            torch.set_num_threads(1)
        reading: deque[Future] = deque()
        writing: deque[tuple[Future, bool]] = deque()
        batch: list[dict] = []
        try:
            while True:
                while len(reading) < window:
                    item = next(items, None)
                    if item is None:
                        break
                    reading.append(submit(self._prepare, item, previous))
                kept_entry = None
                if reading:
                    prep = reading.popleft().result()
                    if "entry" in prep:
                        kept_entry = prep["entry"]
                    else:
                        batch.append(prep)
                # a kept image first sends the images read before it on, so that entries keep the datalist order
                if batch and (len(batch) == self.batch_size or not reading or kept_entry is not None):
                    for prep, part in zip(batch, self._deltas(batch)):
                        writing.append((submit(self._finish, prep, part), False))
                    batch = []
                if kept_entry is not None:
                    writing.append((done(kept_entry), True))
                # hand back finished entries in order; wait only when too much is in flight or at the end
                while writing and (writing[0][0].done() or len(writing) > window or not reading):
                    future, kept = writing.popleft()
                    yield future.result(), kept
                if not reading and not batch and not writing:
                    return
        finally:
            if pool is not None:
                # running writes finish (their temporary files are renamed or removed); queued ones are dropped
                pool.shutdown(wait=True, cancel_futures=True)
                torch.set_num_threads(threads)

    # ------------------------------------------------------------------ main
    @torch.no_grad()
    def __call__(self, _engine: Any = None) -> dict:
        rank, world = rank_and_world()
        if rank == 0:
            # one run at a time per folder: a second run refuses with a message naming the first
            lock_output_dir(self.manifest_dir, "writer")
            if not is_within(self.output_dir, self.manifest_dir):
                lock_output_dir(self.output_dir, "writer", beside=True)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.manifest_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temporaries()
        barrier()  # several processes: the others start once the folders are ready and cleaned
        self.protector.eval()
        if self.surrogate is not None:
            self.surrogate.eval()  # before the worker threads use it
        fingerprint = self.fingerprint()
        previous = self._previous_entries(fingerprint)
        mine = shard(self.datalist)  # all images in one process; every world-th from this rank's in several
        entries: list[dict] = []
        skipped = 0
        t0 = time.time()
        manifest_path = self.manifest_dir / "manifest.json"
        progress_path = manifest_path if world == 1 else self.manifest_dir / f"manifest.rank{rank}.json"
        head = {"settings": self.settings, "protector": self.protector.name, "protector_fingerprint": fingerprint,
                "write_rules": WRITE_RULES_VERSION}
        try:
            for n, (entry, kept) in enumerate(self._entries(previous, mine), 1):
                entries.append(entry)
                skipped += int(kept)
                if n % 25 == 0 or n == len(mine):
                    logger.info("protected %d/%d images (%.1f s)", n, len(mine), time.time() - t0)
                if n % self.manifest_every == 0:
                    atomic_write_json(progress_path, dict(head, images=entries), indent=None)
        except BaseException:
            # keep what is done (Ctrl-C included), so that a re-run skips it
            atomic_write_json(progress_path, dict(head, images=entries), indent=None)
            raise
        if world > 1:  # one manifest in datalist order, from every rank's entries
            parts = all_gather_objects((entries, skipped))
            order = {str(Path(image_key(d["image"]))): i for i, d in enumerate(self.datalist)}
            entries = sorted((e for part, _ in parts for e in part), key=lambda e: order.get(e["source"], len(order)))
            skipped = sum(k for _, k in parts)
        elapsed = time.time() - t0
        summary = self.summarize(entries)
        summary.update({"skipped_existing": skipped, "output_dir": str(self.output_dir), "write_seconds": elapsed})
        stale = self._stale_files(entries)
        manifest = dict(head, summary=summary, images=entries)
        if rank > 0:  # rank 0 writes the manifest and reports
            barrier()
            return self._check_changed(summary)
        if stale:
            manifest["stale_files"] = stale
            logger.warning(
                "%d file(s) in %s were not written by this run (left by an earlier run?) and are not part of the "
                "protected dataset: %s%s -- listed as stale_files in the manifest; remove them before release.",
                len(stale), self.output_dir, ", ".join(stale[:5]), " ..." if len(stale) > 5 else "",
            )
        atomic_write_json(manifest_path, manifest)
        for part in self._rank_manifests():  # merged into manifest.json
            part.unlink()
        self._write_csv(entries)
        barrier()
        logger.info(
            "protected dataset: %s | manifest: %s | %d images | PSNR %.2f dB | SSIM %.4f | l-inf %.4f (%.2f/255) "
            "| changed %.1f %%",
            self.output_dir,
            self.manifest_dir / "manifest.json",
            summary["num_images"],
            summary["psnr_mean"],
            summary["ssim_mean"],
            summary["linf_max"],
            summary["linf_max"] * 255,
            100 * summary["changed_fraction_mean"],
        )
        return self._check_changed(summary)

    def _check_changed(self, summary: dict) -> dict:
        """``summary``, or a :class:`UserInputError` when no image was changed (the data is not protected)."""
        if summary["num_images"] and summary["num_unchanged"] == summary["num_images"]:
            raise UserInputError(
                f"no image was changed ({summary['num_images']} written unchanged to {self.output_dir}): the data is "
                "NOT protected. Check that the masks mark the regions of interest and that epsilon times the "
                "intensity range is at least one grey level."
            )
        return summary

    def _remove_stale_temporaries(self) -> None:
        """Remove temporary files that a killed run left in the output folders (they never hold a result)."""
        for folder in {self.output_dir, self.manifest_dir}:
            for path in list(folder.rglob(".*")):
                if is_temp_path(path) and path.is_dir():  # a DICOM series being written
                    logger.info("removing %s, a temporary folder left by an interrupted run", path)
                    shutil.rmtree(path, ignore_errors=True)
                elif path.is_file() and is_temp_path(path):
                    logger.info("removing %s, a temporary file left by an interrupted run", path)
                    path.unlink()

    def _stale_files(self, entries: Sequence[dict]) -> list[str]:
        """Files under the output folder that this run did not write (relative paths, sorted); the manifest and
        the lock file do not count when they live there too."""
        keep = {Path(f["output"]).resolve() for e in entries for f in e.get("channel_files") or [e]}
        keep |= {Path(m["output"]).resolve() for e in entries for m in e["masks"]}
        keep |= {(self.manifest_dir / n).resolve() for n in ("manifest.json", "manifest.csv")}
        keep |= {p.resolve() for p in self._rank_manifests()}  # merged into manifest.json, then removed
        return sorted(
            p.relative_to(self.output_dir).as_posix()
            for p in self.output_dir.rglob("*")
            if p.is_file() and p.name != OutputLock.NAME and p.resolve() not in keep
            and p.parent.resolve() not in keep  # the slice files of a written DICOM series
        )

    @staticmethod
    def summarize(entries: Sequence[dict]) -> dict:
        """Mean PSNR (finite values; unchanged images have infinite PSNR), SSIM, changed fraction; max l-inf."""
        psnr = [e["psnr"] for e in entries if math.isfinite(e["psnr"])]
        summary = {
            "num_images": len(entries),
            "psnr_mean": float(np.mean(psnr)) if psnr else float("inf"),
            "num_unchanged": len(entries) - len(psnr),
            "ssim_mean": float(np.mean([e["ssim"] for e in entries])) if entries else 1.0,
            "linf_max": float(max((e["linf"] for e in entries), default=0.0)),
            "changed_fraction_mean": float(np.mean([e["changed_fraction"] for e in entries])) if entries else 0.0,
        }
        losses = [e["surrogate_loss"] for e in entries if "surrogate_loss" in e]
        if losses:
            summary["surrogate_loss_mean"] = {k: float(np.mean([x[k] for x in losses])) for k in losses[0]}
        return summary

    def _write_csv(self, entries: Sequence[dict]) -> None:
        cols = ["name", "source", "output", "sha256_source", "sha256_output", "psnr", "ssim", "linf", "linf_units", "changed_fraction"]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(cols)
                for e in entries:
                    w.writerow([e[c] for c in cols])

        atomic_write(self.manifest_dir / "manifest.csv", write)

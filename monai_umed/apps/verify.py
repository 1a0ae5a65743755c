# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Self-verification of a protected dataset before release: measure its protection the way an exploiter meets it.

The ``protect`` job ends by training a fresh segmentation network on the protected files it wrote and scoring it on
clean images the network never saw (Lin et al., IJCAI 2024, Sec. 4.1 evaluate the same way: train on the protected
training set, test on the clean test set)::

    protect datalist ──> verification_split ──> non-fold images (training) + fold (clean originals: test)
    ──> train_exploiter(train_dir=<protected folder>)   -> work_dir/protected  (DSC on the clean fold)
    ──> train_exploiter(train_dir=None)                 -> work_dir/clean      (reference: same images, clean)
    ──> verdict: weak when the protected DSC (final, or best epoch) exceeds half the clean DSC
    ──> report_verification: "verification" entry in manifest.json, summary line, WARNING when weak,
        ProtectionCheckFailed (one-line error, exit status 1) when ``require_dsc`` is exceeded

Every image, the fold included, is protected and written by the writer; the fold only decides what the
verification trains on and tests on. The default exploiter is a MONAI U-Net narrower than the protect job's
surrogate (``channels=(8, 16, 32, 64, 128)`` against ``(16, ..., 256)``) trained with another seed (``seed + 1``),
so that the check does not merely replay the network the perturbations were optimised against.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_umed.apps.exploit import train_exploiter
from monai_umed.data import case_name, image_key, image_paths, label_paths, relative_path
from monai_umed.utils import ProtectionCheckFailed, UserInputError, atomic_write_json

__all__ = [
    "VERIFY_EXPLOITER_KWARGS",
    "VERIFY_EVALUATIONS",
    "RESOLUTION_RATIO",
    "native_image_size",
    "resolution_caveat",
    "VERIFICATION_KEYS",
    "WEAK_RATIO",
    "MIN_REFERENCE_DSC",
    "DEFENSE_LABELS",
    "defense_verdict",
    "verification_split",
    "verify_defenses",
    "verify_sizes",
    "size_verdict",
    "COARSE_SIZE_MAX",
    "verify_protection",
    "protection_verdict",
    "report_verification",
    "read_manifest",
    "manifest_settings",
    "check_manifest_entries",
]

logger = logging.getLogger(__name__)

#: Default ``exploiter_kwargs`` of the ``"unet"`` exploiter of :func:`verify_protection`: half the width of the
#: protect job's surrogate U-Net ``(16, 32, 64, 128, 256)``.
VERIFY_EXPLOITER_KWARGS: dict[str, Any] = {"channels": (8, 16, 32, 64, 128)}
#: At most about this many evaluations of the fold per verification run: runs of more epochs are scored every
#: ``ceil(max_epochs / VERIFY_EVALUATIONS)`` epochs (and after the last). A run of ``steps`` on a few images has
#: one or two steps per epoch (e.g. a 3D dataset of 14 training volumes: 500 epochs), and scoring whole volumes
#: after each would cost far more than the training; every 16-20 steps is the resolution that one epoch of a
#: 2D dataset of 300-400 images gives.
VERIFY_EVALUATIONS = 32
#: The protection is weak when the DSC of the exploiter trained on the protected files exceeds this fraction of the
#: DSC of the same exploiter trained on the clean files.
WEAK_RATIO = 0.5
#: How the verdicts name each exploiter defense.
DEFENSE_LABELS: dict[str, str] = {
    "jpeg": "JPEG compression",
    "gaussian_blur": "Gaussian blur",
    "median": "median filtering",
    "downsample_upsample": "down/up-sampling",
    "grayscale": "grey-scale conversion",
    "augment": "strong augmentation",
    "adversarial_training": "adversarial training",
}
#: Below this clean (reference) DSC the verification is inconclusive: the exploiter did not learn the task even
#: from clean data, so a low protected DSC proves nothing.
MIN_REFERENCE_DSC = 0.5
#: Files whose smaller side exceeds the verification exploiter's size by more than this factor get a resolution
#: caveat: the perturbation is learnt (or not) on the grid the exploiter trains on, and the check tried one grid.
RESOLUTION_RATIO = 1.5
#: ``--verify_sizes auto`` also verifies at half the verification size, at most this many pixels (a multiple of 16,
#: at least 32): an exploiter chooses the size it trains at, and a perturbation learnt on one grid can vanish on a
#: coarser one (docs/DESIGN.md, "Exploiter resolution").
COARSE_SIZE_MAX = 96
#: Keys of the dict returned by :func:`verify_protection` (the manifest's ``"verification"`` entry).
VERIFICATION_KEYS: tuple[str, ...] = (
    "protected_dsc",
    "clean_dsc",
    "protected_dsc_best",
    "clean_dsc_best",
    "exploiter",
    "exploiter_kwargs",
    "n_train",
    "n_test",
    "steps",
    "max_epochs",
    "val_interval",
    "image_size",
    "seconds",
    "protected",
    "message",
)

_DISPLAY_NAMES = {
    "unet": "U-Net",
    "attention_unet": "Attention U-Net",
    "unet_plus_plus": "U-Net++",
    "transunet": "TransUNet",
}


# ----------------------------------------------------------------------------------------------- split
def _sort_key(item: Mapping) -> str:
    rel = item.get("image_rel")
    return Path(image_key(rel)).as_posix() if rel else os.path.abspath(image_key(item["image"]))


def verification_split(
    items: Sequence[dict], fraction: float = 0.2, min_images: int = 10, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Hold out a fold of the protect datalist for the verification's clean test set.

    The fold has ``max(min_images, round(fraction * n))`` images (halves rounded up), drawn with
    ``numpy.random.default_rng(seed)`` from the entries sorted by relative image path (``image_rel``, else the
    absolute ``image``), so the same entries and seed give the same fold whatever their order. The two lists keep
    the order of ``items`` and together hold every entry once.

    Args:
        items: the protect job's datalist entries (:func:`monai_umed.apps.resolve_dataset`).
        fraction: share of the images held out, in (0, 1).
        min_images: the least number of images in the fold and in the verification's training set.
        seed: seed of the draw.

    Returns:
        ``(train_items, fold_items)``.

    Raises:
        UserInputError: ``fraction`` outside (0, 1), ``min_images < 1``, or a dataset too small to keep
            ``min_images`` images on both sides.
    """
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise UserInputError(f"verification fraction must be in (0, 1), got {fraction}.")
    if isinstance(min_images, bool) or int(min_images) != min_images or int(min_images) < 1:
        raise UserInputError(f"verification min_images must be an integer >= 1, got {min_images!r}.")
    min_images = int(min_images)
    items = list(items)
    n = len(items)
    n_fold = max(min_images, int(math.floor(fraction * n + 0.5)))
    if n - n_fold < min_images:
        raise UserInputError(
            f"the dataset has {n} image(s), too few to verify the protection: the verification holds out {n_fold} "
            f"image(s) for its clean test set and needs at least {min_images} more to train on "
            f"({n_fold + min_images} images at least with fraction={fraction}, min_images={min_images}); "
            "give more images, lower min_images (protect: --verify_min_images N), or skip the verification "
            "(protect: --verify false; then measure the protection with train_exploiter before releasing the files)."
        )
    order = sorted(range(n), key=lambda i: (_sort_key(items[i]), i))
    perm = np.random.default_rng(int(seed)).permutation(n)
    fold_idx = {order[int(p)] for p in perm[:n_fold]}
    train_items = [e for i, e in enumerate(items) if i not in fold_idx]
    fold_items = [e for i, e in enumerate(items) if i in fold_idx]
    return train_items, fold_items


# ----------------------------------------------------------------------------------------------- datalist
def _entry_under(item: Mapping, root: str) -> dict[str, Any] | None:
    """The split entry of ``item`` with paths relative to ``root``; ``None`` when a file is outside ``root`` or its
    recorded ``image_rel`` / ``label_rel`` (the paths the writer used) point elsewhere under ``root``."""
    images = [os.path.abspath(p) for p in image_paths(item["image"])]
    labels = [os.path.abspath(p) for p in label_paths(item.get("label"))]
    rels = [relative_path(p, root) for p in [*images, *labels]]
    rels = [None if r is None else Path(r).as_posix() for r in rels]
    if any(r is None for r in rels):
        return None
    image_rel = item.get("image_rel")
    recorded = [*(image_paths(image_rel) if image_rel is not None else [None] * len(images)),
                *(item.get("label_rel") or [None] * len(labels))]
    for rel, rec in zip(rels, recorded):
        if rec is not None and Path(rec).as_posix() != rel:
            return None
    n = len(images)
    label_rels = rels[n:]
    return {
        "image": rels[0] if n == 1 else rels[:n],
        "label": label_rels[0] if len(label_rels) == 1 else label_rels,
        "name": case_name(item),
    }


def _split_entries(dataset_dir: str | os.PathLike | None, items: Sequence[dict]) -> tuple[str, list[dict]]:
    """``(clean root, entries)``: the root the entries' relative paths (as the writer used them) refer to."""
    candidates = []
    for root in (dataset_dir, getattr(items, "root", None)):
        if root is not None and os.path.abspath(root) not in candidates:
            candidates.append(os.path.abspath(root))
    for root in candidates:
        entries = [_entry_under(e, root) for e in items]
        if all(e is not None for e in entries):
            return root, entries  # type: ignore[return-value]
    if not candidates:
        raise UserInputError("cannot verify the protection: give dataset_dir, the clean dataset folder.")
    raise UserInputError(
        f"cannot verify the protection: the datalist's files are not all inside the dataset folder {candidates[0]} "
        "under the relative paths the writer used."
    )


# ----------------------------------------------------------------------------------------------- verdict
def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _display_name(exploiter: str) -> str:
    return _DISPLAY_NAMES.get(str(exploiter).lower(), str(exploiter))


def protection_verdict(
    protected_dsc: float | None,
    clean_dsc: float | None,
    protected_dsc_best: float | None = None,
    clean_dsc_best: float | None = None,
    exploiter: str = "unet",
) -> tuple[bool, str]:
    """``(protected, message)`` for the scores of the two verification runs.

    The protection is weak when ``protected_dsc > WEAK_RATIO * clean_dsc`` or ``protected_dsc_best > WEAK_RATIO *
    clean_dsc`` (an exploiter that stops at its best epoch gets the latter). ``protected`` is ``False`` when the
    protection is weak or a score is missing (no fold image with foreground was scored). When the clean reference
    itself stays below :data:`MIN_REFERENCE_DSC`, the message says the result is inconclusive.
    """
    name = _display_name(exploiter)
    best = protected_dsc if protected_dsc_best is None else protected_dsc_best
    if protected_dsc is None or clean_dsc is None:
        return False, (
            "THE PROTECTION COULD NOT BE VERIFIED: no held-out image with a non-empty mask was scored "
            f"(protected DSC {_fmt(protected_dsc)}, clean DSC {_fmt(clean_dsc)}). Do not release the data as "
            "protected before checking it with train_exploiter."
        )
    limit = WEAK_RATIO * clean_dsc
    weak_final = protected_dsc > limit
    weak_best = best is not None and best > limit
    clean_part = f"{clean_dsc:.2f} when trained on the originals"
    if weak_final or weak_best:
        if weak_final:
            reach = f"reaches DSC {protected_dsc:.2f}"
            if best is not None and best > protected_dsc + 0.005:
                reach += f" ({best:.2f} at its best epoch)"
        else:
            return False, (
                f"THE DATA IS NOT PROTECTED AGAINST EARLY STOPPING: a {name} trained on the protected files ends at "
                f"DSC {protected_dsc:.2f} on clean held-out images but reaches {best:.2f} at its best epoch "
                f"({clean_part}), more than {WEAK_RATIO:g} x the clean DSC: an exploiter who stops early learns "
                "the task. Do not release it as fully protected."
            )
        if clean_dsc < MIN_REFERENCE_DSC:  # the reference did not learn the task either: say so, not "train longer"
            return False, (
                f"THE DATA IS NOT VERIFIED AS PROTECTED: a {name} trained on the protected files {reach} on clean "
                f"held-out images ({clean_part}), more than {WEAK_RATIO:g} x the clean DSC. Do not release it as "
                "protected." + _inconclusive(name, clean_dsc, "also")
            )
        return False, (
            f"THE DATA IS NOT PROTECTED: a {name} trained on the protected files {reach} on clean held-out images "
            f"({clean_part}), more than {WEAK_RATIO:g} x the clean DSC. Do not release it as protected; train "
            "the protector longer or with a larger epsilon and run protect again."
        )
    message = (
        f"protection verified: a {name} trained on the protected files reaches DSC {protected_dsc:.2f} on clean "
        f"held-out images ({_fmt(best)} at its best epoch; {clean_part})."
    )
    return True, message + _inconclusive(name, clean_dsc, "however")


def _inconclusive(name: str, clean_dsc: float, word: str) -> str:
    """The sentence that says a verification is inconclusive (empty when the clean reference learnt the task)."""
    if clean_dsc >= MIN_REFERENCE_DSC:
        return ""
    return (
        f" The check is {word} inconclusive: trained on the originals the same {name} reaches only DSC "
        f"{clean_dsc:.2f} (< {MIN_REFERENCE_DSC:g}), so the verification's training is too short to tell; raise "
        "--verify_steps (protect) or max_epochs (verify_protection)."
    )


def _side_verdict(
    against: str,
    trained: str,
    at: str,
    consequence: str,
    protected_dsc: float | None,
    clean_dsc: float | None,
    protected_dsc_best: float | None,
) -> tuple[bool, str]:
    """The verdict of one side check (a countermeasure, another size) by the rule of :func:`protection_verdict`:
    weak when the final or best-epoch DSC exceeds ``WEAK_RATIO`` x ``clean_dsc``. ``against`` names what is checked
    ("JPEG compression"), ``trained`` how the exploiter trained ("a U-Net trained on ..."), ``at`` qualifies the clean
    reference ("" or " at that size"), ``consequence`` ends the weak message."""
    best = protected_dsc if protected_dsc_best is None else protected_dsc_best
    if protected_dsc is None or clean_dsc is None:
        return False, f"the protection against {against} could not be verified (no held-out image was scored)."
    if max(protected_dsc, best if best is not None else protected_dsc) > WEAK_RATIO * clean_dsc:
        return False, (
            f"THE DATA IS NOT PROTECTED AGAINST {re.sub(r'(?<=[0-9])X(?=[0-9])', 'x', against.upper())}: {trained} "
            f"reaches DSC {protected_dsc:.2f} ({_fmt(best)} at its best epoch) on clean held-out images "
            f"({clean_dsc:.2f} when trained on the originals{at}). {consequence}"
        )
    return True, (
        f"protected against {against}: {trained} reaches DSC {protected_dsc:.2f} ({_fmt(best)} at its best epoch; "
        f"{clean_dsc:.2f} clean{at})."
    )


def defense_verdict(
    defense: str,
    protected_dsc: float | None,
    clean_dsc: float | None,
    protected_dsc_best: float | None = None,
    exploiter: str = "unet",
) -> tuple[bool, str]:
    """``(protected, message)`` for an exploiter that applies ``defense`` (e.g. JPEG compression) to the protected
    files before training: weak, by the rule of :func:`protection_verdict`, when its final or best-epoch DSC on the
    clean fold exceeds ``WEAK_RATIO`` x the undefended clean reference."""
    name, label = _display_name(exploiter), DEFENSE_LABELS.get(str(defense).lower(), str(defense))
    return _side_verdict(label, f"a {name} trained on the protected files after {label}", "",
                         "An exploiter who applies it learns the task.", protected_dsc, clean_dsc, protected_dsc_best)


def verify_defenses(defenses: Any, spatial_dims: int = 2) -> list[str]:
    """The countermeasures the self-verification also tries (``--verify_defenses``): ``"auto"`` -> JPEG at
    quality 30 for images (the cheapest countermeasure that undoes most unlearnable examples) and none for volumes;
    ``"none"`` / empty -> none; else a comma list (or list) of ``train_exploiter`` defenses.

    Raises:
        UserInputError: an unknown defense, or a 2D-only defense for volumes.
    """
    from monai_umed.apps.exploit import EXPLOIT_DEFENSES

    if defenses is None or str(defenses).strip().lower() in ("none", "false", ""):
        return []
    if isinstance(defenses, str) and defenses.strip().lower() == "auto":
        return ["jpeg"] if int(spatial_dims) == 2 else []
    names = [str(d).strip().lower() for d in (defenses if isinstance(defenses, (list, tuple)) else str(defenses).split(","))]
    names = [n for n in names if n and n != "none"]
    bad = [n for n in names if n not in EXPLOIT_DEFENSES]
    if bad:
        raise UserInputError(f"--verify_defenses: unknown {', '.join(bad)}; valid: auto, none, {', '.join(EXPLOIT_DEFENSES)}.")
    if int(spatial_dims) == 3 and set(names) & {"jpeg", "grayscale", "augment"}:
        raise UserInputError("--verify_defenses: jpeg, grayscale and augment work on 2D images only.")
    return names


def size_verdict(
    size: int,
    protected_dsc: float | None,
    clean_dsc: float | None,
    protected_dsc_best: float | None = None,
    exploiter: str = "unet",
) -> tuple[bool, str]:
    """``(protected, message)`` for an exploiter that trains at ``size`` x ``size`` instead of the verification's
    size: weak, by the rule of :func:`protection_verdict`, when its final or best-epoch DSC on the clean fold exceeds
    ``WEAK_RATIO`` x the DSC of the same exploiter trained on the clean files at that size (``clean_dsc``); when
    that clean run stays below :data:`MIN_REFERENCE_DSC` the message says the check is inconclusive."""
    name = _display_name(exploiter)
    ok, message = _side_verdict(
        f"an exploiter that trains at {int(size)}x{int(size)}", f"a {name} trained at that size on the protected files",
        " at that size", "The perturbation does not survive the resize to that size; an exploiter who trains there "
        "learns the task.", protected_dsc, clean_dsc, protected_dsc_best)
    return ok, message + (_inconclusive(name, clean_dsc, "however") if ok and clean_dsc is not None else "")


def verify_sizes(sizes: Any, image_size: int, spatial_dims: int = 2) -> list[int]:
    """The other exploiter sizes the self-verification tries (``--verify_sizes``): ``"auto"`` -> for images, half of
    ``image_size`` rounded down to a multiple of 16, at most :data:`COARSE_SIZE_MAX` and at least 32 (none when that
    is not smaller than ``image_size``), for volumes none; ``"none"`` / empty -> none; else a comma list (or list) of
    sizes, each a multiple of 16 of at least 32; ``image_size`` itself is left out (the main runs cover it).

    Raises:
        UserInputError: a size that is not an integer multiple of 16 of at least 32, or sizes for volumes.
    """
    if sizes is None or str(sizes).strip().lower() in ("none", "false", ""):
        return []
    if isinstance(sizes, str) and sizes.strip().lower() == "auto":
        if int(spatial_dims) != 2:
            return []
        coarse = max(32, min(COARSE_SIZE_MAX, int(image_size) // 2) // 16 * 16)
        return [coarse] if coarse < int(image_size) else []
    if int(spatial_dims) != 2:
        raise UserInputError("--verify_sizes works on 2D images only (volumes are verified on patches).")
    names = sizes if isinstance(sizes, (list, tuple)) else str(sizes).split(",")
    out: list[int] = []
    for n in names:
        text = str(n).strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 32 or value % 16:
            raise UserInputError(f"--verify_sizes: {text!r} is not a size in pixels that is a multiple of 16 and at least 32.")
        if value != int(image_size) and value not in out:
            out.append(value)
    return out


# ----------------------------------------------------------------------------------------------- verification
def native_image_size(items: Sequence[Mapping], limit: int = 20) -> tuple[int, int] | None:
    """The median ``(H, W)`` of the image files of up to ``limit`` entries (evenly spaced), from the headers where
    the format allows (PIL opens lazily); ``None`` for volumes or when no entry has an existing image file."""
    from PIL import Image

    from monai_umed.data.io import read_raw

    picks = list(items)[:: max(1, math.ceil(len(items) / max(1, limit)))]
    sizes = []
    for item in picks:
        paths = image_paths(item.get("image")) if item.get("image") else []
        if not paths:
            continue
        path = Path(paths[0])
        if not path.is_file():  # the verification's own runs report missing files; the size is then unknown
            continue
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception:  # not a raster file (NIfTI, NRRD, MetaImage): read it
            raw = read_raw(path)
            if raw.spatial_ndim != 2:
                return None
            h, w = raw.array.shape[:2]
        sizes.append((h, w))
    if not sizes:
        return None
    return int(np.median([s[0] for s in sizes])), int(np.median([s[1] for s in sizes]))


def resolution_caveat(image_size: int, native: tuple[int, int] | None) -> str | None:
    """The warning for a verification run at ``image_size`` on files of ``native`` size, or ``None`` when the
    files' smaller side is within :data:`RESOLUTION_RATIO` of it (or the size is unknown).

    A perturbation is learnt on the grid the exploiter trains on: the same protected files can fool an exploiter
    that resizes them to the protect job's size and not one that trains at the files' own size (or the reverse), so
    a check at one size says nothing about the other (docs/DESIGN.md, "Exploiter resolution")."""
    if native is None or min(native) <= RESOLUTION_RATIO * int(image_size):
        return None
    size = max(16, int(min(native)) // 16 * 16)
    return (
        f"The verification exploiter trained at {int(image_size)}x{int(image_size)}, but the files are about "
        f"{native[0]}x{native[1]}: an exploiter that trains at the files' own size meets the perturbation on another "
        f"grid and may learn more from them. Before release, verify at that size too (--verify_image_size {size}, or "
        f"train_exploiter --image_size {size})."
    )


def verify_protection(
    dataset_dir: str | os.PathLike | None,
    datalist_items: Sequence[dict],
    protected_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    image_size: int = 96,
    max_epochs: int = 30,
    steps: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    exploiter: str = "unet",
    exploiter_kwargs: Mapping[str, Any] | None = None,
    fraction: float = 0.2,
    min_images: int = 10,
    device: str | torch.device | None = None,
    progress: bool = False,
    defenses: Sequence[str] = (),
    sizes: Sequence[int] = (),
) -> dict[str, Any]:
    """Train a fresh exploiter on the written protected files and score it on clean held-out originals.

    :func:`verification_split` (``seed``) holds out a fold of ``datalist_items``. Then
    :func:`monai_umed.apps.exploit.train_exploiter` runs twice with the same settings and seed ``seed + 1``:

    1. on the **protected files** (``protected_dir``, same relative paths as the dataset) of the non-fold images,
       scored on the **clean originals** of the fold -> ``work_dir/protected``;
    2. on the **clean files** of the same non-fold images, scored on the same fold (the reference) ->
       ``work_dir/clean``.

    The default exploiter is a U-Net with :data:`VERIFY_EXPLOITER_KWARGS` (narrower than the protect job's
    surrogate). Each run evaluates the fold after every epoch, so ``*_dsc_best`` is the peak an exploiter that
    stops early would get (an optimistic score: the fold chooses the epoch); ``*_dsc`` is the final epoch's. Runs
    of more than :data:`VERIFY_EVALUATIONS` epochs score the fold every ``ceil(max_epochs / VERIFY_EVALUATIONS)``
    epochs instead (``val_interval`` in the result).

    Args:
        dataset_dir: the clean dataset folder (the root of the entries' ``image_rel`` / ``label_rel``).
        datalist_items: the protect job's datalist entries (absolute ``image`` / ``label``, ``image_rel``,
            ``label_rel``, ``name``), as from :func:`monai_umed.apps.resolve_dataset`.
        protected_dir: the folder the writer wrote the protected dataset to (``<output_dir>/protected``).
        work_dir: results folder (``<output_dir>/verification``); the runs write ``protected/`` and ``clean/``.
        image_size: training / evaluation size (a multiple of 16).
        max_epochs, batch_size, lr: training schedule of each run (Adam, fixed lr).
        steps: when given, the training length of each run in optimisation steps instead of ``max_epochs``:
            ``max_epochs = max(1, round(steps / batches per epoch))``, so the check costs the same for any dataset
            size.
        seed: seed of the fold; the exploiters train with ``seed + 1``.
        exploiter: one of :data:`monai_umed.networks.EXPLOITERS`.
        exploiter_kwargs: overrides of :func:`monai_umed.networks.get_exploiter`; ``None`` ->
            :data:`VERIFY_EXPLOITER_KWARGS` for ``"unet"``, the defaults otherwise.
        fraction, min_images: size of the fold (see :func:`verification_split`).
        device: ``"cuda"`` / ``"cpu"`` / ...; ``None`` -> CUDA when available.
        progress: show ignite progress bars.
        defenses: ``train_exploiter`` defenses (e.g. ``["jpeg"]``) to try too: one more run per defense on the
            protected files with the defense applied (``work_dir/protected_<defense>``), judged against the
            undefended clean reference by :func:`defense_verdict`; the result's ``"defenses"`` maps each name to
            ``{"dsc", "dsc_best", "protected", "message", "metrics"}``. The main verdict (``protected``) stays the
            undefended one.
        sizes: other training sizes to try (e.g. ``[48]``, from :func:`verify_sizes`): two more runs per size, on the
            protected and on the clean files at that size (``work_dir/protected_<size>px``, ``work_dir/clean_<size>px``),
            judged by :func:`size_verdict`; the result's ``"sizes"`` maps each size (a string) to ``{"dsc",
            "dsc_best", "clean_dsc", "clean_dsc_best", "protected", "message", "conclusive", "metrics",
            "clean_metrics"}``. The main verdict stays the one at ``image_size``.

    Returns:
        ``{"protected_dsc", "clean_dsc", "protected_dsc_best", "clean_dsc_best", "exploiter", "exploiter_kwargs",
        "n_train", "n_test", "steps", "max_epochs", "val_interval", "image_size", "seconds", "protected", "message", "seed",
        "fold", "conclusive", "protected_metrics", "clean_metrics", "defenses", "sizes", "native_size",
        "resolution_caveat"}``: ``steps`` is the number of optimisation
        steps of one run (``max_epochs * ceil(n_train / batch_size)``), ``seconds`` the wall time of both runs,
        ``protected`` / ``message`` the verdict of :func:`protection_verdict`, ``fold`` the names of the held-out
        cases, ``conclusive`` whether the clean reference reached :data:`MIN_REFERENCE_DSC`, ``*_metrics`` the
        paths of the runs' ``metrics.json``, ``native_size`` the files' median ``[H, W]`` (:func:`native_image_size`;
        ``None`` for volumes) and ``resolution_caveat`` the warning of :func:`resolution_caveat` (or ``None``).

    Raises:
        UserInputError: a dataset too small for the fold, a missing protected file, or an invalid setting.
    """
    t0 = time.perf_counter()
    if exploiter_kwargs is None:
        kwargs: dict[str, Any] = dict(VERIFY_EXPLOITER_KWARGS) if str(exploiter).lower() == "unet" else {}
    else:
        kwargs = dict(exploiter_kwargs)
    train_items, fold_items = verification_split(datalist_items, fraction=fraction, min_images=min_images, seed=seed)
    if steps is not None:
        if int(steps) < 1:
            raise UserInputError(f"verification steps must be >= 1, got {steps}.")
        max_epochs = max(1, round(int(steps) / math.ceil(len(train_items) / int(batch_size))))
    val_interval = max(1, math.ceil(int(max_epochs) / VERIFY_EVALUATIONS))
    root, _ = _split_entries(dataset_dir, datalist_items)
    datalist = {
        "training": _split_entries(root, train_items)[1],
        "test": _split_entries(root, fold_items)[1],
    }
    protected_dir = Path(protected_dir)
    if not protected_dir.is_dir():
        raise UserInputError(f"cannot verify the protection: protected dataset folder not found: {protected_dir}")
    work = Path(work_dir)
    native = native_image_size(train_items)  # None for volumes
    logger.info(
        "verifying the protection: a %s (%s) trained on %d protected images of %s, tested on %d clean held-out "
        "images; reference trained on the same %d clean images (%d epochs, %s, seed %d) -> %s",
        _display_name(exploiter),
        kwargs or "default size",
        len(train_items),
        protected_dir,
        len(fold_items),
        len(train_items),
        int(max_epochs),
        f"{int(image_size)}x{int(image_size)}" if native is not None else "volumes: the exploiter's default patches",
        int(seed) + 1,
        work,
    )
    common = dict(
        exploiter=exploiter,
        image_size=int(image_size),
        max_epochs=int(max_epochs),
        val_interval=val_interval,
        batch_size=int(batch_size),
        lr=float(lr),
        device=device,
        seed=int(seed) + 1,
        exploiter_kwargs=kwargs,
        progress=progress,
    )
    runs: dict[str, dict[str, Any]] = {}
    for kind, train_dir in (("protected", protected_dir), ("clean", None)):
        runs[kind] = train_exploiter(root, datalist, work / kind, train_dir=train_dir, **common)
    p, c = runs["protected"], runs["clean"]
    protected_dsc, clean_dsc = p["dsc"], c["dsc"]
    protected_best, clean_best = p.get("dsc_best", protected_dsc), c.get("dsc_best", clean_dsc)
    protected, message = protection_verdict(protected_dsc, clean_dsc, protected_best, clean_best, exploiter)
    defended: dict[str, dict[str, Any]] = {}
    for defense in defenses:
        d = train_exploiter(root, datalist, work / f"protected_{defense}", train_dir=protected_dir, defense=defense, **common)
        ok, msg = defense_verdict(defense, d["dsc"], clean_dsc, d.get("dsc_best", d["dsc"]), exploiter)
        defended[str(defense)] = {"dsc": d["dsc"], "dsc_best": d.get("dsc_best", d["dsc"]), "protected": ok,
                                  "message": msg, "metrics": str(work / f"protected_{defense}" / "metrics.json")}
    at_size: dict[str, dict[str, Any]] = {}
    for size in sizes:
        other = dict(common, image_size=int(size))
        sp = train_exploiter(root, datalist, work / f"protected_{int(size)}px", train_dir=protected_dir, **other)
        sc = train_exploiter(root, datalist, work / f"clean_{int(size)}px", train_dir=None, **other)
        sp_best, sc_best = sp.get("dsc_best", sp["dsc"]), sc.get("dsc_best", sc["dsc"])
        ok, msg = size_verdict(int(size), sp["dsc"], sc["dsc"], sp_best, exploiter)
        at_size[str(int(size))] = {"dsc": sp["dsc"], "dsc_best": sp_best, "clean_dsc": sc["dsc"], "clean_dsc_best": sc_best,
                                   "protected": ok, "message": msg,
                                   "conclusive": sc["dsc"] is not None and sc["dsc"] >= MIN_REFERENCE_DSC,
                                   "metrics": str(work / f"protected_{int(size)}px" / "metrics.json"),
                                   "clean_metrics": str(work / f"clean_{int(size)}px" / "metrics.json")}
    n_train = int(p.get("n_train", len(train_items)))
    return {
        "protected_dsc": protected_dsc,
        "clean_dsc": clean_dsc,
        "protected_dsc_best": protected_best,
        "clean_dsc_best": clean_best,
        "exploiter": exploiter,
        "exploiter_kwargs": json.loads(json.dumps(kwargs, default=str)),  # tuples as lists, as in the manifest
        "n_train": n_train,
        "n_test": int(p.get("n_test", len(fold_items))),
        "steps": int(max_epochs) * math.ceil(n_train / int(batch_size)),
        "max_epochs": int(max_epochs),
        "val_interval": val_interval,
        "image_size": int(image_size),
        "seconds": round(time.perf_counter() - t0, 3),
        "protected": protected,
        "message": message,
        "seed": int(seed) + 1,
        "fold": [e["name"] for e in datalist["test"]],
        "conclusive": clean_dsc is not None and clean_dsc >= MIN_REFERENCE_DSC,
        "protected_metrics": str(work / "protected" / "metrics.json"),
        "clean_metrics": str(work / "clean" / "metrics.json"),
        "defenses": defended,
        "sizes": at_size,
        "native_size": None if native is None else list(native),
        "resolution_caveat": resolution_caveat(int(image_size), native),
    }


# ----------------------------------------------------------------------------------------------- report
def report_verification(
    result: Mapping[str, Any], manifest_path: str | os.PathLike, require_dsc: float | None = None
) -> dict[str, Any]:
    """Record a :func:`verify_protection` result in the manifest, log it, and enforce ``require_dsc``.

    ``manifest.json`` is read, given a ``"verification"`` entry (``result``; a previous entry is replaced) and
    written back atomically (:func:`monai_umed.utils.atomic_write_json`). One summary line gives the protected and
    clean DSC (final and best) and the image counts; when the protection is weak (``result["protected"]`` is
    false) a WARNING says so in plain words (``result["message"]``); another WARNING gives the
    ``resolution_caveat`` when the files are much larger than the size the exploiter trained at.

    Args:
        result: the dict returned by :func:`verify_protection` (every key of :data:`VERIFICATION_KEYS`).
        manifest_path: the protected dataset's ``manifest.json``.
        require_dsc: when given, the largest acceptable ``protected_dsc`` (final epoch); above it (or when it is
            missing) the job fails.

    Returns:
        the manifest as written.

    Raises:
        UserInputError: the manifest is missing or unreadable, or ``result`` lacks keys.
        ProtectionCheckFailed: ``protected_dsc > require_dsc`` (a one-line error: the bundle job exits with
            status 1); the manifest is written first.
    """
    missing = [k for k in VERIFICATION_KEYS if k not in result]
    if missing:
        raise UserInputError(f"verification result lacks the key(s) {', '.join(missing)}.")
    path = Path(manifest_path)
    manifest = read_manifest(
        path, "the verification is recorded in the manifest the protected-dataset writer writes, so write the "
        "protected dataset first", images=False
    )
    manifest["verification"] = dict(result)
    atomic_write_json(path, manifest)

    name = _display_name(result["exploiter"])
    logger.info(
        "VERIFICATION %s: %s trained on %d protected images -> DSC %s on %d clean held-out images (best %s); "
        "trained on the same images clean -> DSC %s (best %s); %d steps, %.1f s -> %s",
        "passed" if result["protected"] else "FAILED",
        name,
        result["n_train"],
        _fmt(result["protected_dsc"]),
        result["n_test"],
        _fmt(result["protected_dsc_best"]),
        _fmt(result["clean_dsc"]),
        _fmt(result["clean_dsc_best"]),
        result["steps"],
        result["seconds"],
        path,
    )
    if not result["protected"]:
        logger.warning("%s", result["message"])
    elif result.get("conclusive") is False:
        logger.warning("%s", result["message"])
    for entry in [*(result.get("defenses") or {}).values(), *(result.get("sizes") or {}).values()]:
        weak = not entry["protected"] or entry.get("conclusive") is False
        (logger.warning if weak else logger.info)("%s", entry["message"])
    if result.get("resolution_caveat"):
        logger.warning("%s", result["resolution_caveat"])
    if require_dsc is not None:
        limit = float(require_dsc)
        got = result["protected_dsc"]
        if got is None or got > limit:
            reach = "could not be scored" if got is None else f"reaches DSC {got:.2f}"
            raise ProtectionCheckFailed(
                f"protection check failed: a {name} trained on the protected files {reach} on clean held-out "
                f"images (require_dsc={limit:g}; {_fmt(result['clean_dsc'])} when trained on the originals); "
                f"details in the 'verification' entry of {path}."
            )
    return manifest


# ----------------------------------------------------------------------------------------------- written datasets
def read_manifest(manifest_path: str | os.PathLike, hint: str | None = None, images: bool = True) -> dict[str, Any]:
    """The ``manifest.json`` that the protected-dataset writer wrote (``protect`` or ``apply``), as a dict.

    Args:
        manifest_path: the file.
        hint: what to do when it is missing (the end of the error message).
        images: require the writer's ``"images"`` list.

    Raises:
        UserInputError: the file is missing, unreadable or not a JSON object (or lacks its ``"images"`` list).
    """
    path = Path(manifest_path)
    if not path.is_file():
        hint = hint or (
            "verify checks a protected dataset written by protect or apply: give the --output_dir of that job (it "
            "holds manifest.json and protected/)"
        )
        raise UserInputError(f"manifest not found: {path}; {hint}.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"manifest {path} is unreadable ({exc}).") from exc
    if not isinstance(manifest, dict):
        raise UserInputError(f"manifest {path} is not a JSON object.")
    if images and not isinstance(manifest.get("images"), list):
        raise UserInputError(f"manifest {path} is not a protected-dataset manifest (no 'images' list).")
    return manifest


def manifest_settings(manifest_path: str | os.PathLike) -> dict[str, Any]:
    """The protector settings recorded in a written dataset's manifest (``{}`` when it recorded none)."""
    settings = read_manifest(manifest_path).get("settings")
    return dict(settings) if isinstance(settings, Mapping) else {}


def check_manifest_entries(manifest_path: str | os.PathLike, items: Sequence[Mapping]) -> int:
    """Check that every entry of ``items`` (the dataset to verify against) was written into the manifest's dataset.

    An entry matches a manifest image whose ``source`` is the same file (resolved path). Verifying against other
    originals than the ones protected would score the wrong files, so a mismatch is refused.

    Returns:
        the number of entries checked.

    Raises:
        UserInputError: entries that the manifest does not list (the first five are named) or an empty ``items``.
    """
    manifest = read_manifest(manifest_path)
    sources = set()
    for entry in manifest["images"]:
        if isinstance(entry, Mapping) and entry.get("source"):
            sources.add(os.path.realpath(str(entry["source"])))
    if not items:
        raise UserInputError("no dataset entries to verify.")
    missing = [str(image_key(e["image"])) for e in items if os.path.realpath(str(image_key(e["image"]))) not in sources]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserInputError(
            f"{len(missing)} of {len(items)} dataset image(s) are not in the protected dataset of {manifest_path}: "
            f"{shown}. Give the same --dataset_dir / --datalist as the job that wrote it."
        )
    return len(items)

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Glue for the ``protect`` job: dataset resolution, option checks and the training transforms.

The bundle configs (``bundles/umed/configs/*.json``) compose these with MONAI components; a researcher can
call them from Python too.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, SelectItemsd

from monai_umed.data import (
    LoadImageUnitd,
    LoadMaskd,
    image_key,
    image_paths,
    load_datalist,
    make_synthetic_dataset,
    mask_values,
    read_raw,
    validate_datalist,
)
from monai_umed.transforms import LABEL_MODES, class_values, prior_transforms
from monai_umed.utils import UserInputError, check_output_dir, is_temp_path

__all__ = [
    "check_image_size",
    "check_schedule",
    "resolve_dataset",
    "infer_channels",
    "dataset_classes",
    "image_spatial_dims",
    "training_size",
    "robust_countermeasures",
    "robust_transform",
    "rescale_scale",
    "RESCALE_AUTO",
    "umed_transforms",
    "latest_checkpoint",
    "as_bool",
    "parse_epsilon",
    "EPSILON_WARN",
    "BASELINE_FIT_DEFAULTS",
    "build_protector",
    "fit_protector",
]

logger = logging.getLogger("monai_umed")


def _common_folder(items: Sequence[dict]) -> str | None:
    """The deepest folder that holds every image and mask file of a datalist (``None`` if there is none)."""
    files = []
    for item in items:
        files += [os.path.abspath(p) for p in image_paths(item["image"])]
        label = item.get("label")
        files += [os.path.abspath(p) for p in ([label] if isinstance(label, (str, os.PathLike)) else label or [])]
    if not files:
        return None
    try:
        return os.path.commonpath([os.path.dirname(f) for f in files])
    except ValueError:
        return None


def resolve_dataset(
    dataset_dir: str | None,
    datalist: str | None,
    output_dir: str,
    key: str = "training",
    stems: str | Sequence[str] | None = None,
    synthetic_size: int = 96,
    synthetic_images: int = 24,
    seed: int = 0,
) -> tuple[list[dict], Path]:
    """Return ``(datalist, dataset_root)`` for the job, validated.

    With neither ``dataset_dir`` nor ``datalist`` the embedded default dataset is used: a SYNTHETIC,
    segmentation-like dataset generated on the fly with MONAI's ``create_test_image_2d`` into
    ``<output_dir>/synthetic_input`` (logged loudly). Every problem of the dataset is reported in one error
    before any training starts.

    Raises:
        UserInputError: the output folder is, is inside or contains the dataset; the dataset has a problem
            (:class:`~monai_umed.data.DatasetValidationError`); or no mask has any foreground.
    """
    if not dataset_dir and not datalist:
        root = Path(output_dir) / "synthetic_input"
        logger.warning(
            "No --dataset_dir or --datalist given: using the embedded SYNTHETIC default dataset (%d images "
            "of %dx%d generated with MONAI's create_test_image_2d) in %s. These are not medical images.",
            synthetic_images,
            synthetic_size,
            synthetic_size,
            root,
        )
        make_synthetic_dataset(root, num_images=synthetic_images, size=(synthetic_size, synthetic_size), seed=seed)
        dataset_dir = str(root)
        synthetic = True
    else:
        synthetic = False
    items = load_datalist(dataset_dir=dataset_dir, datalist=datalist, key=key, stems=stems)
    root = Path(dataset_dir) if dataset_dir else Path(datalist).parent
    if not synthetic:  # the embedded dataset is generated inside the output folder on purpose
        check_output_dir(dataset_dir or _common_folder(items) or root, output_dir)
    report = validate_datalist(items, dataset_dir=root)
    if not items:
        raise UserInputError(f"no images found in {dataset_dir or datalist}.")
    if len(report.empty_masks) == len(items):
        raise UserInputError(
            f"no image has an ROI: all {len(items)} masks in {dataset_dir or datalist} are empty (all zero). UMed "
            "perturbs only around and inside the regions of interest, so nothing would be protected; check that "
            "the masks are the right files."
        )
    logger.info("dataset %s: %d image/mask pairs validated.", root, len(items))
    return items, root


def image_spatial_dims(items: Sequence[Mapping]) -> int:
    """2 for a dataset of images, 3 for volumes (from its first image; :func:`monai_umed.data.validate_datalist`
    refuses datasets that mix them)."""
    return read_raw(image_key(items[0]["image"])).spatial_ndim if items else 2


def training_size(image_size: int | Sequence[int], spatial_dims: int, volume_size: int | Sequence[int] | None = None,
                  device: Any = "cpu") -> tuple[int, ...]:
    """The size the networks train at: ``image_size`` for 2D images (an int: a square); for volumes
    ``volume_size`` (an int: a cube), by default 64 on CUDA and 32 on the CPU. Volumes are resized to it for
    training like images are (the perturbation is computed at it and brought to each file's grid)."""
    if int(spatial_dims) == 2:
        size = image_size
    else:
        size = volume_size if volume_size is not None else (64 if torch.device(device).type == "cuda" else 32)
    if isinstance(size, (int, float, str)):
        try:
            return (int(size),) * int(spatial_dims)
        except ValueError:
            raise UserInputError(f"the training size must be an integer or one integer per axis, got {size!r}.") from None
    return tuple(int(s) for s in size)


_FLAG_WORDS = ("true", "yes", "y", "on", "false", "no", "n", "off", "none", "null", "1", "0")


def robust_countermeasures(robust: Any) -> list[str] | None:
    """The countermeasures ``--robust`` asks for: ``true`` -> :data:`monai_umed.defenses.ROBUST_DEFAULT` (every
    countermeasure but ``augment``), ``all`` -> every one of :data:`monai_umed.defenses.EOT_TRANSFORMS` (``augment``
    too), ``false`` -> ``None``, or a comma list of names from :data:`monai_umed.defenses.EOT_TRANSFORMS` (e.g.
    ``identity,jpeg``: half of the draws go through JPEG).

    Raises:
        UserInputError: a name that is not a countermeasure.
    """
    from monai_umed.defenses import EOT_TRANSFORMS, ROBUST_DEFAULT

    if isinstance(robust, (list, tuple)):
        names = [str(n).strip().lower() for n in robust]
    elif robust is None or isinstance(robust, (bool, int)) or str(robust).strip().lower() in _FLAG_WORDS:
        return list(ROBUST_DEFAULT) if as_bool(robust, "robust") else None
    elif str(robust).strip().lower() == "all":
        return list(EOT_TRANSFORMS)
    else:
        names = [n.strip().lower() for n in str(robust).split(",") if n.strip()]
    bad = [n for n in names if n not in EOT_TRANSFORMS]
    if bad or not names:
        raise UserInputError(
            f"--robust {robust!r}: give true, all, false or a comma list of {', '.join(EOT_TRANSFORMS)} "
            f"(unknown: {', '.join(bad) or 'empty list'})."
        )
    return names


_REM_OFF = ("0", "0.0", "false", "off", "none", "")


#: ``--rescale auto`` on 2D images: the generators also meet the batch at 40-100 % of the training size, which covers
#: the verification's coarser size (half of it, ``--verify_sizes auto``) on the CPU (96 -> 48) and on CUDA (224 -> 96)
RESCALE_AUTO = 0.4


def rescale_scale(rescale: Any, spatial_dims: int = 2) -> float | None:
    """The smallest training size of ``--rescale`` as a fraction of the protector's (``None``: off).

    ``auto``: :data:`RESCALE_AUTO` for 2D images, off for 3D volumes (their patches are already small: 32 voxels on
    the CPU); ``0``, ``false``, ``none``: off; a number in (0, 1), e.g. ``0.4``: the generators also meet the
    surrogate on the protected batch resized to 40-100 % of the training size
    (:class:`monai_umed.defenses.RescaleView`).

    Raises:
        UserInputError: anything else.
    """
    if str(rescale).strip().lower() == "auto":
        return RESCALE_AUTO if int(spatial_dims) == 2 else None
    if rescale is None or rescale is False or str(rescale).strip().lower() in _REM_OFF:
        return None
    try:
        value = float(rescale)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value < 1:
        raise UserInputError(f"--rescale {rescale!r}: give the smallest training size as a fraction of --image_size, "
                             f"a number between 0 and 1 (e.g. 0.4), auto, or 0 to turn it off.")
    return value


def robust_transform(
    robust: Any,
    spatial_dims: int = 2,
    seed: int = 0,
    surrogate: torch.nn.Module | None = None,
    loss_function: Any = None,
    rem_epsilon: Any = 0,
    rem_steps: int = 3,
    rescale: Any = 0,
    multiple: int = 16,
) -> Any:
    """The generators' (and the surrogate's) view of the protected images for ``--robust``, ``--rescale`` and
    ``--rem_epsilon``, applied in that order.

    ``--robust``: :class:`monai_umed.defenses.EOTDefense` over :func:`robust_countermeasures` (a random
    differentiable countermeasure per image, seeded with ``seed``). ``--rescale`` (:func:`rescale_scale`): the
    exploiter's choice of a smaller training size, :class:`monai_umed.defenses.RescaleView` down to ``rescale``
    times the training size in steps of ``multiple`` (the surrogate's total stride). ``--rem_epsilon`` > 0: robust
    error-minimising noise, :class:`monai_umed.defenses.AdversarialView` (a ``rem_steps``-step PGD attack of radius
    ``rem_epsilon`` on ``surrogate``'s ``loss_function``, after the other views). ``None`` when none is asked for.

    Raises:
        UserInputError: ``--robust`` on 3D volumes (the countermeasures are 2D image operations), an unknown name,
            a ``--rescale`` outside (0, 1) (0: off), or a ``--rem_epsilon`` outside [0, 1) (0: off).
    """
    names = robust_countermeasures(robust)
    view = None
    if names is not None:
        if int(spatial_dims) != 2:
            raise UserInputError("--robust works on 2D images only (JPEG, blur, median ... are 2D operations).")
        from monai_umed.defenses import EOTDefense

        view = EOTDefense(names, generator=torch.Generator().manual_seed(int(seed)))
    scale = rescale_scale(rescale, spatial_dims)
    if scale is not None:
        from monai_umed.defenses import RescaleView

        view = RescaleView(scale, multiple=int(multiple), countermeasure=view,
                           generator=torch.Generator().manual_seed(int(seed) + 2))
    off = rem_epsilon is None or rem_epsilon is False or str(rem_epsilon).strip().lower() in _REM_OFF
    rem = 0.0 if off else parse_epsilon(rem_epsilon, "rem_epsilon")
    if rem > 0:
        if surrogate is None or loss_function is None:
            raise ValueError("--rem_epsilon needs the surrogate and its loss function.")
        from monai_umed.defenses import AdversarialView

        view = AdversarialView(surrogate, loss_function, epsilon=rem, steps=int(rem_steps), countermeasure=view,
                               generator=torch.Generator().manual_seed(int(seed) + 1))
    return view


def surrogate_view(
    generator_view: Any, robust: Any, robust_surrogate: Any = True, rem_surrogate: Any = True, **view_args: Any
) -> Any:
    """The surrogate phases' view of the protected batch (``UMedTrainer(surrogate_transform=...)``).

    With ``--robust`` and ``--robust_surrogate true`` the surrogate trains on the countermeasures' output, as the
    generators meet it: ``generator_view`` itself (one draw sequence for both phases). With ``--robust_surrogate
    false`` only the generators meet the countermeasures: the surrogate keeps the rest of the view (``--rescale``,
    ``--rem_epsilon``, as :func:`robust_transform` builds it without ``--robust``) and otherwise trains on the plain
    protected batch, so it is the exploiter that trains on the files as published, and the generators are asked for
    a shortcut that this exploiter also takes through each countermeasure. Without ``--robust`` the flag changes
    nothing: ``generator_view``.

    ``--rem_surrogate`` does the same for REM's attack (``--rem_epsilon``): true (REM's own recipe) lets the
    surrogate train on the attacked batch, adversarially; false keeps the attack to the generator phases (the
    generators minimise the loss of a surrogate trained on the files as published, after PGD's ascent on it), and the
    surrogate gets the view without its last stage, :class:`monai_umed.defenses.AdversarialView` (whose
    ``countermeasure``, the same object as in the generators' view, comes first). Without ``--rem_epsilon`` it
    changes nothing. ``view_args``: :func:`robust_transform`'s other arguments, as for ``generator_view``.
    """
    from monai_umed.defenses import AdversarialView

    sees_countermeasures = as_bool(robust_surrogate, "robust_surrogate")
    sees_attack = as_bool(rem_surrogate, "rem_surrogate")
    view = generator_view
    if robust_countermeasures(robust) is not None and not sees_countermeasures:
        view = robust_transform(False, **view_args)
    if not sees_attack and isinstance(view, AdversarialView):
        view = view.countermeasure
    return view


def _grey_channels(raw: Any) -> bool:
    """True for one channel, or three identical channels (a grey image stored as RGB, e.g. BUSI PNGs)."""
    array, nd = raw.array, raw.spatial_ndim
    if array.ndim == nd or (array.ndim == nd + 1 and array.shape[-1] == 1):
        return True
    if nd == 2 and array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))
    return False


def infer_channels(datalist: Sequence[dict]) -> int:
    """Channels the networks work on: for images, 1 if every image is grey (also grey stored as RGB), else 3; for
    volumes, their channel count (1, or the modalities of 4D files); for an image whose channels are separate files
    (nnU-Net), their total.

    A grey image stored as RGB gets the same perturbation in its three channels, so it stays grey: in a grey
    dataset through the one-channel networks, in a dataset that also holds colour images through
    :func:`monai_umed.networks.nets.keep_grey`, which also keeps the grey pixels of a colour image grey.
    """
    for item in datalist:
        files = image_paths(item["image"])
        raws = [read_raw(p) for p in files]
        if raws[0].spatial_ndim == 3 or len(raws) > 1:  # modalities, or an image whose channels are separate files
            return sum(r.channels for r in raws)
        if not _grey_channels(raws[0]):
            return 3
    return 1


def dataset_classes(datalist: Sequence[dict], labels: str = "auto") -> list[int]:
    """The mask values that are the classes 1..K of the surrogate and the exploiters; ``[]`` for a binary task.

    ``labels="auto"``: every distinct foreground value of the datalist's masks
    (:func:`monai_umed.data.mask_values`) is a class, so a binary dataset has one (-> ``[]``); ``"binary"``: all
    foreground values are one class. See :func:`monai_umed.transforms.class_values`.

    Raises:
        UserInputError: an unknown ``labels`` mode.
    """
    if str(labels).lower() not in LABEL_MODES:
        raise UserInputError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}.")
    if str(labels).lower() == "binary":
        return []
    return class_values(mask_values(datalist), labels)


#: Above this epsilon a warning says that the perturbation may become visible (the paper uses 4/255 and 8/255).
EPSILON_WARN = 16 / 255


def parse_epsilon(value: Any, name: str = "epsilon") -> float:
    """Epsilon as a float in (0, 1): a number, or a string such as ``"8/255"`` or ``"0.0314"``.

    Epsilon is the l-inf bound on the package's [0, 1] intensity scale. Values above :data:`EPSILON_WARN` are
    accepted with a warning (the perturbation may become visible).

    Raises:
        UserInputError: not a number or fraction, not finite, or outside (0, 1).
    """
    text = str(value).strip()
    try:
        if isinstance(value, str) and "/" in text:
            num, den = text.split("/", 1)
            eps = float(num) / float(den)
        else:
            eps = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        raise UserInputError(f"--{name} {value!r}: not a number; give e.g. 4/255 or 0.0157.") from None
    if not math.isfinite(eps) or not 0 < eps < 1:
        raise UserInputError(
            f"--{name} {value!r}: must be in (0, 1) on the [0, 1] intensity scale (e.g. 4/255 = 0.0157); "
            f"{eps:g} would {'destroy' if eps >= 1 else 'not perturb'} the images."
        )
    if eps > EPSILON_WARN:
        logger.warning(
            "--%s %s = %.2f/255 is above %.0f/255: the perturbation may be visible (the paper uses 4/255 and 8/255).",
            name, text, eps * 255, EPSILON_WARN * 255,
        )
    return eps


def check_schedule(
    steps: Any = None,
    phase_steps: Any = None,
    generator_epochs: Any = 1,
    surrogate_epochs: Any = None,
    surrogate_reset: Any = 0,
    stop_ratio: Any = None,
    verify_steps: Any = None,
    require_dsc: Any = None,
) -> None:
    """Check the protect job's schedule and verification options before any work.

    Raises:
        UserInputError: one line naming the option, for a count that is not a whole number in range (``steps``,
            ``phase_steps``, ``verify_steps``, ``surrogate_epochs`` >= 1; ``generator_epochs``, ``surrogate_reset``
            >= 0) or a ratio / DSC that is not a number in range (``stop_ratio`` > 0, ``require_dsc`` in [0, 1]).
    """

    def whole(name: str, value: Any, least: int) -> None:
        if value is None:
            return
        ok = not isinstance(value, bool)
        try:
            ok = ok and float(value) == int(float(value)) and int(float(value)) >= least
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserInputError(f"--{name} {value!r}: expected a whole number >= {least}.")

    for name, value, least in (("steps", steps, 1), ("phase_steps", phase_steps, 1), ("verify_steps", verify_steps, 1),
                               ("surrogate_epochs", surrogate_epochs, 1), ("generator_epochs", generator_epochs, 0),
                               ("surrogate_reset", surrogate_reset, 0)):
        whole(name, value, least)
    for name, value, lo, hi in (("stop_ratio", stop_ratio, 0.0, math.inf), ("require_dsc", require_dsc, 0.0, 1.0)):
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not (lo <= number <= hi) or (name == "stop_ratio" and number <= 0):
            bounds = "a number > 0" if name == "stop_ratio" else "a DSC in [0, 1]"
            raise UserInputError(f"--{name} {value!r}: expected {bounds}.")


def check_image_size(image_size: int | Sequence[int], *strides: Sequence[int], name: str = "--image_size") -> tuple[int, ...]:
    """Check that the training size suits every network: each side a multiple of the product of each stride list.

    ``protect`` calls it with the surrogate's and both generators' strides (``(2, 2, 2, 2)`` -> multiples of 16),
    so that a size such as 90 fails at once with this message instead of a tensor-shape error deep in a U-Net.
    ``name`` is the option the message names (``--volume_size`` for volumes). Returns the size as a tuple.
    """
    size = (image_size,) * 2 if isinstance(image_size, (int, float, str)) else tuple(image_size)
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} must be an integer or one integer per axis, got {image_size!r}.") from None
    multiple = 1
    for stride_list in strides:
        multiple = math.lcm(multiple, math.prod(int(s) for s in stride_list))
    if any(s < multiple or s % multiple for s in size):
        shown = size[0] if len(set(size)) == 1 else image_size
        raise UserInputError(
            f"{name} {shown!r} does not suit the networks: each side must be a positive multiple of "
            f"{multiple} (they downsample by {multiple}); e.g. {max(multiple, round(size[0] / multiple) * multiple)}."
        )
    return size


def umed_transforms(
    image_size: int | Sequence[int], channels: int, extra_keys: Sequence[str] = (), **prior_kwargs: Any
) -> Compose:
    """Load an image/mask pair from a datalist entry and apply :func:`prior_transforms`.

    The result is one flat ``Compose`` of deterministic transforms, so that ``CacheDataset`` caches all of it,
    priors included: a nested ``Compose`` counts as randomizable and stops the caching before the LBP and the
    contour band, which were then recomputed in every epoch (``docs/DESIGN.md``, "Measured trade-offs").
    Only ``image``, ``label`` and ``extra_keys`` (e.g. the EM baseline's per-sample index) reach the loader.
    """
    return Compose(
        [
            LoadImageUnitd("image"),
            LoadMaskd("label"),
            # only tensors go on to the loader: the datalist's own keys (``label_rel`` is a list of one or more
            # paths, e.g. BUSI's extra ``_mask_1`` files) cannot be collated into a batch
            SelectItemsd(["image", "label", *extra_keys]),
            prior_transforms(image_size, channels, **prior_kwargs),
        ]
    ).flatten()


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str:
    """The most recent readable ``*.pt`` checkpoint in ``checkpoint_dir`` (written by :class:`CheckpointSaver`).

    Checkpoints are tried newest first; one that cannot be loaded (truncated by a kill or a full disk, or holding
    anything but tensors and plain data) is skipped with a warning naming it.

    Raises:
        UserInputError: the folder holds no readable checkpoint.
    """
    folder = Path(checkpoint_dir)
    files = [p for p in folder.glob("*.pt") if not is_temp_path(p)] if folder.is_dir() else []
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if not files:
        raise UserInputError(f"--resume was given but no checkpoint (*.pt) exists in {folder}.")
    for path in files:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            logger.warning("skipping checkpoint %s: it cannot be read (%s: %s)", path, type(e).__name__, str(e)[:200])
            continue
        logger.info("resuming from checkpoint %s", path)
        return str(path)
    raise UserInputError(f"--resume was given but no checkpoint in {folder} can be read: " + ", ".join(p.name for p in files))


def as_bool(value: Any, name: str = "value") -> bool | None:
    """A command-line flag as a bool: ``True``/``False``, ``"true"``/``"false"``, ``"yes"``/``"no"``, ``1``/``0``.

    ``python -m monai.bundle run ... --resume false`` passes the *string* ``"false"`` (only ``False`` is parsed
    as a bool), which Python would treat as true; configs pass their flags through this function. ``None`` stays
    ``None`` (meaning "automatic" where a config allows it).
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "on"):
        return True
    if text in ("false", "no", "n", "0", "off"):
        return False
    if text in ("none", "null", "auto"):
        return None
    raise UserInputError(f"--{name} {value!r}: cannot read it as true/false.")


#: Options of each baseline's optimisation in ``protect.json`` (``--protector_args#NAME``), with their defaults.
BASELINE_FIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "em": {"train_steps": 10, "pgd_steps": 20, "step_size": None, "stop_loss": 0.05},
    "tap": {"snapshots": 1, "pgd_steps": 250, "step_size": None},
    "sep": {"snapshots": 5, "pgd_steps": 250, "step_size": 1 / 255},
}


def build_protector(
    name: str,
    umed: Any,
    channels: int,
    epsilon: float,
    keys: Sequence[str],
    image_size: int | Sequence[int],
    seed: int = 0,
    options: dict[str, Any] | None = None,
):
    """The protector ``protect.json`` trains for ``--protector NAME``.

    ``umed`` is the UMed protector the config builds (returned for ``"umed"``); the baselines are built from the
    dataset's channels, epsilon and seed, the sample-wise ones (``em``, ``tap``, ``sep``) also from the training
    images' ``keys`` and the training size. ``options`` are constructor arguments of the baseline (``lsp``:
    ``patch_size``, ``class_sep``, ``max_grid``; ``ar``: ``stability``); the optimisation options of
    :data:`BASELINE_FIT_DEFAULTS` are left to :func:`fit_protector`.

    Raises:
        UserInputError: unknown name or option (one line naming it); a baseline under ``torchrun`` with several
            processes (multi-GPU protection is implemented for UMed only).
    """
    from monai_umed.distributed import is_distributed
    from monai_umed.protectors import PROTECTORS

    name = str(name).lower()
    if name not in PROTECTORS:
        raise UserInputError(f"--protector {name!r}: unknown; choose one of {', '.join(sorted(PROTECTORS))}.")
    if name == "umed":
        return umed
    if is_distributed():
        raise UserInputError(f"--protector {name!r} runs in one process; multi-GPU (torchrun) protection is for umed only.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2:
        raise UserInputError(
            f"--protector {name!r} works on 2D images only; this dataset holds 3D volumes (UMed protects both)."
        )
    options = {k: v for k, v in (options or {}).items() if k not in BASELINE_FIT_DEFAULTS.get(name, {})}
    try:
        if name in ("em", "tap", "sep"):
            return PROTECTORS[name](list(keys), channels, size, epsilon=epsilon, **options)
        return PROTECTORS[name](channels, epsilon=epsilon, seed=seed, **options)
    except TypeError as e:
        raise UserInputError(f"--protector_args for {name!r}: {e}.") from None


def fit_protector(
    protector: Any,
    loader: Any,
    surrogate: torch.nn.Module,
    loss_function: Any,
    steps: int,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    options: dict[str, Any] | None = None,
    index_key: str = "sample_index",
) -> dict:
    """Optimise a baseline protector for ``protect.json`` with the job's loader, surrogate U-Net and loss.

    ``steps`` is the training length, as for UMed: EM runs ``steps // train_steps`` rounds (its surrogate steps
    total ``steps``); TAP and SEP train the clean model(s) for ``steps`` steps, then run their targeted PGD; LSP
    and AR do not train. ``options`` override :data:`BASELINE_FIT_DEFAULTS`.

    Returns:
        what the optimisation reports (``{}`` for LSP and AR).
    """
    from monai_umed.protectors import optimize_error_minimizing, optimize_targeted, train_snapshots

    name = protector.name
    if name not in BASELINE_FIT_DEFAULTS:
        logger.info("%s protector: nothing to train", name)
        return {}
    opts = dict(BASELINE_FIT_DEFAULTS[name])
    opts.update({k: v for k, v in (options or {}).items() if k in opts})
    optimizer = torch.optim.Adam(surrogate.parameters(), lr)
    if name == "em":
        rounds = max(1, int(steps) // int(opts["train_steps"]))
        history = optimize_error_minimizing(
            protector, surrogate, loader, optimizer, loss_function, device=device, max_rounds=rounds,
            train_steps=int(opts["train_steps"]), pgd_steps=int(opts["pgd_steps"]), step_size=opts["step_size"],
            stop_loss=float(opts["stop_loss"]), index_key=index_key,
        )
        return {"rounds": history}
    models = train_snapshots(surrogate, loader, optimizer, loss_function, int(steps), int(opts["snapshots"]), device)
    return optimize_targeted(protector, models, loader, loss_function, steps=int(opts["pgd_steps"]),
                             step_size=opts["step_size"], device=device, index_key=index_key)

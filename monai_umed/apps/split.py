# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Random train/test split of a dataset into a MONAI JSON datalist (Sec. 4.1 of Lin et al., IJCAI 2024:
"we randomly split the datasets into training and testing sets, maintaining a ratio of 8:2").

The split file is a MONAI / Decathlon-style datalist::

    {
        "name": "...", "description": "...", "seed": 0, "test_fraction": 0.2,
        "numTraining": 517, "numTest": 130,
        "training": [{"image": "images/a.png", "label": "masks/a.png", "name": "a"}, ...],
        "test":     [{"image": "benign/b (3).png", "label": ["benign/b (3)_mask.png", "benign/b (3)_mask_1.png"],
                      "name": "b (3)"}, ...]
    }

with paths **relative to the dataset folder** (so the file travels with the data and
``monai_umed.data.datalist_from_json(file, dataset_dir=...)`` / MONAI's ``load_decathlon_datalist(file,
base_dir=...)`` read it back). ``"label"`` is one path, or a list of paths when a case has several mask files
(BUSI); their union is the mask.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_umed.data import case_name, image_key, image_paths, load_datalist, select_stems, validate_datalist
from monai_umed.utils import UserInputError, atomic_write_text, check_output_dir

__all__ = ["make_split", "write_split", "SPLIT_KEYS"]

logger = logging.getLogger(__name__)

#: Keys of the two lists in a split file.
SPLIT_KEYS: tuple[str, str] = ("training", "test")


def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def _relative(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise UserInputError(f"{path} is outside the dataset folder {root}; a split stores paths relative to it.")
    return Path(rel).as_posix()


def _split_entry(item: dict, root: str) -> dict[str, Any]:
    label = item.get("label")
    if label is None:
        raise UserInputError(f"{item.get('image')}: case has no mask ('label'); a segmentation split needs one per case.")
    labels = [label] if isinstance(label, (str, os.PathLike)) else list(label)
    rels = [_relative(os.fspath(p), root) for p in labels]
    images = [_relative(p, root) for p in image_paths(item["image"])]
    return {
        "image": images[0] if len(images) == 1 else images,
        "label": rels[0] if len(rels) == 1 else rels,
        "name": case_name(item),
    }


def make_split(
    dataset_dir: str | os.PathLike | None,
    test_fraction: float = 0.2,
    seed: int = 0,
    stems: str | os.PathLike | Iterable[str] | None = None,
    datalist: str | os.PathLike | Sequence[dict] | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """A random train/test split of a dataset as a MONAI datalist dict ``{"training": [...], "test": [...]}``.

    The cases (every image/mask pair of ``dataset_dir``'s layout, or of ``datalist``) are sorted by
    ``(name, image path)`` and permuted with ``numpy.random.default_rng(seed)``; the first
    ``ceil(n * test_fraction)`` cases of the permutation form the test set (``ceil``, like scikit-learn's
    ``train_test_split``: BUSI benign + malignant, 647 cases -> 517 / 130), the rest the training set. Each
    list is written in natural order of the case names. The same inputs and seed always give the same split.

    Args:
        dataset_dir: dataset folder ("folders" or "busi" layout, see :func:`monai_umed.data.load_datalist`);
            the paths of the split are relative to it. May be ``None`` when ``datalist`` is a JSON file
            (its folder is then the base) or a :class:`~monai_umed.data.Datalist` with a ``root``.
        test_fraction: fraction of cases in the test set, in (0, 1); 0.2 is the paper's 8:2 split.
        seed: seed of the permutation.
        stems: optional selection of cases by name (list, or a text file with one stem per line, e.g. BUSI's
            ``benign_malignant_stems.txt``).
        datalist: optional source of the cases instead of scanning ``dataset_dir``: a JSON datalist file (its
            ``"training"`` list) or a list of entries with absolute ``image``/``label`` paths.
        validate: run :func:`monai_umed.data.validate_datalist` on the cases first (missing or corrupt files,
            orphans, size mismatches: all reported in one error).

    Returns:
        ``{"name", "description", "seed", "test_fraction", "numTraining", "numTest", "training", "test"}``;
        entries are ``{"image": rel, "label": rel or [rel, ...], "name": stem}``.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1), fewer than 2 cases, a split leaving one side empty, a
            case outside the dataset folder, or an invalid dataset (``DatasetValidationError``).
    """
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise UserInputError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if datalist is None or isinstance(datalist, (str, os.PathLike)):
        items = load_datalist(dataset_dir=dataset_dir, datalist=datalist, key="training", stems=stems)
    else:
        items = datalist if stems is None else select_stems(list(datalist), stems)
    if dataset_dir is not None:
        root = os.path.abspath(dataset_dir)
    elif getattr(items, "root", None):
        root = items.root
    elif isinstance(datalist, (str, os.PathLike)):
        root = os.path.dirname(os.path.abspath(datalist))
    else:
        raise UserInputError("give dataset_dir: the split's paths are relative to it.")
    if validate:
        validate_datalist(items, dataset_dir=dataset_dir)
    entries = sorted((_split_entry(e, root) for e in items), key=lambda e: (_natural_key(e["name"]), image_key(e["image"])))
    n = len(entries)
    n_test = int(math.ceil(n * test_fraction - 1e-9))
    if n < 2 or n_test < 1 or n_test >= n:
        raise UserInputError(
            f"cannot split {n} case(s) of {root} with test_fraction={test_fraction}: both sets must be non-empty."
        )
    perm = np.random.default_rng(int(seed)).permutation(n)
    test_idx = set(int(i) for i in perm[:n_test])
    training = [e for i, e in enumerate(entries) if i not in test_idx]
    test = [e for i, e in enumerate(entries) if i in test_idx]
    return {
        "name": os.path.basename(root.rstrip(os.sep)),
        "description": (
            f"random train/test split by monai_umed.apps.split.make_split (seed={int(seed)}, "
            f"test_fraction={test_fraction}); paths are relative to the dataset folder"
        ),
        "seed": int(seed),
        "test_fraction": test_fraction,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }


def write_split(
    dataset_dir: str | os.PathLike | None,
    output_file: str | os.PathLike,
    test_fraction: float = 0.2,
    seed: int = 0,
    stems: str | os.PathLike | Iterable[str] | None = None,
    datalist: str | os.PathLike | Sequence[dict] | None = None,
) -> Path:
    """Compute :func:`make_split` and write it as JSON to ``output_file`` atomically
    (:func:`~monai_umed.utils.atomic_write`); logs the counts. Returns the path written.

    Raises:
        UserInputError: ``output_file`` is inside ``dataset_dir`` (the dataset is never written to, see
            :func:`~monai_umed.utils.check_output_dir`).
    """
    out = Path(output_file)
    if dataset_dir is not None:
        check_output_dir(dataset_dir, out, what="--output_file")
    split = make_split(dataset_dir, test_fraction=test_fraction, seed=seed, stems=stems, datalist=datalist)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(split, indent=2, ensure_ascii=False) + "\n")
    logger.info(
        "split of %s: %d training / %d test cases (test_fraction=%s, seed=%d) written to %s",
        dataset_dir if dataset_dir is not None else datalist,
        split["numTraining"],
        split["numTest"],
        split["test_fraction"],
        split["seed"],
        out,
    )
    return out

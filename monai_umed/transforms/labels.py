# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""From a mask's label values to the class indices a segmentation network is trained on."""

from __future__ import annotations

from collections.abc import Sequence

from monai.config import KeysCollection
from monai.transforms import AsDiscreted, MapLabelValued, MapTransform

__all__ = ["LABEL_MODES", "class_values", "label_classes_transform"]

#: how mask values become classes: ``"auto"`` (each distinct foreground value is a class) or ``"binary"``
#: (every foreground value is class 1)
LABEL_MODES: tuple[str, ...] = ("auto", "binary")


def class_values(label_values: Sequence[int], mode: str = "auto") -> list[int]:
    """The foreground label values that are classes 1..K, in order.

    Args:
        label_values: the distinct values found in a dataset's masks (0, the background, may be included).
        mode: ``"auto"``: every distinct non-zero value is a class (a binary dataset has one);
            ``"binary"``: one class, the union of all foreground values (returns ``[]``, see
            :func:`label_classes_transform`).

    Raises:
        ValueError: an unknown mode.
    """
    mode = str(mode).lower()
    if mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {mode!r}.")
    values = sorted({int(v) for v in label_values if int(v) != 0})
    return values if mode == "auto" and len(values) > 1 else []


def label_classes_transform(keys: KeysCollection, values: Sequence[int] | None = None) -> MapTransform:
    """The transform that turns a label map's values into class indices 0..K.

    ``values`` empty or ``None`` (binary): ``AsDiscreted(threshold=0.5)``, every foreground value is class 1.
    Otherwise MONAI's ``MapLabelValued``: 0 stays 0 and ``values[k]`` becomes class ``k + 1`` (e.g. 0/128/255
    masks -> 0/1/2); a value that is not listed is left as it is.
    """
    if not values:
        return AsDiscreted(keys, threshold=0.5)
    return MapLabelValued(keys, orig_labels=[0, *[int(v) for v in values]], target_labels=list(range(len(values) + 1)))

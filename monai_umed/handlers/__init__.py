# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Handlers: invisibility metrics and atomic checkpoints.

The protected-dataset writer moved to :mod:`monai_umed.apps.writer` (it is a job step, not an engine handler);
``monai_umed.handlers.ProtectedDatasetWriter`` and its helpers still resolve there, with a deprecation warning.
"""

import warnings

from monai_umed.handlers.checkpoint import AtomicDiskSaver, CheckpointSaver
from monai_umed.handlers.metrics import InvisibilityHandler, invisibility_metrics, ssim_map
from monai_umed.handlers.validation import ValidationCurve, ValidationSchedule, curve_best

__all__ = [
    "AtomicDiskSaver",
    "CheckpointSaver",
    "InvisibilityHandler",
    "ValidationCurve",
    "ValidationSchedule",
    "curve_best",
    "invisibility_metrics",
    "ssim_map",
]

_MOVED = {
    "ProtectedDatasetWriter": "monai_umed.apps.writer",
    "check_written": "monai_umed.apps.writer",
    "file_values": "monai_umed.apps.writer",
    "quantize_protected": "monai_umed.apps.writer",
    "sha256_file": "monai_umed.apps.writer",
    "atomic_write_json": "monai_umed.utils",
    "native_band_width": "monai_umed.protectors",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        warnings.warn(
            f"monai_umed.handlers.{name} moved to {_MOVED[name]}.{name}; the old path will be removed in 0.4.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'monai_umed.handlers' has no attribute {name!r}")

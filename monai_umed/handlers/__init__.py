# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Handlers: invisibility metrics, atomic checkpoints and the protected-dataset writer."""

from monai_umed.handlers.checkpoint import AtomicDiskSaver, CheckpointSaver
from monai_umed.handlers.metrics import InvisibilityHandler, invisibility_metrics
from monai_umed.handlers.writer import (
    ProtectedDatasetWriter,
    atomic_write_json,
    check_written,
    file_values,
    native_band_width,
    quantize_protected,
    sha256_file,
)

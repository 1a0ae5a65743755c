# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Handlers: invisibility metrics and the protected-dataset writer."""

from monai_umed.handlers.metrics import InvisibilityHandler, invisibility_metrics
from monai_umed.handlers.writer import ProtectedDatasetWriter, atomic_write_json, native_band_width, sha256_file

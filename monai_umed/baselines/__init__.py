# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Baseline protectors the UMed paper compares against (Table 1), adapted to segmentation.

Each exposes ``native_delta(image, label, key) -> (delta, allowed)`` on an image's own grid, which
:class:`monai_umed.handlers.ProtectedDatasetWriter` writes with the same guarantees as UMed's perturbations.
"""

from monai_umed.baselines.em import EMProtector, optimize_error_minimizing
from monai_umed.baselines.lsp import LSPProtector

__all__ = ["EMProtector", "LSPProtector", "optimize_error_minimizing"]

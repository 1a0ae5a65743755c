# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The baseline protectors of the paper's Table 1; they live in :mod:`monai_umed.protectors` (this module keeps
the old import path)."""

from monai_umed.protectors.em import EMProtector, optimize_error_minimizing
from monai_umed.protectors.lsp import LSPProtector

__all__ = ["EMProtector", "LSPProtector", "optimize_error_minimizing"]

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Network building blocks of monai_umed."""

from __future__ import annotations

from .cdc import CDCConvolution, CentralDifferenceConv

__all__ = ["CDCConvolution", "CentralDifferenceConv"]

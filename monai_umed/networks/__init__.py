# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Networks of monai_umed: blocks (central difference convolution) and nets (generators, perturbators, ...)."""

from __future__ import annotations

from .blocks import *  # noqa: F401,F403
from .blocks import __all__ as _blocks_all
from .nets import *  # noqa: F401,F403
from .nets import __all__ as _nets_all

__all__ = [*_blocks_all, *_nets_all]

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Networks of monai_umed: UMed's generators / perturbators and the exploiter networks."""

from __future__ import annotations

from .cdc_unet import CDCUNet
from .exploiters import EXPLOITERS, UNetPlusPlusExploiter, exploiter_size_rule, get_exploiter
from .perturbators import (
    BOUND_MODES,
    DEFAULT_EPSILON,
    ContourPerturbator,
    TexturePerturbator,
    UMedPerturbator,
    compose_protected,
    highpass_field,
    keep_grey,
    lowpass_field,
    contour_perturbation,
    texture_bound,
    texture_perturbation,
    write_round_trip,
    fit_training_view,
)
from .transunet import TRANSUNET_PAPER_KWARGS, TransUNet

__all__ = [
    "BOUND_MODES",
    "EXPLOITERS",
    "TRANSUNET_PAPER_KWARGS",
    "TransUNet",
    "UNetPlusPlusExploiter",
    "exploiter_size_rule",
    "get_exploiter",
    "CDCUNet",
    "ContourPerturbator",
    "DEFAULT_EPSILON",
    "TexturePerturbator",
    "UMedPerturbator",
    "compose_protected",
    "highpass_field",
    "keep_grey",
    "lowpass_field",
    "contour_perturbation",
    "texture_bound",
    "texture_perturbation",
    "write_round_trip",
    "fit_training_view",
]

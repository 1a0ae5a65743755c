# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Transforms computing UMed's priors (Lin et al., IJCAI 2024): contour band / ROI interior and LBP texture map."""

from .channels import MatchChannels, MatchChannelsd
from .contour import CONTOUR_SIDES, ContourBand, ContourBandd, contour_band, roi_interior
from .texture import (
    LBP_METHODS,
    RGB_LUMINANCE_WEIGHTS,
    LBPTextureMap,
    LBPTextureMapd,
    lbp_max_code,
    lbp_neighbour_offsets,
    local_binary_pattern,
    to_luminance,
)
from .labels import LABEL_MODES, class_values, label_classes_transform
from .priors import ForegroundNeighbourhoodd, PriorSettings, prior_transforms

__all__ = [
    "MatchChannels",
    "MatchChannelsd",
    "LABEL_MODES",
    "class_values",
    "label_classes_transform",
    "ForegroundNeighbourhoodd",
    "PriorSettings",
    "prior_transforms",
    "CONTOUR_SIDES",
    "ContourBand",
    "ContourBandd",
    "contour_band",
    "roi_interior",
    "LBP_METHODS",
    "RGB_LUMINANCE_WEIGHTS",
    "LBPTextureMap",
    "LBPTextureMapd",
    "lbp_max_code",
    "lbp_neighbour_offsets",
    "local_binary_pattern",
    "to_luminance",
]

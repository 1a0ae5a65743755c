# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Protectors: UMed and the baselines of the paper's Table 1 behind one interface.

Registered names: ``umed``, ``lsp``, ``em``, ``tap``, ``sep``, ``ar``. Every protector is a :class:`Protector` (``native_delta``, ``config``, ``save``, ``fingerprint``), registered by
name in :data:`PROTECTORS`: ``get_protector("umed", in_channels=3)``, ``load_protector("protector.pt")``. The
writer (:class:`monai_umed.apps.ProtectedDatasetWriter`) takes any of them.

Grey images stored with several channels: UMed gives their grey pixels a grey perturbation
(:func:`monai_umed.networks.nets.keep_grey`); the baselines, like their originals, perturb each channel on its own and
so write colour on grey content, which an exploiter's grey-scale conversion removes (on BUSI it takes LSP's
protection away: README, issue 11, "Six protectors on BUSI").
"""

from monai_umed.protectors.base import (
    PROTECTOR_FORMAT,
    PROTECTORS,
    Protector,
    get_protector,
    load_protector,
    register_protector,
)
from monai_umed.protectors.ar import ARProtector, ar_process
from monai_umed.protectors.classwise import ClassWiseProtector
from monai_umed.protectors.em import EMProtector, optimize_error_minimizing
from monai_umed.protectors.lsp import LSPProtector
from monai_umed.protectors.samplewise import SampleWiseProtector
from monai_umed.protectors.targeted import SEPProtector, TAPProtector, optimize_targeted, swapped_labels, train_snapshots
from monai_umed.protectors.umed import UMedProtector, build_perturbator, native_band_width

__all__ = [
    "PROTECTOR_FORMAT",
    "PROTECTORS",
    "Protector",
    "get_protector",
    "load_protector",
    "register_protector",
    "ARProtector",
    "ClassWiseProtector",
    "ar_process",
    "EMProtector",
    "LSPProtector",
    "SampleWiseProtector",
    "SEPProtector",
    "TAPProtector",
    "UMedProtector",
    "build_perturbator",
    "native_band_width",
    "optimize_error_minimizing",
    "optimize_targeted",
    "swapped_labels",
    "train_snapshots",
]

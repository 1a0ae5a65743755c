# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Ignite/MONAI workflows: the alternating UMed trainer (Algorithm 1)."""

from monai_umed.engines.trainer import (
    GeneratorState,
    countermeasure_view,
    UMedKeys,
    UMedPhase,
    UMedTrainer,
    reset_parameters,
    umed_phase,
    umed_prepare_batch,
    umed_step_schedule,
    umed_total_epochs,
    view_generators,
)

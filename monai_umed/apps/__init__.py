# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Job-level glue used by the bundle configs (``bundles/umed/configs``)."""

from monai_umed.apps.cli import check_cli_options, start_job
from monai_umed.apps.protect import (
    BASELINE_FIT_DEFAULTS,
    EPSILON_WARN,
    as_bool,
    build_protector,
    fit_protector,
    check_image_size,
    check_schedule,
    dataset_classes,
    image_spatial_dims,
    training_size,
    robust_countermeasures,
    robust_transform,
    surrogate_view,
    rescale_scale,
    RESCALE_AUTO,
    infer_channels,
    latest_checkpoint,
    parse_epsilon,
    resolve_dataset,
    umed_transforms,
)
from monai_umed.apps.writer import ProtectedDatasetWriter, check_written, file_values, quantize_protected, sha256_file
from monai_umed.apps.split import SPLIT_KEYS, make_split, write_split
from monai_umed.apps.exploit import (
    EXPLOIT_DEFENSES,
    AdversarialPrepareBatch,
    evaluate_exploiter,
    exploit_transforms,
    resolve_exploit_data,
    train_exploiter,
)
from monai_umed.apps.verify import (
    MIN_REFERENCE_DSC,
    VERIFICATION_KEYS,
    RESOLUTION_RATIO,
    VERIFY_EVALUATIONS,
    VERIFY_EXPLOITER_KWARGS,
    WEAK_RATIO,
    native_image_size,
    protection_verdict,
    resolution_caveat,
    report_verification,
    read_manifest,
    manifest_settings,
    check_manifest_entries,
    DEFENSE_LABELS,
    defense_verdict,
    verification_split,
    verify_defenses,
    verify_protection,
    verify_sizes,
    size_verdict,
    COARSE_SIZE_MAX,
)

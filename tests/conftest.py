"""Shared pytest fixtures for monai_umed tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: ``../shared/data`` beside the repository (or ``$UMED_SHARED_DATA``); tests that need it skip when absent.
SHARED_DATA = Path(os.environ.get("UMED_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """Path to the real BUSI / CVC-ClinicDB data; skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield

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


# One intra-op thread: tests use tiny tensors, and on a shared 2-core machine several threads per process
# oversubscribe the cores and make small convolutions orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield

"""The writer moved from monai_umed.handlers to monai_umed.apps.writer: the old path still works, with a warning."""

from __future__ import annotations

import pytest

import monai_umed.apps.writer as writer
import monai_umed.handlers as handlers


@pytest.mark.parametrize("name", ["ProtectedDatasetWriter", "sha256_file", "quantize_protected"])
def test_old_import_path_warns_and_resolves(name):
    with pytest.warns(DeprecationWarning, match=f"moved to monai_umed.apps.writer.{name}"):
        assert getattr(handlers, name) is getattr(writer, name)
    with pytest.raises(AttributeError):
        handlers.no_such_thing

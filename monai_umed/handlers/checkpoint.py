# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""MONAI's ``CheckpointSaver`` with atomic writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver as _MonaiCheckpointSaver

from monai_umed.utils import atomic_write

__all__ = ["AtomicDiskSaver", "CheckpointSaver"]


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`monai_umed.utils.atomic_write`: a checkpoint appears under its
    final name only once it is complete and on disk, so a kill or a full disk never leaves a truncated
    ``checkpoint_epoch=N.pt`` (the temporary file is removed; the previous checkpoint stays).

    Args:
        dirname: folder of the checkpoints.
        filename: a fixed file name for every save (as MONAI's ``final_filename``), or ``None``.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=False, require_empty=False)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint=checkpoint, filename=self.filename or filename, metadata=metadata)

    def remove(self, filename: str) -> None:
        super().remove(filename=self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        atomic_write(path, lambda tmp: func(checkpoint, tmp, **self.kwargs))


class CheckpointSaver(_MonaiCheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments), with every checkpoint written atomically
    (:class:`AtomicDiskSaver`). MONAI's own saver writes in place (``atomic=False``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, getattr(ckpt.save_handler, "filename", None))

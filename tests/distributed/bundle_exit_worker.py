# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""``python -m monai.bundle ARGS...`` with one check at the very end of the script; used by ``test_distributed.py``
(not a test itself).

Usage: ``torchrun --nproc_per_node=N bundle_exit_worker.py REPORT_DIR ARGS...``. The check is registered with
``atexit`` before the job starts, so it runs after every exit handler that the job registers (they run last in,
first out) and before the interpreter is taken down: it writes to ``REPORT_DIR/rank{R}.txt`` how many
``DistributedDataParallel`` wrappers are still alive at that point. A wrapper alive then is only freed during the
interpreter's teardown, and with it the process group's communication threads.
"""

from __future__ import annotations

import atexit
import gc
import os
import runpy
import sys
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel


def _report(report_dir: Path, rank: str) -> None:
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    (report_dir / f"rank{rank}.txt").write_text(str(alive))


if __name__ == "__main__":
    report = Path(sys.argv[1])
    atexit.register(_report, report, os.environ.get("RANK", "0"))
    sys.argv = ["monai.bundle", *sys.argv[2:]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)

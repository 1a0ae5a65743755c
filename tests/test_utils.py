"""monai_umed.utils: atomic writes (also on a full disk), the output-folder lock, the command-line error hook."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import monai_umed.utils as utils
from monai_umed.utils import (
    DiskFullError,
    OutputLock,
    UserInputError,
    atomic_write,
    atomic_write_text,
    is_temp_path,
    temp_path,
)


def test_temp_path_is_hidden_unique_and_keeps_the_suffix(tmp_path: Path):
    a, b = temp_path(tmp_path / "img.nii.gz"), temp_path(tmp_path / "img.nii.gz")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".img.partial-") and a.name.endswith(".nii.gz")
    assert temp_path(tmp_path / "x.png").suffix == ".png"
    assert is_temp_path(a) and not is_temp_path(tmp_path / "img.nii.gz") and not is_temp_path(tmp_path / ".hidden.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old", "the previous file stays as it was"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"], "the temporary file is removed"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_is_reported_as_such(tmp_path: Path, monkeypatch):
    target = tmp_path / "protected.png"

    def write_to_full_disk(tmp: Path) -> None:
        with open("/dev/full", "wb") as f:  # every write fails with ENOSPC, as on a full disk
            f.write(b"x" * 65536)
            f.flush()

    with pytest.raises(DiskFullError, match="disk is full") as err:
        atomic_write(target, write_to_full_disk)
    assert str(target) in str(err.value) and isinstance(err.value, UserInputError)
    # torch.save says "basic_ios::clear: iostream error" / "failed writing"; the free space decides
    monkeypatch.setattr(utils.shutil, "disk_usage", lambda _: Usage(1 << 30, 1 << 30, 0))
    with pytest.raises(DiskFullError, match="disk is full"):
        atomic_write(target, lambda tmp: torch.save({"w": torch.zeros(10000)}, "/dev/full"))
    assert not list(tmp_path.iterdir())


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path):
    with pytest.raises(ValueError, match="bad value"):
        atomic_write(tmp_path / "x", lambda tmp: (_ for _ in ()).throw(ValueError("bad value")))


Usage = namedtuple("Usage", "total used free")

_HOLD = textwrap.dedent(
    """
    import sys, time
    from monai_umed.utils import OutputLock
    OutputLock(sys.argv[1], "holder").acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path: Path):
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserInputError, match=rf"in use by another monai_umed run \(holder, pid {holder.pid}"):
            OutputLock(folder, "second").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # a hard kill: the lock must not stay stuck
        holder.wait(timeout=30)
    lock = OutputLock(folder, "third").acquire()
    assert lock.held
    lock.release()


def test_lock_beside_keeps_the_folder_clean(tmp_path: Path):
    folder = tmp_path / "protected"
    folder.mkdir()
    with OutputLock(folder, beside=True) as lock:
        assert lock.path == tmp_path / ".protected.monai_umed.lock" and lock.path.is_file()
        assert not any(folder.iterdir()), "nothing is added to the folder that is released"


def test_cli_error_hook_prints_one_line_for_user_errors():
    code = textwrap.dedent(
        """
        from monai_umed.utils import UserInputError, install_cli_error_hook
        install_cli_error_hook()
        import sys
        try:
            raise UserInputError("/data/x.png: file is empty (0 bytes)")
        except UserInputError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "monai_umed: error: /data/x.png: file is empty (0 bytes)"
    bug = subprocess.run(
        [sys.executable, "-c", "from monai_umed.utils import install_cli_error_hook as h; h(); raise KeyError('bug')"],
        capture_output=True, text=True, timeout=60,
    )
    assert bug.returncode == 1 and "Traceback" in bug.stderr, "internal errors keep their traceback"


def test_check_output_dir_is_one_policy_for_every_job(tmp_path: Path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    utils.check_output_dir(data, tmp_path / "out")
    utils.check_output_dir(data, tmp_path / "data_out")  # a sibling whose name starts alike is fine
    for bad, why in ((data, "or inside it"), (data / "sub", "or inside it"), (tmp_path, "contains the input")):
        with pytest.raises(utils.UserInputError, match=why):
            utils.check_output_dir(data, bad)
    link = tmp_path / "link"
    link.symlink_to(data, target_is_directory=True)
    with pytest.raises(utils.UserInputError, match="or inside it"):
        utils.check_output_dir(data, link / "x")  # through a symbolic link too
    with pytest.raises(utils.UserInputError, match="--output_file"):
        utils.check_output_dir(data, data / "split.json", what="--output_file")

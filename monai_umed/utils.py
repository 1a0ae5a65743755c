# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Small helpers every layer uses: the user-input error type, atomic file writes, the output-folder lock,
and the command-line error hook of the bundle jobs.

This module imports nothing else from the package, so that data, networks, handlers and apps can all use it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "UserInputError",
    "DiskFullError",
    "ProtectionCheckFailed",
    "temp_path",
    "is_temp_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_copy",
    "OutputLock",
    "lock_output_dir",
    "install_cli_error_hook",
    "is_within",
    "check_output_dir",
]

logger = logging.getLogger("monai_umed")

_TEMP_MARK = ".partial-"
_counter = itertools.count()


class UserInputError(ValueError):
    """A problem with what the user gave (dataset, option, file, output folder), not a bug.

    The message names the file or option and the problem. Under ``python -m monai.bundle run`` the jobs print
    only this message (no traceback) and exit with status 1 (:func:`install_cli_error_hook`).
    """


class DiskFullError(UserInputError, OSError):
    """Writing a file failed because its disk is full; the message names the file and the free space."""


class ProtectionCheckFailed(UserInputError):
    """The protected dataset failed the release check of the ``protect`` job's self-verification
    (``monai_umed.apps.verify.report_verification`` with ``require_dsc``): an exploiter trained on it scores too
    well on clean held-out images. Like every :class:`UserInputError`, it ends a bundle job with its one-line
    message and exit status 1.
    """


def _suffix(name: str) -> str:
    low = name.lower()
    if low.endswith(".nii.gz"):
        return name[-7:]
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``.

    ``dir/name.ext`` -> ``dir/.name.partial-<pid>-<n>.ext``: hidden, unique per process and call (so that
    concurrent processes never share one), and it keeps the suffix (``.nii.gz`` included) because some writers
    choose the format by it.
    """
    path = Path(path)
    suffix = _suffix(path.name)
    base = path.name[: len(path.name) - len(suffix)]
    return path.with_name(f".{base}{_TEMP_MARK}{os.getpid()}-{next(_counter)}{suffix}")


def is_temp_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file of :func:`temp_path` (e.g. left behind by a killed run)."""
    name = Path(path).name
    return name.startswith(".") and _TEMP_MARK in name


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a full disk as a RuntimeError from its C++ stream ("basic_ios::clear: iostream error",
    # "PytorchStreamWriter failed writing file ..."): look at the disk itself.
    if isinstance(exc, (RuntimeError, OSError)):
        free = _free_bytes(folder)
        return free is not None and free < (1 << 20)
    return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_folder(tmp: Path, path: Path) -> None:
    """Rename the finished folder ``tmp`` to ``path``; an existing ``path`` (an earlier output) is first renamed
    aside and removed after, so that ``path`` is at every moment either the old folder, absent, or the new one."""
    if path.exists():
        old = temp_path(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], fsync: bool = True) -> Path:
    """Write a file so that a reader never sees it half-written: ``write(tmp)`` writes the temporary file of
    :func:`temp_path`, which is then flushed to disk (``fsync``) and renamed to ``path`` (``os.replace``).
    ``write`` may instead create a folder at ``tmp`` (a DICOM series): it is renamed as a whole the same way.

    If ``write`` fails (an exception, Ctrl-C included) the temporary file is removed and ``path`` is left as
    it was. A full disk raises :class:`DiskFullError` naming ``path`` and the free space.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if tmp.is_dir():  # a folder (a DICOM series): its files, then the folder itself
            if fsync:
                for child in [*sorted(tmp.iterdir()), tmp]:
                    _fsync(child)
            _replace_folder(tmp, path)
        else:
            if fsync:
                _fsync(tmp)
            os.replace(tmp, path)
    except BaseException as exc:
        try:
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, Exception) and not isinstance(exc, UserInputError) and _disk_full(exc, path.parent):
            free = _free_bytes(path.parent)
            shown = f"{free} bytes free" if free is not None else "free space unknown"
            raise DiskFullError(
                errno.ENOSPC, f"{path}: cannot write, the disk is full ({shown} in {path.parent}); free some space "
                "and run the same command again (finished files are kept)."
            ) from exc
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """:func:`atomic_write` of ``obj`` as JSON; ``indent=None`` writes compact JSON with the C encoder (several
    times faster than the indented form, which the pure-Python encoder writes)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=True))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """:func:`atomic_write` of a byte-for-byte copy of ``src``."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))



def is_within(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """True when ``child`` is ``parent`` or lies inside it (both resolved, symbolic links followed)."""
    try:
        Path(child).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def check_output_dir(input_dir: str | os.PathLike, output_dir: str | os.PathLike, what: str = "output folder") -> None:
    """The one output-folder policy of every job: an output may not be, be inside, or contain an input folder.

    Raises:
        UserInputError: naming both folders (``what`` names the output in the message, e.g. ``"--output_file"``).
    """
    src = Path(input_dir).resolve()
    dst = Path(output_dir).resolve()
    if is_within(dst, src):
        raise UserInputError(
            f"{what} {dst} is the input dataset {src} or inside it; monai_umed never writes into the "
            "input dataset. Choose an output folder outside it."
        )
    if is_within(src, dst):
        raise UserInputError(f"{what} {dst} contains the input dataset {src}; choose a folder beside it.")

class OutputLock:
    """An exclusive lock on an output folder, held by one running job.

    The lock is ``fcntl.flock`` on ``<folder>/.monai_umed.lock``: the operating system releases it when the
    process ends, however it ends (kill -9 included), so a dead run never leaves the folder locked; the file
    itself stays and records the holder's pid and start time for the message a second run gets.

    Raises:
        UserInputError: another live process holds the lock (the message names the folder and that process).
    """

    NAME = ".monai_umed.lock"

    def __init__(self, folder: str | os.PathLike, job: str = "monai_umed", beside: bool = False) -> None:
        self.folder = Path(folder)
        # beside=True keeps the lock file out of the folder (e.g. a protected dataset that is released as it is)
        self.path = self.folder.parent / f".{self.folder.name}{self.NAME}" if beside else self.folder / self.NAME
        self.job = job
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserInputError(
                    f"output folder {self.folder} is in use by another monai_umed run ({holder}); wait for it to "
                    "finish or choose another --output_dir."
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.job}, pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


_HELD_LOCKS: dict[str, OutputLock] = {}


def lock_output_dir(folder: str | os.PathLike, job: str = "monai_umed", beside: bool = False) -> OutputLock:
    """Take :class:`OutputLock` on ``folder`` for the rest of this process (a bundle job's lifetime).

    Taking it again in the same process is a no-op, so a job may lock its output folder and the writer may
    lock it once more. ``beside`` puts the lock file next to the folder instead of inside it.
    """
    lock = OutputLock(folder, job, beside=beside)
    key = str(lock.path.resolve())
    held = _HELD_LOCKS.get(key)
    if held is not None and held.held:
        return held
    _HELD_LOCKS[key] = lock.acquire()
    return lock


def _user_error_in_chain(exc: BaseException | None) -> UserInputError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserInputError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def install_cli_error_hook() -> None:
    """Make a user-input error end a bundle job with one clear message and exit status 1, without a traceback.

    MONAI's config parser wraps every exception of a ``$`` expression in ``RuntimeError: Failed to evaluate
    ConfigExpression``; this ``sys.excepthook`` looks through the chain of an uncaught exception and, when it
    holds a :class:`UserInputError`, prints ``monai_umed: error: <message>`` only. Other exceptions (bugs) keep
    their full traceback. The bundle configs call this first in their ``initialize`` step.
    """
    previous = sys.excepthook
    if getattr(previous, "_monai_umed", False):
        return

    def hook(exc_type, exc, tb):
        user = _user_error_in_chain(exc)
        if user is None:
            previous(exc_type, exc, tb)
            return
        sys.stderr.write(f"monai_umed: error: {user}\n")
        sys.stderr.flush()

    hook._monai_umed = True  # type: ignore[attr-defined]
    sys.excepthook = hook

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Command-line checks of the bundle jobs: unknown options are refused instead of silently ignored."""

from __future__ import annotations

import ast
import difflib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from monai_umed.utils import UserInputError, install_cli_error_hook

__all__ = ["MONAI_RUN_ARGS", "config_ids", "cli_overrides", "check_cli_options", "start_job"]

#: keyword arguments of ``monai.bundle.run`` itself (not config overrides)
MONAI_RUN_ARGS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)


def config_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Every id of a parsed config, nested ones joined with ``#`` as MONAI's overrides name them."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return
    for key, value in items:
        ident = f"{prefix}{key}"
        yield ident
        yield from config_ids(value, ident + "#")


def cli_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(config files, override ids)`` of a ``python -m monai.bundle run ...`` command line (``argv[1:]``)."""
    files: list[str] = []
    keys: list[str] = []
    tokens = list(argv)
    for i, tok in enumerate(tokens):
        if not tok.startswith("--"):
            continue
        key, _, inline = tok[2:].partition("=")
        if key == "config_file":
            value = inline or (tokens[i + 1] if i + 1 < len(tokens) else "")
            value = value.strip()
            if value.startswith("["):
                try:
                    files += [str(v) for v in ast.literal_eval(value)]
                except (ValueError, SyntaxError):
                    files.append(value)
            else:
                files += [v for v in value.split(",") if v]
        elif key not in MONAI_RUN_ARGS:
            keys.append(key)
    return files, keys


def check_cli_options(argv: Sequence[str] | None = None) -> None:
    """Refuse a command-line option that none of the job's config files defines (e.g. ``--epsilom``, or
    ``apply --epsilon``, which apply cannot honour: it uses the protector's own settings).

    Only acts under ``python -m monai.bundle run ...`` (``argv`` defaults to ``sys.argv``); from Python it does
    nothing.

    Raises:
        UserInputError: naming the unknown option(s), with the closest known option.
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv or not argv[0].replace("\\", "/").endswith("monai/bundle/__main__.py") or "run" not in argv[1:2]:
        return
    files, keys = cli_overrides(argv[2:])
    known: set[str] = set()
    for path in files:
        try:
            with open(path) as f:
                known |= set(config_ids(json.load(f)))
        except (OSError, ValueError):
            return  # MONAI reports a config file it cannot read; nothing to compare against
    unknown = [k for k in keys if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(i for i in known if "#" not in i), n=1)
            hints.append(f"--{k}" + (f" (did you mean --{close[0]}?)" if close else ""))
        names = ", ".join(os.path.basename(f) for f in files)
        raise UserInputError(
            f"unknown option {', '.join(hints)}: {names} defines no such setting, so it would be ignored. "
            "The options are listed in bundles/umed/docs/README.md."
        )


def start_job(job: str) -> None:
    """What every bundle job does first: user-input errors as one message without a traceback
    (:func:`~monai_umed.utils.install_cli_error_hook`) and unknown options refused (:func:`check_cli_options`).

    Jobs lock their output folder (:func:`~monai_umed.utils.lock_output_dir`) only after the checks that may
    refuse it, so that a refused run leaves nothing behind."""
    install_cli_error_hook()
    check_cli_options()

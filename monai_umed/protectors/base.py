# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The ``Protector`` interface that UMed and every baseline implement, their registry and their file format."""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from monai_umed.utils import UserInputError, atomic_write

__all__ = ["Protector", "PROTECTORS", "PROTECTOR_FORMAT", "register_protector", "get_protector", "load_protector"]

logger = logging.getLogger("monai_umed")

#: version tag stored in protector files (``/1`` files, UMed only, are still read)
PROTECTOR_FORMAT = "monai_umed.protector/2"
_FORMAT_V1 = "monai_umed.protector/1"

#: name -> Protector class; filled by :func:`register_protector`
PROTECTORS: dict[str, type[Protector]] = {}


def register_protector(cls: type[Protector]) -> type[Protector]:
    """Class decorator: make ``cls`` available as ``get_protector(cls.name)`` and loadable from files."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute `name`.")
    PROTECTORS[cls.name] = cls
    return cls


def _value(value: Any) -> Any:
    return value


def _plain(value: Any) -> Any:
    """Plain Python data (what ``torch.load(weights_only=True)`` accepts): numpy scalars, paths and tuples too."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class Protector(nn.Module, ABC):
    """A dataset protector: gives each image's perturbation on the image's own grid.

    Contract (what the writer relies on, for every protector):

    * :meth:`native_delta` returns ``(delta, allowed)``: ``delta`` ``[C, *spatial]`` on the [0, 1] scale with
      ``|delta| <= epsilon`` and ``0 <= image + delta <= 1``, zero outside ``allowed`` (``[*spatial]`` bool, the
      pixels the protector may change). The writer re-checks both on the values it writes.
    * :meth:`config` returns plain keyword arguments such that ``type(p)(**p.config())`` rebuilds the same
      architecture; the weights and buffers are the ``state_dict``. :meth:`save` / :func:`load_protector` store
      and restore both (loading uses ``torch.load(weights_only=True)``: a protector file cannot run code).
    * :meth:`fingerprint` hashes everything that decides the written values (for the manifest and resume).

    Protectors that train define ``fit``; the others are ready when built.

    Attributes:
        name: the registry name (``get_protector(name)``).
        epsilon: the l-inf bound on the [0, 1] scale.
        in_channels: the channels of the images it perturbs (the writer brings images to this count).
    """

    name: ClassVar[str] = ""
    epsilon: float
    in_channels: int

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this protector (plain data)."""

    @abstractmethod
    def native_delta(self, image: torch.Tensor, label: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The perturbation of one image on its own grid.

        Args:
            image: ``[C, *spatial]`` on the [0, 1] scale, ``C == in_channels``.
            label: ``[1, *spatial]`` label map (foreground ``> 0``).
            key: the image's name (sample-wise protectors look their perturbation up by it; others may seed by it).

        Returns:
            ``(delta, allowed)`` as described in the class docstring.
        """

    def native_delta_batch(
        self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], keys: Sequence[str]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`native_delta` of several images (which may differ in size): :meth:`native_delta_parts`, with
        each image's part run at once. The results equal those of :meth:`native_delta` one by one."""
        return [finish() for finish in self.native_delta_parts(images, labels, keys)]

    def native_delta_parts(
        self, images: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], keys: Sequence[str]
    ) -> list[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        """:meth:`native_delta_batch` in two stages: the work shared by the batch (e.g. the networks on one
        batch) runs now, in the calling thread; each image's own rest is returned as a callable (no arguments)
        that returns its ``(delta, allowed)`` and may run later, in another thread, in any order (the writer runs
        them in its worker threads beside the next batch). Protectors whose networks run faster on a batch
        override this; the default runs :meth:`native_delta` per image now."""
        done = [self.native_delta(x, y, k) for x, y, k in zip(images, labels, keys)]
        return [functools.partial(_value, d) for d in done]

    @property
    def device(self) -> torch.device:
        """Where the protector's tensors live (CPU for one without any)."""
        for t in itertools.chain(self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")

    def fingerprint(self) -> str:
        """SHA-256 over the name, the configuration and every tensor of the ``state_dict``."""
        h = hashlib.sha256()
        h.update(repr((self.name, sorted(_plain(self.config()).items()))).encode())
        for key, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike, settings: dict[str, Any] | None = None) -> Path:
        """Save the protector atomically: name, :meth:`config`, ``state_dict`` and ``settings`` (a free record of
        how it was made, e.g. the training schedule; plain data). Read it back with :func:`load_protector`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": PROTECTOR_FORMAT,
            "name": self.name,
            "config": _plain(self.config()),
            "settings": _plain(dict(settings or {})),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def get_protector(name: str, **kwargs: Any) -> Protector:
    """Build the protector registered as ``name`` (see :data:`PROTECTORS`) with ``kwargs``.

    Raises:
        UserInputError: unknown name (the message lists the known ones).
    """
    key = str(name).lower()
    if key not in PROTECTORS:
        raise UserInputError(f"--protector {name!r}: unknown; choose one of {', '.join(sorted(PROTECTORS))}.")
    return PROTECTORS[key](**kwargs)


def load_protector(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Protector, dict]:
    """Load a protector saved by :meth:`Protector.save`: ``(protector in eval mode on device, settings)``.

    Files of the first format (UMed only, ``monai_umed.protector/1``) are read too.

    Raises:
        UserInputError: missing, unreadable, damaged or foreign file (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"protector file not found: {path}")
    try:
        # weights_only: a protector file holds tensors and plain settings only, so loading one that someone else
        # shared can never run code (a pickled object of any other type is refused)
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserInputError(
            f"{path}: refused to load: it holds objects other than tensors and plain settings, which could run "
            f"code ({str(e).splitlines()[0]}). Only use protector files written by monai_umed."
        ) from None
    except Exception as e:  # truncated or corrupt zip archive, not a torch file at all, ...
        raise UserInputError(f"{path}: not a readable protector file ({type(e).__name__}: {e}).") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (PROTECTOR_FORMAT, _FORMAT_V1):
        raise UserInputError(f"{path} is not a monai_umed protector file (expected format {PROTECTOR_FORMAT}).")
    try:
        if fmt == _FORMAT_V1:  # UMed: the perturbator's arguments and the priors in one settings dict
            settings = payload["settings"]
            name = "umed"
            config = dict(settings["perturbator"], image_size=settings["image_size"])
            config.update({k: settings[k] for k in PROTECTORS["umed"].PRIOR_KEYS if k in settings})
        else:
            name, config, settings = payload["name"], payload["config"], payload["settings"]
        if name not in PROTECTORS:
            raise UserInputError(f"{path}: protector {name!r} is unknown to this monai_umed ({', '.join(sorted(PROTECTORS))}).")
        protector = PROTECTORS[name](**config)
        state = payload["state_dict"]
        if fmt == _FORMAT_V1:  # the state dict of the UMedPerturbator itself
            state = {f"perturbator.{k}": v for k, v in state.items()}
        protector.load_state_dict(state)
    except UserInputError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserInputError(f"{path}: damaged protector file ({type(e).__name__}: {e}).") from None
    return protector.to(device).eval(), settings

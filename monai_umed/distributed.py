# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Several processes, one job: the helpers behind ``bundles/umed/configs/multi_gpu.json`` (``torchrun``).

Every helper is a no-op in a single process (no ``torch.distributed`` process group), so the jobs call them
unconditionally and behave exactly as before without ``torchrun``. With ``torchrun --nproc_per_node=N`` and
``multi_gpu.json``: one process per GPU (``gloo`` on the CPU, for tests), the training batches are split across the
processes (:func:`per_rank_batch`: the *global* batch size stays the one configured, so the optimisation -- and the
protection -- does not depend on the number of GPUs; the learning rate is therefore left unchanged), the networks
are wrapped in ``DistributedDataParallel`` (:func:`ddp`), logging, checkpoints, saving and verification happen on
rank 0 only (:func:`is_main_process`), and the writer shards the images across the ranks (:func:`shard`).
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "all_gather_objects",
    "all_reduce_mean",
    "barrier",
    "broadcast_module",
    "ddp",
    "distributed_sampler",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "per_rank_batch",
    "rank_and_world",
    "shard",
    "shutdown_distributed",
    "unwrap",
]


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` in a single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that logs, saves and verifies."""
    return rank_and_world()[0] == 0


def init_distributed(device: Any = None) -> torch.device:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...) and return
    this process's device: ``cuda:LOCAL_RANK`` with the ``nccl`` backend when CUDA is available and ``device`` is
    not a CPU device, else the CPU with ``gloo``. Without ``torchrun`` (no ``WORLD_SIZE``) nothing is initialised
    and ``device`` (default: CUDA when available) is returned.

    Raises:
        RuntimeError: CUDA is used and ``LOCAL_RANK`` names a GPU this machine does not have.
    """
    wanted = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() and (wanted is None or wanted.type == "cuda")
    if "WORLD_SIZE" not in os.environ:
        return wanted or torch.device("cuda" if use_cuda else "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible.")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        atexit.register(_release_at_exit)
    # ignite (MONAI's engines and handlers) builds its own view of the process group on first use with a
    # collective call; make that happen here, on every rank, not later inside a rank-0-only handler (a deadlock)
    import ignite.distributed as idist

    idist.sync()
    return torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")


def shutdown_distributed() -> None:
    """Leave the process group (after a last barrier) if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _release_at_exit() -> None:
    """Registered by :func:`init_distributed` to run when the job's script ends, before the interpreter is taken
    down: leave the process group if the job did not (it failed before its ``finalize``), then free the objects that
    only reference cycles still hold (a finished bundle workflow: its engines, the ``DistributedDataParallel``
    wrappers and, through them, the process group and its communication threads). Left to the interpreter's own
    teardown, a gloo thread can release the last tensors of a collective after Python is gone, and the process then
    aborts ("terminate called without an active exception") after a finished run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def per_rank_batch(batch_size: int) -> int:
    """The batch each process loads so that the global batch is ``batch_size`` whatever the number of processes.

    Raises:
        ValueError: ``batch_size`` is not a multiple of the number of processes.
    """
    world = rank_and_world()[1]
    if int(batch_size) % world:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the number of processes ({world}): the global batch is "
            "kept the same for any number of GPUs."
        )
    return int(batch_size) // world


def distributed_sampler(dataset: Any, shuffle: bool = True, seed: int = 0, even_divisible: bool = True) -> Any:
    """A MONAI ``DistributedSampler`` when several processes run, else ``None`` (the loader's own sampling).
    ``even_divisible=True`` (training) pads so that every rank runs the same number of steps; ``False``
    (evaluation) gives each sample to exactly one rank, and MONAI's metrics gather the scores of all ranks."""
    if not is_distributed():
        return None
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=int(seed), even_divisible=even_divisible)


def ddp(module: torch.nn.Module, device: Any = None, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when several processes run (``device_ids`` set for CUDA),
    else ``module`` itself. The wrapper shares the module's parameters, so optimisers built on the module work."""
    if not is_distributed():
        return module
    device = torch.device(device) if device is not None else next(module.parameters()).device
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(module: Any) -> Any:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; other objects unchanged."""
    return module.module if isinstance(module, (DistributedDataParallel, torch.nn.DataParallel)) else module


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (e.g. after a re-initialisation)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*unwrap(module).parameters(), *unwrap(module).buffers()]:
            dist.broadcast(tensor.data, src=src)


def all_reduce_mean(values: Sequence[float], device: Any = "cpu") -> list[float]:
    """The mean of each value over the processes (the values themselves in a single process)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def shard(items: Sequence[Any]) -> list[Any]:
    """This process's share of ``items``: every ``world``-th item starting at ``rank`` (all of them alone)."""
    rank, world = rank_and_world()
    return list(items)[rank::world]


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every process, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

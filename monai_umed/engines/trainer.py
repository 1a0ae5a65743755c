# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The alternating UMed trainer (Algorithm 1 of Lin et al., IJCAI 2024) as a MONAI/ignite Workflow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.losses import DiceCELoss
from monai.utils import IgniteInfo, min_version, optional_import
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_umed.networks import UMedPerturbator

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "GeneratorState",
    "UMedKeys",
    "UMedPhase",
    "UMedTrainer",
    "umed_phase",
    "umed_total_epochs",
    "umed_prepare_batch",
]


class UMedKeys:
    """Dictionary keys of a UMed batch (as written by the priors transforms) and of the iteration output."""

    IMAGE = "image"
    LABEL = "label"
    CONTOUR_BAND = "contour_band"
    ROI_INTERIOR = "roi_interior"
    TEXTURE_MAP = "texture_map"
    PROTECTED = "protected"
    DELTA_C = "delta_c"
    DELTA_T = "delta_t"
    LOSS = "loss"
    PHASE = "phase"


class UMedPhase:
    """What one epoch of Algorithm 1 trains."""

    GENERATORS = "generators"
    SURROGATE = "surrogate"


def umed_phase(epoch: int, generator_epochs: int = 4) -> str:
    """The phase of 1-based ``epoch`` in Algorithm 1.

    Algorithm 1 runs epochs ``i = 1 .. e`` and trains the generators G_c, G_t when ``i % 5 != 0`` and the
    surrogate F_s when ``i % 5 == 0``: with ``k = generator_epochs`` (paper: 4) the cycle is ``k + 1`` epochs,
    epochs ``1..k`` train the generators, epoch ``k + 1`` trains the surrogate, and so on. The surrogate is
    therefore first trained after the generators' first ``k`` epochs, exactly as in the algorithm.
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got {epoch}.")
    if generator_epochs < 0:
        raise ValueError(f"generator_epochs must be >= 0, got {generator_epochs}.")
    return UMedPhase.SURROGATE if epoch % (generator_epochs + 1) == 0 else UMedPhase.GENERATORS


def umed_total_epochs(surrogate_epochs: int, generator_epochs: int = 4) -> int:
    """Total epochs ``e`` of Algorithm 1 for ``surrogate_epochs`` surrogate epochs (paper: 100 * 5 = 500)."""
    if surrogate_epochs < 1:
        raise ValueError(f"surrogate_epochs must be >= 1, got {surrogate_epochs}.")
    return surrogate_epochs * (generator_epochs + 1)


def umed_prepare_batch(
    batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, ...]:
    """Move ``(image, label, contour_band, texture_map, roi_interior)`` of a collated batch to ``device``."""
    keys = (UMedKeys.IMAGE, UMedKeys.LABEL, UMedKeys.CONTOUR_BAND, UMedKeys.TEXTURE_MAP, UMedKeys.ROI_INTERIOR)
    missing = [k for k in keys if k not in batchdata]
    if missing:
        raise KeyError(f"UMed batch is missing {missing}; apply ContourBandd and LBPTextureMapd in the transforms.")
    return tuple(
        torch.as_tensor(batchdata[k]).to(device=device, non_blocking=non_blocking, **kwargs) for k in keys
    )


class GeneratorState:
    """A ``torch.Generator`` as a checkpointable object (``state_dict`` / ``load_state_dict``, as ignite's
    ``Checkpoint`` and MONAI's ``CheckpointSaver`` / ``CheckpointLoader`` expect).

    A ``DataLoader`` draws its shuffle order and its workers' base seed from its ``generator`` when each epoch's
    iterator is created; saving the generator's state with the epoch's checkpoint lets a resumed run continue
    with the draws the uninterrupted run would have made.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng_state": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        # a checkpoint loaded with map_location="cuda" moves the state to the GPU; set_state needs a CPU tensor
        self.generator.set_state(state_dict["rng_state"].cpu())


class UMedTrainer(Trainer):
    """Alternating training of the UMed perturbators and a surrogate segmentation network (Algorithm 1, Eq. 6-7).

    Each iteration perturbs a batch with the :class:`~monai_umed.networks.UMedPerturbator`,
    ``x_p = Clip_[0,1](x + G_c(x) + G_t(x))`` (Eq. 6), and computes ``L_seg(F_s(x_p), y)`` (CE + Dice, equally
    weighted: MONAI ``DiceCELoss``). In a *generators* epoch both generators take an Adam step that **minimises**
    ``L_seg`` (the inner ``min`` of Eq. 7) with the surrogate frozen; in a *surrogate* epoch the surrogate takes
    a step that minimises ``L_seg`` on the (detached) protected batch (the outer ``min`` of Eq. 7). Which epoch
    does what follows :func:`umed_phase` (Algorithm 1's ``i % 5``).

    Like MONAI's ``GanTrainer`` it is an ignite ``Workflow``: MONAI handlers attach to it (``StatsHandler`` with
    ``output_transform=from_engine(["loss"], first=True)``, ``TensorBoardStatsHandler``, ``CheckpointSaver`` /
    ``CheckpointLoader`` with :meth:`checkpoint_dict`, ignite's ``ProgressBar``). ``engine.state.phase`` holds
    the current phase and each iteration's output is a dict with ``loss`` (float), ``phase`` and the batch's
    ``image``, ``label``, ``protected``, ``delta_c``, ``delta_t`` tensors.

    Args:
        device: where to train.
        train_data_loader: yields dicts with ``image`` ([B, C, H, W] on the [0, 1] scale), ``label`` ([B, 1, H, W]
            class indices), ``contour_band``, ``roi_interior`` (from ``ContourBandd``) and ``texture_map``
            (from ``LBPTextureMapd``).
        perturbator: the two generators G_c and G_t.
        surrogate: the surrogate segmentation network F_s (paper: a U-Net; any network returning logits
            ``[B, num_classes, H, W]`` works).
        g_optimizer: optimizer over both generators' parameters (paper: Adam, lr 1e-4).
        s_optimizer: optimizer over the surrogate's parameters (paper: Adam, lr 1e-4).
        surrogate_epochs: number of surrogate epochs (paper: 100).
        generator_epochs: generator epochs per surrogate epoch, ``k`` (paper: 4).
        loss_function: ``L_seg``; defaults to ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        epoch_length: iterations per epoch (default: ``len(train_data_loader)``).
        amp: automatic mixed precision (only on CUDA; ignored with a warning-free fallback on the CPU).
        train_handlers: handlers to attach (each has ``attach(engine)``).
        non_blocking, prepare_batch, amp_kwargs: as in MONAI's trainers.
    """

    def __init__(
        self,
        device: str | torch.device,
        train_data_loader: DataLoader,
        perturbator: UMedPerturbator,
        surrogate: torch.nn.Module,
        g_optimizer: Optimizer,
        s_optimizer: Optimizer,
        surrogate_epochs: int = 100,
        generator_epochs: int = 4,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = umed_prepare_batch,
        amp_kwargs: dict | None = None,
    ) -> None:
        if not isinstance(train_data_loader, DataLoader):
            raise ValueError("train_data_loader must be a PyTorch DataLoader.")
        device = torch.device(device)
        amp = bool(amp) and device.type == "cuda"
        super().__init__(
            device=device,
            max_epochs=umed_total_epochs(surrogate_epochs, generator_epochs),
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=None,
            amp=amp,
            amp_kwargs=amp_kwargs,
            decollate=False,
        )
        self.perturbator = perturbator
        self.surrogate = surrogate
        self.g_optimizer = g_optimizer
        self.s_optimizer = s_optimizer
        self.surrogate_epochs = surrogate_epochs
        self.generator_epochs = generator_epochs
        self.loss_function = loss_function or DiceCELoss(to_onehot_y=True, softmax=True)
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.s_scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.state.phase = umed_phase(1, generator_epochs)
        self.add_event_handler(Events.EPOCH_STARTED, self._set_phase)
        # before any checkpoint handler, which are attached later
        self.add_event_handler(Events.EPOCH_COMPLETED, self._finish_loader_draws)
        if train_handlers:
            for handler in train_handlers:
                handler.attach(self)

    def _set_phase(self, engine: UMedTrainer) -> None:
        engine.state.phase = umed_phase(engine.state.epoch, engine.generator_epochs)

    @staticmethod
    def _finish_loader_draws(engine: UMedTrainer) -> None:
        """Let the finished epoch's data iterator end now rather than when the next epoch begins.

        A shuffling ``RandomSampler`` makes one last draw from the loader's generator when it is asked for an
        index past the end; ignite asks at the start of the next epoch, after this epoch's checkpoint was saved.
        Ending the iterator here moves that draw before the checkpoint (the sequence of draws, and so the data
        order of an uninterrupted run, is unchanged), so that the saved generator state is the one the next
        epoch starts from. Only done when the epoch covered the whole loader (the iterator is exhausted);
        ``_dataloader_iter`` is ignite's own attribute and the step is skipped if it is absent.
        """
        iterator = getattr(engine, "_dataloader_iter", None)
        try:
            whole = engine.state.epoch_length == len(engine.data_loader)
        except TypeError:  # an iterable loader without a length
            whole = False
        if iterator is not None and whole:
            for _ in iterator:
                raise RuntimeError("the data iterator yielded more batches than one epoch holds.")

    def checkpoint_dict(self) -> dict[str, Any]:
        """Everything needed to resume: both generators, the surrogate, both optimizers, AMP scalers, the epoch,
        and the state of the data loader's random generator (when it has one), so that a resumed run draws the
        same data order as the uninterrupted run and, on the CPU, ends with the same weights."""
        objects = {
            "contour_generator": self.perturbator.contour,
            "texture_generator": self.perturbator.texture,
            "surrogate": self.surrogate,
            "g_optimizer": self.g_optimizer,
            "s_optimizer": self.s_optimizer,
            "g_scaler": self.g_scaler,
            "s_scaler": self.s_scaler,
            "trainer": self,
        }
        generator = getattr(self.data_loader, "generator", None)
        if isinstance(generator, torch.Generator):
            objects["loader_generator"] = GeneratorState(generator)
        return objects

    def _loss(self, engine: UMedTrainer, protected: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
            pred = engine.surrogate(protected)
        return engine.loss_function(pred.float(), label)

    def _iteration(self, engine: UMedTrainer, batchdata: dict[str, torch.Tensor]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label, band, texture, interior = engine.prepare_batch(
            batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs
        )
        phase = umed_phase(engine.state.epoch, engine.generator_epochs)
        engine.state.phase = phase
        if phase == UMedPhase.GENERATORS:
            # inner min of Eq. 7: update G_c and G_t, surrogate frozen
            engine.perturbator.train()
            engine.surrogate.eval()
            engine.surrogate.requires_grad_(False)
            engine.g_optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
                protected, delta_c, delta_t = engine.perturbator(image, band, texture, interior)
            loss = self._loss(engine, protected.float(), label)
            engine.g_scaler.scale(loss).backward()
            engine.g_scaler.step(engine.g_optimizer)
            engine.g_scaler.update()
            engine.surrogate.requires_grad_(True)
        else:
            # outer min of Eq. 7: update F_s on the current protected batch
            engine.perturbator.eval()
            engine.surrogate.train()
            with torch.no_grad(), torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
                protected, delta_c, delta_t = engine.perturbator(image, band, texture, interior)
            engine.s_optimizer.zero_grad(set_to_none=True)
            loss = self._loss(engine, protected.float().detach(), label)
            engine.s_scaler.scale(loss).backward()
            engine.s_scaler.step(engine.s_optimizer)
            engine.s_scaler.update()
        return {
            UMedKeys.LOSS: loss.item(),
            UMedKeys.PHASE: phase,
            UMedKeys.IMAGE: image,
            UMedKeys.LABEL: label,
            UMedKeys.PROTECTED: protected.detach(),
            UMedKeys.DELTA_C: delta_c.detach(),
            UMedKeys.DELTA_T: delta_t.detach(),
        }

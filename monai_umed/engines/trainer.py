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

from monai_umed.distributed import all_reduce_mean, broadcast_module, unwrap
from monai_umed.networks import UMedPerturbator

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "GeneratorState",
    "countermeasure_view",
    "UMedKeys",
    "UMedPhase",
    "UMedTrainer",
    "reset_parameters",
    "umed_phase",
    "umed_step_schedule",
    "umed_total_epochs",
    "umed_prepare_batch",
    "view_generators",
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


def umed_step_schedule(steps: int, phase_steps: int, generator_epochs: int = 1) -> int:
    """Number of phases (ignite epochs of ``phase_steps`` iterations) for a budget of ``steps`` optimisation steps.

    ``steps`` counts every optimisation step, generator and surrogate steps together. A cycle of Algorithm 1 is
    ``generator_epochs`` generator phases followed by one surrogate phase, ``(generator_epochs + 1) * phase_steps``
    steps; the budget is rounded up to whole cycles so that training always ends with the surrogate phase, as
    Algorithm 1 does, and at least one cycle runs.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if phase_steps < 1:
        raise ValueError(f"phase_steps must be >= 1, got {phase_steps}.")
    if generator_epochs < 0:
        raise ValueError(f"generator_epochs must be >= 0, got {generator_epochs}.")
    cycle = (generator_epochs + 1) * phase_steps
    return max(1, -(-int(steps) // cycle)) * (generator_epochs + 1)


def reset_parameters(module: torch.nn.Module) -> int:
    """Re-initialise every sub-module that has ``reset_parameters`` (convolutions, affine norms, PReLU, ...)
    with PyTorch's default initialisation, drawn from the global RNG. Returns how many modules were reset."""
    n = 0
    for m in module.modules():
        if callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()
            n += 1
    return n


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


def countermeasure_view(
    transform: Callable, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` as a countermeasure ``transform`` leaves them: a transform with ``moves_labels = True``
    (e.g. :class:`monai_umed.defenses.EOTDefense`, whose ``augment`` moves the image) is called as
    ``transform(images, labels)`` and returns both; any other callable maps the images only."""
    if getattr(transform, "moves_labels", False):
        return transform(images, labels)
    return transform(images), labels


def view_generators(*views: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` of each view (``generator_transform`` / ``surrogate_transform``) and of the views it
    applies first (its ``countermeasure``, e.g. :class:`monai_umed.defenses.RescaleView` over an
    :class:`~monai_umed.defenses.EOTDefense`), each once, in the order met."""
    found: list[torch.Generator] = []
    for view in views:
        seen: set[int] = set()
        while view is not None and id(view) not in seen:
            seen.add(id(view))
            generator = getattr(view, "generator", None)
            if isinstance(generator, torch.Generator) and not any(generator is g for g in found):
                found.append(generator)
            view = getattr(view, "countermeasure", None)
    return found


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
        perturbator: the two generators G_c and G_t (or a ``DistributedDataParallel`` wrapper of them, see
            :mod:`monai_umed.distributed`: each phase calls the wrapper only for the networks it updates).
        surrogate: the surrogate segmentation network F_s (paper: a U-Net; any network returning logits
            ``[B, num_classes, H, W]`` works), possibly DDP-wrapped.
        g_optimizer: optimizer over both generators' parameters (paper: Adam, lr 1e-4).
        s_optimizer: optimizer over the surrogate's parameters (paper: Adam, lr 1e-4).
        surrogate_epochs: number of surrogate epochs (paper: 100); ignored when ``steps`` is given.
        generator_epochs: generator phases per surrogate phase, ``k`` (paper: 4 epochs).
        steps: the schedule in optimisation steps (generator and surrogate steps counted together) instead of
            epochs: every phase is ``phase_steps`` iterations (the data loader is cycled across phases), and
            :func:`umed_step_schedule` gives the number of phases. ``None``: Algorithm 1's epochs.
        phase_steps: iterations per phase with ``steps`` (default: one pass over the loader, at most 32).
        surrogate_reset: re-initialise the surrogate (weights and optimizer state) before every
            ``surrogate_reset``-th surrogate phase after the first, so that the generators keep meeting young
            surrogates, i.e. the early-training view of a fresh exploiter; 0 never re-initialises (Algorithm 1).
        stop_ratio: convergence rule (``None``: off, train the whole schedule). In surrogate phases the surrogate's
            ``L_seg`` is also computed on the clean batch (no gradient); when a surrogate phase ends with
            ``mean L_seg(protected) < stop_ratio * mean L_seg(clean)``, training stops early. Why training stopped
            (this rule or the end of the schedule) is logged and kept in ``engine.state.stop_reason``.
        loss_function: ``L_seg``; defaults to ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        epoch_length: iterations per epoch (default: ``len(train_data_loader)``).
        amp: automatic mixed precision (only on CUDA; ignored with a warning-free fallback on the CPU).
        train_handlers: handlers to attach (each has ``attach(engine)``).
        non_blocking, prepare_batch, amp_kwargs: as in MONAI's trainers.
        generator_transform: optional differentiable transform between the protected batch and the surrogate in the
            generator phases (e.g. :class:`monai_umed.defenses.EOTDefense`): the generators then minimise the
            surrogate's loss on what the exploiter's countermeasures leave of the protected image. The perturbation
            and its bounds are unchanged. A transform that moves the image declares ``moves_labels = True`` and is
            called with the labels too (:func:`countermeasure_view`).
        surrogate_transform: optional transform of the protected batch before the surrogate in the surrogate phases
            (no gradient), e.g. the same :class:`monai_umed.defenses.EOTDefense`: the surrogate then learns from the
            exploiter's view of the protected data (what a defended exploiter trains on). ``None``: the surrogate
            phases see the protected batch as it is.
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
        steps: int | None = None,
        phase_steps: int | None = None,
        surrogate_reset: int = 0,
        stop_ratio: float | None = None,
        epoch_length: int | None = None,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = umed_prepare_batch,
        amp_kwargs: dict | None = None,
        generator_transform: Callable | None = None,
        surrogate_transform: Callable | None = None,
    ) -> None:
        if not isinstance(train_data_loader, DataLoader):
            raise ValueError("train_data_loader must be a PyTorch DataLoader.")
        device = torch.device(device)
        amp = bool(amp) and device.type == "cuda"
        if steps is not None:
            if epoch_length is not None:
                raise ValueError("give either steps (with phase_steps) or epoch_length, not both.")
            if phase_steps is None:
                phase_steps = min(len(train_data_loader), 32)
            epoch_length = int(phase_steps)
            max_epochs = umed_step_schedule(int(steps), epoch_length, generator_epochs)
            surrogate_epochs = max_epochs // (generator_epochs + 1)
        else:
            max_epochs = umed_total_epochs(surrogate_epochs, generator_epochs)
        if int(surrogate_reset) < 0:
            raise ValueError(f"surrogate_reset must be >= 0, got {surrogate_reset}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
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
        self.steps = None if steps is None else int(steps)
        self.surrogate_reset = int(surrogate_reset)
        if stop_ratio is not None and not float(stop_ratio) > 0:
            raise ValueError(f"stop_ratio must be > 0 or None, got {stop_ratio}.")
        self.stop_ratio = None if stop_ratio is None else float(stop_ratio)
        self.state.stop_reason = None
        self._phase_losses: dict[str, list[float]] = {"protected": [], "clean": []}
        self.add_event_handler(Events.EPOCH_COMPLETED, self._check_convergence)
        self.add_event_handler(Events.COMPLETED, self._log_stop_reason)
        self.loss_function = loss_function or DiceCELoss(to_onehot_y=True, softmax=True)
        self.generator_transform = generator_transform
        self.surrogate_transform = surrogate_transform
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
        if engine.state.phase == UMedPhase.SURROGATE and engine.surrogate_reset > 0:
            cycle = engine.state.epoch // (engine.generator_epochs + 1)  # 1-based index of this surrogate phase
            if cycle > 1 and (cycle - 1) % engine.surrogate_reset == 0:
                reset_parameters(unwrap(engine.surrogate))
                broadcast_module(engine.surrogate)  # several processes: all start from rank 0's draw
                engine.s_optimizer.state.clear()
                engine.logger.info("epoch %d: surrogate re-initialised (surrogate_reset=%d)", engine.state.epoch,
                                   engine.surrogate_reset)

    def _check_convergence(self, engine: UMedTrainer) -> None:
        """End of a phase: apply the ``stop_ratio`` rule after a surrogate phase."""
        losses, self._phase_losses = self._phase_losses, {"protected": [], "clean": []}
        if engine.stop_ratio is None or engine.state.phase != UMedPhase.SURROGATE or not losses["clean"]:
            return
        protected = sum(losses["protected"]) / len(losses["protected"])
        clean = sum(losses["clean"]) / len(losses["clean"])
        # several processes: every rank decides on the same means, so all stop together
        protected, clean = all_reduce_mean([protected, clean], device=engine.state.device)
        engine.state.loss_ratio = protected / max(clean, 1e-12)
        engine.logger.info(
            "epoch %d: surrogate L_seg protected %.4f / clean %.4f = %.3f (stop_ratio %.3f)",
            engine.state.epoch, protected, clean, engine.state.loss_ratio, engine.stop_ratio,
        )
        if engine.state.loss_ratio < engine.stop_ratio and engine.state.epoch < engine.state.max_epochs:
            engine.state.stop_reason = (
                f"converged at epoch {engine.state.epoch} (step {engine.state.iteration}): the surrogate's loss on "
                f"protected images is {engine.state.loss_ratio:.3f} x its loss on clean images (< stop_ratio "
                f"{engine.stop_ratio:g})"
            )
            engine.terminate()

    def _log_stop_reason(self, engine: UMedTrainer) -> None:
        if engine.state.stop_reason is None:
            engine.state.stop_reason = (
                f"schedule completed: {engine.state.iteration} steps in {engine.state.epoch} phases"
            )
        engine.logger.info("UMed training stopped: %s", engine.state.stop_reason)

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
        and the state of the data loader's random generator (when it has one) and of the views'
        (:func:`view_generators`), so that a resumed run draws the same data order and views as the uninterrupted
        run and, on the CPU, ends with the same weights."""
        perturbator = unwrap(self.perturbator)
        objects = {
            "contour_generator": perturbator.contour,
            "texture_generator": perturbator.texture,
            "surrogate": unwrap(self.surrogate),
            "g_optimizer": self.g_optimizer,
            "s_optimizer": self.s_optimizer,
            "g_scaler": self.g_scaler,
            "s_scaler": self.s_scaler,
            "trainer": self,
        }
        generator = getattr(self.data_loader, "generator", None)
        if isinstance(generator, torch.Generator):
            objects["loader_generator"] = GeneratorState(generator)
        for i, view_generator in enumerate(view_generators(self.generator_transform, self.surrogate_transform)):
            objects[f"view_generator_{i}"] = GeneratorState(view_generator)
        return objects

    @staticmethod
    def _loss(engine: UMedTrainer, protected: torch.Tensor, label: torch.Tensor, surrogate: Any = None) -> torch.Tensor:
        with torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
            pred = (engine.surrogate if surrogate is None else surrogate)(protected)
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
            seen = protected.float()
            if engine.generator_transform is not None:  # the exploiter's countermeasures, differentiably (EOT)
                seen, seen_label = countermeasure_view(engine.generator_transform, seen, label)
            else:
                seen_label = label
            # the frozen surrogate outside its DDP wrapper: it is not updated in this phase
            loss = self._loss(engine, seen, seen_label, unwrap(engine.surrogate))
            engine.g_scaler.scale(loss).backward()
            engine.g_scaler.step(engine.g_optimizer)
            engine.g_scaler.update()
            engine.surrogate.requires_grad_(True)
        else:
            # outer min of Eq. 7: update F_s on the current protected batch
            engine.perturbator.eval()
            engine.surrogate.train()
            with torch.no_grad(), torch.autocast("cuda", enabled=engine.amp, **engine.amp_kwargs):
                protected, delta_c, delta_t = unwrap(engine.perturbator)(image, band, texture, interior)
                seen, seen_label = protected.float(), label
                if engine.surrogate_transform is not None:  # the exploiter's view of the protected batch
                    seen, seen_label = countermeasure_view(engine.surrogate_transform, seen, label)
            engine.s_optimizer.zero_grad(set_to_none=True)
            loss = self._loss(engine, seen.detach(), seen_label)
            if engine.stop_ratio is not None:
                with torch.no_grad():
                    self._phase_losses["clean"].append(self._loss(engine, image, label, unwrap(engine.surrogate)).item())
                self._phase_losses["protected"].append(loss.item())
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

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""l-inf PGD attack for the adversarial-training defense of Lin et al., IJCAI 2024 (Sec. 4.4, Table 3).

Adversarial training (Madry et al., ICLR 2018) trains the exploiter on worst-case perturbed versions of the
(protected) training images, ``min_theta E[max_{||d||_inf <= eps} L_seg(F(x + d), y)]``; Table 3 uses an l-inf
bound of 4/255. The inner maximisation is approximated by :func:`pgd_linf`; the training loop calls it on each
batch and takes the optimiser step on its output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.utils import convert_to_tensor

from monai_umed.distributed import unwrap

__all__ = ["pgd_linf", "AdversarialPrepareBatch", "AdversarialView"]


def pgd_linf(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epsilon: float = 4 / 255,
    steps: int = 7,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    minimize: bool = False,
    start: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn(model(x), labels)`` in the l-inf ball (Madry et al., ICLR 2018).

    With ``minimize=True`` it descends instead (error-minimizing noise, Huang et al. 2021, as used by
    :func:`monai_umed.protectors.optimize_error_minimizing`).

    ``x_0 = clip_[0,1](images + U(-eps, eps))`` (random start), then ``steps`` times
    ``x_{t+1} = clip_[0,1](Proj_{||x - images||_inf <= eps}(x_t + step_size * sign(grad_x loss)))``.

    Defaults: ``epsilon = 4/255`` (the adversarial-training bound of Table 3 of Lin et al., IJCAI 2024);
    ``steps = 7`` and ``step_size = epsilon / 4`` follow Madry et al.'s CIFAR-10 recipe (7 steps of 2/255 for
    eps 8/255), so the iterates can travel 1.75 eps, enough to reach the ball's boundary from any start.

    The model's mode is **kept** (not switched to eval): called from a training loop in train mode, batch-norm
    uses batch statistics and updates its running statistics during the attack forwards, and dropout is active;
    call ``model.eval()`` first if that is not wanted. Gradients are taken w.r.t. the images only
    (``torch.autograd.grad``), so the parameters' ``.grad`` are untouched; it works inside ``torch.no_grad()``.

    Args:
        model: segmentation network mapping ``[B, C, *spatial]`` to logits.
        images: clean (or protected) images ``[B, C, *spatial]`` on the [0, 1] scale.
        labels: targets passed unchanged to ``loss_fn``.
        loss_fn: ``loss_fn(logits, labels)``, maximised (a non-scalar result is averaged).
        epsilon: l-inf bound on the [0, 1] scale.
        steps: number of PGD iterations (0 returns the random start, or the images without it).
        step_size: ascent step per iteration; ``None`` -> ``epsilon / 4``.
        random_start: start from a uniform random point of the eps ball (Madry et al.).
        generator: random generator for the start (on the images' device); ``None`` uses the global RNG, so the
            result is deterministic after ``torch.manual_seed``.
        minimize: descend on the loss instead of ascending.
        start: the first iterate (e.g. the previous round's perturbed images); it replaces the random start.
        mask: optional {0, 1} map broadcastable to ``images``: the ball is ``|x - images| <= epsilon * mask``, so
            pixels where it is 0 never change (e.g. EM restricted to the contour band or the ROI).

    Returns:
        detached adversarial images, a plain ``torch.Tensor`` with the shape, dtype and device of ``images``,
        within ``epsilon`` of ``images`` (l-inf) and in [0, 1].
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    step_size = epsilon / 4 if step_size is None else float(step_size)
    x = convert_to_tensor(images, track_meta=False).detach()
    y = convert_to_tensor(labels, track_meta=False).detach()
    radius = epsilon if mask is None else epsilon * convert_to_tensor(mask, track_meta=False).to(x)
    lower, upper = x - radius, x + radius
    if start is not None:
        if start.shape != x.shape:
            raise ValueError(f"start has shape {tuple(start.shape)}, images {tuple(x.shape)}.")
        x_adv = torch.minimum(torch.maximum(start.detach().to(x), lower), upper).clamp(0.0, 1.0)
    elif random_start and epsilon > 0:
        x_adv = x + torch.empty_like(x).uniform_(-epsilon, epsilon, generator=generator)
        x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(0.0, 1.0)
    else:
        x_adv = x.clone()
    with torch.enable_grad():
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            loss = loss_fn(model(x_adv), y)
            if loss.ndim > 0:
                loss = loss.mean()
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + (-step_size if minimize else step_size) * grad.sign()
            x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(0.0, 1.0)
    return x_adv.detach()


# --------------------------------------------------------------------------------- adversarial training
class AdversarialPrepareBatch(PrepareBatch):
    """``prepare_batch`` for MONAI's ``SupervisedTrainer`` that returns l-inf PGD adversarial images instead of
    the batch's images: the "adversarial training" defense of Table 3 of Lin et al., IJCAI 2024 (Madry et al.,
    ICLR 2018), ``min_theta E[max_{||d||_inf <= eps} L_seg(F(x + d), y)]``.

    Each batch is moved to the device (``default_prepare_batch``), then
    :func:`pgd_linf` maximises ``loss_function(network(x'), y)`` over
    ``||x' - x||_inf <= epsilon``, ``x'`` in [0, 1]; the trainer takes its optimiser step on ``(x', y)``.

    Args:
        network: the model being trained (the trainer's ``network``).
        loss_function: the training loss (``DiceCELoss``); the attack maximises it.
        epsilon: l-inf bound on the [0, 1] scale; 4/255 as in Table 3.
        steps: PGD iterations; 7 (Madry et al.'s CIFAR-10 recipe).
        step_size: ascent step; ``None`` -> ``epsilon / 4`` (1/255 for eps 4/255).
        random_start: start from a uniform random point of the eps ball.
        seed: seed of the random start (a ``torch.Generator`` on the images' device); ``None`` uses the global RNG.
        attack_in_eval_mode: run the attack with the network in eval mode (batch-norm running statistics,
            no dropout) and switch back afterwards. Default ``False``: the attack runs in the trainer's train
            mode, as in Madry et al.'s reference code.

    The attack runs in float32, outside the trainer's autocast, and costs ``steps`` extra forward/backward
    passes per batch.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        loss_function: Any,
        epsilon: float = 4 / 255,
        steps: int = 7,
        step_size: float | None = None,
        random_start: bool = True,
        seed: int | None = None,
        attack_in_eval_mode: bool = False,
    ) -> None:
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}.")
        self.network = network
        self.loss_function = loss_function
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.step_size = self.epsilon / 4 if step_size is None else float(step_size)
        self.random_start = random_start
        self.seed = seed
        self.attack_in_eval_mode = attack_in_eval_mode
        self._generator: torch.Generator | None = None

    def _get_generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(int(self.seed))
        return self._generator

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(adversarial images, labels)`` on ``device``."""
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        was_training = self.network.training
        if self.attack_in_eval_mode:
            self.network.eval()
        try:
            adv = pgd_linf(
                self.network,
                images,
                labels,
                self.loss_function,
                epsilon=self.epsilon,
                steps=self.steps,
                step_size=self.step_size,
                random_start=self.random_start,
                generator=self._get_generator(images.device),
            )
        finally:
            self.network.train(was_training)
        return adv, labels


# --------------------------------------------------------------------------------- robust error-minimising noise
class AdversarialView:
    """The inner maximisation of robust error-minimising noise (REM, Fu et al., ICLR 2022) as a view of the
    protected batch for :class:`~monai_umed.engines.UMedTrainer`'s ``generator_transform`` and
    ``surrogate_transform``.

    REM replaces the min-min of error-minimising noise by ``min_delta min_theta max_{||rho|| <= rho_a}
    L(F_theta(x + delta + rho), y)``: the perturbation must keep the loss low even after the worst-case change of
    an adversarially training exploiter. Called on the protected batch ``x + delta`` (with gradient), it returns
    ``x + delta + rho*``, where ``rho*`` is :func:`pgd_linf`'s ascent on the surrogate's loss within
    ``||rho||_inf <= epsilon`` (a constant: the gradient reaches ``delta`` unchanged, as in REM's alternating
    optimisation). In the generator phases the generators then minimise the loss under the attack; in the surrogate
    phases the surrogate trains on the attacked batch, i.e. adversarially, as REM's source model does.

    Args:
        network: the surrogate (a ``DistributedDataParallel`` wrapper is unwrapped); its mode is kept.
        loss_function: ``L_seg(logits, labels)``, maximised by the attack.
        epsilon: the attack's l-inf radius ``rho_a`` on the [0, 1] scale (REM: at most the protection's epsilon).
        steps: PGD iterations (REM uses 10; each costs one forward and backward pass of the surrogate).
        step_size: ascent step; ``None`` -> ``epsilon / 2`` (``steps`` of it reach the ball's boundary from any
            random start when ``steps >= 2``).
        countermeasure: optional view applied first (e.g. :class:`~monai_umed.defenses.EOTDefense`), called like
            :func:`~monai_umed.engines.countermeasure_view`.
        generator: random generator of the attack's random start.

    Called as ``view(images, labels)`` (``moves_labels = True``: the labels come back, moved by ``countermeasure``
    if it moves images).
    """

    moves_labels = True

    def __init__(
        self,
        network: nn.Module,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        epsilon: float = 4 / 255,
        steps: int = 3,
        step_size: float | None = None,
        countermeasure: Callable | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a whole number >= 1, got {steps}.")
        self.network = network
        self.loss_function = loss_function
        self.epsilon = float(epsilon)
        self.steps = int(steps)
        self.step_size = self.epsilon / 2 if step_size is None else float(step_size)
        self.countermeasure = countermeasure
        self.generator = generator

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.countermeasure is not None:
            from monai_umed.engines import countermeasure_view

            images, labels = countermeasure_view(self.countermeasure, images, labels)
        gen = self.generator
        if gen is not None and gen.device != images.device:
            gen = None
        attacked = pgd_linf(unwrap(self.network), images.detach(), labels, self.loss_function, epsilon=self.epsilon,
                            steps=self.steps, step_size=self.step_size, generator=gen)
        return images + (attacked - images.detach()), labels

    def __repr__(self) -> str:
        return (f"AdversarialView(epsilon={self.epsilon:.5f}, steps={self.steps}, step_size={self.step_size:.5f}, "
                f"countermeasure={self.countermeasure!r})")

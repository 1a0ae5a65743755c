"""UMedTrainer: Algorithm 1's schedule, who gets updated when, error-minimising direction, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler
from monai.networks.nets import UNet
from monai.utils import set_determinism

from monai_umed.apps import umed_transforms
from monai_umed.protectors import build_perturbator
from monai_umed.data import load_datalist, make_synthetic_dataset
from monai_umed.engines import (
    UMedPhase,
    UMedTrainer,
    reset_parameters,
    umed_phase,
    umed_step_schedule,
    umed_total_epochs,
)


@pytest.mark.parametrize("k", [0, 1, 4])
def test_phase_schedule_follows_algorithm_1(k: int):
    phases = [umed_phase(i, k) for i in range(1, 3 * (k + 1) + 1)]
    expected = ([UMedPhase.GENERATORS] * k + [UMedPhase.SURROGATE]) * 3
    assert phases == expected
    assert umed_total_epochs(100, 4) == 500
    with pytest.raises(ValueError):
        umed_phase(0, k)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> list[dict]:
    root = make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_images=8, size=(32, 32), seed=1)
    return list(load_datalist(dataset_dir=str(root)))


def _make_trainer(
    data, surrogate_epochs=2, generator_epochs=1, lr_g=1e-3, lr_s=1e-3, seed=0, handlers=None, epsilon=4 / 255,
    **schedule,
):
    set_determinism(seed)
    ds = Dataset(data, transform=umed_transforms(32, 1, band_width=1))
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=0, generator=torch.Generator().manual_seed(seed))
    pert = build_perturbator(epsilon=epsilon, contour_channels=(4, 8), contour_strides=(2,), texture_channels=(4, 8), texture_strides=(2,))
    sur = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    trainer = UMedTrainer(
        device="cpu",
        train_data_loader=loader,
        perturbator=pert,
        surrogate=sur,
        g_optimizer=torch.optim.Adam(pert.parameters(), lr=lr_g),
        s_optimizer=torch.optim.Adam(sur.parameters(), lr=lr_s),
        surrogate_epochs=surrogate_epochs,
        generator_epochs=generator_epochs,
        train_handlers=handlers,
        **schedule,
    )
    return trainer, pert, sur


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def test_each_phase_updates_only_its_networks(tiny_data):
    trainer, pert, sur = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1)
    snaps = {}

    def start(engine):
        snaps["g"], snaps["s"] = _flat(pert), _flat(sur)

    changes = []

    def end(engine):
        g_changed = not torch.equal(snaps["g"], _flat(pert))
        s_changed = not torch.equal(snaps["s"], _flat(sur))
        changes.append((engine.state.phase, g_changed, s_changed))

    trainer.add_event_handler(Events.EPOCH_STARTED, start)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, end)
    trainer.run()
    assert changes == [
        (UMedPhase.GENERATORS, True, False),
        (UMedPhase.SURROGATE, False, True),
        (UMedPhase.GENERATORS, True, False),
        (UMedPhase.SURROGATE, False, True),
    ]
    out = trainer.state.output
    assert set(out) >= {"loss", "phase", "protected", "delta_c", "delta_t"}
    assert out["delta_c"].abs().max() <= 4 / 255 and out["delta_t"].abs().max() <= 4 / 255


def test_generators_minimise_the_surrogate_loss(tiny_data):
    """The inner min of Eq. 7: with the surrogate fixed, generator epochs lower L_seg on the protected images.

    A large budget (epsilon 0.25) makes the direction visible against a random tiny surrogate in a few steps.
    """
    trainer, _, _ = _make_trainer(tiny_data, surrogate_epochs=1, generator_epochs=8, lr_g=1e-2, epsilon=0.25)
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(lambda e, _: e.state.phase == UMedPhase.GENERATORS),
        lambda e: losses.append(e.state.output["loss"]),
    )
    trainer.run()
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 0.01, f"generator loss did not decrease: {first:.4f} -> {last:.4f}"


def test_deterministic_on_cpu(tiny_data):
    t1, p1, s1 = _make_trainer(tiny_data, seed=3)
    t1.run()
    t2, p2, s2 = _make_trainer(tiny_data, seed=3)
    t2.run()
    assert torch.equal(_flat(p1), _flat(p2)) and torch.equal(_flat(s1), _flat(s2))


def _rescale_views() -> dict:
    """A fresh seeded ``RescaleView`` as both views (its draws must survive a resume)."""
    from monai_umed.defenses import RescaleView

    view = RescaleView(0.5, multiple=4, keep=0.3, generator=torch.Generator().manual_seed(7))
    return {"generator_transform": view, "surrogate_transform": view}


@pytest.mark.parametrize("views", [dict, _rescale_views])
def test_checkpoint_resume_matches_uninterrupted_run(tiny_data, tmp_path: Path, views):
    """A run resumed from its epoch-2 checkpoint ends with the uninterrupted run's weights: the checkpoint holds the
    data loader's random state and that of a random view (``RescaleView``'s draws of sizes)."""
    full, p_full, s_full = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5, **views())
    full.run()

    # interrupted run: stop after the first cycle (epoch 2), checkpoint everything
    part, _, _ = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5, **views())
    saver = CheckpointSaver(str(tmp_path), part.checkpoint_dict(), save_interval=1, n_saved=None, epoch_level=True)
    saver.attach(part)
    part.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    part.run()
    ckpt = tmp_path / "checkpoint_epoch=2.pt"
    assert ckpt.is_file()

    resumed, p_res, s_res = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5, **views())
    CheckpointLoader(str(ckpt), resumed.checkpoint_dict()).attach(resumed)
    epochs = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    # the loader's generator state is part of the checkpoint: the resumed run draws the same data order
    resumed.run()
    assert epochs == [3, 4], "resumes after the checkpointed epoch"
    assert torch.allclose(_flat(p_res), _flat(p_full), atol=1e-6)
    assert torch.allclose(_flat(s_res), _flat(s_full), atol=1e-6)


def test_monai_handlers_attach(tiny_data, caplog):
    import logging

    trainer, _, _ = _make_trainer(
        tiny_data,
        surrogate_epochs=1,
        generator_epochs=1,
        handlers=[StatsHandler(name=None, iteration_log=False, state_attributes=["phase"])],
    )
    with caplog.at_level(logging.INFO):
        trainer.run()
    text = caplog.text
    assert "phase: generators" in text and "phase: surrogate" in text


# the schedule in steps ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "steps, phase_steps, k, phases",
    [(100, 10, 1, 10), (101, 10, 1, 12), (1, 10, 1, 2), (60, 5, 4, 15), (20, 5, 0, 4)],
)
def test_step_schedule_rounds_up_to_whole_cycles(steps, phase_steps, k, phases):
    assert umed_step_schedule(steps, phase_steps, k) == phases
    assert phases % (k + 1) == 0 and phases * phase_steps >= steps
    for bad in [(0, 10, 1), (10, 0, 1), (10, 5, -1)]:
        with pytest.raises(ValueError):
            umed_step_schedule(*bad)


@pytest.mark.parametrize("n_images, phase_steps", [(8, 3), (8, 5)])
def test_steps_count_iterations_not_epochs(tiny_data, n_images, phase_steps):
    """A phase is phase_steps iterations whatever the dataset size (the loader cycles across phases)."""
    trainer, _, _ = _make_trainer(tiny_data[:n_images], steps=4 * phase_steps, phase_steps=phase_steps)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.phase))
    trainer.run()
    assert trainer.state.iteration == 4 * phase_steps and trainer.state.epoch == 4
    assert seen == ([UMedPhase.GENERATORS] * phase_steps + [UMedPhase.SURROGATE] * phase_steps) * 2
    assert trainer.state.stop_reason.startswith("schedule completed: %d steps" % (4 * phase_steps))


def test_reset_parameters_draws_new_weights():
    net = UNet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    before = _flat(net)
    assert reset_parameters(net) > 0
    after = _flat(net)
    assert after.shape == before.shape and not torch.equal(after, before)


def test_surrogate_reset_reinitialises_before_every_rth_surrogate_phase(tiny_data):
    trainer, _, sur = _make_trainer(tiny_data, steps=4 * 6, phase_steps=4, surrogate_reset=2)
    snapshots = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: snapshots.__setitem__(e.state.epoch, _flat(sur)))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: snapshots.__setitem__(-e.state.epoch, _flat(sur)))
    resets = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: resets.append(len(e.s_optimizer.state)))
    trainer.run()
    # phases 2, 4, 6 train the surrogate (cycles 1, 2, 3); reset before cycle 3 only (every 2nd after the first)
    assert torch.equal(snapshots[4], snapshots[-3])  # no reset before cycle 2
    assert not torch.equal(snapshots[6], snapshots[-5])  # weights changed between the phases: the reset
    assert resets[5] == 0 and resets[3] > 0  # Adam state cleared with the reset, kept otherwise
    with pytest.raises(ValueError):
        _make_trainer(tiny_data, steps=8, phase_steps=4, surrogate_reset=-1)


def test_stop_ratio_stops_early_and_says_why(tiny_data):
    trainer, _, _ = _make_trainer(tiny_data, steps=4 * 10, phase_steps=4, stop_ratio=100.0)
    trainer.run()
    assert trainer.state.epoch == 2 and trainer.state.iteration == 8  # first surrogate phase: ratio < 100
    assert trainer.state.stop_reason.startswith("converged at epoch 2") and trainer.state.loss_ratio < 100
    never, _, _ = _make_trainer(tiny_data, steps=4 * 4, phase_steps=4, stop_ratio=1e-6)
    never.run()
    assert never.state.epoch == 4 and never.state.stop_reason.startswith("schedule completed")
    with pytest.raises(ValueError):
        _make_trainer(tiny_data, steps=8, phase_steps=4, stop_ratio=0.0)


def _shape_recorder():
    """``(shapes, transform)``: an identity transform that records the shape of every batch it sees."""
    seen: list[tuple[int, ...]] = []

    def record(x):
        seen.append(tuple(x.shape))
        return x

    return seen, record


def test_generator_transform_sits_between_the_protected_batch_and_the_surrogate(tiny_data):
    """``generator_transform`` (the robust, EOT setting) sees every generator-phase batch of protected images, never
    a surrogate-phase batch, and the generators' gradients flow through it: a transform that erases the image
    leaves the generators without a gradient, so they do not move."""
    seen, record = _shape_recorder()
    trainer, pert, _ = _make_trainer(tiny_data, steps=8, phase_steps=2, generator_epochs=1)
    trainer.generator_transform = record
    trainer.run()
    assert len(seen) == 4 and all(s[1:] == (1, 32, 32) for s in seen)  # 2 generator phases x 2 steps

    trainer, pert, _ = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    trainer.generator_transform = lambda x: x * 0.0
    before = _flat(pert)
    trainer.run()
    assert torch.equal(_flat(pert), before)


def test_surrogate_transform_gives_the_surrogate_the_exploiters_view(tiny_data):
    """``surrogate_transform`` sees every surrogate-phase batch (never a generator-phase one) and what it returns is
    what the surrogate trains on: a transform that erases the image leaves the surrogate a constant input, so its
    training differs from the untransformed run while the generators' phases are untouched."""
    seen, record = _shape_recorder()
    trainer, _, _ = _make_trainer(tiny_data, steps=8, phase_steps=2, generator_epochs=1)
    trainer.surrogate_transform = record
    trainer.run()
    assert len(seen) == 4 and all(s[1:] == (1, 32, 32) for s in seen)  # 2 surrogate phases x 2 steps

    torch.manual_seed(0)
    plain, _, surrogate_plain = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    plain.run()
    torch.manual_seed(0)
    erased, _, surrogate_erased = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    erased.surrogate_transform = lambda x: x * 0.0
    erased.run()
    assert not torch.equal(_flat(surrogate_plain), _flat(surrogate_erased))


class _LabelView:
    """A countermeasure that moves the labels (``moves_labels``): records the labels it gets and returns the images
    unchanged with ``labels_out(labels)``."""

    moves_labels = True

    def __init__(self, labels_out):
        self.labels_out, self.seen = labels_out, []

    def __call__(self, x, labels):
        self.seen.append(labels.clone())
        return x, self.labels_out(labels)


def test_a_countermeasure_that_moves_the_labels_gets_and_returns_them(tiny_data):
    """A transform with ``moves_labels = True`` (``EOTDefense`` with ``augment``) is called with the batch labels in
    both phases, and the labels it returns are what the loss uses: returning the labels as they are trains exactly
    like no transform; returning them inverted trains the generators differently."""
    torch.manual_seed(0)
    plain, pert_plain, _ = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    plain.run()
    torch.manual_seed(0)
    same, pert_same, _ = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    view = _LabelView(lambda y: y)
    same.generator_transform = same.surrogate_transform = view
    same.run()
    assert len(view.seen) == 4 and all(set(torch.unique(y).tolist()) <= {0.0, 1.0} for y in view.seen)
    assert torch.equal(_flat(pert_plain), _flat(pert_same))
    torch.manual_seed(0)
    inverted, pert_inv, _ = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    inverted.generator_transform = _LabelView(lambda y: 1 - y)
    inverted.run()
    assert not torch.equal(_flat(pert_plain), _flat(pert_inv))


def test_rem_view_attacks_the_trainers_own_surrogate(tiny_data):
    """REM (``AdversarialView`` on the trainer's surrogate in both phases): every step of both phases is attacked
    on the surrogate being trained, and the attack changes what both networks learn (against the same run without
    it); the attack leaves the surrogate's gradients to the phase's own loss."""
    from monai.losses import DiceCELoss

    from monai_umed.defenses import AdversarialView

    torch.manual_seed(0)
    plain, pert_plain, sur_plain = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    plain.run()
    torch.manual_seed(0)
    rem, pert_rem, sur_rem = _make_trainer(tiny_data, steps=4, phase_steps=2, generator_epochs=1)
    calls = []

    class Counting(AdversarialView):
        def __call__(self, images, labels):
            calls.append((self.network.training, images.requires_grad))
            return super().__call__(images, labels)

    rem.generator_transform = rem.surrogate_transform = Counting(
        sur_rem, DiceCELoss(to_onehot_y=True, softmax=True), epsilon=8 / 255, steps=2
    )
    rem.run()
    # generator steps: eval-mode surrogate, protected batch with gradient; surrogate steps: train mode, no gradient
    assert calls == [(False, True)] * 2 + [(True, False)] * 2
    assert not torch.equal(_flat(pert_plain), _flat(pert_rem)) and not torch.equal(_flat(sur_plain), _flat(sur_rem))


def test_rescale_view_trains_both_networks_at_smaller_sizes(tiny_data):
    """``RescaleView`` as both views (``--rescale``): the surrogate meets the protected batch at the sizes the view
    draws in both phases, with labels on the same grid, and the generators' gradients reach them through the
    resize (they move in a run where every batch is resized)."""
    from monai_umed.defenses import RescaleView

    sizes = []

    class Recording(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            sizes.append(tuple(x.shape[2:]))
            return self.net(x)

    trainer, pert, sur = _make_trainer(tiny_data, steps=8, phase_steps=2, generator_epochs=1)
    trainer.surrogate = Recording(sur)
    trainer.generator_transform = trainer.surrogate_transform = RescaleView(
        0.5, multiple=4, keep=0.0, generator=torch.Generator().manual_seed(0))
    before = _flat(pert)
    trainer.run()
    assert len(sizes) == 8 and all(s[0] == s[1] and s[0] in (16, 20, 24, 28) for s in sizes)
    assert len(set(sizes)) > 1
    assert not torch.equal(_flat(pert), before)

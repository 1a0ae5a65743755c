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

from monai_umed.apps import build_perturbator, umed_transforms
from monai_umed.data import load_datalist, make_synthetic_dataset
from monai_umed.engines import UMedPhase, UMedTrainer, umed_phase, umed_total_epochs


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
    data, surrogate_epochs=2, generator_epochs=1, lr_g=1e-3, lr_s=1e-3, seed=0, handlers=None, epsilon=4 / 255
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


def test_checkpoint_resume_matches_uninterrupted_run(tiny_data, tmp_path: Path):
    full, p_full, s_full = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5)
    full.run()

    # interrupted run: stop after the first cycle (epoch 2), checkpoint everything
    part, _, _ = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5)
    saver = CheckpointSaver(str(tmp_path), part.checkpoint_dict(), save_interval=1, n_saved=None, epoch_level=True)
    saver.attach(part)
    part.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    part.run()
    ckpt = tmp_path / "checkpoint_epoch=2.pt"
    assert ckpt.is_file()

    resumed, p_res, s_res = _make_trainer(tiny_data, surrogate_epochs=2, generator_epochs=1, seed=5)
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

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Tests for monai_umed.defenses.adversarial."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from monai_umed.defenses.adversarial import pgd_linf

EPS = 4 / 255


def _task(n: int = 8, size: int = 16, seed: int = 0):
    """Bright square on a dark noisy background; label = square."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.1 * torch.rand(n, 1, size, size, generator=g)
    y = torch.zeros(n, 1, size, size)
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        x[i, :, r : r + 6, c : c + 6] += 0.3
        y[i, :, r : r + 6, c : c + 6] = 1
    return x.clamp(0, 1), y


def _trained_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    x, y = _task()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model, x, y, loss_fn


@pytest.fixture(scope="module")
def trained():
    return _trained_model()


def test_within_ball_and_range(trained):
    model, x, y, loss_fn = trained
    x = x.clone()
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.005, 0.998])  # values at the [0, 1] edges
    adv = pgd_linf(model, x, y, loss_fn)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > 0.5 * EPS


def test_increases_loss_vs_clean_and_random_noise(trained):
    model, x, y, loss_fn = trained
    model.eval()
    with torch.no_grad():
        clean = loss_fn(model(x), y).item()
        g = torch.Generator().manual_seed(1)
        noise = EPS * torch.sign(torch.rand(x.shape, generator=g) - 0.5)
        random = loss_fn(model((x + noise).clamp(0, 1)), y).item()
        adv = pgd_linf(model, x, y, loss_fn)  # also works under no_grad
        attacked = loss_fn(model(adv), y).item()
    assert attacked > clean and attacked > random
    assert attacked - clean > 2 * abs(random - clean)


def test_deterministic_for_seed_and_generator(trained):
    model, x, y, loss_fn = trained
    torch.manual_seed(3)
    a = pgd_linf(model, x, y, loss_fn, steps=2)
    torch.manual_seed(3)
    b = pgd_linf(model, x, y, loss_fn, steps=2)
    assert torch.equal(a, b)
    c = pgd_linf(model, x, y, loss_fn, steps=2, generator=torch.Generator().manual_seed(5))
    d = pgd_linf(model, x, y, loss_fn, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_keeps_mode_and_param_grads(trained):
    model, x, y, loss_fn = trained
    model.train()
    for p in model.parameters():
        p.grad = None
    pgd_linf(model, x, y, loss_fn, steps=1)
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    pgd_linf(model, x, y, loss_fn, steps=1)
    assert not model.training


def test_edge_cases(trained):
    model, x, y, loss_fn = trained
    assert torch.equal(pgd_linf(model, x, y, loss_fn, epsilon=0.0), x)
    assert torch.equal(pgd_linf(model, x, y, loss_fn, steps=0, random_start=False), x)
    with pytest.raises(ValueError, match="epsilon"):
        pgd_linf(model, x, y, loss_fn, epsilon=-1.0)


def test_minimize_from_a_start_decreases_loss(trained):
    """``minimize=True`` descends (EM's error-minimizing step) and ``start`` is the first iterate, projected."""
    model, x, y, loss_fn = trained
    model.eval()
    with torch.no_grad():
        clean = loss_fn(model(x), y).item()
        down = pgd_linf(model, x, y, loss_fn, minimize=True, random_start=False)
        up = pgd_linf(model, x, y, loss_fn, random_start=False)
        assert loss_fn(model(down), y).item() < clean < loss_fn(model(up), y).item()
        far = x + 10 * EPS  # outside the ball: projected back
        s0 = pgd_linf(model, x, y, loss_fn, steps=0, start=far)
        assert torch.allclose(s0, (x + EPS).clamp(0, 1))
        again = pgd_linf(model, x, y, loss_fn, steps=2, minimize=True, start=down)
        assert loss_fn(model(again), y).item() <= loss_fn(model(down), y).item() + 1e-6
    with pytest.raises(ValueError, match="start has shape"):
        pgd_linf(model, x, y, loss_fn, start=x[:1])


def test_pgd_mask_keeps_pixels_outside_fixed():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.rand(2, 1, 8, 8)
    y = torch.randint(0, 2, (2, 1, 8, 8)).float()
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1
    loss = lambda out, lab: torch.nn.functional.cross_entropy(out, lab[:, 0].long())  # noqa: E731
    adv = pgd_linf(net, x, y, loss, epsilon=0.1, steps=3, mask=mask)
    assert torch.equal(adv[mask == 0], x[mask == 0]), "the random start and the steps stay inside the mask"
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and (adv - x)[mask == 1].abs().max() > 0


def test_adversarial_view_is_the_worst_case_and_passes_the_gradient():
    """REM's inner step: the view lies within epsilon of its input, raises the surrogate's loss above the input's
    (and above a random point of the ball), and passes the gradient to the input unchanged (the attack is a
    constant)."""
    from monai_umed.defenses import AdversarialView

    model, x, y, loss_fn = _trained_model()
    model.zero_grad(set_to_none=True)
    view = AdversarialView(model, loss_fn, epsilon=EPS, steps=3, generator=torch.Generator().manual_seed(0))
    inp = x.clone().requires_grad_(True)
    seen, labels = view(inp, y)
    assert labels is y
    assert float((seen.detach() - x).abs().max()) <= EPS + 1e-6 and float(seen.detach().min()) >= 0 and float(seen.detach().max()) <= 1
    with torch.no_grad():
        noise = (x + EPS * torch.sign(torch.randn_like(x))).clamp(0, 1)
        assert float(loss_fn(model(seen), y)) > max(float(loss_fn(model(x), y)), float(loss_fn(model(noise), y)))
    seen.sum().backward()
    assert torch.equal(inp.grad, torch.ones_like(x))
    assert all(p.grad is None for p in model.parameters())  # the attack leaves the surrogate's gradients alone


def test_adversarial_view_after_a_countermeasure_and_bad_arguments():
    """A countermeasure runs first (labels moved with it when it moves images); bad settings are refused."""
    from monai_umed.defenses import AdversarialView

    model, x, y, loss_fn = _trained_model()

    class Flip:
        moves_labels = True

        def __call__(self, images, labels):
            return images.flip(-1), labels.flip(-1)

    seen, labels = AdversarialView(model, loss_fn, epsilon=EPS, countermeasure=Flip())(x, y)
    assert torch.equal(labels, y.flip(-1)) and float((seen - x.flip(-1)).abs().max()) <= EPS + 1e-6
    seen, labels = AdversarialView(model, loss_fn, epsilon=EPS, countermeasure=lambda im: 1 - im)(x, y)
    assert labels is y and float((seen - (1 - x)).abs().max()) <= EPS + 1e-6
    for kwargs in ({"epsilon": 0.0}, {"steps": 0}, {"steps": 1.5}):
        with pytest.raises(ValueError):
            AdversarialView(model, loss_fn, **{"epsilon": EPS, **kwargs})

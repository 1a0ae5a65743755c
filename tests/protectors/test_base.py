"""The Protector interface: every registered protector keeps the contract, saves, loads and fingerprints."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_umed.protectors import (
    PROTECTORS,
    ARProtector,
    EMProtector,
    LSPProtector,
    Protector,
    SEPProtector,
    TAPProtector,
    UMedProtector,
    get_protector,
    load_protector,
)
from monai_umed.utils import UserInputError

EPS = 4 / 255
KEYS = ["a", "b", "c"]


def _disc(h: int, w: int, r: float) -> torch.Tensor:
    yy, xx = np.mgrid[:h, :w]
    return torch.as_tensor(((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < r**2)[None].astype(np.float32))


def _make(name: str, channels: int) -> Protector:
    torch.manual_seed(0)
    if name == "umed":
        p = UMedProtector(in_channels=channels, image_size=16, contour_channels=(4, 8), contour_strides=(2,),
                          texture_channels=(4, 8), texture_strides=(2,), band_width=1)
        with torch.no_grad():
            for param in p.parameters():
                param.mul_(3.0)
        return p.eval()
    if name == "lsp":
        return LSPProtector(channels, patch_size=4, seed=3)
    if name == "ar":
        return ARProtector(channels, seed=3)
    p = {"em": EMProtector, "tap": TAPProtector, "sep": SEPProtector}[name](KEYS, channels, (16, 16))
    p.deltas.uniform_(-EPS, EPS)
    return p


def _images(channels: int):
    g = torch.Generator().manual_seed(1)
    shapes = [(20, 24), (32, 32), (17, 29)]
    images = [torch.rand(channels, *s, generator=g) for s in shapes]
    images[0][:, :4] = 0.0  # saturated regions: image + delta must stay in [0, 1]
    images[0][:, -4:] = 1.0
    labels = [_disc(*s, r=min(s) / 3) for s in shapes]
    return images, labels


def test_registry_names_every_protector():
    assert set(PROTECTORS) == {"umed", "lsp", "em", "tap", "sep", "ar"}
    assert isinstance(get_protector("LSP", in_channels=1), LSPProtector)
    with pytest.raises(UserInputError, match="unknown; choose one of ar, em, lsp, sep, tap, umed"):
        get_protector("nope")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["umed", "lsp", "em", "tap", "sep", "ar"])
def test_contract_bound_range_locality_and_batch(name, channels):
    p = _make(name, channels)
    images, labels = _images(channels)
    batch = p.native_delta_batch(images, labels, KEYS)
    for (x, y, k), (delta, allowed) in zip(zip(images, labels, KEYS), batch):
        assert delta.shape == x.shape and allowed.shape == x.shape[1:] and allowed.dtype == torch.bool
        assert float(delta.abs().max()) <= p.epsilon + 1e-7
        assert float((x + delta).min()) >= -1e-7 and float((x + delta).max()) <= 1 + 1e-7
        assert not delta[:, ~allowed].any(), "nothing changes outside the allowed region"
        assert delta.abs().max() > 0
        one, one_allowed = p.native_delta(x, y, k)
        assert torch.allclose(one, delta, atol=1e-6) and torch.equal(one_allowed, allowed), "batch == one by one"
    if name == "umed":
        for y, (_, allowed) in zip(labels, batch):
            assert not allowed[(y[0] == 0) & ~torch.nn.functional.max_pool2d(y[None], 7, 1, 3)[0, 0].bool()].any(), \
                "UMed changes only the contour band and the ROI"


@pytest.mark.parametrize("name", ["umed", "lsp", "ar"])
def test_parts_run_later_in_other_threads_give_the_batch_result(name):
    """native_delta_parts: the per-image rest may run after the batch stage, in other threads, in any order."""
    from concurrent.futures import ThreadPoolExecutor

    p = _make(name, 3)
    images, labels = _images(3)
    labels = [MetaTensor(y) for y in labels]  # as the writer's mask reader gives them
    expected = p.native_delta_batch(images, labels, KEYS)
    parts = p.native_delta_parts(images, labels, KEYS)
    assert len(parts) == len(images) and all(callable(f) for f in parts)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda f: f(), parts[::-1]))[::-1]
    for (a, a_allowed), (b, b_allowed) in zip(expected, got):
        assert torch.equal(a, b) and torch.equal(a_allowed, b_allowed)
        if name == "umed":  # plain tensors inside: MetaTensor bookkeeping on its many small ops is slow
            assert type(b) is torch.Tensor


def test_device_is_where_the_weights_are():
    assert _make("umed", 1).device == torch.device("cpu")
    assert ARProtector(1, seed=3).device == torch.device("cpu")  # a protector with buffers only


@pytest.mark.parametrize("name", ["umed", "lsp", "em", "tap", "sep", "ar"])
def test_save_load_roundtrip_and_fingerprint(name, tmp_path):
    p = _make(name, 3)
    path = p.save(tmp_path / f"{name}.pt", {"trained_steps": np.int64(5), "note": tmp_path})
    q, settings = load_protector(path)
    assert type(q) is type(p) and q.config() == p.config() and q.fingerprint() == p.fingerprint()
    assert settings == {"trained_steps": 5, "note": str(tmp_path)}
    images, labels = _images(3)
    for (a, _), (b, _) in zip(p.native_delta_batch(images, labels, KEYS), q.native_delta_batch(images, labels, KEYS)):
        assert torch.equal(a, b)
    # any change of weights or configuration changes the fingerprint
    with torch.no_grad():
        next(iter(q.state_dict(keep_vars=True).values())).add_(1e-3)
    assert q.fingerprint() != p.fingerprint()


def test_fingerprint_follows_the_priors():
    a, b = UMedProtector(image_size=16, band_width=1), UMedProtector(image_size=16, band_width=2)
    b.load_state_dict(a.state_dict())
    assert a.fingerprint() != b.fingerprint()


def test_first_format_umed_files_still_load(tmp_path):
    p = _make("umed", 1)
    args = p.perturbator_args
    legacy = {"format": "monai_umed.protector/1", "state_dict": p.perturbator.state_dict(),
              "settings": {"perturbator": args, "image_size": 16, "channels": 1, **p.priors.as_dict()}}
    torch.save(legacy, tmp_path / "old.pt")
    q, settings = load_protector(tmp_path / "old.pt")
    assert isinstance(q, UMedProtector) and settings["image_size"] == 16
    images, labels = _images(1)
    assert torch.equal(p.native_delta(images[1], labels[1], "x")[0], q.native_delta(images[1], labels[1], "x")[0])


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_protector(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserInputError, match="junk.pt: not a readable protector file"):
        load_protector(tmp_path / "junk.pt")
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(UserInputError, match="not a monai_umed protector file"):
        load_protector(tmp_path / "foreign.pt")
    torch.save({"format": "monai_umed.protector/2", "name": "zzz", "config": {}, "settings": {}, "state_dict": {}},
               tmp_path / "unknown.pt")
    with pytest.raises(UserInputError, match="'zzz' is unknown"):
        load_protector(tmp_path / "unknown.pt")
    p = _make("lsp", 1)
    path = p.save(tmp_path / "lsp.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"] = {}
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(UserInputError, match="damaged protector file"):
        load_protector(tmp_path / "damaged.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "monai_umed.protector/2", "x": Evil()}, f)
    with pytest.raises(UserInputError, match="refused to load|not a readable"):
        load_protector(tmp_path / "evil.pt")

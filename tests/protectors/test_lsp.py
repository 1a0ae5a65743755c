"""LSP baseline protector (Yu et al. 2022), class-wise over outside / inside the ROI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_umed.protectors import LSPProtector
from monai_umed.data import load_datalist, make_synthetic_dataset
from monai_umed.apps import ProtectedDatasetWriter

EPS = 4 / 255


def _disc_label(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2).float()[None]


@pytest.mark.parametrize("channels, shape, patch", [(1, (64, 64), 8), (3, (50, 70), 16), (1, (224, 224), 32)])
def test_bound_patches_and_classes(channels, shape, patch):
    lsp = LSPProtector(channels, epsilon=EPS, patch_size=patch, seed=1)
    image, label = 0.25 + 0.5 * torch.rand(channels, *shape), _disc_label(*shape)  # no clipping at 0 or 1
    delta, allowed = lsp.native_delta(image, label, "case_1")
    assert delta.shape == image.shape and allowed.all()
    assert delta.abs().max() <= EPS + 1e-7
    patterns = lsp.class_patterns(shape, "case_1")
    inside = label[0] > 0
    assert torch.allclose(delta[:, inside], patterns[1][:, inside], atol=1e-7)
    assert torch.allclose(delta[:, ~inside], patterns[0][:, ~inside], atol=1e-7)
    # constant over each patch (the original repeats one value per patch and channel)
    for k in range(2):
        p = patterns[k]
        assert torch.equal(p[:, :patch, :patch], p[:, :1, :1].expand(-1, patch, patch))
    # the l2 projection makes the mean square about epsilon^2 before clipping: most values sit at the bound
    assert (patterns.abs() > 0.5 * EPS).float().mean() > 0.9


def test_deterministic_per_key_and_linearly_separable():
    lsp = LSPProtector(1, epsilon=EPS, patch_size=8, seed=0)
    a = lsp.class_patterns((32, 32), "benign_001")
    assert torch.equal(a, LSPProtector(1, epsilon=EPS, patch_size=8, seed=0).class_patterns((32, 32), "benign_001"))
    assert not torch.equal(a, lsp.class_patterns((32, 32), "benign_002"))
    # points of the two classes are linearly separable: the centroid difference separates every draw
    direction = (lsp.centroids[1] - lsp.centroids[0])[:, :4, :4].repeat_interleave(8, 1).repeat_interleave(8, 2)
    scores = {k: [] for k in range(2)}
    for i in range(50):
        p = lsp.class_patterns((32, 32), f"case_{i}")
        for k in range(2):
            scores[k].append(float((p[k] * direction).sum()))
    assert max(scores[0]) < 0 < min(scores[1])


def test_bad_input_is_named():
    lsp = LSPProtector(1, patch_size=4, max_grid=8)
    with pytest.raises(ValueError, match="max_grid"):
        lsp.native_delta(torch.rand(1, 40, 40), torch.zeros(1, 40, 40), "big")
    with pytest.raises(ValueError, match=r"\[1, H, W\]"):
        lsp.native_delta(torch.rand(3, 16, 16), torch.zeros(1, 16, 16), "rgb")
    multi = LSPProtector(1, num_classes=3, patch_size=4)
    with pytest.raises(ValueError, match="0..2"):
        multi.native_delta(torch.rand(1, 16, 16), torch.full((1, 16, 16), 5.0), "labels")
    with pytest.raises(ValueError, match="epsilon"):
        LSPProtector(1, epsilon=0)


def test_writer_writes_lsp_with_the_bound_and_resumes(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=4, size=(48, 48), seed=2)
    datalist = load_datalist(dataset_dir=str(root))
    out = tmp_path / "out"

    def run(seed: int) -> dict:
        writer = ProtectedDatasetWriter(
            LSPProtector(1, patch_size=8, seed=seed), datalist, root, out / "protected", manifest_dir=out
        )
        return writer()

    summary = run(0)
    assert summary["num_images"] == 4 and summary["linf_max"] <= EPS + 1e-6
    for e in json.loads((out / "manifest.json").read_text())["images"]:
        orig = np.asarray(Image.open(e["source"]), np.int16)
        prot = np.asarray(Image.open(e["output"]), np.int16)
        diff = prot - orig
        assert np.abs(diff).max() <= 4
        assert (diff != 0).mean() > 0.5, "class-wise protectors perturb the whole image, background included"
    assert run(0)["skipped_existing"] == 4, "same protector: kept"
    assert run(1)["skipped_existing"] == 0, "another seed: written anew"


def test_writer_refuses_survival_measurement_for_baselines(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=1, size=(32, 32), seed=2)
    with pytest.raises(ValueError, match="needs the UMed protector"):
        ProtectedDatasetWriter(
            LSPProtector(1), load_datalist(dataset_dir=str(root)), root, tmp_path / "o",
            surrogate=torch.nn.Conv2d(1, 2, 1),
        )


def test_writer_names_the_file_a_baseline_cannot_protect(tmp_path: Path):
    root = make_synthetic_dataset(tmp_path / "syn", num_images=1, size=(48, 48), seed=2)
    datalist = load_datalist(dataset_dir=str(root))
    writer = ProtectedDatasetWriter(LSPProtector(1, patch_size=4, max_grid=8), datalist, root, tmp_path / "o")
    with pytest.raises(ValueError, match=r"images/.*\.png: an image of 48x48 pixels needs 12x12 patches"):
        writer()
    assert not list((tmp_path / "o").rglob("*.png")), "nothing half-written"

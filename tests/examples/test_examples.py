# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""The example scripts: ``examples/visualize_umed.py`` and ``examples/protection_report.py`` (end to end)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from monai_umed.data import make_synthetic_dataset
from monai_umed.protectors import load_protector

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("channels", [1, 3])
def test_visualize_umed(tmp_path, channels):
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=1, size=(32, 32), channels=channels)
    out = tmp_path / "pic" / "umed.png"
    vis = _load_example("visualize_umed")
    rc = vis.main(
        ["--image", str(ds / "images" / "synthetic_000.png"), "--mask", str(ds / "masks" / "synthetic_000.png"),
         "--output", str(out), "--image_size", "32", "--panel_size", "48"]
    )
    assert rc == 0 and out.is_file()
    with Image.open(out) as img:
        assert img.width == 6 * 48 and img.height > 48 and img.mode == "RGB"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def _report(ds: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [
        sys.executable, str(EXAMPLES / "protection_report.py"), "--dataset_dir", str(ds), "--output_dir", str(out),
        "--image_size", "32", "--max_epochs", "1", "--exploiters", "unet", "--defenses", "none,jpeg",
        "--protect_args", "--surrogate_epochs 1 --generator_epochs 1 --batch_size 4 --synthetic_images 4 --verify false",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # 2 shared cores: 1 thread is faster
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, time.perf_counter() - t0


@pytest.mark.slow
def test_protection_report_end_to_end(tmp_path):
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=10, size=(32, 32))
    out = tmp_path / "report"
    proc, _ = _report(ds, out, "--quiet")
    assert "[3/5] train_exploiter unet clean defense=none" in proc.stdout
    assert "[5/5] train_exploiter unet protected defense=jpeg" in proc.stdout

    expected = ("report.md", "report.csv", "figure.png", "split.json", "protect/manifest.json", "protect/protector.pt")
    for name in expected:
        assert (out / name).is_file(), name
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["data"], r["exploiter"], r["defense"]) for r in rows] == [
        ("clean", "unet", "none"), ("protected", "unet", "none"), ("protected", "unet", "jpeg")
    ]
    assert list(rows[0]) == ["data", "exploiter", "defense", "dsc", "dsc_best", "dsc_best_epoch", "jaccard",
                             "n_test", "seconds"]
    for r in rows:
        assert 0.0 <= float(r["dsc"]) <= 1.0 and 0.0 <= float(r["jaccard"]) <= 1.0
        assert float(r["dsc_best"]) == float(r["dsc"]) and int(r["dsc_best_epoch"]) == 1  # one epoch: final = best
        assert int(r["n_test"]) == 2 and float(r["seconds"]) > 0
    for name in ("clean_unet_none", "protected_unet_none", "protected_unet_jpeg"):
        metrics = json.loads((out / "runs" / name / "metrics.json").read_text())
        assert metrics["max_epochs"] == 1 and metrics["image_size"] == 32
    assert json.loads((out / "runs" / "protected_unet_jpeg" / "metrics.json").read_text())["defense"] == "jpeg"

    report = (out / "report.md").read_text()
    assert "| unet | none |" in report and "| unet | jpeg |" in report
    assert "| Clean DSC | Clean best DSC | Clean Jaccard | Protected DSC | Protected best DSC |" in report
    assert "(ep. 1)" in report
    assert "PSNR" in report and "SSIM" in report and "changed fraction" in report
    assert "python -m monai.bundle run protect" in report and "--surrogate_epochs 1" in report
    with Image.open(out / "figure.png") as fig:
        assert fig.width > 4 * 32 and fig.height > 4 * 32  # 4 columns, up to 4 cases
    manifest = json.loads((out / "protect" / "manifest.json").read_text())
    assert manifest["summary"]["num_images"] == 8  # only the split's training entries are protected

    kept = [out / "report.csv", out / "figure.png", *sorted(out.glob("runs/*/metrics.json"))]
    before = {p: p.read_bytes() for p in kept}
    mtimes = {p: p.stat().st_mtime_ns for p in [out / "protect" / "protector.pt", *out.glob("runs/*/model.pt")]}
    proc, _ = _report(ds, out, "--reuse")
    assert proc.stdout.count("... reused") == 5 and "running" not in proc.stdout
    assert {p: p.read_bytes() for p in before} == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_figure_panels_show_the_images_uncovered(tmp_path):
    """Each row's case label sits in its own strip: the original and protected tiles are the images, untouched."""
    import shutil

    import numpy as np

    from monai_umed.apps import write_split
    from monai_umed.data import read_raw, to_unit

    report = _load_example("protection_report")
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=2, size=(48, 48), seed=3)
    split = write_split(ds, tmp_path / "split.json", test_fraction=0.5, seed=0)
    protected = tmp_path / "protected"
    shutil.copytree(ds, protected)  # an unchanged "protected" copy: the protected tile must equal the original
    out = tmp_path / "figure.png"
    names = report.make_figure(ds, split, protected, out, None, 4 / 255, num_cases=1, panel=64)
    assert len(names) == 1
    entry = json.loads(split.read_text())["training"][0]
    expected = np.asarray(report._panel(report._to_rgb8(to_unit(read_raw(ds / entry["image"]))), 64, nearest=False))
    fig = np.asarray(Image.open(out).convert("RGB"))
    gap, top, caption = 4, 18, 14
    h, w = expected.shape[:2]
    original_tile = fig[top + caption : top + caption + h, gap : gap + w]
    protected_tile = fig[top + caption : top + caption + h, gap + 3 * (w + gap) : gap + 3 * (w + gap) + w]
    np.testing.assert_array_equal(original_tile, expected)
    np.testing.assert_array_equal(protected_tile, expected)


@pytest.mark.parametrize(
    "protector, args, title, setting",
    [
        ("lsp", "--patch_size 8", "# Protection report: LSP baseline", "patch_size=8"),
        ("em", "--max_rounds 1 --train_steps 1 --pgd_steps 2 --step_size 0.0157", "# Protection report: EM baseline",
         "max_rounds=1"),
        ("ar", "--stability 0.9", "# Protection report: AR baseline", "stability=0.9"),
    ],
)
def test_protection_report_with_a_baseline(tmp_path, protector, args, title, setting):
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=10, size=(32, 32))
    out = tmp_path / "report"
    cmd = [
        sys.executable, str(EXAMPLES / "protection_report.py"), "--dataset_dir", str(ds), "--output_dir", str(out),
        "--image_size", "32", "--max_epochs", "1", "--exploiters", "unet", "--defenses", "none",
        "--protector", protector, "--protect_args", args, "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert report.startswith(title) and f"protector={protector}" in report and setting in report
    assert f"protect_{protector}.json" in report and "| unet | none |" in report
    manifest = json.loads((out / "protect" / "manifest.json").read_text())
    assert manifest["settings"]["protector"] == protector and manifest["summary"]["num_images"] == 8
    assert manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    assert (out / "figure.png").is_file()
    saved, _ = load_protector(out / "protect" / "protector.pt")  # every protector is saved, so apply can reuse it
    assert saved.name == protector
    proc = subprocess.run([*cmd, "--reuse"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.count("... reused") == 4, proc.stdout[-2000:]  # split, protect, 2 runs


def test_compare_protectors_variants_and_errors():
    cmp = _load_example("compare_protectors")
    assert cmp.expand_variants("table1") == ["umed", "lsp", "em", "tap", "sep", "ar"]
    assert cmp.expand_variants("umed, table5,lsp") == [
        "umed", "umed_contour", "umed_contour_vanilla", "em_band", "umed_texture", "umed_texture_fixed", "em_roi",
        "lsp",
    ]
    with pytest.raises(ValueError, match="unknown variant 'umed_nothing'"):
        cmp.expand_variants("umed_nothing")
    assert cmp.parse_extra(["sep=--pgd_steps 50", "sep=--snapshots 3"]) == {"sep": ["--pgd_steps", "50", "--snapshots", "3"]}
    with pytest.raises(ValueError, match="VARIANT=ARGS"):
        cmp.parse_extra(["nothing=--x 1"])


def test_compare_protectors_settings_after_at():
    """``VARIANT@EPS`` columns and ``DEFENSE@VALUE`` rows: parsed, checked, and passed to the bundle commands."""
    cmp = _load_example("compare_protectors")
    assert cmp.expand_variants("umed,umed_robust@8/255,umed@8/255,umed") == ["umed", "umed_robust@8/255", "umed@8/255"]
    assert cmp.variant_dir("umed_robust@8/255") == "umed_robust_eps8-255" and cmp.variant_dir("lsp") == "lsp"
    for bad, message in [("table1@8/255", "not to the group"), ("umed@9", "must be in"), ("umed@x", "not a number"),
                         ("nothing@8/255", "unknown variant 'nothing'")]:
        with pytest.raises(ValueError, match=message):
            cmp.expand_variants(bad)
    assert cmp.parse_defenses("none,jpeg,jpeg@10,adversarial_training@8/255") == [
        "none", "jpeg", "jpeg@10", "adversarial_training@8/255"
    ]
    for bad, message in [("jpeg@0", "not a valid jpeg_quality"), ("jpeg@ten", "not a valid jpeg_quality"),
                         ("median@3", "median takes no setting"), ("gaussian_blur@-1", "not a valid blur_sigma"),
                         ("gaussian_blur@inf", "not a valid blur_sigma"),
                         ("adversarial_training@2", "not a valid adv_epsilon"), ("blur", "unknown"), ("", "empty")]:
        with pytest.raises(ValueError, match=message):
            cmp.parse_defenses(bad)
    args = cmp.parse_args(["--dataset_dir", str(EXAMPLES), "--output_dir", "o", "--variants", "lsp@8/255",
                           "--extra", "lsp=--patch_size 4", "--extra", "lsp@8/255=--seed 3"])
    cmd = cmp.protect_command(args, "lsp@8/255", Path("d"), Path("s.json"), Path("o"))
    assert cmd[-6:] == ["--patch_size", "4", "--seed", "3", "--epsilon", "8/255"]
    assert cmd.count("--seed") == 1  # the column's own --seed wins over the comparison's
    cmd = cmp.protect_command(args, "umed_robust_gen", Path("d"), Path("s.json"), Path("o"))
    assert cmd[cmd.index("--robust") + 1] == "true" and cmd[cmd.index("--robust_surrogate") + 1] == "false"
    cmd = cmp.protect_command(args, "umed_robust_gen_all", Path("d"), Path("s.json"), Path("o"))
    assert cmd[cmd.index("--robust") + 1] == "all" and cmd[cmd.index("--robust_surrogate") + 1] == "false"
    cmd = cmp.protect_command(args, "umed_robust_gen_augment", Path("d"), Path("s.json"), Path("o"))
    assert cmd[cmd.index("--robust") + 1] == "identity,augment" and cmd[cmd.index("--robust_surrogate") + 1] == "false"
    cmd = cmp.exploit_command(args, Path("d"), Path("s.json"), None, Path("o"), "adversarial_training@8/255")
    assert cmd[cmd.index("--defense") + 1] == "adversarial_training" and cmd[cmd.index("--adv_epsilon") + 1] == "8/255"
    cmd = cmp.exploit_command(args, Path("d"), Path("s.json"), None, Path("o"), "jpeg@10")
    assert cmd[cmd.index("--jpeg_quality") + 1] == "10"
    assert cmp.run_name("exploit", "adversarial_training@8/255") == "exploit_adversarial_training_8-255"


@pytest.mark.slow
def test_compare_protectors_end_to_end(tmp_path):
    """Two Table-5 rows: each variant's setting reaches its protector, the table has a row per variant, reuse."""
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=10, size=(32, 32))
    out = tmp_path / "cmp"
    cmd = [
        sys.executable, str(EXAMPLES / "compare_protectors.py"), "--dataset_dir", str(ds), "--output_dir", str(out),
        "--variants", "umed_texture,em_band", "--image_size", "32", "--max_epochs", "1", "--quiet",
        "--extra", "umed_texture=--steps 4 --phase_steps 2 --batch_size 4",
        "--extra", "em_band=--max_rounds 1 --train_steps 1 --pgd_steps 2 --step_size 0.0157",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "table.csv", newline="") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["clean", "umed_texture", "em_band"]
    for name in ("umed_texture", "em_band"):
        r = rows[name]
        assert 0.0 <= float(r["dsc"]) <= 1.0 and 0.0 <= float(r["jaccard"]) <= 1.0
        assert float(r["linf_max"]) <= 4 / 255 + 1e-6 and float(r["psnr"]) > 30 and float(r["protect_seconds"]) > 0
    umed = json.loads((out / "umed_texture" / "protect" / "manifest.json").read_text())["settings"]
    assert umed["perturbator"]["parts"] == "texture"
    em = json.loads((out / "em_band" / "protect" / "manifest.json").read_text())["settings"]
    assert em["protector"] == "em" and em["region"] == "band"
    saved, _ = load_protector(out / "em_band" / "protect" / "protector.pt")
    assert saved.region == "band"
    table = (out / "table.md").read_text()
    assert "| umed_texture: UMed, G_t only |" in table and "| em_band: EM restricted to the contour band |" in table
    assert "'--perturbator_args#parts' texture" in table  # the exact commands are in the table
    proc = subprocess.run(cmd + ["--reuse"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.count("... reused") == 6, proc.stdout[-2000:]


@pytest.mark.slow
def test_compare_protectors_defense_matrix(tmp_path):
    """``--defenses``: every exploiter run under each defense, clean reference included; the matrix in table.md,
    matrix.csv and heatmap.png; the runs without a defense keep their names (a reuse of an earlier comparison)."""
    ds = make_synthetic_dataset(tmp_path / "ds", num_images=10, size=(32, 32))
    out = tmp_path / "cmp"
    cmd = [
        sys.executable, str(EXAMPLES / "compare_protectors.py"), "--dataset_dir", str(ds), "--output_dir", str(out),
        "--variants", "lsp,lsp@8/255", "--image_size", "32", "--max_epochs", "1", "--quiet",
        "--defenses", "none,median,jpeg,jpeg@30", "--jpeg_quality", "10",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "matrix.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["defense"], r["column"]) for r in rows] == [
        (d, c) for d in ("none", "median", "jpeg", "jpeg@30") for c in ("clean", "lsp", "lsp@8/255")
    ]
    assert all(0.0 <= float(r["dsc"]) <= 1.0 for r in rows)
    for run in ("clean", "clean_median", "clean_jpeg", "lsp/exploit", "lsp/exploit_median", "lsp/exploit_jpeg"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["defense"] == (run.split("_")[-1] if "_" in run else "none"), run
    assert json.loads((out / "lsp" / "exploit_jpeg" / "metrics.json").read_text())["defense_params"] == {"quality": 10}
    jpeg30 = json.loads((out / "lsp_eps8-255" / "exploit_jpeg_30" / "metrics.json").read_text())
    assert jpeg30["defense"] == "jpeg" and jpeg30["defense_params"] == {"quality": 30}
    # the column's files: LSP at 8/255 uses its larger budget, and the matrix reports each column's PSNR
    s4 = json.loads((out / "lsp" / "protect" / "manifest.json").read_text())["summary"]
    s8 = json.loads((out / "lsp_eps8-255" / "protect" / "manifest.json").read_text())["summary"]
    assert s4["linf_max"] <= 4 / 255 + 1e-6 < s8["linf_max"] <= 8 / 255 + 1e-6 and s8["psnr_mean"] < s4["psnr_mean"]
    assert {(r["column"], round(float(r["psnr"]), 6)) for r in rows if r["column"] != "clean"} == {
        ("lsp", round(s4["psnr_mean"], 6)), ("lsp@8/255", round(s8["psnr_mean"], 6))
    }
    table = (out / "table.md").read_text()
    assert "## DSC under each defense" in table and "| median |" in table and "| jpeg (quality 10) |" in table
    assert "| jpeg@30 |" in table and f"| PSNR / SSIM of the files | - | {s4['psnr_mean']:.2f} dB" in table
    with Image.open(out / "heatmap.png") as img:
        assert img.width > 200 and img.height > 80
    bad = subprocess.run([*cmd[:-4], "--defenses", "none,blur"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--defenses: unknown ['blur']" in bad.stderr

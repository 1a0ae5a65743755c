"""The protect and apply bundle jobs, run as a user runs them (``python -m monai.bundle run ...``) on tiny data."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_umed.data import LoadMaskd, make_synthetic_dataset, read_raw
from monai_umed.apps import verification_split
from monai_umed.protectors import load_protector, native_band_width
from monai_umed.transforms import ContourBand

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "umed" / "configs"
TINY = [
    "--image_size", "32", "--surrogate_epochs", "1", "--generator_epochs", "1", "--batch_size", "4",
    "--band_width", "1", "--measure_survival", "false", "--verify", "false",
]


def _bundle(run_id: str, config: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", str(CONFIGS / config), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_metadata_verifies_offline():
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"),
         "--filepath", str(REPO / "bundles" / "umed" / "docs" / "metadata_schema.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verified with no error" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def protected_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    data = make_synthetic_dataset(tmp / "input", num_images=6, size=(40, 40), seed=2)
    before = _hashes(data)
    out = tmp / "out"
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *TINY)
    return data, before, out, proc


def _config(*files: str) -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    return parser.get()


def test_defaults_are_the_measured_step_recipe_and_paper_json_restores_the_paper():
    """Nothing but --dataset_dir/--output_dir: the step schedule (k = 1, lr 1e-3), verification on; paper.json
    merged the MONAI way gives Algorithm 1's epochs (224 px, 100 surrogate epochs, k = 4, lr 1e-4)."""
    d = _config("protect.json")
    assert d["steps"] == 2000 and d["phase_steps"] == 32 and d["generator_epochs"] == 1
    assert d["surrogate_epochs"] is None and d["lr_generator"] == d["lr_surrogate"] == 1e-3
    assert d["verify"] is True and d["require_dsc"] is None
    p = _config("protect.json", "paper.json")
    assert (p["image_size"], p["surrogate_epochs"], p["generator_epochs"]) == (224, 100, 4)
    assert p["lr_generator"] == p["lr_surrogate"] == 1e-4 and p["batch_size"] == 16
    demo = _config("protect.json", "demo.json")
    assert demo["steps"] < d["steps"] and demo["verify"] is True


STEPS = ["--image_size", "32", "--steps", "8", "--phase_steps", "2", "--batch_size", "4", "--band_width", "1",
         "--measure_survival", "false", "--verify_steps", "6"]


def test_protect_verifies_what_it_wrote_and_warns_when_unprotected(tmp_path):
    """epsilon 1/255 and 8 training steps: the written files barely differ from the originals, so the verification's
    exploiter learns as well from them as from the clean files and the job says the data is not protected;
    --require_dsc 0 then fails the job with one line, after the manifest got its verification entry."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=24, size=(32, 32), seed=3)
    out = tmp_path / "out"
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
                   "--epsilon", "1/255")
    log = proc.stdout + proc.stderr
    assert "UMed training stopped: schedule completed: 8 steps in 4 phases" in log
    manifest = json.loads((out / "manifest.json").read_text())
    v = manifest["verification"]
    for key in ("protected_dsc", "clean_dsc", "protected_dsc_best", "exploiter", "n_train", "n_test", "steps"):
        assert key in v
    assert (v["n_train"], v["n_test"]) == (14, 10) and v["exploiter"] == "unet"
    assert v["protected"] is False and "THE DATA IS NOT PROTECTED" in log
    # --verify_defenses auto: images are also checked against an exploiter that JPEG-compresses them
    jpeg = v["defenses"]["jpeg"]
    assert jpeg["protected"] is False and "THE DATA IS NOT PROTECTED AGAINST JPEG COMPRESSION" in log
    assert json.loads(Path(jpeg["metrics"]).read_text())["defense"] == "jpeg"
    assert "VERIFICATION FAILED" in log and f"{v['protected_dsc']:.2f}" in log
    # the fold is every image's original, and every image, the fold included, was written
    assert manifest["summary"]["num_images"] == 24 and set(v["fold"]) <= {e["name"] for e in manifest["images"]}
    assert v["image_size"] == 32 and v["native_size"] == [32, 32] and v["resolution_caveat"] is None
    assert v["sizes"] == {}  # --verify_sizes auto: half of 32 px is below the smallest size, no other size
    # 64-pixel files, verification exploiter at 32 px (--verify_image_size): a resolution WARNING; --require_dsc 0;
    # --verify_sizes 64: the exploiter also trains at the files' own size, on the protected and the clean files
    big = make_synthetic_dataset(tmp_path / "input64", num_images=24, size=(64, 64), seed=3)
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(big), "--output_dir", str(tmp_path / "o2"),
                   *STEPS, "--epsilon", "1/255", "--require_dsc", "0.0", "--verify_image_size", "32",
                   "--verify_sizes", "64", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "monai_umed: error:" in proc.stderr and "require_dsc" in proc.stderr
    v2 = json.loads((tmp_path / "o2" / "manifest.json").read_text())["verification"]
    assert v2["image_size"] == 32 and "trained at 32x32, but the files are about 64x64" in v2["resolution_caveat"]
    assert "--verify_image_size 64" in proc.stdout + proc.stderr
    at64 = v2["sizes"]["64"]
    for kind in ("metrics", "clean_metrics"):
        assert json.loads(Path(at64[kind]).read_text())["image_size"] == 64
    assert at64["message"] in proc.stdout + proc.stderr
    # a size the verification exploiter cannot train at is refused before any training
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o3"),
                   *STEPS, "--verify_image_size", "16", check=False)
    assert proc.returncode == 1 and "image_size must be a multiple of 16 and at least 32" in proc.stderr
    assert not (tmp_path / "o3" / "checkpoints").exists()


def test_verification_needs_enough_images_and_says_so_before_training(tmp_path):
    data = make_synthetic_dataset(tmp_path / "input", num_images=12, size=(32, 32), seed=3)
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o"), *STEPS,
                   check=False)
    assert proc.returncode == 1 and "too few to verify the protection" in proc.stderr
    assert not (tmp_path / "o" / "checkpoints").exists(), "refused before any training"
    skipped = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o2"),
                      *STEPS, "--verify", "false")
    assert "--verify false: the protection of the written files was NOT measured" in skipped.stdout + skipped.stderr
    assert "verification" not in json.loads((tmp_path / "o2" / "manifest.json").read_text())


def test_protect_writes_a_guaranteed_dataset(protected_run):
    data, before, out, proc = protected_run
    assert _hashes(data) == before, "input dataset untouched"
    log = proc.stdout + proc.stderr
    assert "protected dataset:" in log and "PSNR" in log and "SSIM" in log and "l-inf" in log
    assert "phase: generators" in log and "phase: surrogate" in log, "progress shows the phase"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["num_images"] == 6 and len(manifest["images"]) == 6
    assert (out / "protector.pt").is_file() and (out / "manifest.csv").is_file()
    for entry in manifest["images"]:
        for key in ("source", "output", "sha256_source", "sha256_output", "psnr", "ssim", "linf", "changed_fraction"):
            assert key in entry
        src, dst = Path(entry["source"]), Path(entry["output"])
        assert hashlib.sha256(dst.read_bytes()).hexdigest() == entry["sha256_output"]
        a = np.asarray(Image.open(src)).astype(int)
        b = np.asarray(Image.open(dst)).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 4
        label = LoadMaskd("label")({"label": str(data / "masks" / src.name)})["label"]
        masks = ContourBand(width=native_band_width(1, (32, 32), label.shape[1:]))(torch.as_tensor(label))
        allowed = ((masks[0] + masks[1]) > 0).numpy()
        assert not ((a != b) & ~allowed).any(), "no change outside band and ROI"
        for m in entry["masks"]:
            assert Path(m["output"]).read_bytes() == Path(m["source"]).read_bytes(), "masks identical"
    assert _hashes(out / "protected" / "masks") == _hashes(data / "masks")


def test_protect_refuses_output_inside_input(protected_run):
    data, before, _, _ = protected_run
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(data / "sub"), *TINY, check=False)
    assert proc.returncode != 0
    assert "never writes into the input dataset" in proc.stdout + proc.stderr
    assert _hashes(data) == before


def test_rerun_resumes_and_skips(protected_run, tmp_path):
    """Interrupted writing: delete two outputs; a re-run with --resume writes only those (the rest match the manifest)."""
    data, _, out, _ = protected_run
    manifest = json.loads((out / "manifest.json").read_text())
    victims = [Path(e["output"]) for e in manifest["images"][:2]]
    expected = {v: v.read_bytes() for v in victims}
    for v in victims:
        v.unlink()
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *TINY, "--resume", "true")
    log = proc.stdout + proc.stderr
    assert "resuming from checkpoint" in log
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["skipped_existing"] == 4 and summary["num_images"] == 6
    for v, content in expected.items():
        assert v.read_bytes() == content, "resumed output equals the original run's"


def test_resume_continues_training_as_an_uninterrupted_run(tmp_path):
    """Train 1 surrogate epoch, then resume to 2: the protector equals a straight 2-epoch run's (CPU), since the
    checkpoint carries the data loader's random state along with the networks and optimizers."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=4)
    tiny2 = [a if a != "1" or i != 3 else "2" for i, a in enumerate(TINY)]
    assert tiny2[2:4] == ["--surrogate_epochs", "2"]
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "a"), *TINY)
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "a"), *tiny2, "--resume", "true")
    assert "resuming from checkpoint" in proc.stdout + proc.stderr
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "b"), *tiny2)
    resumed = torch.load(tmp_path / "a" / "protector.pt", weights_only=False)["state_dict"]
    straight = torch.load(tmp_path / "b" / "protector.pt", weights_only=False)["state_dict"]
    flat_r = _flatten(resumed)
    flat_s = _flatten(straight)
    assert flat_r.keys() == flat_s.keys() and all(torch.equal(flat_r[k], flat_s[k]) for k in flat_s)
    summary = json.loads((tmp_path / "a" / "manifest.json").read_text())["summary"]
    assert summary["skipped_existing"] == 0, "the retrained protector rewrote every image"
    assert _hashes(tmp_path / "a" / "protected") == _hashes(tmp_path / "b" / "protected")


def _flatten(d: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif torch.is_tensor(v):
            out[f"{prefix}{k}"] = v
    return out


def test_rerun_with_another_epsilon_rewrites(protected_run, tmp_path):
    """Re-running into the same folder with other settings must not keep the old outputs."""
    data, _, out, _ = protected_run
    out2 = tmp_path / "o"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out2), *TINY)
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out2), *TINY,
                   "--epsilon", "0.03137254901960784")
    assert "written anew" in proc.stdout + proc.stderr
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert manifest["summary"]["skipped_existing"] == 0
    assert manifest["summary"]["linf_max"] > 5 / 255, "the files carry the new bound's perturbation"


def test_apply_reuses_protector_without_training(protected_run, tmp_path):
    data, _, out, _ = protected_run
    out2 = tmp_path / "applied"
    proc = _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data), "--output_dir", str(out2))
    log = proc.stdout + proc.stderr
    assert "Epoch[" not in log, "no training"
    assert _hashes(out2 / "protected" / "images") == _hashes(out / "protected" / "images")


def test_verify_job_and_apply_measure_the_written_files(tmp_path):
    """A dataset written without its check (protect --verify false) is verified later by the verify job, on the
    fold protect would have held out; apply checks what it wrote by default. epsilon 1/255 and 8 steps: the files
    are not protected, and both jobs say so; the verify job refuses originals that were not protected."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=24, size=(32, 32), seed=3)
    before = _hashes(data)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            "--epsilon", "1/255", "--verify", "false", "--seed", "4")
    assert "verification" not in json.loads((out / "manifest.json").read_text())
    written = _hashes(out / "protected")
    fast = ["--verify_steps", "6", "--verify_defenses", "none"]
    proc = _bundle("verify", "verify.json", "--dataset_dir", str(data), "--output_dir", str(out), *fast,
                   "--require_dsc", "0.0", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "require_dsc" in proc.stderr and "Traceback" not in proc.stderr
    v = json.loads((out / "manifest.json").read_text())["verification"]
    assert v["protected"] is False and "THE DATA IS NOT" in log and "VERIFICATION FAILED" in log
    assert (v["n_train"], v["n_test"], v["image_size"]) == (14, 10, 32)  # protect's training size
    items = [{"image": str(p), "image_rel": f"images/{p.name}"} for p in sorted((data / "images").iterdir())]
    fold = {Path(e["image"]).stem for e in verification_split(items, seed=4)[1]}
    assert set(v["fold"]) == fold, "the fold protect --seed 4 would have held out"
    assert _hashes(out / "protected") == written and _hashes(data) == before, "nothing but the manifest changes"
    # originals that were not protected into this folder are refused before any training, naming them
    other = make_synthetic_dataset(tmp_path / "other", num_images=24, size=(32, 32), seed=5)
    proc = _bundle("verify", "verify.json", "--dataset_dir", str(other), "--output_dir", str(out), *fast, check=False)
    assert proc.returncode == 1 and "24 of 24 dataset image(s) are not in the protected dataset" in proc.stderr
    assert str(other / "images") in proc.stderr
    assert json.loads((out / "manifest.json").read_text())["verification"] == v, "the refused run changed nothing"
    proc = _bundle("verify", "verify.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "none"),
                   check=False)
    assert proc.returncode == 1 and "manifest not found" in proc.stderr and "Traceback" not in proc.stderr
    # apply verifies by default, at the protector's training size, and warns in plain words
    applied = tmp_path / "applied"
    proc = _bundle("apply", "apply.json", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
                   "--output_dir", str(applied), *fast)
    va = json.loads((applied / "manifest.json").read_text())["verification"]
    assert va["protected"] is False and va["image_size"] == 32 and "THE DATA IS NOT" in proc.stdout + proc.stderr
    assert _hashes(applied / "protected") == written
    # too few images to verify: refused before anything is written, with the way out named
    few = make_synthetic_dataset(tmp_path / "few", num_images=6, size=(32, 32), seed=3)
    proc = _bundle("apply", "apply.json", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(few),
                   "--output_dir", str(tmp_path / "a2"), check=False)
    assert proc.returncode == 1 and "too few to verify the protection" in proc.stderr and "--verify false" in proc.stderr
    assert not (tmp_path / "a2" / "protected").exists()


def test_bad_dataset_reports_every_problem(tmp_path):
    data = make_synthetic_dataset(tmp_path / "input", num_images=3, size=(32, 32), seed=0)
    (data / "masks" / "stray.png").write_bytes((data / "masks" / sorted(os.listdir(data / "masks"))[0]).read_bytes())
    (data / "images" / "empty.png").write_bytes(b"")
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o"), *TINY, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "stray.png" in text and "empty.png" in text
    assert not (tmp_path / "o" / "checkpoints").exists(), "nothing trained on a broken dataset"


def test_unsuitable_image_size_fails_before_any_work(protected_run, tmp_path):
    data, before, _, _ = protected_run
    out = tmp_path / "out"
    args = [a if a != "32" else "40" for a in TINY]  # 40 is not a multiple of 16 (the surrogate's downsampling)
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *args, check=False)
    assert proc.returncode != 0
    assert "image_size 40 does not suit the networks" in proc.stdout + proc.stderr
    assert "multiple of 16" in proc.stdout + proc.stderr
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    assert _hashes(data) == before


def test_lsp_baseline_bundle(tmp_path):
    """The LSP baseline protector as a bundle job: no training, the bound holds, the input is untouched."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=4, size=(40, 40), seed=5)
    before = _hashes(data)
    out = tmp_path / "lsp"
    _bundle("protect", "protect_lsp.json", "--dataset_dir", str(data), "--output_dir", str(out), "--patch_size", "8")
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["protector"] == "lsp" and manifest["settings"]["patch_size"] == 8
    assert manifest["summary"]["num_images"] == 4 and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    assert manifest["summary"]["changed_fraction_mean"] > 0.5
    assert sorted(p.name for p in (out / "protected" / "masks").iterdir()) == sorted(p.name for p in (data / "masks").iterdir())
    # the saved protector re-applies without the LSP config: the same files
    _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
            "--output_dir", str(tmp_path / "applied"))
    assert _hashes(tmp_path / "applied" / "protected") == _hashes(out / "protected")


def test_em_baseline_bundle(tmp_path):
    """The EM baseline protector as a bundle job: rounds logged, the bound holds, the input is untouched."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=4, size=(40, 40), seed=5)
    before = _hashes(data)
    out = tmp_path / "em"
    proc = _bundle(
        "protect", "protect_em.json", "--dataset_dir", str(data), "--output_dir", str(out), "--image_size", "32",
        "--max_rounds", "2", "--train_steps", "2", "--pgd_steps", "2", "--batch_size", "2",
    )
    log = proc.stdout + proc.stderr
    assert "EM round 1/2" in log and "EM round 2/2" in log
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["protector"] == "em" and manifest["summary"]["num_images"] == 4
    assert 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
            "--output_dir", str(tmp_path / "applied"))
    assert _hashes(tmp_path / "applied" / "protected") == _hashes(out / "protected"), "apply reuses EM's deltas"
    proc = _bundle("protect", "protect_em.json", "--output_dir", str(tmp_path / "bad"), "--image_size", "30", check=False)
    assert proc.returncode != 0 and "multiple of 16" in proc.stdout + proc.stderr


def test_resume_extends_a_step_schedule(tmp_path):
    """--resume true with a larger --steps trains only the phases that are missing (step schedule)."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=1)
    i = STEPS.index("--steps")
    common = ["--dataset_dir", str(data), "--output_dir", str(tmp_path / "o"), *STEPS[:i], *STEPS[i + 2:],
              "--verify", "false"]
    first = _bundle("protect", "protect.json", *common, "--steps", "8")
    assert "schedule completed: 8 steps in 4 phases" in first.stdout + first.stderr
    more = _bundle("protect", "protect.json", *common, "--steps", "16", "--resume", "true")
    log = more.stdout + more.stderr
    assert "resuming from checkpoint" in log and "schedule completed: 16 steps in 8 phases" in log
    done = re.findall(r"Epoch\[(\d+)\] Complete", log)
    assert sorted(set(map(int, done))) == [5, 6, 7, 8], done


@pytest.mark.parametrize("name, snapshots", [("tap", "1"), ("sep", "2")])
def test_targeted_baseline_bundles(tmp_path, name, snapshots):
    """TAP and SEP as bundle jobs: a clean run, targeted PGD, the bound holds, the input is untouched, apply reuses it."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=4, size=(40, 40), seed=5)
    before = _hashes(data)
    out = tmp_path / name
    proc = _bundle(
        "protect", f"protect_{name}.json", "--dataset_dir", str(data), "--output_dir", str(out), "--image_size", "32",
        "--clean_steps", "2", "--snapshots", snapshots, "--pgd_steps", "2", "--step_size", "0.0157", "--batch_size", "2",
    )
    log = proc.stdout + proc.stderr
    assert f"clean model snapshot {snapshots}/{snapshots}" in log and "loss towards the swapped labels" in log
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["protector"] == name and manifest["settings"]["protector"] == name
    assert manifest["summary"]["num_images"] == 4 and 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
            "--output_dir", str(tmp_path / "applied"))
    assert _hashes(tmp_path / "applied" / "protected") == _hashes(out / "protected")


def test_ar_baseline_bundle(tmp_path):
    """The AR baseline as a bundle job: no training, the bound holds on every pixel, apply reuses it."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=3, size=(40, 40), seed=5, channels=3)
    before = _hashes(data)
    out = tmp_path / "ar"
    _bundle("protect", "protect_ar.json", "--dataset_dir", str(data), "--output_dir", str(out), "--seed", "3")
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["protector"] == "ar" and manifest["settings"]["stability"] == 0.95
    assert manifest["summary"]["num_images"] == 3 and 3.5 / 255 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    assert manifest["summary"]["changed_fraction_mean"] > 0.5
    _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
            "--output_dir", str(tmp_path / "applied"))
    assert _hashes(tmp_path / "applied" / "protected") == _hashes(out / "protected")


@pytest.mark.parametrize("name, options", [("lsp", "{'patch_size': 8}"), ("tap", "{'pgd_steps': 2, 'step_size': 0.0157}")])
def test_protect_json_runs_every_protector(tmp_path, name, options):
    """One config for every protector: --protector NAME trains (or not) that protector with the job's loader and
    surrogate, and the same writer, manifest and self-verification follow."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=12, size=(40, 40), seed=5)
    before = _hashes(data)
    out = tmp_path / name
    i = TINY.index("--verify")
    args = [*TINY[:i], *TINY[i + 2:], "--verify_steps", "4", "--verify_min_images", "3"]
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *args,
                   "--protector", name, "--protector_args", options, "--steps", "4")
    log = proc.stdout + proc.stderr
    assert "UMed training stopped" not in log, "the UMed trainer does not run"
    assert not list(out.glob("checkpoints/*.pt"))
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["protector"] == name and manifest["settings"]["protector"] == name
    assert 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6 and "surrogate_loss_mean" not in manifest["summary"]
    assert manifest["verification"]["n_test"] >= 2, "the self-verification runs for every protector"
    _bundle("apply", "apply.json", "--verify", "false", "--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data),
            "--output_dir", str(tmp_path / "applied"))
    assert _hashes(tmp_path / "applied" / "protected") == _hashes(out / "protected")


def test_protect_json_refuses_unknown_protector_and_options(tmp_path):
    data = make_synthetic_dataset(tmp_path / "input", num_images=4, size=(32, 32), seed=5)
    for extra, message in ((["--protector", "nope"], "--protector 'nope': unknown; choose one of ar, em, lsp, sep, tap, umed"),
                           (["--protector", "ar", "--protector_args", "{'patch_size': 8}"], "--protector_args for 'ar'")):
        proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "o"),
                       *TINY, *extra, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o" / "checkpoints").exists() and not (tmp_path / "o" / "protected").exists()


def test_protect_with_two_classes(tmp_path, two_classes):
    """Masks with two foreground classes: the surrogate has K + 1 = 3 outputs, the classes are recorded, the bound
    holds, and the verification's exploiters are scored per class."""
    data = two_classes(tmp_path / "input", n=20)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["class_values"] == [1, 2] and manifest["settings"]["labels"] == "auto"
    assert manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    protector, _ = load_protector(out / "protector.pt")
    assert protector.config()["class_values"] == [1, 2]
    assert sorted(protector.transforms()({"image": torch.rand(1, 32, 32), "label": torch.as_tensor(
        np.array(Image.open(data / "masks" / "case_00.png")), dtype=torch.float32)[None]})["label"].unique().tolist()) == [0, 1, 2]
    verification = json.loads((out / "verification" / "protected" / "metrics.json").read_text())
    assert verification["num_classes"] == 3 and len(verification["dsc_per_class"]) == 2
    checkpoints = sorted((out / "checkpoints").glob("*.pt"))
    assert checkpoints, "no checkpoint"
    state = torch.load(checkpoints[-1], weights_only=True)
    surrogate = state["surrogate"] if "surrogate" in state else state
    last = [v for k, v in surrogate.items() if k.endswith("weight")][-1]
    assert 3 in last.shape[:2]  # the surrogate's last layer has 3 outputs


def test_protect_volumes(tmp_path, volumes):
    """The same protect command on 3D NIfTI volumes: 3D networks trained on patches of the native grid and run over
    whole volumes by sliding window, the bound and the
    locality re-checked on the written volumes, header / affine / dtype kept, masks copied byte for byte, the
    verification scored per class by a 3D exploiter; a 2D-only baseline is refused with one line."""
    import nibabel as nib

    from scipy.ndimage import binary_dilation

    data = volumes(tmp_path / "input", n=28)
    before = _hashes(data)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--datalist", str(data / "split.json"),
            "--output_dir", str(out), "--steps", "4", "--phase_steps", "2", "--batch_size", "4", "--verify_steps", "4",
            "--measure_survival", "false")
    assert _hashes(data) == before  # the input is untouched
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["spatial_dims"] == 3 and manifest["settings"]["train_size"] == [32, 32, 32]
    protector, _ = load_protector(out / "protector.pt")
    assert protector.spatial_dims == 3 and protector.native and protector.config()["class_values"] == [1, 2]
    assert protector.in_channels == 1  # a volume's last axis is spatial, not colour
    assert manifest["summary"]["num_images"] == 21 and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    for e in manifest["images"]:
        src, dst = nib.load(e["source"]), nib.load(e["output"])
        assert dst.shape == src.shape and dst.get_data_dtype() == src.get_data_dtype()
        assert np.array_equal(dst.affine, src.affine) and np.array_equal(dst.header.get_sform(), src.header.get_sform())
        a, b = np.asarray(src.dataobj, np.float64), np.asarray(dst.dataobj, np.float64)
        assert np.abs(b - a).max() <= 4 / 255 * (a.max() - a.min()) + 1e-5
        lab = np.asarray(nib.load(e["masks"][0]["source"]).dataobj)
        w = 3  # native grid: the band keeps its width
        near = binary_dilation(lab > 0, structure=np.ones((2 * w + 1,) * 3, bool))
        changed = np.abs(b - a) > 0
        assert changed.any() and not changed[~near].any()  # only the band and the ROI change
        assert (e["masks"][0]["sha256"] == hashlib.sha256(Path(e["masks"][0]["source"]).read_bytes()).hexdigest())
    v = json.loads((out / "verification" / "protected" / "metrics.json").read_text())
    assert v["spatial_dims"] == 3 and len(v["dsc_per_class"]) == 2
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--datalist", str(data / "split.json"),
                   "--output_dir", str(tmp_path / "lsp"), "--protector", "lsp", "--verify", "false", check=False)
    assert proc.returncode == 1 and "works on 2D images only" in proc.stderr and "Traceback" not in proc.stderr


def _nnunet_two_modalities(root: Path, n: int, shape=(20, 24, 18)) -> Path:
    """An nnU-Net v2 raw dataset whose images have two channel files: ``_0000`` int16 on an MRI-like scale, ``_0001``
    float32 in [0, 1] (each its own intensity range), labels 0/1/2."""
    import nibabel as nib

    rng = np.random.default_rng(5)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    affine = np.diag([1.2, 1.0, 2.5, 1.0])
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        c = rng.integers(6, 11, 3)
        lab[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16] = 1
        lab[(zz - c[0] - 5) ** 2 + (yy - c[1] - 6) ** 2 + (xx - c[2] - 4) ** 2 <= 9] = 2
        t1 = (rng.random(shape) * 200 + (lab == 1) * 900 + (lab == 2) * 500).astype(np.int16)
        t2 = (rng.random(shape) * 0.3 + (lab == 2) * 0.7).astype(np.float32)
        nib.save(nib.Nifti1Image(t1, affine), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(t2, affine), root / "imagesTr" / f"case_{i:03d}_0001.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": n,
        "file_ending": ".nii.gz"}))
    return root


def test_protect_nnunet_channel_files(tmp_path):
    """An nnU-Net dataset with one file per channel: the networks get both channels, each channel file is written
    back in its own dtype and affine within epsilon times its own intensity range, only near the labels; the
    manifest lists the channel files; the verification's exploiter reads the written pairs; a re-run keeps them."""
    import nibabel as nib

    from scipy.ndimage import binary_dilation

    data = _nnunet_two_modalities(tmp_path / "Dataset007_Two", n=24)
    before = _hashes(data)
    out = tmp_path / "out"
    args = ["--dataset_dir", str(data), "--output_dir", str(out), "--steps", "4", "--phase_steps", "2",
            "--batch_size", "4", "--verify_steps", "4", "--measure_survival", "false"]
    _bundle("protect", "protect.json", *args)
    assert _hashes(data) == before
    protector, _ = load_protector(out / "protector.pt")
    assert protector.spatial_dims == 3 and protector.in_channels == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["num_images"] == 24 and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    changed_channels = set()
    for e in manifest["images"]:
        files = e["channel_files"]
        assert [Path(f["source"]).name for f in files] == [f"{e['name']}_0000.nii.gz", f"{e['name']}_0001.nii.gz"]
        assert (e["source"], e["output"]) == (files[0]["source"], files[0]["output"])
        lab = np.asarray(nib.load(e["masks"][0]["source"]).dataobj)
        near = binary_dilation(lab > 0, structure=np.ones((7, 7, 7), bool))
        for k, f in enumerate(files):
            assert Path(f["output"]) == out / "protected" / "imagesTr" / Path(f["source"]).name
            assert f["sha256_output"] == hashlib.sha256(Path(f["output"]).read_bytes()).hexdigest()
            src, dst = nib.load(f["source"]), nib.load(f["output"])
            assert dst.get_data_dtype() == src.get_data_dtype() and np.array_equal(dst.affine, src.affine)
            a, b = np.asarray(src.dataobj, np.float64), np.asarray(dst.dataobj, np.float64)
            bound = 4 / 255 * (a.max() - a.min())  # each file on its own scale
            assert np.abs(b - a).max() <= bound + 1e-5 and f["bound_units"] == pytest.approx(bound)
            assert not (np.abs(b - a) > 0)[~near].any()
            if (b != a).any():
                changed_channels.add(k)
    assert changed_channels == {0, 1}
    v = json.loads((out / "verification" / "protected" / "metrics.json").read_text())
    assert v["spatial_dims"] == 3 and len(v["dsc_per_class"]) == 2
    applied = tmp_path / "applied"
    apply = ["--protector_file", str(out / "protector.pt"), "--dataset_dir", str(data), "--output_dir", str(applied)]
    _bundle("apply", "apply.json", "--verify", "false", *apply)
    assert _hashes(applied / "protected") == _hashes(out / "protected")  # the saved protector gives the same files
    (applied / "protected" / "imagesTr" / "case_005_0001.nii.gz").unlink()  # one channel file lost: only its image
    _bundle("apply", "apply.json", "--verify", "false", *apply)
    assert json.loads((applied / "manifest.json").read_text())["summary"]["skipped_existing"] == 23
    assert _hashes(applied / "protected") == _hashes(out / "protected")


def _ct_balls(rng: np.random.Generator, n: int, shape: tuple[int, int, int], centre: tuple[int, int],
              radius2: int, base: float):
    """``n`` int16 volumes ``(i, label, volume)``: a ball of squared radius ``radius2`` (label 1, centre drawn in
    ``[centre[0], centre[1])`` per axis) 1200 above a noisy background of ``base`` to ``base + 300``."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        c = rng.integers(*centre, 3)
        lab[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius2] = 1
        yield i, lab, (rng.random(shape) * 300 + base + (lab > 0) * 1200.0).astype(np.int16)


def test_protect_nrrd_volumes(tmp_path):
    """NRRD volumes (SimpleITK): written back with the same pixel type, spacing, origin, direction and metadata, the
    bound re-checked on the stored values, changes only near the labels, masks copied byte for byte."""
    import SimpleITK as sitk

    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(2)
    data = tmp_path / "input"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i, lab, vol in _ct_balls(rng, 10, (18, 22, 20), (6, 12), 16, -1000):  # CT-like values in HU
        for arr, folder in ((vol, "images"), (lab, "masks")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((0.8, 0.8, 2.5))
            img.SetOrigin((-120.0, 33.0, 7.5))
            img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
            img.SetMetaData("scanner", "test")
            sitk.WriteImage(img, str(data / folder / f"ct_{i}.nrrd"))
    before = _hashes(data)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), "--steps", "4",
            "--phase_steps", "2", "--batch_size", "4", "--verify", "false", "--measure_survival", "false")
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["spatial_dims"] == 3 and manifest["summary"]["num_images"] == 10
    changed_any = False
    for e in manifest["images"]:
        assert e["format_in"] == e["format_out"] == "ITK" and e["output"].endswith(".nrrd")
        src, dst = sitk.ReadImage(e["source"]), sitk.ReadImage(e["output"])
        assert dst.GetPixelID() == src.GetPixelID() and dst.GetSpacing() == src.GetSpacing()
        assert dst.GetOrigin() == src.GetOrigin() and dst.GetDirection() == src.GetDirection()
        assert dst.GetMetaData("scanner") == "test"
        a = sitk.GetArrayFromImage(src).astype(np.float64)
        b = sitk.GetArrayFromImage(dst).astype(np.float64)
        assert np.abs(b - a).max() <= np.floor(4 / 255 * (a.max() - a.min()) + 1e-6)  # whole HU steps
        lab = sitk.GetArrayFromImage(sitk.ReadImage(e["masks"][0]["source"]))
        near = binary_dilation(lab > 0, structure=np.ones((7, 7, 7), bool))
        assert not (b != a)[~near].any()
        changed_any |= bool((b != a).any())
        assert e["masks"][0]["sha256"] == hashlib.sha256(Path(e["masks"][0]["source"]).read_bytes()).hexdigest()
    assert changed_any


def test_protect_dicom_series(tmp_path, dicom_series):
    """DICOM series folders with NRRD masks (the SimpleITK axis order): each series is written back as a folder of
    the same files, every data element kept but the pixel data and the instance UIDs, the bound re-checked in
    Hounsfield units, changes only near the labels, masks copied byte for byte; a re-run keeps what it wrote."""
    import pydicom
    import SimpleITK as sitk

    from scipy.ndimage import binary_dilation

    rng = np.random.default_rng(5)
    data = tmp_path / "input"
    (data / "masks").mkdir(parents=True)
    for i, lab, stored in _ct_balls(rng, 8, (12, 22, 20), (5, 8), 12, 0):  # stored values; HU = stored - 1024
        dicom_series(data / "images" / f"ct_{i}", stored, order=list(rng.permutation(stored.shape[0])))
        sitk.WriteImage(sitk.GetImageFromArray(lab), str(data / "masks" / f"ct_{i}.nrrd"))
    before = _hashes(data)
    out = tmp_path / "out"
    args = ("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), "--steps", "4",
            "--phase_steps", "2", "--batch_size", "4", "--verify", "false", "--measure_survival", "false")
    _bundle(*args)
    assert _hashes(data) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["spatial_dims"] == 3 and manifest["summary"]["num_images"] == 8
    changed_any = False
    for e in manifest["images"]:
        src, dst = Path(e["source"]), Path(e["output"])
        assert e["format_in"] == e["format_out"] == "DICOM" and dst == out / "protected" / "images" / src.name
        assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())
        a, b = read_raw(src), read_raw(dst)
        assert b.stored().dtype == np.int16 and (b.slope, b.inter) == (a.slope, a.inter) == (1.0, -1024.0)
        diff = np.abs(b.array - a.array)
        assert diff.max() <= np.floor(4 / 255 * (a.array.max() - a.array.min()) + 1e-6)  # whole HU steps
        lab = sitk.GetArrayFromImage(sitk.ReadImage(e["masks"][0]["source"]))
        assert not (diff > 0)[~binary_dilation(lab > 0, structure=np.ones((7, 7, 7), bool))].any()
        changed_any |= bool((diff > 0).any())
        first = sorted(src.iterdir())[0]
        d0, d1 = pydicom.dcmread(first), pydicom.dcmread(dst / first.name)
        assert d1.PatientName == d0.PatientName and d1.ImagePositionPatient == d0.ImagePositionPatient
        assert d1.SOPInstanceUID != d0.SOPInstanceUID
        assert e["masks"][0]["sha256"] == hashlib.sha256(Path(e["masks"][0]["source"]).read_bytes()).hexdigest()
    assert changed_any
    written = _hashes(out / "protected")
    _bundle(*args)  # the same command again: every series is kept as written
    assert _hashes(out / "protected") == written


def test_protect_robust_trains_through_the_countermeasures(tmp_path):
    """``--robust true``: the generators train through the differentiable countermeasures; the written files keep
    the same bounds; the setting is recorded."""
    from monai_umed.defenses import ROBUST_DEFAULT

    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=4)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            "--robust", "true", "--verify", "false")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["robust"] == list(ROBUST_DEFAULT) and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    # augment moves images and labels together through the same trainer
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "aug"), *STEPS,
            "--robust", "identity,augment", "--verify", "false")
    manifest = json.loads((tmp_path / "aug" / "manifest.json").read_text())
    assert manifest["settings"]["robust"] == ["identity", "augment"] and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6


def test_robust_surrogate_wires_the_surrogate_view(tmp_path):
    """``--robust_surrogate false``: the trainer's generator steps go through the countermeasures, its surrogate
    steps see the plain protected batch; ``true`` (the default) gives both phases the same view; the written
    files keep the bound and the manifest records the choice. ``--rem_surrogate false`` does the same for REM's
    attack (``--rem_epsilon``), with or without ``--robust``."""
    from monai.bundle import ConfigParser

    from monai_umed.defenses import EOTDefense

    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=4)
    for flag, shared in ((None, True), ("true", True), ("false", False)):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "protect.json"))
        parser.update({"dataset_dir": str(data), "output_dir": str(tmp_path / "cfg"), "robust": "true",
                       "image_size": 32, **({} if flag is None else {"robust_surrogate": flag})})
        trainer = parser.get_parsed_content("trainer")
        assert isinstance(trainer.generator_transform, EOTDefense)
        assert (trainer.surrogate_transform is trainer.generator_transform) is shared
        assert shared or trainer.surrogate_transform is None
    # --rem_surrogate false: REM's attack in the generator steps only; the surrogate keeps the rest of the view
    from monai_umed.defenses import AdversarialView

    for robust, rem_flag in (("true", "false"), (False, "false"), ("true", "true")):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "protect.json"))
        parser.update({"dataset_dir": str(data), "output_dir": str(tmp_path / "cfg"), "robust": robust,
                       "image_size": 32, "rem_epsilon": "2/255", "rem_surrogate": rem_flag})
        trainer = parser.get_parsed_content("trainer")
        assert isinstance(trainer.generator_transform, AdversarialView)
        if rem_flag == "true":
            assert trainer.surrogate_transform is trainer.generator_transform
        else:
            assert trainer.surrogate_transform is trainer.generator_transform.countermeasure
            assert isinstance(trainer.surrogate_transform, EOTDefense) is (robust == "true")
        assert parser.get_parsed_content("protector_settings")["rem_surrogate"] is (rem_flag == "true")
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            "--robust", "true", "--robust_surrogate", "false", "--verify", "false")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["robust_surrogate"] is False and manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6


def test_protect_rem_trains_under_the_attack(tmp_path):
    """``--rem_epsilon``: generator and surrogate steps see the PGD-attacked protected batch (REM), here after
    ``--rescale`` (the 48-px batch also drawn at 32 px); the written files keep the protection's bound (the
    attack's radius is not part of the perturbation); both recorded."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=4)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            "--rem_epsilon", "2/255", "--rem_steps", "2", "--rescale", "0.5", "--image_size", "48", "--verify", "false")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["rem_epsilon"] == "2/255" and manifest["settings"]["rem_steps"] == 2
    assert manifest["settings"]["rescale"] == 0.5
    # the trainer trained through both views: REM's attack and the rescale view each checkpoint their random state
    checkpoint = torch.load(out / "checkpoints" / "checkpoint_final.pt", weights_only=False)
    assert {k for k in checkpoint if k.startswith("view_generator_")} == {"view_generator_0", "view_generator_1"}
    assert 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6


@pytest.mark.parametrize("option, value", [("lowpass", 2), ("highpass", 2), ("file_size", 64)])
def test_protect_field_options_are_recorded_and_rebuilt(tmp_path, option, value):
    """``--lowpass 2`` / ``--highpass 2``: the generators' raw fields go through ``lowpass_field`` /
    ``highpass_field`` in training and writing; ``--file_size 64``: training sees the deltas through the write round
    trip. The files keep the bound, the manifest records the setting, the saved protector is rebuilt with it, and a
    bad value stops the job with its name."""
    from monai_umed.networks import highpass_field, lowpass_field

    field = {"lowpass": lowpass_field, "highpass": highpass_field}.get(option)
    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(32, 32), seed=4)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            f"--{option}", str(value), "--verify", "false")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["perturbator"][option] == value
    assert 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    protector, _ = load_protector(out / "protector.pt")
    assert getattr(protector.perturbator, option) == value
    if field is not None:
        x = torch.rand(1, 1, 32, 32)
        with torch.no_grad():
            raw_c, _ = protector.perturbator.generator_outputs(x)
            torch.testing.assert_close(raw_c, field(protector.perturbator.contour.generator_output(x), value))
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "bad"), *STEPS,
                   f"--{option}", "0", "--verify", "false", check=False)
    assert proc.returncode != 0 and f"{option} must be" in proc.stdout + proc.stderr


def test_protect_view_fit_is_recorded_rebuilt_and_keeps_the_bound(tmp_path):
    """``--view_fit 10`` on files larger than the training size: the job writes every file within the bound, the
    manifest and the saved protector carry the setting, and a bad value stops the job with its name."""
    data = make_synthetic_dataset(tmp_path / "input", num_images=6, size=(56, 48), seed=4)
    out = tmp_path / "out"
    _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(out), *STEPS,
            "--view_fit", "10", "--verify", "false")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["view_fit"] == 10 and manifest["summary"]["num_images"] == 6
    assert 0 < manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6
    protector, _ = load_protector(out / "protector.pt")
    assert protector.view_fit == 10
    proc = _bundle("protect", "protect.json", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "bad"), *STEPS,
                   "--view_fit", "-3", "--verify", "false", check=False)
    assert proc.returncode != 0 and "view_fit must be" in proc.stdout + proc.stderr

# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""Several processes (``torchrun``, gloo on the CPU): the optimisation does not depend on the number of processes,
the writer's shards make the same files as one process, rank 0 alone saves and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import monai_umed.distributed as mud
from monai_umed.data import make_synthetic_dataset

HERE = Path(__file__).parent
CONFIGS = HERE.parents[1] / "bundles" / "umed" / "configs"


def _torchrun(n: int, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={n}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("ddp") / "data", num_images=8, size=(32, 32), seed=1)


def test_two_processes_train_like_one(tmp_path, data):
    """UMed trained by 2 processes (DDP, half of each global batch per process) ends with the weights of 1 process
    on the whole batches: generators, surrogate (re-initialised on the way), and the convergence rule's loss ratio
    (all-reduced). Both ranks hold the same weights, and training did move them."""
    env = {"S": "12", "R": "2"}
    subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(data), str(tmp_path / "one")], check=True,
                   env={**os.environ, **env}, capture_output=True, timeout=600)
    _torchrun(2, str(HERE / "ddp_worker.py"), str(data), str(tmp_path / "two"), env=env)
    one, r0, r1 = (torch.load(tmp_path / f, weights_only=False) for f in ("one0.pt", "two0.pt", "two1.pt"))
    for part in ("perturbator", "surrogate"):
        assert _max_diff(r0[part], r1[part]) == 0.0
        assert _max_diff(one[part], r0[part]) < 1e-5, part
        assert _max_diff(one[part], one["init"][part]) > 1e-3, part  # the comparison is not between untrained nets
    assert one["epochs"] == r0["epochs"] == 6
    assert r0["loss_ratio"] == r1["loss_ratio"] and abs(one["loss_ratio"] - r0["loss_ratio"]) < 1e-5


def test_protect_with_torchrun_writes_what_one_process_writes(tmp_path, data):
    """``torchrun ... protect.json + multi_gpu.json``: one manifest in datalist order (no per-rank leftovers), one
    protector file and checkpoints from rank 0; re-applying the saved protector in one process (``apply``) writes
    the same files byte for byte, so the shards are the single-process output."""
    out = tmp_path / "out"
    configs = str([str(CONFIGS / "protect.json"), str(CONFIGS / "multi_gpu.json")])
    args = ["--dataset_dir", str(data), "--image_size", "32", "--steps", "8", "--phase_steps", "2", "--batch_size", "4",
            "--band_width", "1", "--verify", "false", "--measure_survival", "false"]
    _torchrun(2, "-m", "monai.bundle", "run", "protect", "--config_file", configs, "--output_dir", str(out), *args)
    manifest = json.loads((out / "manifest.json").read_text())
    sources = [Path(e["source"]).name for e in manifest["images"]]
    assert sources == sorted(p.name for p in (data / "images").iterdir()) and len(sources) == 8
    assert not list(out.glob("manifest.rank*.json")) and (out / "protector.pt").is_file()
    assert manifest["summary"]["linf_max"] <= 4 / 255 + 1e-6 and manifest["summary"]["num_unchanged"] == 0
    assert (out / "checkpoints" / "checkpoint_final.pt").is_file()

    again = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "apply", "--config_file", str(CONFIGS / "apply.json"), "--verify", "false",
                    "--dataset_dir", str(data), "--protector_file", str(out / "protector.pt"), "--output_dir",
                    str(again)], check=True, capture_output=True, timeout=600)
    reapplied = {Path(e["source"]).name: e["sha256_output"] for e in
                 json.loads((again / "manifest.json").read_text())["images"]}
    assert reapplied == {Path(e["source"]).name: e["sha256_output"] for e in manifest["images"]}


def test_baselines_are_refused_under_torchrun(monkeypatch):
    """Multi-process protection is UMed's: a baseline protector under several processes is a one-line error."""
    from monai_umed.apps import build_protector
    from monai_umed.utils import UserInputError

    monkeypatch.setattr(mud, "is_distributed", lambda: True)
    with pytest.raises(UserInputError, match="umed only"):
        build_protector("lsp", None, 1, 4 / 255, ["a"], 32)


def test_helpers_in_one_process(monkeypatch):
    """Outside torchrun every helper is the identity or a no-op; the global batch must split evenly."""
    net = torch.nn.Linear(2, 2)
    assert mud.rank_and_world() == (0, 1) and mud.is_main_process() and not mud.is_distributed()
    assert mud.ddp(net) is net and mud.unwrap(net) is net and mud.unwrap(torch.nn.DataParallel(net)) is net
    assert mud.shard([1, 2, 3]) == [1, 2, 3] and mud.all_gather_objects("x") == ["x"]
    assert mud.all_reduce_mean([1.0, 2.5]) == [1.0, 2.5] and mud.per_rank_batch(16) == 16
    assert mud.distributed_sampler([1, 2]) is None
    mud.barrier()
    monkeypatch.setattr(mud, "rank_and_world", lambda: (1, 2))
    assert mud.shard([0, 1, 2, 3, 4]) == [1, 3] and mud.per_rank_batch(16) == 8
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        mud.per_rank_batch(15)


def test_train_exploiter_with_torchrun_scores_like_one_process(tmp_path, data):
    """``torchrun ... train_exploiter.json + multi_gpu_exploit.json``: each rank scores its share of the test set,
    rank 0 writes one result; the per-image scores equal a single-process evaluation of the saved model (plain
    ``state_dict`` keys, no ``module.`` prefix), only rank 0 writes a TensorBoard file, and the processes free their
    DDP network before the interpreter's teardown (an abort there once failed a finished run)."""
    from monai.data import DataLoader, Dataset

    from monai_umed.apps.exploit import evaluate_exploiter, exploit_items, exploit_transforms, resolve_exploit_data
    from monai_umed.apps.split import write_split
    from monai_umed.networks import get_exploiter

    split = write_split(data, tmp_path / "split.json", test_fraction=0.25, seed=0)
    out = tmp_path / "ex"
    sizes = "{'channels': (4, 8, 16), 'strides': (2, 2), 'num_res_units': 1}"
    configs = str([str(CONFIGS / "train_exploiter.json"), str(CONFIGS / "multi_gpu_exploit.json")])
    # ``python -m monai.bundle run ...`` through a wrapper that looks, at exit, for DDP wrappers still alive
    report = tmp_path / "exit"
    report.mkdir()
    _torchrun(2, str(HERE / "bundle_exit_worker.py"), str(report), "run", "train_exploiter", "--config_file", configs,
              "--dataset_dir", str(data), "--datalist", str(split), "--output_dir", str(out), "--image_size", "32",
              "--max_epochs", "2", "--batch_size", "4", "--lr", "0.01", "--progress", "false", "--exploiter_kwargs",
              sizes)
    # the finished workflow (held by reference cycles) and its DDP network were freed before the interpreter's
    # teardown, on both ranks: no gloo thread is left to release a collective's tensors after Python is gone
    assert [(report / f"rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(list((out / "logs").iterdir())) == 1

    net = get_exploiter("unet", channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    net.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    _, test = resolve_exploit_data(data, split, None)
    assert metrics["n_test"] == len(test) >= 2  # both ranks had a share
    loader = DataLoader(Dataset(exploit_items(test), exploit_transforms(32, 1, None, None, 2, train=False)), batch_size=4)
    summary, rows = evaluate_exploiter(net, loader)
    assert summary["dsc"] == pytest.approx(metrics["dsc"], abs=1e-6)
    written = (out / "per_image.csv").read_text().splitlines()[1:]
    assert {r.split(",")[0]: float(r.split(",")[2]) for r in written} == pytest.approx(
        {r["name"]: r["dsc"] for r in rows}, abs=1e-5)

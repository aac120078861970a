"""Two processes under torchrun on the CPU (gloo): the same ``train`` as one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

pytestmark = [
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available"
    ),
    pytest.mark.slow,
]  # torchrun starts processes


def _torchrun(args, tmp_path, timeout=90):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tspike_lab",
        "train",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def test_two_gloo_processes_train_digits_and_rank_0_alone_writes_the_run(tmp_path):
    out = tmp_path / "run"
    done = _torchrun(
        [
            "--dataset",
            "digits",
            "--arch",
            "small",
            "--width",
            "8",
            "--batch-size",
            "32",
            "--epochs",
            "2",
            "--no-progress",
            "--out-dir",
            str(out),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads(done.stdout)  # one JSON document: rank 1 printed nothing
    assert final["epoch"] == 2
    # each rank takes 22 steps of 32 per epoch over its half of the 1437 training images
    assert final["step"] == 44
    assert final["test_acc"] > 0.7  # measured 0.88 (one process, same budget: 0.90-0.93)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_acc"] == final["test_acc"]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the bare model, not the DDP wrapper
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl"]


def test_sync_bn_on_cpu_processes_is_refused_with_a_reason(monkeypatch, tmp_path):
    from tspike_lab import train as train_mod

    two_cpu_ranks = train_mod._Dist(rank=0, world_size=2, local_rank=0, owns_group=False)
    monkeypatch.setattr(train_mod, "_setup_distributed", lambda config: (two_cpu_ranks, torch.device("cpu")))
    with pytest.raises(ValueError, match=r"sync_bn=True needs CUDA.*'cpu'"):
        train_mod.train(train_mod.TrainConfig(sync_bn=True, out_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()

"""Real training processes: SIGKILL then --resume reproduces the uninterrupted run exactly,
and the same command runs under torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from jsqa.training.loop import read_metrics

pytestmark = pytest.mark.slow  # real training processes, SIGKILL and torchrun

PRETRAIN = [sys.executable, "-m", "jsqa.training.cli", "pretrain", "--config", "tiny"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, data_root):
    args = ["--steps", "10", "--checkpoint-every", "2", "--seed", "3"]
    straight = tmp_path / "straight"
    subprocess.run([*PRETRAIN, *args, "--out", str(straight)], check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*PRETRAIN, *args, "--out", str(killed)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "final.ckpt").exists(), "the run finished before it could be killed"
    step_at_kill = torch.load(killed / "last.ckpt", weights_only=False)["step"]
    assert step_at_kill < 10

    subprocess.run([*PRETRAIN, *args, "--out", str(killed), "--resume"], check=True, env=_env(),
                   capture_output=True)
    a = torch.load(straight / "final.ckpt", weights_only=False)["state_dict"]
    b = torch.load(killed / "final.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_metrics(straight / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in rb] == list(range(1, 11))
    assert [r["loss"] for r in rb] == [r["loss"] for r in ra]


def test_torchrun_two_processes(tmp_path, data_root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "jsqa.training.cli", "pretrain", "--config", "tiny", "--steps", "3", "--out", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = torch.load(out / "last.ckpt", weights_only=False)
    assert last["step"] == 3 and last["training"]["processes"] == 2
    # Each rank drew its own batches (per-rank sampler seeds); rank 0 alone logged.
    states = last["rank_states"]
    assert len(states) == 2 and states[0]["source"] != states[1]["source"]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "final.ckpt").exists()

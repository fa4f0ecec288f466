"""Checkpoints that survive: kill -9 and resume bit-exactly, SIGUSR1 -> checkpoint + exit 75,
a corrupted newest checkpoint falls back, a kill during a write never corrupts `last`."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mnist_hpc.errors import EXIT_INTERRUPTED
from mnist_hpc.training import checkpoint as ckpt

# dropout (global RNG) + augmentation (per-batch RNG) + a step schedule: every state must survive
SLOW = [
    "--set",
    "model={name: cnn, channels: [8, 16], hidden: 32}",
    "--set",
    "data.batch_size=16",
    "--set",
    "train.epochs=3",
    "--set",
    "runtime.deterministic=true",
    "--set",
    "data.augment={shift: 2, rotate: 10}",
    "--set",
    "optim={name: sgd, lr: 0.05, schedule: cosine}",
    "--set",
    "train.checkpoint={every: 7, unit: steps, keep: 3}",
]


def start(tiny_config, synth_root, run_dir, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_hpc",
            "train",
            str(tiny_config),
            "--data-dir",
            str(synth_root),
            "--run-dir",
            str(run_dir),
            *SLOW,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_for_checkpoint(run_dir, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if list((run_dir / "checkpoints").glob("last-*.pt")):
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.005)
    raise AssertionError("no checkpoint appeared")


def final_state(run_dir):
    (last,) = ckpt.list_checkpoints(run_dir / "checkpoints")[:1]
    return torch.load(last, weights_only=True)["model"], json.loads((run_dir / "summary.json").read_text())


@pytest.fixture
def reference(tiny_config, synth_root, tmp_path):
    ref = tmp_path / "reference"
    p = start(tiny_config, synth_root, ref)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    return final_state(ref)


def assert_same(a, b):
    wa, sa = a
    wb, sb = b
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    assert sa["test_accuracy"] == sb["test_accuracy"] and sa["test_loss"] == sb["test_loss"]


def test_kill9_then_resume_is_bit_exact(tiny_config, synth_root, tmp_path, reference):
    run = tmp_path / "killed"
    p = start(tiny_config, synth_root, run)
    wait_for_checkpoint(run, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL and not (run / "summary.json").exists()
    p = start(tiny_config, synth_root, run, "--resume", "auto")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    assert "resumed from" in out
    result = final_state(run)
    assert_same(result, reference)
    assert len(result[1]["requeues"]) == 1


@pytest.mark.slow  # a real multi-process or multi-run training: ~20-50 s on 2 cores
def test_sigusr1_checkpoints_at_next_step_and_resumes_identically(
    tiny_config, synth_root, tmp_path, reference
):
    run = tmp_path / "signalled"
    p = start(tiny_config, synth_root, run)
    wait_for_checkpoint(run, p)
    p.send_signal(signal.SIGUSR1)
    out = p.communicate(timeout=120)[0]
    assert p.returncode == EXIT_INTERRUPTED, out
    assert "stopped by signal" in out and "--resume auto" in out
    newest = ckpt.list_checkpoints(run / "checkpoints")[0]
    state = ckpt.load(newest)
    assert state["signal"] == "SIGUSR1"
    p = start(tiny_config, synth_root, run, "--resume", "auto")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    result = final_state(run)
    assert_same(result, reference)
    assert result[1]["requeues"][0]["signal"] == "SIGUSR1"


def test_corrupted_newest_checkpoint_falls_back(cli, tiny_config, synth_root, tmp_path):
    run = tmp_path / "r"
    args = [
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--run-dir",
        run,
        "--set",
        "train.checkpoint={every: 5, unit: steps, keep: 3}",
    ]
    assert cli(*args).code == 0
    newest, previous = ckpt.list_checkpoints(run / "checkpoints")[:2]
    newest.write_bytes(newest.read_bytes()[:1000])
    (run / "summary.json").unlink()
    r = cli(*args, "--resume", "auto")
    assert r.code == 0, r
    assert "warning:" in r.out and "trying the previous checkpoint" in r.out
    assert f"resumed from {previous}" in r.out
    assert f"run folder: {run} ·" in r.out  # the same run, continued in its own folder


def test_kill9_during_checkpoint_write_never_corrupts_last(tmp_path):
    """Kill a process while it writes big checkpoints; every file named last-* must load."""
    code = f"""
import torch, itertools
from mnist_hpc.training import checkpoint as c
big = torch.randn(30_000_000)
for i in itertools.count():
    c.save({{"epoch": i, "step": 0, "model": {{"w": big}}}}, {str(tmp_path)!r}, keep=2)
"""
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", code])
        t0 = time.time()
        while not list(tmp_path.glob(".last-*.tmp-*")) and time.time() - t0 < 60:
            time.sleep(0.002)  # kill while a temporary file is being written
        p.send_signal(signal.SIGKILL)
        p.wait()
        files = ckpt.list_checkpoints(tmp_path)
        for f in files:
            assert ckpt.load(f)["model"]["w"].numel() == 30_000_000
        for t in tmp_path.glob(".last-*.tmp-*"):
            t.unlink()


def test_nan_loss_stops_with_the_step_and_keeps_last_good(cli, tiny_config, synth_root, tmp_path):
    run = tmp_path / "nan"
    r = cli(
        "train",
        tiny_config,
        "--data-dir",
        synth_root,
        "--run-dir",
        run,
        "--set",
        "optim={name: sgd, lr: 1.0e+12}",
        "--set",
        "train.epochs=3",
    )
    assert r.code == 1, r
    assert "loss became NaN/infinite at optimizer step" in r.err
    for f in ckpt.list_checkpoints(run / "checkpoints"):
        state = ckpt.load(f)
        assert all(torch.isfinite(v).all() for v in state["model"].values())

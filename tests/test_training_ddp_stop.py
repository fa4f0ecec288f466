"""Two-process DDP runs (gloo, CPU) whose ranks disagree: a stop signal that reaches ONE rank
makes every rank checkpoint at the same step and stop (exit 75) well within 90 s, and `--resume
auto` completes the run with the same weights and test accuracy as an uninterrupted 2-process run
(deterministic mode); a minutes-based checkpoint that only one rank's clock says is due is taken
by every rank at a step they agree on."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import signal
import subprocess
import time

import pytest
import torch

from mnist_hpc.errors import EXIT_INTERRUPTED
from mnist_hpc.training import checkpoint as ckpt
from tests.ddp_support import _free_port, _rank_env, train_argv

# several gloo processes training for real: tens of seconds each on 2 cores
pytestmark = pytest.mark.slow

# 960 training images, global batch 16: 60 steps per epoch, so the ranks agree at steps 20 and 40
SETS = [
    "--set",
    "data.batch_size=16",
    "--set",
    "train.epochs=6",
    "--set",
    "runtime.deterministic=true",
    "--set",
    "optim={name: sgd, lr: 0.05, momentum: 0.9}",
    "--set",
    "runtime.dist_timeout=60",
]


def start_ranks(tiny_config, synth_root, run_dir, *extra):
    port = _free_port()
    return [
        subprocess.Popen(
            train_argv(tiny_config, synth_root, "--run-dir", str(run_dir), *SETS, *extra),
            env=_rank_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]


def finish(procs, timeout):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [p.returncode for p in procs], outs


def final(run_dir):
    newest = ckpt.load(ckpt.list_checkpoints(run_dir / "checkpoints")[0])
    return newest["model"], json.loads((run_dir / "summary.json").read_text())


def test_signal_to_one_rank_stops_all_ranks_and_resume_matches(tiny_config, synth_root, tmp_path):
    codes, outs = finish(start_ranks(tiny_config, synth_root, tmp_path / "ref"), timeout=300)
    assert codes == [0, 0], outs
    ref_weights, ref_summary = final(tmp_path / "ref")

    run = tmp_path / "stopped"
    procs = start_ranks(tiny_config, synth_root, run)
    t0 = time.time()
    while not ckpt.list_checkpoints(run / "checkpoints"):  # the first epoch is done
        assert all(p.poll() is None for p in procs), finish(procs, 60)
        assert time.time() - t0 < 240, "no checkpoint appeared"
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGUSR1)  # rank 1 only, as Slurm's --signal may reach the tasks
    t_signal = time.time()
    codes, outs = finish(procs, timeout=120)
    assert time.time() - t_signal < 90, outs
    assert codes == [EXIT_INTERRUPTED, EXIT_INTERRUPTED], outs
    assert "stopped by signal" in outs[0] and "--resume auto" in outs[0], outs[0]
    assert not (run / "summary.json").exists()
    state = ckpt.load(ckpt.list_checkpoints(run / "checkpoints")[0])
    assert state["step"] in (20, 40) and state["global_step"] % 20 == 0  # a step every rank agreed on

    codes, outs = finish(start_ranks(tiny_config, synth_root, run, "--resume", "auto"), timeout=300)
    assert codes == [0, 0], outs
    assert "resumed from" in outs[0]
    weights, summary = final(run)
    assert all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights), "weights differ"
    assert summary["test_accuracy"] == ref_summary["test_accuracy"]
    assert summary["test_loss"] == ref_summary["test_loss"]
    assert len(summary["requeues"]) == 1 and summary["world_size"] == 2


def _clock_rank(rank, port, root, out_dir, fast_clock):
    """One rank of a run launched through TrainContext.launch_env; rank 1's clock races."""
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training import trainer
    from mnist_hpc.training.context import TrainContext
    from mnist_hpc.training.run import run_training

    if fast_clock:  # every reading of this rank's clock is a minute and a second later than the last
        readings = itertools.count()
        start = time.time()
        trainer.time = type("FastClock", (), {"time": staticmethod(lambda: start + 61 * next(readings))})
    cfg = config_from_dict(
        {
            "experiment": {"name": "clock", "seed": 0, "output_dir": out_dir},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 16, "eval_batch_size": 256},
            "model": {"name": "mlp", "hidden": [32]},
            "optim": {"name": "sgd", "lr": 0.05},
            "train": {"epochs": 2, "checkpoint": {"every": 1, "unit": "minutes", "keep": 20}},
            "runtime": {"threads": 1, "dist_timeout": 60},
        }
    )
    launch = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    run_training(
        cfg,
        ctx=TrainContext(launch_env=launch, launcher="slurm", run_name_suffix="job1"),
        data_dir=root,
        progress=False,
        echo=lambda m: None,
    )


def test_a_checkpoint_due_on_one_rank_clock_is_taken_by_all_at_one_step(synth_root, tmp_path, monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    port, spawn = _free_port(), multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_clock_rank, args=(r, port, str(synth_root), str(tmp_path), r == 1))
        for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    run = tmp_path / "clock-job1"  # the folder named by the context's job suffix
    names = sorted(p.name for p in ckpt.list_checkpoints(run / "checkpoints"))
    # 60 steps per epoch: rank 1's clock asks at every agreement point, steps 20 and 40 of each epoch
    for mid in (
        "last-epoch0001-step000020.pt",
        "last-epoch0001-step000040.pt",
        "last-epoch0002-step000020.pt",
    ):
        assert mid in names, names
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["launcher"] == "slurm"

"""Training knows no scheduler: what it needs (stop flag, on-preempt callback, job facts, CPUs,
offline, launch variables) arrives in a TrainContext; the run folder resolution, metrics rows and
the precision policy are public pieces with their own contracts."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import torch

from mnist_hpc.config import config_from_dict
from mnist_hpc.errors import ConfigError, DataError, Interrupted
from mnist_hpc.runs.folder import MetricsRow, locate_run_dir, read_metrics_csv
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training.build import cpu_threads, precision_policy
from mnist_hpc.training.context import PreemptInfo, TrainContext
from mnist_hpc.training.run import run_training
from mnist_hpc.training.stopflag import StopFlag
from tests.paths import ROOT


def tiny(tmp_path, **train):
    return config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 64, "eval_batch_size": 256},
            "model": {"name": "mlp", "hidden": [32]},
            "optim": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, **train},
            "runtime": {"threads": 1},
        }
    )


def signalled(signum) -> StopFlag:
    """A stop flag that has already seen ``signum`` (as if the signal arrived at the first step)."""
    flag = StopFlag()
    flag.received = signum
    return flag


def test_on_preempt_gets_the_stop_and_a_requeue_ends_quietly(synth_root, tmp_path, capsys):
    seen = []

    def requeue(info: PreemptInfo) -> bool:
        seen.append(info)
        return True

    ctx = TrainContext(stop=signalled(signal.SIGUSR1), on_preempt=requeue)
    with pytest.raises(Interrupted, match="requeued"):
        run_training(tiny(tmp_path), ctx=ctx, data_dir=synth_root, run_dir=tmp_path / "r", progress=False)
    (info,) = seen
    assert (info.epoch, info.step, info.signal, info.requeue_requested) == (0, 1, "SIGUSR1", True)
    assert info.run_dir == tmp_path / "r" and info.checkpoint_dir == tmp_path / "r" / "checkpoints"
    newest = ckpt.load(ckpt.list_checkpoints(info.checkpoint_dir)[0])
    assert (newest["epoch"], newest["step"], newest["signal"]) == (0, 1, "SIGUSR1")
    assert "stopped by signal" not in capsys.readouterr().out


def test_without_a_requeue_the_stop_says_how_to_resume(synth_root, tmp_path, capsys):
    seen = []
    ctx = TrainContext(stop=signalled(signal.SIGTERM), on_preempt=lambda info: seen.append(info) or False)
    with pytest.raises(Interrupted):
        run_training(tiny(tmp_path), ctx=ctx, data_dir=synth_root, run_dir=tmp_path / "r", progress=False)
    assert seen[0].requeue_requested is False  # TERM is not the configured requeue signal
    out = capsys.readouterr().out
    assert (
        f"stopped by signal at epoch 1, step 1; checkpoint saved in {tmp_path / 'r' / 'checkpoints'}" in out
    )
    assert f"--run-dir {tmp_path / 'r'} --resume auto" in out


def test_a_job_folder_is_found_again_after_a_requeue(synth_root, tmp_path):
    job = {"job_id": "4242", "array_task_id": None, "run_name_suffix": "job4242"}
    with pytest.raises(Interrupted):
        run_training(
            tiny(tmp_path),
            ctx=TrainContext(stop=signalled(signal.SIGUSR1), **job),
            data_dir=synth_root,
            progress=False,
        )
    folder = tmp_path / "runs" / "tiny-job4242"
    assert ckpt.list_checkpoints(folder / "checkpoints")
    # the requeued job starts again with the same suffix: it resumes in its folder by itself
    s = run_training(
        tiny(tmp_path), ctx=TrainContext(restart_count=1, **job), data_dir=synth_root, progress=False
    )
    assert s.run_dir == folder and [p.name for p in (tmp_path / "runs").iterdir()] == ["tiny-job4242"]
    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk["slurm_job_id"] == "4242" and on_disk["slurm_array_task_id"] is None
    (requeue,) = on_disk["requeues"]
    assert requeue["slurm_restart_count"] == 1 and requeue["signal"] == "SIGUSR1"
    assert on_disk["summary_version"] == 2 and on_disk["process_seconds"] <= on_disk["total_seconds"]


def test_offline_context_never_downloads(tmp_path):
    with pytest.raises(DataError, match="compute nodes have no internet"):
        run_training(
            tiny(tmp_path), ctx=TrainContext(offline=True), data_dir=tmp_path / "empty", progress=False
        )


def test_threads_come_from_the_context(synth_root, tmp_path, capsys):
    cfg = config_from_dict({**tiny(tmp_path).to_dict(), "runtime": {"threads": None}})
    run_training(cfg, ctx=TrainContext(cpus=1), data_dir=synth_root, run_dir=tmp_path / "t", progress=False)
    assert "cpu (1 CPU threads)" in capsys.readouterr().out
    assert cpu_threads(3, 8, 2, usable=16) == 3 and cpu_threads(None, 8, 2, usable=16) == 8
    assert cpu_threads(None, None, 10**6) == 1


def test_epoch_clock_counts_queued_device_work(synth_root, tmp_path, monkeypatch):
    """The epoch's seconds are read after the device has finished its queued work."""
    from mnist_hpc.training import trainer

    monkeypatch.setattr(trainer, "sync_device", lambda device: time.sleep(0.3))  # a slow GPU's queue
    s = run_training(tiny(tmp_path), data_dir=synth_root, run_dir=tmp_path / "c", progress=False)
    rows = read_metrics_csv(s.run_dir)
    assert len(rows) == 2 and all(r.seconds >= 0.3 for r in rows), rows


def test_metrics_rows_are_typed(synth_root, tmp_path):
    s = run_training(tiny(tmp_path), data_dir=synth_root, run_dir=tmp_path / "m", progress=False)
    rows = read_metrics_csv(s.run_dir / "metrics.csv")
    assert [r.epoch for r in rows] == [1, 2] and all(isinstance(r, MetricsRow) for r in rows)
    assert isinstance(rows[0].train_loss, float) and 0 <= rows[1].val_acc <= 1
    assert rows[0].get("lr") == rows[0].lr and set(rows[0].to_dict()) >= {"epoch", "val_loss", "images_per_s"}
    assert read_metrics_csv(tmp_path / "nothing-here") == []


def test_run_folder_resolution(tmp_path):
    cfg = tiny(tmp_path)
    out = tmp_path / "runs"
    assert locate_run_dir(cfg, None, None, "job7_3")[:2] == (out / "tiny-job7_3", None)
    (out / "tiny-job7_3" / "checkpoints").mkdir(parents=True)
    assert locate_run_dir(cfg, None, None, "job7_3")[:2] == (out / "tiny-job7_3", "auto")
    new, resume, fresh = locate_run_dir(cfg, None, None, None)
    assert re.fullmatch(r"tiny-\d{8}-\d{6}", new.name) and resume is None and fresh
    assert locate_run_dir(cfg, None, "auto", None)[:2] == (out / "tiny-job7_3", "auto")  # newest unfinished
    assert locate_run_dir(cfg, None, str(out / "tiny-job7_3"), None)[:2] == (out / "tiny-job7_3", "auto")


def test_one_precision_policy(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="needs CUDA"):
        precision_policy("fp16", cpu)
    p = precision_policy("bf16", cpu)
    assert (p.name, p.dtype, p.grad_scaler()) == ("bf16", torch.bfloat16, None)
    with p.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert precision_policy("none", cpu).name == "fp32"
    assert precision_policy("none", cpu, deterministic=True) and torch.are_deterministic_algorithms_enabled()
    precision_policy("none", cpu, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from mnist_hpc.training import build

    cpu = torch.device("cpu")
    monkeypatch.setattr(build, "native_bf16", lambda device: True)
    assert precision_policy("auto", cpu).name == "bf16"
    monkeypatch.setattr(build, "native_bf16", lambda device: False)
    assert precision_policy("auto", cpu).name == "fp32"
    monkeypatch.undo()
    # the real probe answers for this machine's CPU without raising
    assert isinstance(build.native_bf16(cpu), bool) and build.native_bf16(torch.device("meta")) is False
    # CUDA: compute capability 8 (Ampere) and newer compute bf16; a V100 or T4 only emulates it
    cuda = torch.device("cuda", 0)
    for major, native in [(7, False), (8, True), (9, True)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, m=major: (m, 0))
        assert build.native_bf16(cuda) is native


@pytest.mark.parametrize("user_env", [{}, {"MALLOC_MMAP_THRESHOLD_": "65536"}])
def test_freed_tensor_memory_is_kept_with_glibc_unless_the_user_set_malloc(user_env):
    import platform
    import subprocess
    import sys

    code = (
        "from mnist_hpc.training.build import keep_freed_tensor_memory as k\n"
        "a = k(); b = k(); assert a == b; print(a)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    r = subprocess.run([sys.executable, "-c", code], env={**env, **user_env}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    glibc = platform.libc_ver()[0] == "glibc"
    assert r.stdout.strip() == str(glibc and not user_env)


def test_training_and_runs_read_no_scheduler_variables():
    for sub in ("training", "runs"):
        for path in (ROOT / "mnist_hpc" / sub).glob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                assert not re.search(r"""["']SLURM_""", code), f"{path}:{n}: {line.strip()}"


def test_gpu_rng_states_fit_any_visible_gpu_count(monkeypatch):
    """A checkpoint saved with 4 GPUs resumes with 1 (mocked CUDA): only the visible GPU is set."""
    set_calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: set_calls.append(device))
    state = ckpt.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8) + i for i in range(4)]
    ckpt.set_rng_state(state)
    assert set_calls == [0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt.set_rng_state(state)  # resumed on a CPU: the GPU states are ignored
    assert set_calls == [0]

"""CPU threads never exceed the CPUs this process may use (issue 27, defects 17 and 23): the
affinity mask and a cgroup CPU quota cap runtime.threads and $SLURM_CPUS_PER_TASK, and the run
says so on one line (12 threads on 2 cores made an epoch 3x slower)."""

from __future__ import annotations

import pytest

from mnist_hpc.config import config_from_dict
from mnist_hpc.training import build
from mnist_hpc.training.build import cgroup_cpu_limit, cpu_threads, usable_cpus
from mnist_hpc.training.context import TrainContext
from mnist_hpc.training.run import run_training


def cgroup_tree(tmp_path, proc: str, files: dict):
    (tmp_path / "proc").write_text(proc)
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "proc"), str(tmp_path / "cg")


def test_cgroup_v2_quota_is_read_along_the_path(tmp_path):
    proc, root = cgroup_tree(
        tmp_path, "0::/job/step\n", {"job/cpu.max": "150000 100000\n", "job/step/cpu.max": "max 100000\n"}
    )
    assert cgroup_cpu_limit(proc, root) == 1.5
    proc, root = cgroup_tree(tmp_path, "0::/free\n", {"free/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(proc, root) is None


def test_cgroup_v1_quota(tmp_path):
    proc, root = cgroup_tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/slurm/job_1\n",
        {
            "cpu,cpuacct/slurm/job_1/cpu.cfs_quota_us": "300000\n",
            "cpu,cpuacct/slurm/job_1/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cpu_limit(proc, root) == 3.0
    assert cgroup_cpu_limit(str(tmp_path / "absent"), root) is None


def test_usable_cpus_takes_the_smaller_of_mask_and_quota(monkeypatch):
    monkeypatch.setattr(build.os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setattr(build, "cgroup_cpu_limit", lambda: 2.5)
    assert usable_cpus() == 2
    monkeypatch.setattr(build, "cgroup_cpu_limit", lambda: None)
    assert usable_cpus() == 12


def test_requests_above_the_usable_cpus_are_capped_and_said():
    said = []
    assert cpu_threads(1000, None, warn=said.append, usable=2) == 2
    assert cpu_threads(None, 12, warn=said.append, usable=2) == 2
    assert cpu_threads(2, None, warn=said.append, usable=2) == 2  # within: nothing said
    assert cpu_threads(None, 8, 2, usable=16) == 8 and cpu_threads(None, None, 4, usable=16) == 4
    assert len(said) == 2
    assert (
        said[0].startswith(
            "warning: runtime.threads: 1000 asks for 1000 CPU threads, but this process may use 2 CPU(s)"
        )
        and "using 2" in said[0]
    )
    assert said[1].startswith("warning: $SLURM_CPUS_PER_TASK=12 asks for 12 CPU threads")
    assert all("\n" not in s for s in said)


@pytest.mark.parametrize(
    "threads, cpus, source", [(1000, None, "runtime.threads: 1000"), (None, 64, "$SLURM_CPUS_PER_TASK=64")]
)
def test_a_run_trains_with_the_capped_count(synth_root, tmp_path, capsys, monkeypatch, threads, cpus, source):
    monkeypatch.setattr(build, "usable_cpus", lambda: 1)
    cfg = config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 64, "subset": 256},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 1},
            "runtime": {"threads": threads},
        }
    )
    run_training(
        cfg, ctx=TrainContext(cpus=cpus), data_dir=synth_root, run_dir=tmp_path / "t", progress=False
    )
    out = capsys.readouterr().out
    assert f"warning: {source} asks for" in out and "may use 1 CPU(s)" in out
    assert "cpu (1 CPU threads)" in out

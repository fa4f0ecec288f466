"""The job's environment as cluster/env.py reads it, and what its requeue callback asks Slurm."""

from __future__ import annotations

from types import SimpleNamespace

from mnist_hpc.cluster import env as cluster_env


def _preempt(run_dir="runs/x"):
    return SimpleNamespace(epoch=1, step=40, requeue_requested=True, run_dir=run_dir)


def test_an_array_task_requeues_itself_not_the_whole_array(monkeypatch):
    # Task 1_1 can carry SLURM_JOB_ID=1, the array's own id: `scontrol requeue 1` would restart every task.
    job = cluster_env.current(
        {
            "SLURM_JOB_ID": "1",
            "SLURM_ARRAY_JOB_ID": "1",
            "SLURM_ARRAY_TASK_ID": "1",
            "SLURM_RESTART_COUNT": "0",
        }
    )
    asked = []
    monkeypatch.setattr("mnist_hpc.cluster.slurm.scontrol_requeue", asked.append)
    lines = []
    assert cluster_env.requeue_on_preempt(job, max_requeues=3, echo=lines.append)(_preempt()) is True
    assert asked == ["1_1"]
    assert "requeued Slurm job 1_1" in lines[0]


def test_a_plain_job_requeues_its_job_id(monkeypatch):
    job = cluster_env.current({"SLURM_JOB_ID": "4242"})
    asked = []
    monkeypatch.setattr("mnist_hpc.cluster.slurm.scontrol_requeue", asked.append)
    assert cluster_env.requeue_on_preempt(job, max_requeues=3, echo=lambda s: None)(_preempt()) is True
    assert asked == ["4242"]


def test_the_restart_budget_is_the_tasks_own(monkeypatch):
    job = cluster_env.current(
        {
            "SLURM_JOB_ID": "7",
            "SLURM_ARRAY_JOB_ID": "5",
            "SLURM_ARRAY_TASK_ID": "2",
            "SLURM_RESTART_COUNT": "2",
        }
    )
    monkeypatch.setattr(
        "mnist_hpc.cluster.slurm.scontrol_requeue", lambda i: (_ for _ in ()).throw(AssertionError)
    )
    lines = []
    assert cluster_env.requeue_on_preempt(job, max_requeues=2, echo=lines.append)(_preempt()) is False
    assert "2 requeues already" in lines[0]

"""What training needs from outside: the stop flag, what to do after a preemption checkpoint, and
the facts of the job it runs in — handed in as plain values, so training knows no scheduler.

The API builds a ``TrainContext`` from ``mnist_hpc.cluster.env`` (the only reader of ``SLURM_*``);
tests and notebooks build one directly or pass none. Never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mnist_hpc.training.stopflag import StopFlag


@dataclass(frozen=True)
class PreemptInfo:
    """Where a run stopped on a signal; handed to ``TrainContext.on_preempt`` after its checkpoint."""

    epoch: int  # the epoch in progress, 0-based
    step: int  # the next step within that epoch
    run_dir: Path
    checkpoint_dir: Path
    signal: str | None  # "SIGUSR1", "SIGUSR2", "SIGTERM" (None if unknown on this rank)
    requeue_requested: bool  # the configured runtime.requeue_signal arrived (not just a TERM)


def never_requeue(info: PreemptInfo) -> bool:
    """The default on-preempt callback: nothing requeues the run; it stops with exit code 75."""
    return False


@dataclass
class TrainContext:
    stop: StopFlag | None = None  # None: the process-wide flag (stopflag.install())
    # after the checkpoint of a stop signal, on rank 0: True if the job was requeued
    on_preempt: Callable[[PreemptInfo], bool] = never_requeue
    job_id: str | None = None  # the scheduler's job id (recorded in summary.json)
    array_job_id: str | None = None
    array_task_id: str | None = None
    run_name_suffix: str | None = None  # run folder <name>-<suffix>: a requeued job finds its folder
    restart_count: int = 0  # how often the scheduler restarted this job (recorded with each resume)
    cpus: int | None = None  # CPUs per task given by the scheduler (runtime.threads beats it)
    offline: bool = False  # never download datasets (compute nodes have no internet)
    launch_env: dict = field(default_factory=dict)  # torchrun-style RANK, WORLD_SIZE, ... over os.environ
    launcher: str | None = None  # name of what filled launch_env ("slurm"); recorded in summary.json
    # once rank 0 holds the run folder, at every start: the cluster layer records the job's
    # environment there (env/start-<K>/) and warns when versions changed since the first start
    on_start: Callable[[Path], None] | None = None

    def launcher_name(self) -> str:
        """The launcher of a distributed run: whoever filled launch_env, else torchrun."""
        return (self.launcher or "custom") if self.launch_env else "torchrun"

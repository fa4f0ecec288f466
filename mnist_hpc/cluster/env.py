"""The Slurm job this process runs in, read from the environment: the ONLY reader of ``SLURM_*``.

Training knows no scheduler: the API reads ``current()`` here and hands training plain facts (job
id, restarts, CPUs, the srun rank layout) and an on-preempt callback (``requeue_on_preempt``) that
decides whether a job stopped by its time-limit signal requeues itself.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mnist_hpc.errors import UserError


@dataclass(frozen=True)
class JobEnv:
    job_id: str | None = None  # SLURM_JOB_ID (an array task has its own)
    array_job_id: str | None = None  # SLURM_ARRAY_JOB_ID
    array_task_id: str | None = None  # SLURM_ARRAY_TASK_ID
    restart_count: int = 0  # SLURM_RESTART_COUNT: how often this job was requeued
    cpus_per_task: int | None = None  # SLURM_CPUS_PER_TASK
    tmpdir: str | None = None  # SLURM_TMPDIR (the Alliance's per-job local disk)
    submit_dir: str | None = None  # SLURM_SUBMIT_DIR

    @property
    def in_job(self) -> bool:
        return bool(self.job_id)

    @property
    def run_name_suffix(self) -> str | None:
        """``job<ID>`` or ``job<ARRAYID>_<TASK>``: a requeued job finds its run folder by it."""
        if not self.job_id:
            return None
        if self.array_job_id and self.array_task_id:
            return f"job{self.array_job_id}_{self.array_task_id}"
        return f"job{self.job_id}"

    @property
    def requeue_id(self) -> str | None:
        """The id that requeues this job and nothing else. An array task is
        ``<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>``: one task's own ``SLURM_JOB_ID`` can equal the
        array's id, and ``scontrol requeue <array id>`` requeues every task of the array (Slurm's
        job array documentation; the Alliance wiki page "Job arrays" names tasks the same way)."""
        if self.array_job_id and self.array_task_id:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def current(environ: Mapping[str, str] | None = None) -> JobEnv:
    env = os.environ if environ is None else environ
    return JobEnv(
        job_id=env.get("SLURM_JOB_ID") or None,
        array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
        array_task_id=env.get("SLURM_ARRAY_TASK_ID") or None,
        restart_count=_int(env.get("SLURM_RESTART_COUNT")) or 0,
        cpus_per_task=_int(env.get("SLURM_CPUS_PER_TASK")),
        tmpdir=env.get("SLURM_TMPDIR") or None,
        submit_dir=env.get("SLURM_SUBMIT_DIR") or None,
    )


def default_account(environ: Mapping[str, str] | None = None) -> str | None:
    """The account sbatch would use without --account: ``$SBATCH_ACCOUNT``, else ``$SLURM_ACCOUNT``."""
    env = os.environ if environ is None else environ
    return env.get("SBATCH_ACCOUNT") or env.get("SLURM_ACCOUNT") or None


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``node[03-05,07]`` (via ``scontrol show hostnames``)."""
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise UserError(
            f"distributed launch: cannot expand the Slurm node list {nodelist!r} "
            f"with scontrol ({e}); set MASTER_ADDR"
        ) from None
    if not out:
        raise UserError(f"distributed launch: empty Slurm node list {nodelist!r}")
    return out[0]


def srun_launch_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) for a task of a multi-task ``srun`` step (one task per GPU); {} otherwise.

    MASTER_ADDR is the first host of the step, MASTER_PORT derived from the job id, unless set."""
    env = os.environ if environ is None else environ
    ntasks = _int(env.get("SLURM_STEP_NUM_TASKS"))
    if not ntasks or ntasks < 2 or _int(env.get("SLURM_PROCID")) is None:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    job = _int(env.get("SLURM_JOB_ID")) or 0
    per_node = (env.get("SLURM_STEP_TASKS_PER_NODE") or "").split("(")[0]
    return {
        "RANK": env["SLURM_PROCID"].strip(),
        "WORLD_SIZE": str(ntasks),
        "LOCAL_RANK": str(_int(env.get("SLURM_LOCALID")) or 0),
        "LOCAL_WORLD_SIZE": per_node if per_node.isdigit() else str(ntasks),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + job % 20000),
    }


class PreemptFacts(Protocol):
    """What the on-preempt callback reads of training's ``PreemptInfo`` (training.context)."""

    @property
    def epoch(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def requeue_requested(self) -> bool: ...


def requeue_on_preempt(
    job: JobEnv, max_requeues: int, echo: Callable[[str], None] = print
) -> Callable[[PreemptFacts], bool]:
    """The on-preempt callback for training: after the checkpoint of a requeue signal, requeue this
    Slurm job (``scontrol requeue``) unless it has been requeued ``max_requeues`` times already.
    Returns True when the job was requeued; training then exits and Slurm starts it again."""

    def on_preempt(info: PreemptFacts) -> bool:
        where = f"epoch {info.epoch + 1}, step {info.step}"
        requeue_id = job.requeue_id
        if not (info.requeue_requested and job.in_job and requeue_id):
            return False
        if job.restart_count >= max_requeues:
            echo(
                f"checkpoint saved at {where}; not requeueing: {job.restart_count} requeues already "
                f"(runtime.max_requeues={max_requeues})"
            )
            return False
        from mnist_hpc.cluster import slurm

        try:
            slurm.scontrol_requeue(requeue_id)
        except UserError as e:
            echo(f"checkpoint saved at {where}; `scontrol requeue {job.requeue_id}` failed: {str(e)[:200]}")
            return False
        echo(
            f"checkpoint saved at {where}; requeued Slurm job {job.requeue_id} "
            f"(restart {job.restart_count + 1}); it will resume in {info.run_dir}"
        )
        return True

    return on_preempt

"""A packed array task: K runs of a sweep, one after another, in one Slurm array task.

Short runs make poor array tasks (the Alliance wiki, "Job arrays": arrays suit tasks of about an
hour or more; many short ones belong packed into fewer jobs). ``sweep submit --pack K`` gives
array task T the runs T*K .. T*K+K-1; this module is what the task runs
(``mnist-hpc sweep task SWEEP --task T --pack K``). Each run trains in its own run folder exactly
as ``sweep run`` trains it (``experiments.sweep.run_sweep``, one run at a time), so a run that
completed is skipped and an interrupted one resumes from its checkpoint (``--resume auto``).

The time-limit signal reaches the batch shell, which passes it to this process: while a run
trains, ``run_sweep`` hands it to the trainer, which checkpoints and requeues this task itself
(``<array>_<task>``, ``cluster.env.JobEnv.requeue_id``); between two runs this runner requeues the
task. Either way the next start walks the same runs: the finished ones are skipped and the
interrupted one resumes exactly. Which run the task is on is kept in
``<sweep folder>/tasks/task-T.json`` (for ``status``), but every run's state is read back from
its own folder, so a task killed before writing that file loses nothing. Never imports torch.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.cluster import env, slurm
from mnist_hpc.errors import UserError

if TYPE_CHECKING:  # imported where used: a sweep is read only when a task runs
    from mnist_hpc.experiments.sweepfile import SweepRun

REQUEUED_EXIT = 75  # like `train` and `sweep run` after a requeue: stopped after a checkpoint
TASKS_DIR = "tasks"


def task_indices(total: int, task: int, pack: int) -> range:
    """The sweep indices array task ``task`` runs when each task packs ``pack`` runs."""
    if pack < 1:
        raise UserError(f"--pack {pack}: pack at least one run per task")
    return range(task * pack, min(total, (task + 1) * pack))


def task_count(total: int, pack: int) -> int:
    """How many array tasks ``total`` runs make, ``pack`` per task (the last may hold fewer)."""
    return -(-total // max(pack, 1))


def run_state(run_dir: Path) -> str:
    """One word on a run, from its own folder: completed, requeued, interrupted, failed, running
    (started, nothing recorded yet) or pending (not started)."""
    from mnist_hpc.experiments.sweep import is_completed
    from mnist_hpc.runs.state import read_state

    if is_completed(run_dir):
        return "completed"
    try:
        state = read_state(run_dir)
    except UserError:
        state = None
    if state is not None:
        if state.state == "interrupted":
            return "requeued" if state.requeued else "interrupted"
        if state.state in ("failed", "running"):
            return state.state
        return state.state or "running"
    return "running" if (Path(run_dir) / "train.log").exists() else "pending"


def _write(path: Path, record: dict[str, Any]) -> None:
    from mnist_hpc.runs.folder import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2) + "\n")


def run_task(
    sweep_file: str | Path,
    task: int,
    pack: int,
    data_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Train array task ``task``'s runs of the (snapshot) sweep file, ``pack`` per task, one after
    another; returns the exit status: 0 all completed, 75 requeued (the next start continues),
    1 a run failed (the others still trained)."""
    from mnist_hpc.experiments.sweep import run_sweep
    from mnist_hpc.experiments.sweepfile import load_sweep

    sweep = load_sweep(sweep_file, validate=False)  # checked whole when it was submitted
    indices = task_indices(len(sweep.runs), task, pack)
    if not indices:
        raise UserError(
            f"--task {task} --pack {pack}: the sweep {sweep_file} has {len(sweep.runs)} runs, "
            f"so {task_count(len(sweep.runs), pack)} tasks (0-{task_count(len(sweep.runs), pack) - 1})"
        )
    runs = [sweep.runs[i] for i in indices]
    job = env.current()
    path = Path(sweep_file).resolve().parent / TASKS_DIR / f"task-{task}.json"
    record: dict[str, Any] = {
        "task": task,
        "pack": pack,
        "runs": [r.index for r in runs],
        "start": job.restart_count,
        "job": job.requeue_id,
        "current": None,
        "updated": None,
    }

    def save(current: int | None) -> None:
        record["current"] = current
        record["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record["states"] = {str(r.index): run_state(r.run_dir) for r in runs}
        try:
            _write(path, record)
        except OSError as e:  # status loses a detail; the runs themselves are unaffected
            echo(f"note: cannot write {path}: {e}")

    received: list[int] = []
    handlers: dict[signal.Signals, Any] = {}  # the handlers in place before, put back after
    for name in ("SIGUSR1", "SIGUSR2", "SIGTERM"):
        if hasattr(signal, name):
            s = getattr(signal, name)
            handlers[s] = signal.signal(s, lambda signum, frame: received.append(signum))
    echo(
        f"packed task {task}: runs {indices.start}-{indices.stop - 1} of sweep {sweep.name}"
        + (f" (start {job.restart_count + 1})" if job.restart_count else "")
    )
    failed: list[SweepRun] = []
    try:
        save(None)
        for run in runs:
            if received:
                return _requeue_between_runs(job, received[-1], run, runs, echo, save)
            state = run_state(run.run_dir)
            if state == "completed":
                echo(f"[{run.index}] {run.name}: completed in an earlier start, skipped")
                continue
            save(run.index)
            result = run_sweep(sweep, [run], 1, data_dir, echo=echo)[0]
            if result.status == "requeued":  # the trainer checkpointed and requeued this task
                save(run.index)
                echo(
                    f"packed task {task}: requeued at run {run.index} ({result.where}); the next start "
                    "skips the finished runs and resumes this one"
                )
                return REQUEUED_EXIT
            if result.status == "failed":
                failed.append(run)
        save(None)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if failed:
        echo(
            f"packed task {task}: {len(failed)} of {len(runs)} runs failed: "
            + ", ".join(f"[{r.index}] {r.name} (log {r.run_dir / 'train.log'})" for r in failed)
        )
        return 1
    echo(f"packed task {task}: all {len(runs)} runs completed")
    return 0


def _requeue_between_runs(
    job: env.JobEnv,
    signum: int,
    run: SweepRun,
    runs: list[SweepRun],
    echo: Callable[[str], None],
    save: Callable[[int | None], None],
) -> int:
    """A signal came while no run was training: nothing to checkpoint; requeue the task itself on the
    requeue signal (``runtime.max_requeues`` permitting), so the next start continues at ``run``."""
    save(None)
    name = signal.Signals(signum).name
    requeue = name in ("SIGUSR1", "SIGUSR2") and name == "SIG" + run.config.runtime.requeue_signal
    requeue_id = job.requeue_id
    if not (requeue and job.in_job and requeue_id):
        echo(f"stopped by {name} before run {run.index}; run the task again to continue")
        return REQUEUED_EXIT if requeue else 143
    if job.restart_count >= run.config.runtime.max_requeues:
        echo(
            f"{name} before run {run.index}: not requeueing, {job.restart_count} requeues already "
            f"(runtime.max_requeues={run.config.runtime.max_requeues})"
        )
        return 1
    slurm.scontrol_requeue(requeue_id)
    echo(f"{name} before run {run.index}: requeued Slurm job {requeue_id}; the next start continues with it")
    return REQUEUED_EXIT


def sweep_states(folder: str | Path) -> dict[int, str]:
    """{run index: state} of a packed sweep's runs, read from its snapshot and each run's folder."""
    from mnist_hpc.cluster.snapshot import SWEEP_FILE
    from mnist_hpc.experiments.sweepfile import load_sweep

    sweep = load_sweep(Path(folder) / SWEEP_FILE, validate=False)
    return {run.index: run_state(run.run_dir) for run in sweep.runs}


def write_report(sweep_file: str | Path) -> tuple[Path, list[str]]:
    """What ``sweep submit --then report`` runs once the array has ended: ``report.md`` in the sweep
    folder (the comparison of the completed runs, as ``mnist-hpc report --format markdown``), then a
    section naming every run that did not complete, with its state and log. Returns (path, those runs)."""
    from mnist_hpc.experiments import pages
    from mnist_hpc.experiments.report import compare, find_runs
    from mnist_hpc.experiments.sweepfile import load_sweep
    from mnist_hpc.runs.folder import atomic_write

    sweep = load_sweep(sweep_file, validate=False)
    folder = Path(sweep_file).resolve().parent
    states = {run.index: run_state(run.run_dir) for run in sweep.runs}
    done = [run.run_dir for run in sweep.runs if states[run.index] == "completed"]
    missing = [
        f"[{run.index}] {run.name} ({states[run.index]})"
        for run in sweep.runs
        if states[run.index] != "completed"
    ]
    title = f"Sweep {sweep.name}: {len(done)} of {len(sweep.runs)} runs completed"
    if done:
        runs, skipped = find_runs(done)
        text = pages.markdown_report(compare(runs, skipped), title, [], relative_to=folder)
    else:
        text = f"# {title}\n"
    if missing:
        text += "\n## Runs that did not complete\n\n" + "".join(
            f"- {m}: log {run.run_dir / 'train.log'}\n"
            for m, run in zip(
                missing, [r for r in sweep.runs if states[r.index] != "completed"], strict=False
            )
        )
        text += (
            "\nSubmit the sweep again (sweep submit, the same file): completed runs are skipped, "
            "interrupted ones resume.\n"
        )
    path = folder / "report.md"
    atomic_write(path, text)
    return path, missing

"""Weights & Biases: offline by default, uploaded later with ``wandb sync`` (``mnist-hpc sync RUN``).

Compute nodes of most clusters have no internet, so the run is written offline into
``<run>/wandb/offline-run-<time>-<id>/`` unless $WANDB_MODE says otherwise (``online`` to stream,
``disabled`` to skip). The W&B run id is the run's own id (run.json), kept in trackers.json, so a
resumed run — requeued, preempted, continued — goes on in the same W&B run; each start writes
its own offline folder, and ``wandb sync`` uploads them in order as one run. Project:
$WANDB_PROJECT or ``mnist-hpc``; group: ``experiment.name``; name: the run folder's name.
"""

from __future__ import annotations

import os
import shlex
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_hpc.runs.folder import StrPath
from mnist_hpc.runs.loggers.base import SUMMARY_KEYS, TAGS, Logger, Session, numbers

EXIT_CODES = {"completed": 0, "interrupted": 75, "failed": 1}  # 75: the CLI's code for "stopped, resume me"


def offline_dirs(run_dir: StrPath) -> list[Path]:
    """The offline W&B folders of a run, oldest first (one per start of the run)."""
    return sorted(p for p in (Path(run_dir) / "wandb").glob("offline-run-*") if p.is_dir())


def sync_command(run_dir: StrPath) -> str:
    """The shell command that uploads a run's offline W&B folders (every start, in order)."""
    return f"wandb sync {shlex.quote(str(Path(run_dir) / 'wandb'))}/offline-run-*"


def _cache_beside(run_dir: StrPath) -> None:
    """wandb keeps its service logs in ~/.cache/wandb; where $HOME is read-only (the compute nodes
    of some clusters) they go to the run's wandb folder, instead of a screenful of errors."""
    if os.environ.get("WANDB_CACHE_DIR"):
        return
    probe = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        os.environ["WANDB_CACHE_DIR"] = str(Path(run_dir) / "wandb" / ".cache")


class WandbLogger(Logger):
    name = "wandb"

    def __init__(self, session: Session) -> None:
        import wandb

        self.session = session
        self.mode = os.environ.get("WANDB_MODE") or "offline"
        known = session.ids.get("wandb") or {}
        run_id = known.get("id") or session.run_id or uuid.uuid4().hex[:12]
        project = known.get("project") or os.environ.get("WANDB_PROJECT") or "mnist-hpc"
        session.remember("wandb", {"id": run_id, "project": project})  # before init: a crash keeps it
        _cache_beside(session.run_dir)
        self.run = wandb.init(
            project=project,
            group=session.experiment,
            name=session.name,
            id=run_id,
            resume="allow",
            dir=str(session.run_dir),
            # $WANDB_MODE as the user set it: wandb validates it, and its Settings also take "dryrun"
            # and "run", which init's Literal leaves out
            mode=self.mode,  # type: ignore[arg-type]
            reinit="create_new",
            settings=wandb.Settings(console="off", silent=True),
        )
        # the resolved config; on a resume the allowed changes (epochs, ...) replace the old values
        self.run.config.update(  # type: ignore[no-untyped-call]  # wandb's Config.update is unannotated
            {
                **session.config,
                "mnist_hpc": {
                    "run_dir": str(session.run_dir),
                    "run_id": session.run_id,
                    "slurm_job_id": session.job_id,
                },
            },
            allow_val_change=True,
        )

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log({f"step/{k}": v for k, v in values.items()}, step=step)

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        values = {TAGS.get(k, k): v for k, v in numbers(row).items() if k != "epoch"}
        self.run.log({**values, "epoch": epoch}, step=step)

    def log_summary(self, summary: Mapping[str, Any], plots: Mapping[str, Path], step: int) -> None:
        import wandb

        self.run.summary.update(numbers({k: summary.get(k) for k in SUMMARY_KEYS}))
        if plots:
            self.run.log({f"plots/{name}": wandb.Image(str(path)) for name, path in plots.items()}, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))

    def lines(self) -> list[str]:
        if self.mode != "offline":
            return []
        run = shlex.quote(str(self.session.run_dir))
        return [
            f"W&B: saved offline; upload it with: {sync_command(self.session.run_dir)}"
            f"  (from a login node: mnist-hpc sync {run})"
        ]


def sync_argv(run_dir: StrPath, dry_run: bool = False) -> list[str]:
    """The ``wandb sync`` command (argv) that uploads a run's offline W&B folders, every start in
    order as one run; one-line errors for a folder without any and for a missing wandb."""
    import sys

    from mnist_hpc.config.extras import require
    from mnist_hpc.errors import UserError

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    dirs = offline_dirs(run_dir)
    if not dirs:
        raise UserError(
            f"{run_dir}: no offline W&B run in it (wandb/offline-run-*); was it trained with "
            f"experiment.loggers: [wandb] and WANDB_MODE unset or offline?"
        )
    require("wandb", "mnist-hpc sync")
    return [sys.executable, "-m", "wandb", "sync", *(["--dry-run"] if dry_run else []), *map(str, dirs)]


def sync_runs(
    runs: Sequence[StrPath], dry_run: bool = False, echo: Callable[[str], None] = print
) -> list[int]:
    """Upload the offline W&B runs of run folders (``wandb sync``, what `mnist-hpc sync` does):
    every folder checked before anything is uploaded, then one ``wandb sync`` per run, its
    command echoed first; returns their exit codes. A failed upload (after all of them ran) or a
    missing wandb is a one-line UserError."""
    import subprocess

    from mnist_hpc.errors import UserError

    commands = [sync_argv(run, dry_run) for run in runs]  # every mistake before any upload
    codes = []
    for run, argv in zip(runs, commands, strict=False):
        echo(f"{run}: {shlex.join(['wandb', *argv[3:]])}")
        try:
            codes.append(subprocess.call(argv))
        except OSError as e:
            raise UserError(f"cannot run wandb sync: {e}") from None
    failed = sum(code != 0 for code in codes)
    if failed:
        raise UserError(f"wandb sync failed for {failed} of {len(runs)} run(s); see its messages above")
    return codes

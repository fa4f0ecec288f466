"""Experiment trackers: one interface for where a run's numbers go, chosen by ``experiment.loggers``.

``csv`` (metrics.csv, always on), ``tensorboard`` (``<run>/tensorboard/``), ``wandb`` (offline in
``<run>/wandb/`` unless $WANDB_MODE says otherwise) and ``mlflow`` (a file store in
``<run>/mlruns/`` unless $MLFLOW_TRACKING_URI names another). Each logger receives:

- the hyperparameters once, when its tracker run is created (the flattened config);
- step scalars (``step/train_loss``, ``step/train_acc``: the epoch's running mean so far, and
  ``step/lr``) at the points where the trainer already has them on the host: every mid-epoch
  checkpoint and every epoch end. The step loop never waits on the device to log;
- epoch metrics (the metrics.csv row: ``loss/train``, ``accuracy/val``, ...);
- the final summary (summary.json's numbers) and the plots.

Only rank 0 opens trackers. A resumed run continues the same tracker runs: their ids are kept in
``<run>/trackers.json``. A tracker that fails in the middle of a run is dropped with one warning
(the run goes on; metrics.csv is complete); one that cannot start fails the run before training.
Never imports torch or a tracker's package at import time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.config import flatten
from mnist_hpc.errors import UserError
from mnist_hpc.runs.folder import StrPath, write_metrics_csv
from mnist_hpc.runs.loggers.base import (  # noqa: F401 - the package's names of before
    STATUSES,
    SUMMARY_KEYS,
    TAGS,
    TRACKERS_FILE,
    Logger,
    Session,
    numbers,
    read_trackers,
)

if TYPE_CHECKING:
    from mnist_hpc.config import Config


class CsvLogger(Logger):
    """metrics.csv: rewritten whole (atomically) at each epoch end from the run's history, so a
    resumed run's file is exactly the epochs its checkpoint holds plus the new ones."""

    name = "csv"

    def __init__(self, run_dir: StrPath) -> None:
        self.path = Path(run_dir) / "metrics.csv"

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        write_metrics_csv(self.path, history)


GATE_ENV = "MNIST_HPC_EPOCH_GATE"  # set by a search worker (experiments/search.py) for its trainer
GATE_TIMEOUT = 120.0  # seconds an epoch end waits for the worker's word at most


class EpochGate(Logger):
    """After each epoch's metrics.csv row, wait until the file ``$MNIST_HPC_EPOCH_GATE`` names that
    epoch (or a later one): the search worker that started this training writes it once it has
    told the pruner about the epoch, and first sends the stop signal if the trial is pruned, so
    a pruned trial stops at the next step instead of training on while the worker looks. Waits
    at most ``GATE_TIMEOUT`` s, and not at all once the worker (the parent process) is gone."""

    name = "epoch-gate"

    def __init__(self, path: StrPath) -> None:
        self.path, self.parent = Path(path), os.getppid()

    def passed(self, epoch: int) -> bool:
        try:
            return int(self.path.read_text().strip() or 0) >= epoch
        except (OSError, ValueError):
            return False

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        deadline = time.monotonic() + GATE_TIMEOUT
        while not self.passed(epoch) and time.monotonic() < deadline and os.getppid() == self.parent:
            time.sleep(0.02)


class Trackers:
    """The run's loggers, called as one. metrics.csv errors (a full disk) stop the run; another
    tracker's error drops that tracker with one warning line."""

    def __init__(self, loggers: Iterable[Logger], echo: Callable[[str], None] = print) -> None:
        self.loggers, self.echo = list(loggers), echo

    @classmethod
    def csv_only(cls, run_dir: StrPath) -> Trackers:
        return cls([CsvLogger(run_dir)])

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self.loggers]

    def _each(self, method: str, *args: object) -> None:
        for lg in list(self.loggers):
            if isinstance(lg, CsvLogger):
                getattr(lg, method)(*args)
                continue
            try:
                getattr(lg, method)(*args)
            except Exception as e:
                self.loggers.remove(lg)
                text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                self.echo(f"warning: {lg.name} logging failed ({text}); the run goes on without it")

    def log_step(self, step: int, values: Mapping[str, object]) -> None:
        self._each("log_step", step, numbers(values))

    def log_progress(self, step: int, partial: Mapping[str, float], lr: float) -> None:
        """Step scalars from the epoch's accumulators the trainer summed for a checkpoint."""
        seen = max(partial.get("seen", 0), 1)
        self.log_step(
            step,
            {
                "train_loss": partial.get("loss_sum", 0.0) / seen,
                "train_acc": partial.get("correct", 0) / seen,
                "lr": lr,
            },
        )

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        self.log_step(
            step,
            {"train_loss": row.get("train_loss"), "train_acc": row.get("train_acc"), "lr": row.get("lr")},
        )
        self._each("log_epoch", epoch, step, row, history)

    def log_summary(self, summary: Mapping[str, Any], plots: Mapping[str, StrPath], step: int) -> None:
        self._each("log_summary", summary, {k: Path(v) for k, v in plots.items()}, step)

    def close(self, status: str = "completed") -> None:
        """End every tracker run (each once); after a completed run, say what the user may
        want to do with them (e.g. the ``wandb sync`` command)."""
        loggers, self.loggers = self.loggers, []
        lines: list[str] = []
        for lg in loggers:
            try:
                lg.close(status)
                lines += lg.lines() if status == "completed" else []
            except Exception as e:
                self.echo(f"warning: {lg.name} could not close its run ({str(e).splitlines()[0][:200]})")
        for line in lines:
            self.echo(line)


def open_trackers(
    cfg: Config,
    run_dir: StrPath,
    *,
    run_id: str | None = None,
    job_id: str | None = None,
    echo: Callable[[str], None] = print,
) -> Trackers:
    """The loggers ``cfg.experiment.loggers`` asks for, each with its tracker run started (or,
    after a restart, continued); a missing package or a tracker that cannot start raises."""
    from mnist_hpc.config.extras import require

    run_dir = Path(run_dir)
    session = Session(
        run_dir,
        run_dir.name,
        cfg.experiment.name,
        cfg.to_dict(),
        run_id=run_id,
        job_id=job_id,
        ids=read_trackers(run_dir),
    )
    loggers: list[Logger] = [CsvLogger(run_dir)]
    if os.environ.get(GATE_ENV):
        loggers.append(EpochGate(os.environ[GATE_ENV]))
    try:
        for name in cfg.experiment.loggers:
            if name == "csv":
                continue
            require(name, f"experiment.loggers: {name}")
            try:
                loggers.append(_logger_class(name)(session))
            except Exception as e:
                text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                raise UserError(f"experiment.loggers: {name} could not start its run: {text}") from None
    except BaseException:
        Trackers(loggers[1:], echo).close("failed")
        raise
    return Trackers(loggers, echo)


def _logger_class(name: str) -> Callable[[Session], Logger]:
    if name == "tensorboard":
        from mnist_hpc.runs.loggers.tensorboard_logger import TensorBoardLogger

        return TensorBoardLogger
    if name == "wandb":
        from mnist_hpc.runs.loggers.wandb_logger import WandbLogger

        return WandbLogger
    if name == "mlflow":
        from mnist_hpc.runs.loggers.mlflow_logger import MlflowLogger

        return MlflowLogger
    raise ValueError(f"unknown logger {name!r}")  # the config's validation names the choices


__all__ = [
    "SUMMARY_KEYS",
    "TAGS",
    "TRACKERS_FILE",
    "CsvLogger",
    "Logger",
    "Session",
    "Trackers",
    "flatten",
    "numbers",
    "open_trackers",
    "read_trackers",
]

"""What every tracker shares: the interface (``Logger``), what a logger starts from
(``Session``), the tag names and the trackers.json record. The logger modules import this,
never the package itself (so the package may import them without an import circle)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_hpc.runs.folder import StrPath, write_json

TRACKERS_FILE = "trackers.json"

# metrics.csv columns -> tracker tags (train and validation side by side in one chart)
TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "optim/lr",
    "seconds": "speed/epoch_seconds",
    "images_per_s": "speed/images_per_s",
}
# summary.json keys a tracker records as the run's final numbers
SUMMARY_KEYS = (
    "test_accuracy",
    "test_loss",
    "macro_f1",
    "best_val_accuracy",
    "best_epoch",
    "epochs_run",
    "params",
    "model_size_mb",
    "train_seconds",
    "total_seconds",
    "images_per_s",
)
STATUSES = ("completed", "failed", "interrupted")


def numbers(values: Mapping[str, object]) -> dict[str, float]:
    """The finite int/float entries of ``values`` (bools, None and NaN dropped)."""
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
    }


def read_trackers(run_dir: StrPath) -> dict[str, Any]:
    """``<run>/trackers.json``: {logger name: what it needs to continue its tracker run}."""
    try:
        data = json.loads((Path(run_dir) / TRACKERS_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Session:
    """What a logger needs to start (or continue) its tracker run."""

    run_dir: Path
    name: str  # the run folder's name: the tracker run's name
    experiment: str  # experiment.name: the W&B group, the MLflow experiment
    config: dict[str, Any]  # the resolved config (nested)
    run_id: str | None = None  # the run's id (run.json)
    job_id: str | None = None  # the scheduler's job id, when the run is inside a job
    ids: dict[str, Any] = field(default_factory=dict)  # trackers.json as read at the start

    def remember(self, logger: str, data: dict[str, Any]) -> None:
        """Store what ``logger`` needs to continue its tracker run after a restart."""
        self.ids[logger] = data
        write_json(self.run_dir / TRACKERS_FILE, self.ids)


class Logger:
    """One tracker. Every method may be left as it is (a no-op)."""

    name = "?"

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars at optimizer step ``step`` (names without prefix: train_loss, train_acc, lr)."""

    def log_epoch(
        self, epoch: int, step: int, row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]
    ) -> None:
        """The metrics.csv ``row`` of epoch ``epoch`` (1-based), ending at step ``step``;
        ``history``: every row so far, this one included."""

    def log_summary(self, summary: Mapping[str, Any], plots: Mapping[str, Path], step: int) -> None:
        """The run's summary.json as a dict and its plots ({name: png path})."""

    def close(self, status: str) -> None:
        """End the tracker run: ``completed``, ``failed`` or ``interrupted`` (to be resumed)."""

    def lines(self) -> list[str]:
        """What to tell the user at the end of the run (e.g. how to upload it)."""
        return []

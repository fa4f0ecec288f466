"""The one schema of ``summary.json``: written at the end of a run, read by reports, sweeps, status and the API.

Version 1 is the unversioned file of the first release; version 2 adds ``summary_version`` and
``process_seconds`` (this process's wall time, beside the cumulative ``total_seconds``) and the
split sizes the run used (``train_images``, ``val_images``, ``test_images``), the ``run_id``, the
``parent_run``, ``phase_seconds`` and, on CUDA, ``peak_gpu_memory_mb`` (added keys; absent in
older files). Readers accept both; keys this version does not know are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.errors import UserError

if TYPE_CHECKING:
    from mnist_hpc.runs.folder import StrPath

SUMMARY_VERSION = 2
FILENAME = "summary.json"


@dataclass
class RunSummary:
    status: str = "completed"  # completed (a summary is written only when the run ended normally)
    test_accuracy: float | None = None  # fraction in [0, 1]
    test_loss: float | None = None
    best_val_accuracy: float | None = None  # null without a validation split
    best_epoch: int = 0
    epochs_run: int = 0
    macro_f1: float | None = None
    per_class: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # {class name: {precision, recall, f1, support}}
    confusion_matrix: list[list[int]] = field(default_factory=list)  # rows = true class, columns = predicted
    params: int | None = None
    model_size_mb: float | None = None
    train_seconds: float | None = None  # time in the step loop, over every start of the run
    eval_seconds: float | None = None
    data_seconds: float | None = None
    total_seconds: float | None = None  # wall time over every start of the run (requeues included)
    process_seconds: float | None = None  # wall time of the process that finished the run
    images_per_s: float | None = None
    warmup_seconds: float | None = None  # the process's first step, timed apart (not in train_seconds)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # this start's wall time by phase
    # (training.run.Phases: start-up, set-up, data, build, training, test, plots; `train --verbose`)
    device: str | None = None
    peak_gpu_memory_mb: float | None = None  # CUDA only: max_memory_allocated of the last process, MiB
    world_size: int = 1
    launcher: str | None = None
    precision: str | None = None
    global_batch_size: int | None = None
    per_rank_batch_size: int | None = None
    grad_accum: int = 1
    tta: bool = False
    dataset: str | None = None
    train_images: int | None = None  # the split the run actually used (after data.subset)
    val_images: int | None = None
    test_images: int | None = None
    model: str | None = None
    config_name: str | None = None
    seed: int | None = None
    requeues: list[dict[str, Any]] = field(
        default_factory=list
    )  # one entry per interruption that was resumed
    # (each: where it stopped, the signal, when it resumed, and the config ``changes`` it applied)
    run_id: str | None = None  # the run's id (run.json in its folder; stamped on its checkpoints)
    parent_run: str | None = None  # the run folder this run continued or took its weights from
    versions: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    host: str | None = None
    slurm_job_id: str | None = None
    slurm_array_task_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    summary_version: int = SUMMARY_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were
    run_dir: Path | None = field(default=None, compare=False)  # the run folder (not stored in the file)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        names = {f.name for f in dataclasses.fields(cls)} - NOT_STORED
        known = {k: v for k, v in data.items() if k in names}
        known.setdefault("summary_version", 1)  # the first release wrote no version
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_STORED}
        out.update(self.extra)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access by summary.json key (known or extra)."""
        return self.to_dict().get(key, default)


NOT_STORED = {"extra", "run_dir"}  # fields that are not keys of summary.json


def summary_path(run_dir: StrPath) -> Path:
    return Path(run_dir) / FILENAME


def read_summary(run_dir: StrPath) -> RunSummary | None:
    """The run's summary, or None when it has none yet (running, failed, interrupted).

    A summary.json that is not a JSON object is the user's problem to see: one-line UserError."""
    path = summary_path(run_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    bad = _out_of_range(data)
    if bad:
        raise UserError(
            f"{path}: a damaged record: {bad[0]} holds {bad[1]}, beyond any "
            f"float; the run is left out (train it again, or restore that file)"
        )
    summary = RunSummary.from_dict(data)
    summary.run_dir = Path(run_dir)
    return summary


def _out_of_range(value: object, key: str = "") -> tuple[str, str] | None:
    """(dotted key, text) of the first number no float holds (``1e400`` reads as inf, ``10**400``
    as an int no float can take), else None. NaN is left alone: a diverged run may record it."""
    items: Iterable[tuple[str, object]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        if isinstance(value, float) and value in (float("inf"), float("-inf")):
            return key, "an infinite number (such as 1e400)"
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1000:
            return key, f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return None
    for k, v in items:
        found = _out_of_range(v, f"{key}{k}" if k.startswith("[") or not key else f"{key}.{k}")
        if found:
            return found
    return None


def write_summary(run_dir: StrPath, summary: RunSummary) -> Path:
    from mnist_hpc.runs.folder import atomic_write

    path = summary_path(run_dir)
    atomic_write(path, json.dumps(summary.to_dict(), indent=2) + "\n")
    summary.run_dir = Path(run_dir)
    return path

"""Where runs stand, without the scheduler: one line per run folder (`mnist-hpc runs`) and the
state of each run of a sweep (`mnist-hpc sweep status`). Torch-free; reads only the files each
run folder keeps (summary.json, state.json, run.json, config.yaml) and probes the locks a live
trainer or sweep runner holds.

    lines, damaged = list_runs(["runs"])          # [RunsRow], sorted by start time
    print(format_runs(lines, width=100))
    states = sweep_states(load_sweep("sweep.yaml", validate=False))  # [SweepRunStatus], by index
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mnist_hpc.config import ConfigError, read_yaml
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import runguard, tables
from mnist_hpc.experiments.report import _folders
from mnist_hpc.runs.state import TrainingLock, read_identity, read_state
from mnist_hpc.runs.summary import read_summary

RUNS_HEADER = ["run", "state", "dataset", "model", "test acc %", "epochs", "train s", "finished"]


# --------------------------------------------------------------------------- every run folder


@dataclass
class RunsRow:
    """What `mnist-hpc runs` shows of one run folder."""

    path: Path
    name: str  # the folder, relative to the folder it was found under
    state: str  # completed | running | failed | interrupted | requeued
    detail: str  # the state in words (failed: the error), "" when the state says it all
    dataset: str | None
    model: str | None
    test_accuracy: float | None
    epochs: int | None
    train_seconds: float | None
    started_at: str | None
    finished_at: str | None


def _config_names(folder: Path) -> tuple:
    """(dataset, model) from the run's config.yaml, (None, None) without a readable one."""
    try:
        raw = read_yaml(folder / "config.yaml", fast=True)
    except ConfigError:
        return None, None
    data = raw.get("data") if isinstance(raw, dict) else None
    model = raw.get("model") if isinstance(raw, dict) else None
    return (
        data.get("dataset") if isinstance(data, dict) else None,
        model.get("name") if isinstance(model, dict) else None,
    )


def _state_words(state) -> tuple[str, str]:
    """(short state, the rest in words) of a RunState: "failed", "CUDA out of memory ..."."""
    short = "requeued" if state.state == "interrupted" and state.requeued else state.state
    rest = state.describe()[len(state.state) :].strip()
    rest = rest[1:].strip() if rest.startswith(":") else rest
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    return short, rest


def read_run_line(folder: Path, top: Path) -> RunsRow | None:
    """The line of one run folder; None for a folder that holds no run. Raises ``UserError``
    (naming the file) for a damaged summary.json."""
    summary = read_summary(folder)  # UserError: damaged
    state = read_state(folder)
    if summary is None and state is None:
        return None
    if summary is not None and summary.status == "completed":
        short, detail = "completed", ""
    elif state is not None:
        short, detail = _state_words(state)
    else:
        assert summary is not None  # not both None (returned above)
        short, detail = summary.status, ""
    identity = read_identity(folder) or {}
    dataset = summary.dataset if summary else None
    model = summary.model if summary else None
    if dataset is None or model is None:
        dataset2, model2 = _config_names(folder)
        dataset, model = dataset or dataset2, model or model2
    epochs = summary.epochs_run if summary else (state.epoch - 1 if state and state.epoch else None)
    finished = (
        summary.finished_at if summary else (state.updated_at if state and short != "running" else None)
    )
    try:
        name = str(folder.relative_to(top)) if folder != top else folder.name
    except ValueError:
        name = str(folder)
    return RunsRow(
        folder,
        name,
        short,
        detail,
        dataset,
        model,
        summary.test_accuracy if summary else None,
        epochs,
        summary.train_seconds if summary else None,
        (summary.started_at if summary else None)
        or identity.get("created_at")
        or (state.updated_at if state else None),
        finished,
    )


def list_runs(dirs) -> tuple[list, list]:
    """([RunsRow] of every run folder under ``dirs``, oldest start first; [one line per damaged
    record, naming the file]). Folders are found as `report` finds them."""
    lines, damaged, seen = [], [], set()
    for top in map(Path, dirs):
        for folder in _folders([top]):
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                line = read_run_line(folder, top)
            except UserError as e:
                damaged.append(str(e))
                continue
            if line is not None:
                lines.append(line)
    lines.sort(key=lambda r: (r.started_at or "", r.name))
    return lines, damaged


@dataclass
class RunsOverview:
    """Every run folder under some folders, as `mnist-hpc runs` shows them."""

    dirs: list  # [Path] searched
    rows: list  # [RunsRow], oldest start first
    damaged: list  # one line per damaged record, naming the file

    def to_table(self, width: int | None = None) -> str:
        """The aligned table (``format_runs``) and the count of each state under it."""
        return (
            format_runs(self.rows, width) + "\n" + tables.wrap(counts_line(self.rows, len(self.rows)), width)
        )


def runs_overview(dirs) -> RunsOverview:
    """The ``RunsOverview`` of every run folder under ``dirs``; a folder that does not exist is
    a ``UserError``, before any is read."""
    dirs = [Path(d) for d in dirs]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise UserError(
            f"{missing[0]}: no such folder (give the folder your runs are in: mnist-hpc runs DIR)"
        )
    rows, damaged = list_runs(dirs)
    return RunsOverview(dirs, rows, damaged)


def _cells(r: RunsRow) -> list:
    acc = tables.percent(r.test_accuracy) if isinstance(r.test_accuracy, (int, float)) else "-"
    return [
        r.name,
        r.state,
        r.dataset or "-",
        r.model or "-",
        acc,
        "-" if r.epochs is None else str(r.epochs),
        "-" if r.train_seconds is None else f"{r.train_seconds:,.1f}",
        (r.finished_at or "-").replace("T", " "),
    ]


def format_runs(lines: list, width: int | None = None) -> str:
    """The aligned table of ``lines``, at most ``width`` (default: the terminal's) columns wide:
    a state's details (a failure's error) go on a line under its row, cut to the width; names too
    long for the width are shortened in the middle, and on a narrow terminal the columns in
    ``DROP_FIRST`` are left out, in that order, until the table fits."""
    width = width or tables.terminal_width()
    header, rows = list(RUNS_HEADER), [_cells(r) for r in lines]
    for column in [None, *DROP_FIRST]:
        if column is not None:
            i = header.index(column)
            header.pop(i)
            for row in rows:
                row.pop(i)
        rest = sum(max(len(row[i]) for row in [header, *rows]) for i in range(1, len(header)))
        room = width - rest - 2 * (len(header) - 1)
        if room >= min(32, max(len(row[0]) for row in [header, *rows])):
            break
    for row in rows:
        row[0] = _shorten(row[0], max(room, 12))
    text = tables._aligned(header, rows, best=False).splitlines()
    out = text[:2]
    for r, line in zip(lines, text[2:], strict=False):
        out.append(line)
        if r.detail:
            out.append(_shorten("   " + r.detail, width, middle=False))
    return "\n".join(out)


DROP_FIRST = ("train s", "epochs", "dataset", "finished", "model")


def _shorten(text: str, width: int, middle: bool = True) -> str:
    if len(text) <= width:
        return text
    if not middle:
        return text[: width - 3] + "..."
    keep = width - 3
    return text[: keep - keep // 2] + "..." + text[len(text) - keep // 2 :]


# --------------------------------------------------------------------------- one sweep


@dataclass
class SweepRunStatus:
    """Where one run (or trial) of a sweep stands."""

    index: int  # the run's index, or the trial's number
    name: str
    state: str  # pending | running | completed | failed | interrupted | requeued | stale | damaged | pruned
    detail: str = ""  # accuracy, the error, the differing keys, ...


def _runner_holding(run_dir: Path) -> str:
    """Who holds the run's sweep-runner lock ('' when nobody): probed read-only, released at once."""
    lock = TrainingLock(run_dir)
    lock.path = Path(run_dir) / runguard.LOCK_FILE
    if not lock.held_elsewhere():
        return ""
    try:
        host, pid, *since = lock.path.read_text(errors="replace").split()
    except (OSError, ValueError):
        return "another sweep runner"
    return f"process {pid} on {host} since {' '.join(since)}"


def run_status(run) -> SweepRunStatus:
    """The status of one ``SweepRun`` from its folder."""
    d = Path(run.run_dir)
    out = SweepRunStatus(run.index, run.name, "pending")
    if not d.is_dir():
        return out
    try:
        summary = read_summary(d)
    except UserError as e:  # `sweep run` trains it again
        out.state, out.detail = "damaged", str(e)
        return out
    if summary is not None and summary.status == "completed":
        diffs = runguard.config_differences(d, run.config)
        if diffs:
            out.state = "stale"
            out.detail = (
                "trained with another config: " + "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
            )
        else:
            out.state = "completed"
            acc = summary.test_accuracy
            out.detail = f"test accuracy {tables.percent(acc)}%" if isinstance(acc, (int, float)) else ""
        return out
    state = read_state(d)
    holder = _runner_holding(d)
    if state is None:
        if holder:
            out.state, out.detail = "running", f"starting ({holder})"
        return out
    if state.state == "running":  # read_state: its trainer holds the run's lock (or runs on another host)
        out.state, out.detail = "running", _state_words(state)[1] or holder
        return out
    out.state, out.detail = _state_words(state)
    return out


def sweep_states(sweep) -> list:
    """[SweepRunStatus] of each run of ``sweep`` (a grid or list sweep), by index."""
    return [run_status(run) for run in sweep.runs]


STUDY_STATES = {
    "complete": "completed",
    "fail": "failed",
    "pruned": "pruned",
    "running": "running",
    "waiting": "pending",
}


def study_states(sweep) -> tuple[list, int]:
    """([SweepRunStatus] of each trial of a ``method: optuna`` study, by number; n_trials asked for).
    A running trial whose worker has gone reads as interrupted (the next `sweep run` resumes it)."""
    from mnist_hpc.experiments import search, studyreport

    view = studyreport.load_view(search.journal_path(sweep))
    n_trials = sweep.study.n_trials
    if view is None:
        return [], n_trials
    me = search.Me(socket.gethostname(), os.getpid(), None, -1)
    out = []
    for t in view.trials:
        state = STUDY_STATES.get(t.state, t.state)
        detail = ", ".join(f"{k}={tables.format_value(v)}" for k, v in t.params.items())
        if state == "completed" and t.value is not None:
            detail = f"{view.metric} {t.value:.4g}; {detail}"
        elif state == "failed" and t.failure:
            detail = t.failure
        elif (
            state == "running"
            and t.run
            and search.stale(search.read_owner(Path(sweep.output_dir) / t.run), me)
        ):
            state, detail = "interrupted", f"its worker has gone (the next sweep run resumes it); {detail}"
        out.append(SweepRunStatus(t.number, t.run or f"trial {t.number}", state, detail))
    return out, n_trials


def counts_line(states: list, total: int, noun: str = "run") -> str:
    """'200 runs: 150 completed, 2 running, 48 pending' (states in order of first appearance)."""
    order = [
        "completed",
        "running",
        "pending",
        "failed",
        "interrupted",
        "requeued",
        "pruned",
        "stale",
        "damaged",
    ]
    # (a RunsRow or a SweepRunStatus: both have .state)
    found: dict = {}
    for s in states:
        found[s.state] = found.get(s.state, 0) + 1
    parts = [f"{found[k]:,} {k}" for k in [*order, *sorted(set(found) - set(order))] if k in found]
    return f"{tables.plural(total, noun)}: " + ", ".join(parts) if parts else tables.plural(total, noun)

"""Fake Slurm commands and run folders for the `status` and `logs` tests (the `project` fixture in
tests/conftest.py is the folder they go in, its bin/ first on PATH)."""

from __future__ import annotations

import json
from pathlib import Path

from mnist_hpc.runs.summary import RunSummary, write_summary

# what sacct says where Slurm keeps no accounting
DISABLED = "sacct: error: Slurm accounting storage is disabled"


def fake(project: Path, name: str, body: str) -> None:
    path = project / "bin" / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run(project: Path, name: str, summary: dict | None = None, record: dict | None = None) -> Path:
    folder = project / "runs" / name
    folder.mkdir(parents=True)
    if summary is not None:
        write_summary(folder, RunSummary.from_dict(summary))
    if record is not None:
        (folder / "job.json").write_text(json.dumps(record))
    return folder


def _line(out: str, job_id: str) -> str:
    return next(x for x in out.splitlines() if x.startswith(job_id + " "))

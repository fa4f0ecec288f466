"""Following submitted jobs: the queue with run folders (status), a job's log, cancelling.

Jobs are found through the ``job.json`` that ``submit`` writes into each run folder, and, for
scripts submitted with plain ``sbatch``, through the ``<name>-job<JOBID>`` folders that training
makes. Functions return data and raise ``UserError``; the CLI prints.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from mnist_hpc.cluster import slurm
from mnist_hpc.errors import UserError


def submitted_jobs(runs_dir) -> dict[str, dict]:
    """job id -> its job.json record (with the folder), for every job.json under ``runs_dir``."""
    found = {}
    root = Path(runs_dir)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("job.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        record["folder"] = str(path.parent)
        for job in record.get("jobs") or [record]:
            if job.get("job_id"):
                found[str(job["job_id"])] = record
    return found


def run_folder(job_id: str, records: dict, runs_dir) -> Optional[str]:
    """The run folder of a job: from its job.json record, else a ``*-job<ID>`` folder."""
    base = job_id.split("_")[0]
    if job_id in records:
        return records[job_id]["folder"]
    if base in records:
        return records[base]["folder"]
    # scripts submitted with plain sbatch train into <output_dir>/<name>-job<JOBID>[_<TASK>]/
    matches = sorted(Path(runs_dir).glob(f"*-job{job_id}")) if Path(runs_dir).is_dir() else []
    return str(matches[0]) if matches else None


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Queued:
    job: slurm.QueuedJob
    folder: Optional[str]  # its run folder, when known


@dataclass(frozen=True)
class Finished:
    job_id: str
    result: str  # "completed, test accuracy 99.12%", "FAILED (exit 1:0), no summary.json", ...
    folder: str


@dataclass(frozen=True)
class Status:
    user: str
    queued: list  # [Queued]
    finished: list  # [Finished]: the last ten submitted jobs no longer queued


def status(runs_dir="runs") -> Status:
    """The user's queued jobs (like ``sq``) with their run folders, then recent finished ones."""
    jobs = slurm.squeue()
    records = submitted_jobs(runs_dir)
    queued = [Queued(j, run_folder(j.job_id, records, runs_dir)) for j in jobs]
    in_queue = {j.job_id.split("_")[0] for j in jobs}
    done = [(job_id, r) for job_id, r in records.items() if job_id not in in_queue]
    done = sorted(done, key=lambda item: item[1].get("submitted_at", ""))[-10:]
    finished = [Finished(job_id, result(job_id, Path(r["folder"]), r), r["folder"]) for job_id, r in done]
    return Status(slurm.current_user(), queued, finished)


def result(job_id: str, folder: Path, record: dict) -> str:
    """One line on how a job that left the queue ended."""
    from mnist_hpc.runs.summary import read_summary

    if record.get("template") == "sweep_array":
        return f"sweep of {record.get('runs', '?')} runs (mnist-hpc report {record.get('sweep', '')})"
    try:
        summary = read_summary(folder)
    except UserError:
        summary = None
    if summary is None:
        from mnist_hpc.runs.state import read_state

        state = read_state(folder)  # what the run recorded: failed (why), interrupted (where), ...
        run = f"run {state.describe()}" if state else "no summary.json"
        info = slurm.scontrol_show_job(job_id) if shutil.which("scontrol") else None
        if info and info.get("JobState"):  # Slurm remembers finished jobs for a few minutes
            return f"{info['JobState']} (exit {info.get('ExitCode', '?')}), {run}"
        return run if state else "no summary.json (failed or cancelled? see mnist-hpc logs)"
    acc = summary.test_accuracy
    return f"{summary.status or '?'}" + (f", test accuracy {acc:.2%}" if isinstance(acc, float) else "")


# --------------------------------------------------------------------------- logs


def find_log(job_id: str, runs_dir="runs") -> tuple[Optional[Path], list[str]]:
    """The job's output file (it may not exist yet) and the places looked at."""
    looked = []
    records = submitted_jobs(runs_dir)
    base, _, task = job_id.partition("_")
    record = records.get(job_id) or records.get(base)
    if record and record.get("output"):
        pattern = record["output"]
        path = Path(pattern.replace("%A", base).replace("%a", task or "0").replace("%j", job_id))
        looked.append(str(path))
        if path.exists() or "%" not in pattern:
            return path, looked
    info = slurm.scontrol_show_job(job_id) if shutil.which("scontrol") else None
    if info and info.get("StdOut"):
        looked.append(info["StdOut"])
        return Path(info["StdOut"]), looked
    candidate = Path(f"slurm-{job_id}.out")
    looked.append(str(candidate))
    if candidate.exists():
        return candidate, looked
    return None, looked


def is_queued(job_id: str) -> bool:
    return bool(slurm.squeue(job_ids=(job_id,)))


def log_file(job_id: str, runs_dir="runs", follow: bool = False) -> Path:
    """The output file of job ``job_id``; a UserError when there is none (to follow: none yet)."""
    job_id = slurm.check_job_id(job_id)
    path, looked = find_log(job_id, runs_dir)
    if path is None or (not path.exists() and not follow):
        state = "is still pending" if shutil.which("squeue") and is_queued(job_id) else "has no log"
        raise UserError(f"job {job_id} {state}: nothing at {', '.join(looked) or 'any known place'}")
    return path


def follow_log(path: Path, job_id: str, poll: float = 1.0) -> Iterator[str]:
    """The text of ``path`` as it grows, until the job has left the queue and the file is read."""
    job_id = slurm.check_job_id(job_id)
    position = 0
    while True:
        active = is_queued(job_id)
        if path.exists():
            with open(path, "rb") as f:
                f.seek(position)
                chunk = f.read()
            position += len(chunk)
            if chunk:
                yield chunk.decode(errors="replace")
        if not active:
            return
        time.sleep(poll)


# --------------------------------------------------------------------------- cancel


def cancel(job_id: str) -> str:
    """Cancel one of the user's queued jobs (scancel); returns the checked job id."""
    job_id = slurm.check_job_id(job_id)
    if not is_queued(job_id):
        raise UserError(f"job {job_id} is not in the queue of {slurm.current_user()} "
                        "(finished, cancelled, or someone else's)")
    slurm.scancel(job_id)
    return job_id

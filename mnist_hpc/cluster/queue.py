"""Following submitted jobs: the queue with run folders (status), a job's log, cancelling.

Jobs are found through the ``job.json`` that ``submit`` writes into each run folder, and, for
scripts submitted with plain ``sbatch``, through the ``<name>-job<JOBID>`` folders that training
makes (and by name in ``sacct``). A finished job shows Slurm's state, elapsed time and, where the
cluster keeps accounting, CPU and memory efficiency (``accounting``), beside the run's result.
Functions return data and raise ``UserError``; the CLI prints.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from mnist_hpc.cluster import accounting, slurm
from mnist_hpc.errors import UserError

Record = dict[str, Any]  # a job.json, as submit wrote it (read back: its shape is checked, not its every key)
Warn = Callable[[str], None]


def submitted_jobs(runs_dir: str | Path, warn: Warn | None = None) -> dict[str, Record]:
    """job id -> its job.json record (with the folder), for every job.json under ``runs_dir``.
    A record that is unreadable or of the wrong shape is named (``warn``, default stderr) and
    left out; the others are still listed."""
    found: dict[str, Record] = {}
    root = Path(runs_dir)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("job.json")):
        record = read_job_record(path, warn)
        if record is None:
            continue
        for job in record.get("jobs") or [record]:
            if job.get("job_id") not in (None, ""):
                found[str(job["job_id"])] = record
    return found


_TEXT_KEYS = ("output", "template", "snapshot", "sweep", "script", "cluster")


def read_job_record(path: str | Path, warn: Warn | None = None) -> Record | None:
    """One job.json, checked for the shape the readers use: a JSON object with a ``job_id``
    (text or number), or a ``jobs`` list of such objects; ``output``, ``template`` and the other
    names it gives, text. Anything else is named in one line (``warn``) and gives None. A
    ``job_id`` that is absent or null (no job yet) is not a fault: that entry is just not listed."""
    warn = warn or (lambda m: print(m, file=sys.stderr, flush=True))
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        warn(
            f"warning: {path}: not a readable job record ({type(e).__name__}); left out (delete it, or "
            f"submit again)"
        )
        return None
    problem = _job_record_problem(record)
    if problem:
        warn(
            f"warning: {path}: not a job record of mnist-hpc ({problem}); left out (delete it, or submit again)"
        )
        return None
    record["folder"] = str(path.parent)
    return cast(Record, record)  # a JSON object: _job_record_problem found none other


def _job_record_problem(record: object) -> str | None:
    def job_id_ok(job: Record) -> bool:  # absent or null: a record without a job (yet)
        v = job.get("job_id")
        return v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))

    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, expected an object"
    jobs = record.get("jobs")
    if jobs is not None and (not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs)):
        return "'jobs' is not a list of objects"
    for job in jobs or [record]:
        if not job_id_ok(job):
            return "'job_id' is not text or a number"
    for key in _TEXT_KEYS:
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key!r} is not text"
    return None


def run_folder(job_id: str, records: dict[str, Record], runs_dir: str | Path) -> str | None:
    """The run folder of a job: from its job.json record, else a ``*-job<ID>`` folder."""
    base = job_id.split("_")[0]
    if job_id in records:
        return str(records[job_id]["folder"])
    if base in records:
        return str(records[base]["folder"])
    # scripts submitted with plain sbatch train into <output_dir>/<name>-job<JOBID>[_<TASK>]/
    matches = sorted(Path(runs_dir).glob(f"*-job{job_id}")) if Path(runs_dir).is_dir() else []
    return str(matches[0]) if matches else None


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class Queued:
    job: slurm.QueuedJob
    folder: str | None  # its run folder, when known
    detail: str = ""  # a packed array task: which of its runs it is on, how many are done


@dataclass(frozen=True)
class Finished:
    job_id: str
    result: str  # the run's own: "completed, test accuracy 99.12%", "run failed: ...", ...
    folder: str | None  # None: a job Slurm's accounting knows, with no run folder found
    name: str = "-"  # the job name, when Slurm still knows the job
    state: str = "-"  # Slurm's: COMPLETED, FAILED (exit 1:0), TIMEOUT, ... ("-": forgotten)
    elapsed: str = "-"
    usage: str = "-"  # CPU and memory efficiency, as seff gives them; "no accounting" without sacct


@dataclass(frozen=True)
class Status:
    user: str
    queued: list[Queued]
    finished: list[Finished]  # the most recent jobs no longer queued
    accounting: bool = False  # whether sacct answered (CPU and memory efficiency known)
    notes: list[str] = field(default_factory=list)  # what could not be asked (sacct failing, ...)


_JOB_FOLDER = re.compile(r"-job(\d+(?:_\d+)?)$")


def job_folders(runs_dir: str | Path) -> dict[str, Path]:
    """job id -> run folder, for the ``<name>-job<ID>[_<TASK>]`` folders that training makes in a
    job that was not submitted by mnist-hpc (plain ``sbatch slurm/submit_job.sh``)."""
    root = Path(runs_dir)
    found: dict[str, Path] = {}
    if root.is_dir():
        for path in sorted(root.glob("*-job*")):
            m = _JOB_FOLDER.search(path.name)
            if m and path.is_dir():
                found.setdefault(m.group(1), path)
    return found


def status(runs_dir: str | Path = "runs", limit: int = 10) -> Status:
    """The user's queued jobs (like ``sq``) with their run folders, then the ``limit`` most recent
    ones no longer queued: submitted by mnist-hpc (job.json), trained into ``<name>-job<ID>``
    folders, or (where the cluster keeps accounting) any job of the user of the last 7 days."""
    # one squeue call for every job of the user (a sweep's tasks with it), the ended ones it still
    # remembers included, and one sacct call: never one call per job (Alliance wiki: "Running jobs")
    known = slurm.squeue(ended=True)
    jobs = [j for j in known if j.state not in slurm.ENDED_STATES]
    remembered = {j.job_id: j for j in known if j.state in slurm.ENDED_STATES}
    records = submitted_jobs(runs_dir)
    queued = [
        Queued(j, run_folder(j.job_id, records, runs_dir), _packed_task(j.job_id, records)) for j in jobs
    ]
    in_queue = {j.job_id.split("_")[0] for j in jobs}
    notes: list[str] = []
    try:
        text = slurm.sacct()
    except UserError as e:
        text = None
        notes.append(f"{e}; CPU and memory efficiency unknown")
    usage = accounting.parse_sacct(text) if text is not None else None
    chosen = sorted(_left_queue(runs_dir, records, usage, in_queue), key=lambda c: c[0])[-limit:]
    finished = [
        _finished(job_id, folder, record, usage, runs_dir, remembered) for _, job_id, folder, record in chosen
    ]
    return Status(slurm.current_user(), queued, finished, usage is not None, notes)


def _mtime(path: str | Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _ended(usage: accounting.Usage) -> float:
    try:
        return datetime.fromisoformat(usage.end).timestamp()
    except ValueError:
        return 0.0


LeftQueue = tuple[float, str, str | None, Record]  # when, job id, run folder, job.json record


def _left_queue(
    runs_dir: str | Path,
    records: dict[str, Record],
    usage: dict[str, accounting.Usage] | None,
    in_queue: set[str],
) -> list[LeftQueue]:
    """(when, job id, run folder, job.json record) of the jobs known to have left the queue;
    when: the job's end where sacct tells it, else when its job.json or run folder last changed."""
    usage = usage or {}

    def when(job_id: str, path: str | Path) -> float:
        u = usage.get(job_id)
        return _ended(u) if u is not None and u.end else _mtime(path)

    out: dict[str, LeftQueue] = {}
    for job_id, record in records.items():
        if job_id not in in_queue:
            out[job_id] = (
                when(job_id, Path(record["folder"]) / "job.json"),
                job_id,
                record["folder"],
                record,
            )
    for job_id, folder in job_folders(runs_dir).items():
        if job_id not in out and job_id.split("_")[0] not in in_queue:
            out[job_id] = (when(job_id, folder), job_id, str(folder), {})
    arrays = {job_id for job_id, r in records.items() if r.get("template") == "sweep_array"}
    for job_id, u in usage.items():
        base = job_id.split("_")[0]
        if u.end and job_id not in out and base not in in_queue and base not in arrays:
            out[job_id] = (_ended(u), job_id, None, {})  # e.g. a job that failed before training began
    return list(out.values())


def _state(state: str, exit_code: str) -> str:
    return state if exit_code in ("", "0:0") else f"{state} (exit {exit_code})"


def _scontrol_facts(job_id: str) -> tuple[str, str, str]:
    """Name, state and elapsed time of a job Slurm still remembers (a few minutes after its end,
    MinJobAge); dashes when it forgot it or cannot be asked."""
    try:
        info = slurm.scontrol_show_job(job_id) if shutil.which("scontrol") else None
    except UserError:
        info = None
    if not info or not info.get("JobState"):
        return "-", "-", "-"
    run_time = accounting.format_duration(accounting.parse_seconds(info.get("RunTime", "")))
    return info.get("JobName") or "-", _state(info["JobState"], info.get("ExitCode", "")), run_time


def _finished(
    job_id: str,
    folder: str | None,
    record: Record,
    usage: dict[str, accounting.Usage] | None,
    runs_dir: str | Path,
    remembered: dict[str, slurm.QueuedJob] | None = None,
) -> Finished:
    if record.get("template") == "sweep_array":
        return _finished_array(job_id, folder, record, usage)
    result = run_result(Path(folder)) if folder else f"no run folder in {runs_dir}/"
    u = usage.get(job_id) if usage is not None else None
    if u is not None:
        return Finished(
            job_id,
            result,
            folder,
            u.name,
            _state(u.state, u.exit_code),
            accounting.format_duration(u.elapsed),
            accounting.efficiency_text(u),
        )
    known = (remembered or {}).get(job_id)  # from the one squeue call: no call per job here
    name, state, elapsed = (known.name, known.state, known.elapsed) if known else ("-", "-", "-")
    return Finished(
        job_id,
        result,
        folder,
        name,
        state,
        elapsed,
        "no accounting" if usage is None else "no accounting record",
    )


def _finished_array(
    job_id: str, folder: str | None, record: Record, usage: dict[str, accounting.Usage] | None
) -> Finished:
    """A sweep's job array: its tasks' states counted, their usage summed (per task: peak memory)."""
    result = _sweep_result(record)
    tasks = [u for key, u in (usage or {}).items() if key.partition("_")[0] == job_id and "_" in key]
    if not tasks:
        return Finished(job_id, result, folder, usage="no accounting" if usage is None else "-")
    counts = Counter(u.state for u in tasks)
    together = accounting.Usage(
        job_id=job_id,
        name=tasks[0].name,
        state="",
        exit_code="",
        elapsed=sum(u.elapsed for u in tasks),
        cpu_seconds=sum(u.cpu_seconds for u in tasks),
        cpus=tasks[0].cpus,
        mem_bytes=tasks[0].mem_bytes,
        max_rss_bytes=max((u.max_rss_bytes for u in tasks if u.max_rss_bytes is not None), default=None),
    )
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return Finished(
        job_id,
        result,
        folder,
        tasks[0].name,
        states,
        accounting.format_duration(max(u.elapsed for u in tasks)),
        f"{len(tasks)} tasks: {accounting.efficiency_text(together)}",
    )


def _sweep_result(record: Record) -> str:
    sweep = record.get("snapshot") or record.get("sweep", "")
    pack = record.get("pack") or 1
    if pack <= 1:
        return f"sweep of {record.get('runs', '?')} runs (mnist-hpc report {sweep})"
    return (
        f"sweep of {record.get('runs', '?')} runs in {record.get('tasks', '?')} tasks of {pack}: "
        f"{_packed_states(record)} (mnist-hpc report {sweep})"
    )


def _packed_task(job_id: str, records: dict[str, Record]) -> str:
    """ "run 4 of 3-5, 1 completed" for a running task of a packed sweep (its tasks/task-T.json), else ""."""
    base, _, task = job_id.partition("_")
    record = records.get(base)
    if not task.isdigit() or not record or (record.get("pack") or 1) <= 1:
        return ""
    from mnist_hpc.cluster.packed import TASKS_DIR

    offset = next(
        (int(j.get("index_offset") or 0) for j in record.get("jobs") or [] if str(j.get("job_id")) == base), 0
    )  # a later array of a long sweep starts further on
    path = Path(record.get("run_dir") or record["folder"]) / TASKS_DIR / f"task-{int(task) + offset}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    runs = info.get("runs") or []
    done = sum(1 for state in (info.get("states") or {}).values() if state == "completed")
    where = f"run {info['current']}" if info.get("current") is not None else "between runs"
    span = f"{runs[0]}-{runs[-1]}" if runs else "?"
    return f"{where} of {span}, {done} completed"


def _packed_states(record: Record) -> str:
    """How the runs of a packed sweep stand, each read from its own run folder: "4 completed, 1 requeued"."""
    from mnist_hpc.cluster import packed

    try:
        states = packed.sweep_states(record.get("run_dir") or record["folder"])
    except (UserError, OSError, KeyError) as e:
        return f"run states unknown ({str(e)[:80]})"
    counts = Counter(states.values())
    order = ("completed", "running", "requeued", "interrupted", "failed", "pending")
    return ", ".join(
        f"{counts[s]} {s}"
        for s in sorted(counts, key=lambda s: (order.index(s) if s in order else len(order), s))
    )


def run_result(folder: Path) -> str:
    """How the run in ``folder`` ended, by its own files: summary.json, else its recorded state."""
    from mnist_hpc.runs.summary import read_summary

    try:
        summary = read_summary(folder)
    except UserError:
        summary = None
    if summary is None:
        from mnist_hpc.runs.state import read_state

        state = read_state(folder)  # what the run recorded: failed (why), interrupted (where), ...
        return (
            f"run {state.describe()}"
            if state
            else "no summary.json (failed or cancelled? see mnist-hpc logs)"
        )
    acc = summary.test_accuracy
    text = f"{summary.status or '?'}" + (f", test accuracy {acc:.2%}" if isinstance(acc, float) else "")
    if summary.peak_gpu_memory_mb:
        text += f", peak GPU memory {summary.peak_gpu_memory_mb:,.0f} MB"
    return text


def result(job_id: str, folder: Path, record: Record) -> str:
    """One line on how a job that left the queue ended: the run's result, after Slurm's state
    when the run wrote no summary and Slurm still remembers the job."""
    if record.get("template") == "sweep_array":
        return _sweep_result(record)
    text = run_result(folder)
    if text.startswith(("run ", "no summary.json")):
        _, state, _ = _scontrol_facts(job_id)
        if state != "-":
            return f"{state}, {text}"
    return text


# --------------------------------------------------------------------------- logs


def find_log(job_id: str, runs_dir: str | Path = "runs") -> tuple[Path | None, list[str]]:
    """The job's output file (it may not exist yet) and the places looked at."""
    looked: list[str] = []
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


def log_file(job_id: str, runs_dir: str | Path = "runs", follow: bool = False) -> Path:
    """The output file of job ``job_id``; a UserError when there is none (to follow: none yet)."""
    job_id = slurm.check_job_id(job_id)
    path, looked = find_log(job_id, runs_dir)
    if path is None or (not path.exists() and not follow):
        state = "is still pending" if shutil.which("squeue") and is_queued(job_id) else "has no log"
        raise UserError(f"job {job_id} {state}: nothing at {', '.join(looked) or 'any known place'}")
    return path


# The Alliance asks users not to run squeue (or sq) in a loop at high frequency (Alliance wiki:
# "Running jobs", on monitoring jobs): a following command asks the scheduler at most this often,
# and follows the log file itself (a read of a growing file asks the scheduler nothing).
ASK_EVERY = 60.0  # seconds between two scheduler queries of one command


def follow_log(path: Path, job_id: str, poll: float = 1.0, ask_every: float = ASK_EVERY) -> Iterator[str]:
    """The text of ``path`` as it grows, until the job has left the queue and the file is read.

    The file is read every ``poll`` seconds; whether the job is still queued is asked of Slurm
    (one ``squeue`` call, covering every task of an array) at most once per ``ask_every`` seconds,
    so the end of a job shows up to a minute late."""
    job_id = slurm.check_job_id(job_id)
    position = 0
    asked_at: float | None = None
    active = True
    while True:
        now = time.monotonic()
        if asked_at is None or now - asked_at >= ask_every:
            active = is_queued(job_id)
            asked_at = now
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


def watch_status(
    runs_dir: str | Path = "runs", limit: int = 10, every: float = ASK_EVERY
) -> Iterator[Status]:
    """``status`` again and again, ``every`` seconds apart (never less than ``ASK_EVERY``): each
    refresh is one squeue call for all the user's jobs (an array's tasks included) and one sacct."""
    every = max(float(every), ASK_EVERY)
    while True:
        yield status(runs_dir, limit)
        time.sleep(every)


# --------------------------------------------------------------------------- cancel


def cancel(job_id: str) -> str:
    """Cancel one of the user's queued jobs (scancel); returns the checked job id."""
    job_id = slurm.check_job_id(job_id)
    if not is_queued(job_id):
        raise UserError(
            f"job {job_id} is not in the queue of {slurm.current_user()} "
            "(finished, cancelled, or someone else's)"
        )
    slurm.scancel(job_id)
    return job_id


# --------------------------------------------------------------------------- preempt (a time-limit rehearsal)

_SIGNAL_LINE = re.compile(r"^#SBATCH\s+--signal[= ](?:(?P<batch>B):)?(?P<sig>[A-Z0-9]+)(?:@\d+)?\s*$", re.M)


@dataclass(frozen=True)
class Preempt:
    job_id: str
    signal: str  # USR1, USR2, ...
    batch: bool  # --signal=B:...: the batch shell gets it (else only the job steps, as with srun jobs)
    source: str  # where the signal was read: the job's script file, or the script Slurm keeps
    argv: tuple[str, ...] = ()


def requeue_signal_of(job_id: str, runs_dir: str | Path = "runs") -> tuple[str, bool, str]:
    """(signal, to the batch shell?, where it was read) of ``job_id``: from the ``#SBATCH --signal``
    line of its job script, read from its job.json record in ``runs_dir`` where there is one, else
    from the script Slurm keeps (``scontrol write batch_script JOBID -``)."""
    base = job_id.partition("_")[0]
    records = submitted_jobs(runs_dir)
    record = records.get(job_id) or records.get(base)
    scripts: list[str | None] = []
    if record:
        scripts = [j.get("script") for j in record.get("jobs") or [] if str(j.get("job_id")) == base]
        scripts = [s for s in scripts if s] or [record.get("script")]
    for path in scripts:
        if not path:
            continue
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        m = _SIGNAL_LINE.search(text)
        if m:
            return m.group("sig"), bool(m.group("batch")), str(path)
    proc = slurm._run(["scontrol", "write", "batch_script", job_id, "-"], check=False)
    m = _SIGNAL_LINE.search(proc.stdout or "") if proc.returncode == 0 else None
    if m:
        return m.group("sig"), bool(m.group("batch")), "its batch script (scontrol write batch_script)"
    raise UserError(
        f"job {job_id} asks for no time-limit signal (no #SBATCH --signal line in its script): "
        "nothing would checkpoint it; submit it with mnist-hpc submit, or add "
        "#SBATCH --signal=B:USR1@90 and #SBATCH --requeue"
    )


def preempt(job_id: str, runs_dir: str | Path = "runs", dry_run: bool = False) -> Preempt:
    """Send running job ``job_id`` (an array task as ``<array>_<task>``) what Slurm sends it before
    its time limit: its own requeue signal (``scancel --signal=SIG [--batch]``, ``--batch`` where
    the script asks for ``--signal=B:``), so that it checkpoints, requeues itself and resumes."""
    job_id = slurm.check_job_id(job_id)
    info = slurm.scontrol_show_job(job_id)
    if info is None:
        raise UserError(
            f"job {job_id} does not exist (Slurm does not know it: finished long ago, or a typo); "
            "see mnist-hpc status"
        )
    state = info.get("JobState", "?")
    if state != "RUNNING":
        raise UserError(
            f"job {job_id} is {state}, not RUNNING: only a running job can be sent its "
            "time-limit signal; wait until it starts (mnist-hpc status)"
        )
    array, task = info.get("ArrayJobId"), info.get("ArrayTaskId", "")
    if array and "_" not in job_id:
        if job_id == array:  # scancel <array id> would signal every task of the array
            raise UserError(
                f"job {job_id} is a job array: name one task, e.g. {job_id}_0 "
                "(with the array's id every task would get the signal)"
            )
        if task.isdigit():
            job_id = f"{array}_{task}"  # a task's own job id: named as the task
    sig, batch, source = requeue_signal_of(job_id, runs_dir)
    argv = ("scancel", f"--signal={sig}", *(("--batch",) if batch else ()), job_id)
    if not dry_run:
        slurm._run(list(argv))
    return Preempt(job_id, sig, batch, source, argv)

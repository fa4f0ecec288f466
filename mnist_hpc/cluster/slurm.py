"""The Slurm commands mnist-hpc runs: argv lists (never shell strings), errors as UserError.

``sbatch --parsable``, ``squeue`` for the current user (the Alliance's ``sq``), ``scancel``,
``scontrol show job``, ``scontrol requeue`` and ``sacct`` (where the cluster keeps accounting).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from mnist_hpc.errors import UserError

JOB_ID_RE = re.compile(r"^\d+(_\d+)?$")


def _run(argv: list[str], check: bool = True, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command; a missing command or a failure is a UserError."""
    if shutil.which(argv[0]) is None:
        raise UserError(
            f"{argv[0]} not found: this command needs a Slurm cluster (run it on a login "
            "node, or start the sandbox with scripts/local_slurm.sh start)"
        )
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise UserError(f"{argv[0]} did not answer within 120 s (is slurmctld up?)") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise UserError(f"{argv[0]} failed: {detail}")
    return proc


def check_job_id(job_id: str) -> str:
    job_id = str(job_id).strip()
    if not JOB_ID_RE.match(job_id):
        raise UserError(f"{job_id!r} is not a Slurm job id (expected digits, e.g. 123456 or 123456_7)")
    return job_id


def sbatch(script: str, extra: tuple[str, ...] = (), cwd: str | None = None) -> str:
    """Submit ``script``; return the job id (``sbatch --parsable`` prints ``id[;cluster]``)."""
    proc = _run(["sbatch", "--parsable", *extra, str(script)], cwd=cwd)
    job_id = proc.stdout.strip().splitlines()[-1].split(";")[0] if proc.stdout.strip() else ""
    if not job_id.isdigit():
        raise UserError(f"sbatch printed no job id: {proc.stdout.strip()!r} {proc.stderr.strip()}")
    return job_id


def current_user() -> str:
    return os.environ.get("USER") or getpass.getuser()


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    name: str
    state: str
    elapsed: str
    time_limit: str
    nodes: str
    reason: str  # the node list when running, the reason when pending


_SQUEUE_FIELDS = "%i|%j|%T|%M|%l|%D|%R"


# the states of a job that has ended but that slurmctld still remembers (MinJobAge)
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)


def squeue(user: str | None = None, job_ids: tuple[str, ...] = (), ended: bool = False) -> list[QueuedJob]:
    """The user's jobs still known to the queue (pending, running, completing...); with ``ended``
    also those that ended a few minutes ago (``--states=all``), all in one call."""
    argv = ["squeue", "--noheader", f"--format={_SQUEUE_FIELDS}", f"--user={user or current_user()}"]
    if ended:
        argv.append("--states=all")
    if job_ids:
        argv.append("--jobs=" + ",".join(check_job_id(j) for j in job_ids))
    proc = _run(argv, check=False)
    if proc.returncode != 0:
        if job_ids and "Invalid job id" in proc.stderr:
            return []  # jobs that left the queue
        raise UserError(f"squeue failed: {proc.stderr.strip() or proc.returncode}")
    jobs = []
    for line in proc.stdout.splitlines():
        parts = line.split("|", 6)
        if len(parts) == 7:
            jobs.append(QueuedJob(*[p.strip() for p in parts]))
    return jobs


def count_jobs(user: str | None = None) -> int:
    """The user's jobs in the queue, each array task counted (as per-user limits count them);
    0 when squeue cannot tell (best effort: the limit is checked again by sbatch)."""
    try:
        proc = _run(
            ["squeue", "--noheader", "--array", "--format=%i", f"--user={user or current_user()}"],
            check=False,
        )
    except UserError:
        return 0
    return len(proc.stdout.split()) if proc.returncode == 0 else 0


def scancel(job_id: str) -> None:
    _run(["scancel", check_job_id(job_id)])


def scontrol_show_job(job_id: str) -> dict[str, str] | None:
    """``scontrol show job`` as a dict (``JobState``, ``StdOut``, ...); None if Slurm forgot it."""
    proc = _run(["scontrol", "show", "job", "--oneliner", check_job_id(job_id)], check=False)
    if proc.returncode != 0:
        if "Invalid job id" in proc.stderr:
            return None
        raise UserError(f"scontrol failed: {proc.stderr.strip() or proc.returncode}")
    line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    return parse_scontrol(line)


def parse_scontrol(line: str) -> dict[str, str]:
    """Parse ``Key=Value Key=Value`` (values may hold spaces: a key starts each field)."""
    fields: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/]*=|$)", line):
        fields[m.group(1)] = m.group(2)
    return fields


def sacct(user: str | None = None, since: str = "now-7days") -> str | None:
    """``sacct``'s text on the user's jobs that started since ``since`` (the fields of
    ``accounting.FIELDS``, parsed by ``accounting.parse_sacct``); None where the cluster keeps no
    accounting (no sacct, or accounting storage disabled). Other failures are a UserError."""
    from mnist_hpc.cluster.accounting import FIELDS

    if shutil.which("sacct") is None:
        return None
    proc = _run(
        [
            "sacct",
            "--parsable2",
            "--noheader",
            f"--format={','.join(FIELDS)}",
            f"--user={user or current_user()}",
            f"--starttime={since}",
        ],
        check=False,
    )
    if proc.returncode != 0:
        if "accounting storage is disabled" in proc.stderr.lower():
            return None
        detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise UserError(f"sacct failed: {detail}")
    return proc.stdout


def scontrol_requeue(job_id: str) -> None:
    _run(["scontrol", "requeue", check_job_id(job_id)])

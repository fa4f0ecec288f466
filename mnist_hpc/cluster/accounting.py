"""What a finished job used, from Slurm's accounting (``sacct``), the way ``seff`` reports it.

Pure functions over the text of ``sacct --parsable2 --noheader --format=FIELDS`` (``FIELDS``
below; ``slurm.sacct`` runs it): one ``Usage`` per job or array task, with its state, elapsed
time, CPU efficiency (CPU time of every step / elapsed x allocated cores) and memory efficiency
(the largest step's peak RSS / allocated memory), as ``seff`` computes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The job name goes last: it is the one field a user writes, and may hold the separator.
FIELDS = (
    "JobID",
    "State",
    "ExitCode",
    "ElapsedRaw",
    "TotalCPU",
    "AllocCPUS",
    "NNodes",
    "ReqMem",
    "AllocTRES",
    "MaxRSS",
    "End",
    "JobName",
)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTP]?)([nc]?)$")


@dataclass(frozen=True)
class Usage:
    job_id: str  # 123, or 123_4 for an array task
    name: str
    state: str  # COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, RUNNING, ...
    exit_code: str  # "0:0": the exit status and the signal
    elapsed: int  # seconds
    cpu_seconds: float  # user + system time of every step
    cpus: int  # allocated cores
    mem_bytes: int | None  # allocated memory, all nodes together (None: not known)
    max_rss_bytes: int | None  # the largest peak resident memory of a step (None: not measured)
    end: str = ""  # when it ended, ISO 8601 local time ("" while it runs)

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU time used / core time allocated, 0-1 (None before any time has passed)."""
        if self.elapsed <= 0 or self.cpus <= 0:
            return None
        return self.cpu_seconds / (self.elapsed * self.cpus)

    @property
    def mem_efficiency(self) -> float | None:
        if not self.mem_bytes or self.max_rss_bytes is None:
            return None
        return self.max_rss_bytes / self.mem_bytes


def parse_seconds(text: str) -> float:
    """Slurm's durations: ``[D-][HH:]MM:SS[.mmm]`` (TotalCPU) or plain seconds; 0 for empty."""
    text = text.strip()
    if not text or text in ("INVALID", "UNLIMITED", "Partition_Limit"):
        return 0.0
    days, _, rest = text.rpartition("-")
    parts = rest.split(":")
    try:
        seconds = float(parts[-1])
        minutes = int(parts[-2]) if len(parts) > 1 else 0
        hours = int(parts[-3]) if len(parts) > 2 else 0
        return (int(days) if days else 0) * 86400 + hours * 3600 + minutes * 60 + seconds
    except ValueError:
        return 0.0


def parse_size(text: str, cpus: int = 1, nodes: int = 1) -> int | None:
    """A sacct memory size (``1234K``, ``1.50G``, ``3000Mn`` per node, ``2Gc`` per core) in bytes,
    for the whole job; None when empty or not a size."""
    m = _SIZE.match(text.strip())
    if not m:
        return None
    size = float(m.group(1)) * _UNITS[m.group(2)]
    size *= {"n": nodes, "c": cpus, "": 1}[m.group(3)]
    return int(size)


def _tres(text: str) -> dict[str, str]:
    """``billing=2,cpu=2,mem=3G,node=1`` as a dict."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def _int(text: str) -> int:
    return int(text) if text.strip().isdigit() else 0


def parse_sacct(text: str) -> dict[str, Usage]:
    """``{job id: Usage}`` from sacct's output (the job's line and its steps' lines, as
    ``FIELDS``); jobs are keyed as sacct names them (``123``, ``123_4``)."""
    jobs: dict[str, list[dict[str, str]]] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        fields = line.split("|", len(FIELDS) - 1)
        if len(fields) != len(FIELDS):
            continue
        row = dict(zip(FIELDS, fields, strict=False))
        job, dot, _ = row["JobID"].partition(".")
        (steps.setdefault(job, []) if dot else jobs.setdefault(job, [])).append(row)
    out = {}
    for job_id, rows in jobs.items():
        row = rows[-1]  # a requeued job is listed once per start without --duplicates; keep the last
        cpus, nodes = _int(row["AllocCPUS"]), max(_int(row["NNodes"]), 1)
        own = steps.get(job_id, [])
        cpu = sum(parse_seconds(s["TotalCPU"]) for s in own) if own else parse_seconds(row["TotalCPU"])
        rss = [r for r in (parse_size(s["MaxRSS"]) for s in own) if r is not None]
        mem = parse_size(_tres(row["AllocTRES"]).get("mem", ""))
        if mem is None:
            mem = parse_size(row["ReqMem"], cpus, nodes)
        out[job_id] = Usage(
            job_id=job_id,
            name=row["JobName"],
            state=row["State"].split()[0] if row["State"].strip() else "",
            exit_code=row["ExitCode"],
            elapsed=_int(row["ElapsedRaw"]),
            cpu_seconds=cpu,
            cpus=cpus,
            mem_bytes=mem,
            max_rss_bytes=max(rss) if rss else None,
            end=row["End"] if row["End"][:1].isdigit() else "",
        )
    return out


def format_size(n: float | None) -> str:
    """``512B``, ``300K``, ``1.5G``, ``12G`` (binary units, as Slurm's)."""
    if n is None:
        return "?"
    for unit in ("B", "K", "M", "G"):  # noqa: B007 - the unit is read after the loop
        if n < 1024:
            break
        n /= 1024
    else:
        unit = "T"
    return f"{n:.1f}{unit}" if unit in "MGT" and n < 10 else f"{n:.0f}{unit}"


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``2-01:00:00``, ``0:42``."""
    s = round(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    text = f"{hours}:{minutes:02d}:{s:02d}" if hours or days else f"{minutes}:{s:02d}"
    return f"{days}-{hours:02d}:{minutes:02d}:{s:02d}" if days else text


def efficiency_text(u: Usage) -> str:
    """``CPU 87% of 2 cores, memory 412M of 3.0G (13%)``: what ``seff`` says, on one line. Memory
    use is sampled while a step runs (JobAcctGatherFrequency): a very short step has none."""
    if u.elapsed <= 0:
        return "did not run"
    cores = f"{u.cpus} core{'s' if u.cpus != 1 else ''}"
    cpu = f"CPU {u.cpu_efficiency:.0%} of {cores}" if u.cpu_efficiency is not None else f"CPU of {cores}: ?"
    if u.mem_efficiency is not None:
        mem = f"memory {format_size(u.max_rss_bytes)} of {format_size(u.mem_bytes)} ({u.mem_efficiency:.0%})"
    elif u.mem_bytes:
        mem = f"memory not measured (of {format_size(u.mem_bytes)})"
    else:
        mem = "memory not measured"
    return f"{cpu}, {mem}"

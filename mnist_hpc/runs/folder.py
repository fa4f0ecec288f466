"""The run folder: layout, atomic writes, metrics.csv, summary.json, provenance.

Never imports torch (reports and sweeps read run folders without it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

from mnist_hpc.errors import UserError

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def slurm_run_name(name: str) -> str | None:
    """``<name>-job<JOBID>[_<TASK>]`` inside a Slurm job, so a requeued job finds its folder."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if task and array_job:
        return f"{name}-job{array_job}_{task}"
    return f"{name}-job{job}"


def new_run_dir(output_dir: str, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def ensure_writable(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{path}: the output folder is not writable ({e.strerror or e}); "
                        f"set experiment.output_dir or --run-dir to a writable folder") from None
    return path


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def read_metrics_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = []
        for r in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
        return rows


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    import mnist_hpc

    versions = {"python": platform.python_version(), "mnist_hpc": mnist_hpc.__version__}
    for mod in ("torch", "torchvision"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "versions": versions,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }

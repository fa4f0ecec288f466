"""The run folder: where a run lives (new, resumed, a Slurm job's own), the one atomic writer,
metrics.csv and provenance.

Never imports torch (reports and sweeps read run folders without it), and never reads the
scheduler's environment: a job's folder suffix and ids arrive as arguments.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import importlib.metadata
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, TypeAlias

from mnist_hpc.errors import UserError

if TYPE_CHECKING:
    from mnist_hpc.config import Config

StrPath: TypeAlias = "str | os.PathLike[str]"  # what ``Path(...)`` takes: a str or a Path

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"]


# --------------------------------------------------------------------------- the one atomic writer


def atomic_write_with(path: StrPath, writer: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` all or nothing: ``writer(binary file)`` fills a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path``; on any failure it is removed and
    ``path`` keeps its previous content. The one atomic writer of the project."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        interrupt = _interrupt_behind(e)
        if interrupt is not None and interrupt is not e:  # Ctrl-C inside torch.save's writer
            raise interrupt from None
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temps(path: StrPath) -> list[Path]:
    """Remove the temporary files ``atomic_write_with`` left beside ``path`` when a process was
    killed while writing it (``.<name>.tmp-<pid>`` of a process that no longer runs); a live
    writer's file is left alone. Returns the files removed."""
    path = Path(path)
    removed: list[Path] = []
    prefix = f".{path.name}.tmp-"
    try:
        entries = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    for p in entries:
        pid = p.name[len(prefix) :] if p.name.startswith(prefix) else ""
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


# --------------------------------------------------------------------------- a full disk


class DiskFullError(UserError):
    """A write failed because the disk is full or the quota exceeded (ENOSPC, EDQUOT)."""


# torch.save reports a short write of its zip container as a RuntimeError without an errno
_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that ``exc`` stands for, if any: torch.save's writer turns a Ctrl-C
    during its write into a short-write RuntimeError whose context is the KeyboardInterrupt."""
    cur: BaseException | None = exc
    seen = 0
    while cur is not None and seen < 10:
        if isinstance(cur, KeyboardInterrupt):
            return cur
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return None


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, or torch.save's short-write RuntimeError ("enforce fail ... unexpected pos")
    that no Ctrl-C caused."""
    if _interrupt_behind(exc) is not None:
        return False
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _SHORT_WRITE)


def free_space_text(folder: StrPath) -> str:
    """Free space of the file system holding ``folder`` ("1.2 MB free"), or "" when unknown."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if free >= size:
            return f"{free / size:.1f} {unit} free"
    return f"{free} bytes free"


def disk_full_error(path: StrPath, exc: BaseException) -> DiskFullError:
    """The one-line error of a failed write to ``path`` on a full disk or an exceeded quota."""
    if isinstance(exc, DiskFullError):
        return exc
    path = Path(path)
    folder, what = (path, "") if path.is_dir() else (path.parent, f" {path.name}")
    why = (
        "disk quota exceeded"
        if isinstance(exc, OSError) and exc.errno == errno.EDQUOT
        else "no space left on device"
    )
    free = free_space_text(folder)
    return DiskFullError(
        f"{folder}: cannot write{what}: {why}"
        + (f" ({free})" if free else "")
        + "; free some space (or write elsewhere with --run-dir); "
        "files already written are kept"
    )


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some file systems refuse a directory fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: StrPath, data: str | bytes) -> Path:
    """``atomic_write_with`` for text (UTF-8) or bytes."""
    blob = data.encode() if isinstance(data, str) else data
    return atomic_write_with(path, lambda f: f.write(blob))


def write_json(path: StrPath, data: Mapping[str, Any]) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# --------------------------------------------------------------------------- where a run lives


def new_run_dir(output_dir: str, name: str) -> Path:
    """``<output_dir>/<name>-<YYYYmmdd-HHMMSS>`` (with ``-2``, ``-3``... if taken); not created.
    To create one, use ``create_run_dir`` (no race between the check and the creation)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(output_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def create_run_dir(output_dir: StrPath, name: str, first: StrPath | None = None) -> Path:
    """Create a new run folder ``<output_dir>/<name>-<time>[-N]`` (or ``first``, else ``first-N``)
    with an exclusive mkdir: when another process takes a name first, the next suffix is
    tried, so two runs started at once never share a folder."""
    base = Path(first) if first is not None else Path(output_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _unwritable(base.parent, e)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            _unwritable(path, e)
    raise UserError(f"{base}: 10,000 run folders of this name already exist; pick another experiment.name")


def _unwritable(path: StrPath, e: OSError) -> NoReturn:
    if is_disk_full(e):
        raise disk_full_error(path, e) from None
    raise UserError(
        f"{path}: the output folder is not writable ({e.strerror or e}); "
        f"set experiment.output_dir or --run-dir to a writable folder"
    ) from None


def locate_run_dir(
    cfg: Config, run_dir: StrPath | None = None, resume: StrPath | None = None, job_suffix: str | None = None
) -> tuple[Path, Path | Literal["auto"] | None, bool]:
    """(run folder, what to resume: a checkpoint path, "auto" or None, whether the folder's name
    is a new one of our choosing — to be created with ``create_run_dir``, not yet created).

    ``resume`` is None, "auto", a checkpoint file or a run folder. ``job_suffix`` (e.g.
    ``job123`` inside a Slurm job, from the cluster layer) names the folder
    ``<output_dir>/<name>-<job_suffix>``, so a requeued job continues in its own folder. Without
    a run folder, ``resume="auto"`` picks the newest unfinished run of this experiment name.
    """
    out = Path(cfg.experiment.output_dir)
    name = cfg.experiment.name
    resume_file = None
    if resume and resume != "auto":
        p = Path(resume)
        if p.is_dir():  # a run folder
            run_dir = run_dir or p
            resume = "auto"
        elif p.is_file():
            resume_file = p
            if run_dir is None:
                run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
        else:
            raise UserError(f"--resume {resume}: no such checkpoint or run folder")
    if run_dir is None:
        if job_suffix:
            run_dir = out / f"{name}-{job_suffix}"
            if (run_dir / "checkpoints").is_dir() and resume is None:
                resume = "auto"  # a requeued job continues in its folder
        elif resume == "auto":
            candidates = sorted(
                (
                    d
                    for d in out.glob(f"{name}-*")
                    if (d / "checkpoints").is_dir() and not (d / "summary.json").exists()
                ),
                key=lambda d: d.stat().st_mtime,
            )
            run_dir = candidates[-1] if candidates else None
    chosen = run_dir is None
    if run_dir is None:
        run_dir = new_run_dir(str(out), name)
    return Path(run_dir), resume_file if resume_file else ("auto" if resume == "auto" else None), chosen


def ensure_writable(path: StrPath) -> Path:
    path = Path(path)
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        _unwritable(path, e)
    return path


# --------------------------------------------------------------------------- metrics.csv


@dataclass
class MetricsRow:
    """One epoch of ``metrics.csv``; accuracies are fractions, ``val_*`` None without a validation split."""

    epoch: int
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    lr: float | None = None
    seconds: float | None = None
    images_per_s: float | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access, so rows work where dicts did (plots, TensorBoard)."""
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


MetricsRecord: TypeAlias = "Mapping[str, Any] | MetricsRow"  # a metrics.csv row: a dict or a MetricsRow


def write_metrics_csv(path: StrPath, rows: Iterable[MetricsRecord]) -> Path:
    """``rows``: dicts or MetricsRow, one per finished epoch."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
    return atomic_write(path, buf.getvalue())


def read_metrics_csv(path: StrPath) -> list[MetricsRow]:
    """The rows of a run's ``metrics.csv`` (a run folder or the file); [] when it has none yet."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    try:
        with open(path, newline="") as f:
            raw = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    rows: list[MetricsRow] = []
    for r in raw:
        values = {k: _number(r.get(k)) for k in METRIC_COLUMNS if k != "epoch"}
        epoch = _number(r.get("epoch"))
        if epoch is None:
            raise UserError(f"{path}: a row without an epoch number: {dict(r)}")
        rows.append(MetricsRow(epoch=int(epoch), **values))
    return rows


def _number(text: str | None) -> float | None:
    if text in ("", None):
        return None
    try:
        return float(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- provenance


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(job_id: str | None = None, array_task_id: str | None = None) -> dict[str, Any]:
    """Versions, commit and host of this process, with the scheduler's job ids passed in."""
    import mnist_hpc

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "mnist_hpc": mnist_hpc.__version__,
    }
    for mod in ("torch", "torchvision"):  # the installed version: importing torchvision costs ~1 s
        loaded = sys.modules.get(mod)
        try:
            versions[mod] = loaded.__version__ if loaded is not None else importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            versions[mod] = None
    return {
        "versions": versions,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "slurm_job_id": job_id,
        "slurm_array_task_id": array_task_id,
    }

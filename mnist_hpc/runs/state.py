"""Which run a folder belongs to, and how that run stands.

``run.json`` is the folder's identity, written once when the run claims the folder: a run id
(carried by every checkpoint the run writes), its name, the parent run it started from and
where it was created. ``state.json`` is the run's state, rewritten atomically as it changes:

- ``running`` (with the process id and host),
- ``completed``,
- ``failed`` (with the error line),
- ``interrupted`` (by which signal, at which epoch and step, and the checkpoint kept).

A running process holds an advisory lock on ``.lock`` in the folder, so a second process that
tries to train into the same folder is refused, and a ``running`` state whose process is gone
(kill -9, a node failure) reads as interrupted. Never imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_hpc.runs.folder import StrPath, atomic_write, write_json

RUN_FILE = "run.json"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
STATES = ("running", "completed", "failed", "interrupted")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- identity (run.json)


def new_identity(
    name: str, *, parent_run: StrPath | None = None, job_id: str | None = None
) -> dict[str, Any]:
    """A fresh run identity: a random run id, the run's name, its parent run and origin."""
    return {
        "run_id": uuid.uuid4().hex[:12],
        "name": name,
        "created_at": _now(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "parent_run": str(parent_run) if parent_run else None,
        "slurm_job_id": job_id,
    }


def read_identity(run_dir: StrPath) -> dict[str, Any] | None:
    """The folder's ``run.json``, or None when it has none (or an unreadable one)."""
    try:
        data = json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("run_id"), str) else None


def write_identity(run_dir: StrPath, identity: Mapping[str, Any]) -> Path:
    return write_json(Path(run_dir) / RUN_FILE, identity)


def holds_run(run_dir: StrPath) -> bool:
    """Whether the folder holds a run: an identity, a summary or a checkpoint. A folder made by
    ``submit`` (config.yaml, job.sh, job.json, logs) or a sweep (train.log) holds none yet."""
    d = Path(run_dir)
    return (d / RUN_FILE).is_file() or (d / "summary.json").is_file() or has_checkpoints(d)


def has_checkpoints(run_dir: StrPath) -> bool:
    cdir = Path(run_dir) / "checkpoints"
    return cdir.is_dir() and any(cdir.glob("*.pt"))


# --------------------------------------------------------------------------- state (state.json)


@dataclass
class RunState:
    """How a run stands; ``describe()`` says it in a few words."""

    state: str  # running | completed | failed | interrupted
    run_id: str | None = None
    error: str | None = None  # failed: the one-line error
    signal: str | None = None  # interrupted: SIGUSR1, SIGTERM, SIGINT (Ctrl-C), ...
    epoch: int | None = None  # interrupted: the epoch in progress (1-based)
    step: int | None = None  # interrupted: the step within it
    checkpoint: str | None = None  # interrupted: the newest checkpoint kept
    requeued: bool = False  # interrupted: the scheduler requeued the job
    pid: int | None = None
    host: str | None = None
    updated_at: str | None = None

    def describe(self) -> str:
        if self.state == "failed":
            return f"failed: {self.error}" if self.error else "failed"
        if self.state == "interrupted":
            by = f" by {self.signal}" if self.signal else ""
            where = f" at epoch {self.epoch}, step {self.step}" if self.epoch is not None else ""
            how = "; requeued" if self.requeued else ""
            kept = (
                f"; checkpoint {Path(self.checkpoint).name}"
                if self.checkpoint
                else "; no checkpoint"
                if self.signal
                else ""
            )
            text = f"interrupted{by}{where}{how}{kept}"
            return text + (f" ({self.error})" if self.error else "")
        if self.state == "running":
            return f"running (pid {self.pid} on {self.host})" if self.pid else "running"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def write_state(run_dir: StrPath, state: RunState) -> Path:
    """Write ``state.json`` atomically (stamped with the time)."""
    state.updated_at = _now()
    return atomic_write(Path(run_dir) / STATE_FILE, json.dumps(state.to_dict(), indent=2) + "\n")


def record_state(run_dir: StrPath, state: RunState) -> bool:
    """``write_state`` that never raises (the run is already failing: a full disk must not hide
    the first error); True when it was written."""
    try:
        write_state(run_dir, state)
        return True
    except (OSError, ValueError):
        return False


def read_state(run_dir: StrPath) -> RunState | None:
    """How the run in ``run_dir`` stands, or None for a folder that holds no run.

    Folders of earlier versions (no state.json) read as completed (summary.json) or
    interrupted (checkpoints only). A ``running`` state whose process has gone from this host
    reads as interrupted."""
    d = Path(run_dir)
    try:
        data = json.loads((d / STATE_FILE).read_text())
        state = RunState.from_dict(data) if isinstance(data, dict) and data.get("state") in STATES else None
    except (OSError, ValueError, UnicodeDecodeError, TypeError):
        state = None
    if (d / "summary.json").is_file():
        return state if state is not None and state.state == "completed" else RunState("completed")
    if state is not None and state.state == "completed":
        return dataclasses.replace(state, state="interrupted", error="its summary.json has gone")
    if state is None:
        return RunState("interrupted", error="no state recorded") if has_checkpoints(d) else None
    if (
        state.state == "running"
        and state.host == socket.gethostname()
        and not TrainingLock(d).held_elsewhere()
    ):
        return dataclasses.replace(
            state, state="interrupted", error=f"process {state.pid} ended without recording why (killed?)"
        )
    return state


# --------------------------------------------------------------------------- the lock


class TrainingLock:
    """An advisory lock on ``<run>/.lock`` held while a process trains the run (best effort:
    file systems without locks count as unlocked)."""

    def __init__(self, run_dir: StrPath) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # no locking on this file system
            pass
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether some other open file holds the lock now (probed read-only, released at once)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:  # no lock file: nobody holds it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError:  # no locking on this file system: cannot tell
            return True
        finally:
            os.close(fd)

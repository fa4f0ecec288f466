"""What a sweep runner checks before it trusts or trains a run folder: that a finished run was
trained with the config asked for now (``stale_runs``), and that no other runner is training
the same run at this moment (``SweepClaim``). Used by `sweep run` and `sweep submit`; torch-free.

    stale = stale_runs(sweep.runs)      # [(run, ["train.epochs: 1 there, 3 now"])]
    with SweepClaim(run.run_dir) as lock:  # lock.holder: who has it when lock.acquired is False
        ...
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from mnist_hpc.config import ConfigError, config_from_dict, flatten, read_yaml
from mnist_hpc.errors import UserError

# Settings that cannot change what a run learns: a finished run still counts as done when only
# these differ (the sweep runner itself sets runtime.threads for parallel runs).
NOT_RESULTS = {
    "experiment.name",
    "experiment.output_dir",
    "experiment.tensorboard",
    "experiment.loggers",
    "data.root",
    "data.eval_batch_size",
    "runtime.threads",
    "runtime.requeue_signal",
    "runtime.max_requeues",
    "runtime.dist_timeout",
}
NOT_RESULTS_PREFIXES = ("train.checkpoint.",)
LOCK_FILE = ".sweep-run.lock"
REPLACED = "replaced"  # --force moves stale run folders to <sweep folder>-replaced-<time>/


# --------------------------------------------------------------------------- stale results


def _counts(key: str) -> bool:
    return key not in NOT_RESULTS and not key.startswith(NOT_RESULTS_PREFIXES)


def config_differences(run_dir, wanted) -> list:
    """How the config stored in ``run_dir/config.yaml`` differs from ``wanted`` (a ``Config``),
    one "key: stored there, wanted now" text per key that can change a result; [] when equal."""
    path = Path(run_dir) / "config.yaml"
    try:
        raw = read_yaml(path, fast=True)
        stored = flatten(config_from_dict(raw, str(path)).to_dict())
    except ConfigError:
        return ["its config.yaml is missing or unreadable"]
    now = flatten(wanted.to_dict())
    keys = [k for k in dict.fromkeys([*now, *stored]) if _counts(k) and stored.get(k) != now.get(k)]
    return [f"{k}: {_show(stored.get(k))} there, {_show(now.get(k))} now" for k in keys]


def _show(value) -> str:
    return "unset" if value is None else json.dumps(value) if isinstance(value, str) else str(value)


def stale_runs(runs, completed) -> list:
    """[(run, differences)] for each run that ``completed(run_dir)`` says finished but whose
    stored config is not the one the sweep asks for now."""
    found = []
    for run in runs:
        if completed(run.run_dir):
            diffs = config_differences(run.run_dir, run.config)
            if diffs:
                found.append((run, diffs))
    return found


def refuse_stale(sweep_name: str, stale: list) -> None:
    """One line naming the differing keys and the two ways on (--force, another sweep name)."""
    if not stale:
        return
    run, diffs = stale[0]
    keys = sorted({d.split(":", 1)[0] for _, ds in stale for d in ds})
    others = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
    raise ConfigError(
        f"sweep {sweep_name}: {len(stale)} finished run(s) ({run.name}{others}) were trained with "
        f"another config ({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}; keys that "
        f"differ: {', '.join(keys)}); to train them anew add --force to the command (the old runs are "
        f"moved to {run.run_dir.parent}-{REPLACED}-<time>/, not deleted), or give the sweep another "
        f"`name:` to keep both"
    )


def move_aside(stale: list) -> Path | None:
    """Move each stale run folder into ``<sweep folder>-replaced-<time>/`` (nothing deleted);
    returns that folder, or None when there was nothing to move."""
    if not stale:
        return None
    sweep_dir = stale[0][0].run_dir.parent
    dest = sweep_dir.with_name(f"{sweep_dir.name}-{REPLACED}-{time.strftime('%Y%m%d-%H%M%S')}")
    dest.mkdir(parents=True, exist_ok=True)
    for run, _ in stale:
        target = dest / run.name
        if target.exists():
            raise UserError(f"{target} exists already: move it away, then run the command again")
        try:
            run.run_dir.rename(target)
        except OSError as e:
            raise UserError(
                f"cannot move {run.run_dir} to {target}: {e.strerror or e}; "
                "move it yourself, then run the command again"
            ) from None
    return dest


# --------------------------------------------------------------------------- one runner per run


class SweepClaim:
    """An exclusive, non-blocking lock on one run folder while a sweep runner trains it (an
    ``flock`` on ``<run_dir>/.sweep-run.lock``: the system drops it when the holder dies, on any
    host that shares the file system). The file names the holder: host, pid, since when."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self.acquired = False
        self.holder = ""

    def __enter__(self) -> SweepClaim:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; one runner per sweep is on the user
            self.acquired = True
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = self._read_holder()
            os.close(self.fd)
            self.fd = None
            return self
        except OSError:  # a file system without locks: go on unlocked, as before
            self.acquired = True
            return self
        self.acquired = True
        os.ftruncate(self.fd, 0)
        os.write(
            self.fd, f"{socket.gethostname()} {os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        )
        return self

    def _read_holder(self) -> str:
        assert self.fd is not None  # called with the lock file open
        try:
            host, pid, *since = os.read(self.fd, 200).decode(errors="replace").split()
        except (OSError, ValueError):
            return "another sweep runner"
        return f"process {pid} on {host} (since {' '.join(since)})"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock; the file stays (removing it would race)
            self.fd = None

"""The clock a run's printed total starts from.

A `mnist-hpc` command (console script, `python -m mnist_hpc`, a torchrun or srun task) counts
from the start of its own process, interpreter and imports included: the figure `time` shows.
A run started from Python (a notebook, a script) counts from its ``train()`` call, so the second
run of a session does not count the first. Nothing here imports more than ``os`` and ``time``.
"""

from __future__ import annotations

import os
import time


def _process_start() -> float:
    """When this process started (Linux: its start time in /proc, to the kernel's clock tick,
    i.e. before the interpreter ran); elsewhere, now (the first import of mnist_hpc)."""
    now = time.time()
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return now
    return now - age if 0.0 <= age < 3600.0 else now  # an hour before the first import: not a fresh command


PROCESS_START = _process_start()
_command_process = False


def mark_command_process() -> None:
    """This process exists to run one `mnist-hpc` command: its runs count from the process start."""
    global _command_process
    _command_process = True


def run_start() -> float:
    """Where a run started now counts its total from (module docstring)."""
    return PROCESS_START if _command_process else time.time()

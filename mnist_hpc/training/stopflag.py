"""Stop requests: SIGUSR1/SIGUSR2/SIGTERM only set a flag; the training loop acts on it at the
next step boundary. Installed at the start of `mnist-hpc train`, before torch is imported, so a
signal that arrives during start-up is not fatal. Never imports torch."""

from __future__ import annotations

import contextlib
import signal

WATCHED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
# Slurm's time-limit warnings. Their default action ends the process; after the flag is removed,
# one that comes late (a rank done with its work while the others finish, or exiting) is ignored
# instead: killed by it, a finished rank would turn a completed job into a FAILED one.
WARNINGS = (signal.SIGUSR1, signal.SIGUSR2)


class StopFlag:
    def __init__(self):
        self.received = None  # the first signal number seen, or None
        self._old = {}

    def install(self) -> StopFlag:
        for s in WATCHED:
            with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.received is None:
            self.received = signum

    def restore(self, ignore_late_warnings: bool = False) -> None:
        """Give back the previous handlers. ``ignore_late_warnings``: for a process about to exit
        (the CLI), a SIGUSR1/SIGUSR2 whose handler was the default (termination) is ignored instead:
        Slurm's time-limit warning can reach a rank whose work is done, and under srun one finished
        rank killed by it turns a COMPLETED job into FAILED."""
        for s, h in self._old.items():
            late = ignore_late_warnings and s in WARNINGS and h == signal.SIG_DFL
            signal.signal(s, signal.SIG_IGN if late else h)
        self._old = {}

    def wants_requeue(self, requeue_signal: str) -> bool:
        """Did the configured requeue signal (USR1/USR2) arrive, as opposed to SIGTERM?"""
        return self.received == getattr(signal, "SIG" + requeue_signal)

    @property
    def name(self):
        return signal.Signals(self.received).name if self.received else None


_current: StopFlag | None = None


def installed() -> bool:
    return _current is not None


def install() -> StopFlag:
    """Install the process-wide stop flag (idempotent)."""
    global _current
    if _current is None:
        _current = StopFlag().install()
    return _current


def uninstall(ignore_late_warnings: bool = False) -> None:
    """Restore the previous handlers (exactly, for callers that train in-process: the API, tests,
    notebooks); ``ignore_late_warnings``: see ``StopFlag.restore``."""
    global _current
    if _current is not None:
        _current.restore(ignore_late_warnings)
        _current = None


def ignore_late_warnings() -> None:
    """For a process about to exit (the `mnist-hpc` command): SIGUSR1/SIGUSR2 left at their default
    (termination) are ignored, so Slurm's time-limit warning cannot kill a finished rank."""
    for s in WARNINGS:
        if signal.getsignal(s) == signal.SIG_DFL:
            signal.signal(s, signal.SIG_IGN)

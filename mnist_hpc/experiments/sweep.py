"""Running a sweep on this machine: each run a `mnist-hpc train` subprocess, K at a time.

Runs that completed before are skipped and interrupted ones resumed, so running a sweep again
continues it. The requeue/stop signals a Slurm batch shell passes on reach the trainers. The
sweep file itself (schema, runs, names) is ``sweepfile``'s. This module never imports torch.

    from mnist_hpc.experiments.sweep import load_sweep, run_sweep
    results = run_sweep(load_sweep("configs/sweeps/learning_rate.yaml", ["train.epochs=1"]), parallel=2)
    folders = [r.run_dir for r in results if r.ok]
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mnist_hpc.errors import UserError
from mnist_hpc.experiments import runguard
from mnist_hpc.experiments.sweepfile import Sweep, SweepRun, load_sweep
from mnist_hpc.experiments.tables import plural
from mnist_hpc.runs.state import read_state
from mnist_hpc.runs.summary import read_summary

# The command that trains one run; tests point it at a stand-in script.
TRAIN_COMMAND = [sys.executable, "-m", "mnist_hpc", "train"]


def train_argv(sweep: Sweep, run: SweepRun, data_dir=None, extra_overrides=()) -> list[str]:
    """The argv that trains ``run`` into its own folder (an argv list, never a shell string)."""
    argv = [*TRAIN_COMMAND, str(sweep.base)]
    for text in [*run.overrides, *extra_overrides]:
        argv += ["--set", text]
    argv += ["--run-dir", str(run.run_dir)]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    return argv


# --------------------------------------------------------------------------- running


def completed_summary(run_dir):
    """The run's summary if it completed; None while it has none, or an unreadable one."""
    try:
        summary = read_summary(run_dir)
    except UserError:  # half-written or damaged: the run is trained again
        return None
    return summary if summary is not None and summary.status == "completed" else None


def is_completed(run_dir) -> bool:
    return completed_summary(run_dir) is not None


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as $CUDA_VISIBLE_DEVICES entries: that variable's own list
    when set (up to its first invalid entry, which ends the list for CUDA too: "-1",
    "NoDevFiles"), else 0..N-1 of the GPUs torch counts; [] on a machine without CUDA."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for entry in (e.strip() for e in listed.split(",")):
            if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
                break
            gpus.append(entry)
        return gpus
    try:
        import torch  # only here: a sweep that runs one run at a time never pays for it
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class GpuPool:
    """Hands each starting run the visible GPU with the fewest runs on it (the first such in
    order: round-robin while they start), so K parallel runs spread over the GPUs."""

    def __init__(self, gpus: list[str]):
        self.load = dict.fromkeys(gpus, 0)
        self.lock = threading.Lock()

    def take(self) -> str | None:
        with self.lock:
            if not self.load:
                return None
            gpu = min(self.load, key=self.load.__getitem__)
            self.load[gpu] += 1
            return gpu

    def give_back(self, gpu: str | None) -> None:
        if gpu is not None:
            with self.lock:
                self.load[gpu] -= 1


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class SweepRunOutcome:
    run: SweepRun
    status: str  # "completed", "skipped" (already completed before), "busy" (another runner has it), "requeued" or "failed"
    returncode: int | None = None
    seconds: float = 0.0
    where: str = ""  # requeued: "epoch E step S", where the next start resumes

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def ok(self) -> bool:
        """Completed, skipped, or requeued by its time-limit signal (it resumes in the next start)."""
        return self.status != "failed"

    @property
    def log(self) -> Path:
        return self.run.run_dir / "train.log"


def last_line(path: Path) -> str:
    """The last non-empty line of a log (usually the error), or ''."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def requeued_at(run_dir) -> str | None:
    """ "epoch E step S" when the run in ``run_dir`` last stopped on a signal after a checkpoint
    and its job was requeued (its state.json says so), else None."""
    state = read_state(run_dir)
    if state is None or state.state != "interrupted" or not state.requeued:
        return None
    return f"epoch {state.epoch} step {state.step}" if state.epoch is not None else "its last checkpoint"


def run_sweep(
    sweep,
    runs=None,
    parallel: int = 1,
    data_dir=None,
    echo: Callable[[str], None] = print,
    force: bool = False,
) -> list[SweepRunOutcome]:
    """Train ``runs`` (default: all) of ``sweep`` (a ``Sweep`` or a sweep file) as subprocesses,
    ``parallel`` at a time, skipping finished ones; one ``SweepRunOutcome`` per run, in sweep order
    (``.run_dir`` the run folder, ``.ok`` False where it failed).

    Each child's output is saved to ``<run_dir>/train.log``; with one run at a time it is also
    echoed. A run whose folder holds checkpoints is resumed (``--resume auto``). With
    ``parallel`` > 1 on a machine with GPUs, each run gets one GPU of its own while there are
    enough (``CUDA_VISIBLE_DEVICES``, from the visible ones: ``GpuPool``). SIGUSR1,
    SIGUSR2 and SIGTERM are passed on to the running trainers (which checkpoint) and no further
    run starts. Ctrl-C stops the children and re-raises KeyboardInterrupt; running the sweep
    again continues it.

    A finished run counts as done only if its stored config is the one asked for now: otherwise
    a ``ConfigError`` names the keys that differ, or with ``force`` the old run folders are
    moved aside (``runguard.move_aside``) and trained anew. A run another runner is training
    (``runguard.SweepClaim``) is left to it: status "busy", not "failed".
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    runs = sweep.runs if runs is None else runs
    stale = runguard.stale_runs(runs, is_completed)
    if stale and not force:
        runguard.refuse_stale(sweep.name, stale)
    moved = runguard.move_aside(stale)
    if moved is not None:
        echo(f"--force: moved {plural(len(stale), 'finished run')} trained with another config to {moved}/")
    results: dict[int, SweepRunOutcome] = {}
    todo = []
    for run in runs:
        if is_completed(run.run_dir):
            results[run.index] = SweepRunOutcome(run, "skipped")
        else:
            todo.append(run)
    if results:
        echo(f"{len(results)} of {plural(len(runs), 'run')} already completed, skipping them")
    if not todo:
        return [results[r.index] for r in runs]

    parallel = max(1, min(parallel, len(todo)))
    threads = max(1, available_cores() // parallel)
    gpus = GpuPool(visible_gpus() if parallel > 1 else [])  # one at a time: the run's own choice
    lock = threading.Lock()
    children: set[subprocess.Popen] = set()
    stopping = threading.Event()
    received: list[int] = []  # signals passed on so far
    done = [0]

    def say(text: str):
        with lock:
            echo(text)

    def train(run: SweepRun) -> SweepRunOutcome:
        if stopping.is_set():
            return SweepRunOutcome(run, "failed")
        extra = []
        if parallel > 1 and run.config.runtime.threads is None:
            extra.append(f"runtime.threads={threads}")
        argv = train_argv(sweep, run, data_dir, extra)
        if any((run.run_dir / "checkpoints").glob("*.pt")):  # an interrupted run: continue it
            argv += ["--resume", "auto"]
        run.run_dir.mkdir(parents=True, exist_ok=True)
        with runguard.SweepClaim(run.run_dir) as owned:
            if not owned.acquired:  # another `sweep run` trains it: never a failure of this one
                say(f"[{run.index}] {run.name}: being trained by {owned.holder}; left to it")
                return SweepRunOutcome(run, "busy")
            if is_completed(run.run_dir):  # another runner finished it since this one looked
                return SweepRunOutcome(run, "skipped")
            gpu = gpus.take()
            try:
                return launch(run, argv, gpu)
            finally:
                gpus.give_back(gpu)

    def launch(run: SweepRun, argv: list[str], gpu: str | None) -> SweepRunOutcome:
        say(f"[{run.index}] {run.name}: started" + (f" on GPU {gpu}" if gpu is not None else ""))
        start = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        with open(run.run_dir / "train.log", "a") as log:
            log.write(
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')} mnist-hpc sweep {sweep.name}: {shlex.join(argv)}\n"
            )
            log.flush()
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
            )
            with lock:
                children.add(proc)
            if received:  # a signal came while this run was starting
                proc.send_signal(received[-1])
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:
                log.write(line)
                if parallel == 1:
                    say("    " + line.rstrip("\n"))
            code = proc.wait()
            with lock:
                children.discard(proc)
        seconds = time.monotonic() - start
        summary = completed_summary(run.run_dir) if code == 0 else None
        with lock:
            done[0] += 1
            progress = f"({done[0]}/{len(todo)})"
        if summary is not None:
            acc = summary.test_accuracy
            result = f"test accuracy {100 * acc:.2f}%" if isinstance(acc, (int, float)) else "done"
            say(f"[{run.index}] {run.name}: {result} in {seconds:.0f} s {progress}")
            return SweepRunOutcome(run, "completed", code, seconds)
        where = requeued_at(run.run_dir)
        if where is not None:  # the time-limit signal: checkpointed and requeued (Slurm then ends this start)
            say(
                f"[{run.index}] {run.name}: requeued at {where}; resumes in the next start "
                f"(after {seconds:.0f} s {progress})"
            )
            return SweepRunOutcome(run, "requeued", code, seconds, where)
        why = f"exit {code}" if code != 0 else "no completed summary.json"
        say(
            f"[{run.index}] {run.name}: FAILED ({why}) after {seconds:.0f} s {progress}, "
            f"see {run.run_dir / 'train.log'}"
        )
        return SweepRunOutcome(run, "failed", code, seconds)

    def pass_on(signum, frame):
        # Under Slurm the time-limit warning reaches only the batch shell, which passes it to
        # this process: hand it to the trainers (they checkpoint and requeue) and start no more.
        received.append(signum)
        stopping.set()
        for proc in list(children):
            proc.send_signal(signum)

    pool = ThreadPoolExecutor(max_workers=parallel)
    previous = _install(pass_on)
    try:
        for result in pool.map(train, todo):
            results[result.run.index] = result
    except KeyboardInterrupt:
        stopping.set()
        for proc in list(children):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        _restore(previous)
    pool.shutdown()
    return [results[r.index] for r in runs]


FORWARDED_SIGNALS = [
    getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGTERM") if hasattr(signal, name)
]


def _install(handler) -> dict:
    """Route the requeue/stop signals to ``handler`` (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in FORWARDED_SIGNALS}


def _restore(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)

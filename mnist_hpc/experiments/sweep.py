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
    _set_aside_stale(sweep, runs, force, echo)
    results, todo = _skip_completed(runs, echo)
    if todo:
        results.update(_Runner(sweep, todo, parallel, data_dir, echo).run())
    return [results[r.index] for r in runs]


def _set_aside_stale(sweep: Sweep, runs, force: bool, echo: Callable[[str], None]) -> None:
    """Refuse finished runs trained with another config, or with ``force`` move them aside."""
    stale = runguard.stale_runs(runs, is_completed)
    if stale and not force:
        runguard.refuse_stale(sweep.name, stale)
    moved = runguard.move_aside(stale)
    if moved is not None:
        echo(f"--force: moved {plural(len(stale), 'finished run')} trained with another config to {moved}/")


def _skip_completed(runs, echo: Callable[[str], None]) -> tuple[dict[int, SweepRunOutcome], list[SweepRun]]:
    """The outcomes of the runs completed before ("skipped", by run index), and the runs to train."""
    results: dict[int, SweepRunOutcome] = {}
    todo = []
    for run in runs:
        if is_completed(run.run_dir):
            results[run.index] = SweepRunOutcome(run, "skipped")
        else:
            todo.append(run)
    if results:
        echo(f"{len(results)} of {plural(len(runs), 'run')} already completed, skipping them")
    return results, todo


class _Runner:
    """Trains ``todo``, ``parallel`` at a time: what the pool's threads and the signal handler share."""

    def __init__(
        self,
        sweep: Sweep,
        todo: list[SweepRun],
        parallel: int,
        data_dir,
        echo: Callable[[str], None],
    ):
        self.sweep, self.todo, self.data_dir, self.echo = sweep, todo, data_dir, echo
        self.parallel = max(1, min(parallel, len(todo)))
        self.threads = max(1, available_cores() // self.parallel)
        # one run at a time: the GPU is the run's own choice
        self.gpus = GpuPool(visible_gpus() if self.parallel > 1 else [])
        self.lock = threading.Lock()
        self.children: set[subprocess.Popen] = set()
        self.stopping = threading.Event()
        self.received: list[int] = []  # signals passed on so far
        self.done = 0

    def say(self, text: str) -> None:
        with self.lock:
            self.echo(text)

    def run(self) -> dict[int, SweepRunOutcome]:
        """Train every run of ``todo`` in the pool, with the stop signals passed on; outcomes by run index."""
        results: dict[int, SweepRunOutcome] = {}
        pool = ThreadPoolExecutor(max_workers=self.parallel)
        previous = _install(self._pass_on)
        try:
            for result in pool.map(self._train, self.todo):
                results[result.run.index] = result
        except KeyboardInterrupt:
            self.stopping.set()
            for proc in list(self.children):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            _restore(previous)
        pool.shutdown()
        return results

    def _pass_on(self, signum, frame):
        # Under Slurm the time-limit warning reaches only the batch shell, which passes it to
        # this process: hand it to the trainers (they checkpoint and requeue) and start no more.
        self.received.append(signum)
        self.stopping.set()
        for proc in list(self.children):
            proc.send_signal(signum)

    def _train(self, run: SweepRun) -> SweepRunOutcome:
        """Claim ``run`` against other runners and train it on a GPU of the pool (if any)."""
        if self.stopping.is_set():
            return SweepRunOutcome(run, "failed")
        argv = self._argv(run)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        with runguard.SweepClaim(run.run_dir) as owned:
            if not owned.acquired:  # another `sweep run` trains it: never a failure of this one
                self.say(f"[{run.index}] {run.name}: being trained by {owned.holder}; left to it")
                return SweepRunOutcome(run, "busy")
            if is_completed(run.run_dir):  # another runner finished it since this one looked
                return SweepRunOutcome(run, "skipped")
            gpu = self.gpus.take()
            try:
                return self._launch(run, argv, gpu)
            finally:
                self.gpus.give_back(gpu)

    def _argv(self, run: SweepRun) -> list[str]:
        """The trainer's argv for ``run``: its share of the cores when parallel, a resume when interrupted."""
        extra = []
        if self.parallel > 1 and run.config.runtime.threads is None:
            extra.append(f"runtime.threads={self.threads}")
        argv = train_argv(self.sweep, run, self.data_dir, extra)
        if any((run.run_dir / "checkpoints").glob("*.pt")):  # an interrupted run: continue it
            argv += ["--resume", "auto"]
        return argv

    def _launch(self, run: SweepRun, argv: list[str], gpu: str | None) -> SweepRunOutcome:
        """Train ``run`` as a subprocess and report how it ended."""
        self.say(f"[{run.index}] {run.name}: started" + (f" on GPU {gpu}" if gpu is not None else ""))
        start = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        code = self._stream(run, argv, env)
        return self._outcome(run, code, time.monotonic() - start)

    def _stream(self, run: SweepRun, argv: list[str], env: dict[str, str]) -> int:
        """Run the trainer, its output into train.log (and echoed when one at a time); its exit status."""
        with open(run.run_dir / "train.log", "a") as log:
            log.write(
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')} mnist-hpc sweep {self.sweep.name}: {shlex.join(argv)}\n"
            )
            log.flush()
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
            )
            with self.lock:
                self.children.add(proc)
            if self.received:  # a signal came while this run was starting
                proc.send_signal(self.received[-1])
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:
                log.write(line)
                if self.parallel == 1:
                    self.say("    " + line.rstrip("\n"))
            code = proc.wait()
            with self.lock:
                self.children.discard(proc)
        return code

    def _outcome(self, run: SweepRun, code: int, seconds: float) -> SweepRunOutcome:
        """Completed, requeued or failed, from the run's folder after its trainer exited; said in one line."""
        summary = completed_summary(run.run_dir) if code == 0 else None
        with self.lock:
            self.done += 1
            progress = f"({self.done}/{len(self.todo)})"
        if summary is not None:
            acc = summary.test_accuracy
            result = f"test accuracy {100 * acc:.2f}%" if isinstance(acc, (int, float)) else "done"
            self.say(f"[{run.index}] {run.name}: {result} in {seconds:.0f} s {progress}")
            return SweepRunOutcome(run, "completed", code, seconds)
        where = requeued_at(run.run_dir)
        if where is not None:  # the time-limit signal: checkpointed and requeued (Slurm then ends this start)
            self.say(
                f"[{run.index}] {run.name}: requeued at {where}; resumes in the next start "
                f"(after {seconds:.0f} s {progress})"
            )
            return SweepRunOutcome(run, "requeued", code, seconds, where)
        why = f"exit {code}" if code != 0 else "no completed summary.json"
        self.say(
            f"[{run.index}] {run.name}: FAILED ({why}) after {seconds:.0f} s {progress}, "
            f"see {run.run_dir / 'train.log'}"
        )
        return SweepRunOutcome(run, "failed", code, seconds)


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

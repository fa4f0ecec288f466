"""The Optuna backend of ``method: optuna`` sweeps: one study in the sweep folder, workers that
ask it for the next trial, train it as a `mnist-hpc train` subprocess and tell it the result.

The study is the journal file ``<sweep folder>/study.journal`` (Optuna's ``JournalFileBackend``
with ``JournalFileOpenLock``: an exclusive ``open(O_CREAT | O_EXCL)``, which holds on NFSv3+ and
Lustre, unlike ``flock``; no database server). Every worker (a thread of `sweep run -j N`, or one
array task of `sweep submit`) loops:

1. **claim** a trial, under a lock of its own (``study.claims``, the same lock class): first a
   trial left RUNNING by a worker that is gone (killed, preempted: see ``stale``), which then
   resumes from its run folder's checkpoints; else, while the study has fewer than ``n_trials``
   trials, a new one (``study.ask``). Counting and asking under one lock is what keeps
   ``n_trials`` exact over any number of workers; a finished trial is never claimed again.
2. **train** it into ``<sweep folder>/trial-NNN_<params>/`` and, while it trains, read each new
   row of its ``metrics.csv``: each epoch's validation metric is reported to the trial and the
   pruner asked; a trial to prune gets SIGTERM, the stop signal `train` already honours (it
   checkpoints and exits), and is told PRUNED. The trainer knows nothing of Optuna: the file it
   writes anyway is the feed, the stop is its usual signal, and a resumed trial reports only
   the epochs the journal lacks. One small handshake keeps a short epoch from outrunning the
   verdict: the trainer, told by ``$MNIST_HPC_EPOCH_GATE``, waits at each epoch end until the
   worker names that epoch in the gate file, which the worker writes after any stop signal
   (``runs.loggers.EpochGate``; it stops waiting when the worker is gone).
3. **tell** the study the trial's value (from ``summary.json`` and ``metrics.csv``), or FAIL
   when the training failed. A worker stopped by a requeue/stop signal tells nothing: its
   trial stays RUNNING and the next worker (the requeued task itself) resumes it.

Each claimed trial's folder holds ``worker.json`` (host, pids, Slurm task, a heartbeat every
``HEARTBEAT`` s). A RUNNING trial is stale, and claimed again, when that file is missing, names
this same Slurm array task (restarted after a requeue), names this host and processes that no
longer live, or has not beaten for ``STALE_AFTER`` s (a node that died). Optuna is imported
only here (the ``[search]`` extra); this module never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_hpc.config.extras import require
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import sweep as sw
from mnist_hpc.experiments.sweepfile import Sweep, SweepRun, dump_value
from mnist_hpc.runs.folder import atomic_write, read_metrics_csv
from mnist_hpc.runs.loggers import GATE_ENV

JOURNAL = "study.journal"
CLAIMS = "study.claims"
OWNER = "worker.json"
HEARTBEAT = 15.0  # seconds between a worker's beats in worker.json
STALE_AFTER = 600.0  # a RUNNING trial whose worker has not beaten for this long is claimed again
POLL = 0.2  # seconds between looks at a training's metrics.csv
MAX_FAILURES = 3  # trials failing in a row stop the workers of a process (a broken config, data missing)
GATE_FILE = "epoch-gate"
_PRIMITIVE = (type(None), bool, int, float, str)


def load_optuna():
    """optuna, or one line saying how to install it."""
    require("optuna", "method: optuna")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def journal_path(sweep: Sweep) -> Path:
    return Path(sweep.output_dir) / JOURNAL


def _lock(path: Path):
    from optuna.storages.journal import JournalFileOpenLock

    return JournalFileOpenLock(str(path))


def storage(path: Path):
    """The journal file at ``path`` as an Optuna storage (``optuna-dashboard PATH`` opens it too)."""
    optuna = load_optuna()
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=_lock(path)))


# --------------------------------------------------------------------------- the space


class Space:
    """The study's search space as Optuna distributions; categorical values that are not plain
    scalars (a list of widths, a model section) travel as their YAML text and are read back."""

    def __init__(self, spec):
        optuna = load_optuna()
        D = optuna.distributions
        self.distributions, self.decode = {}, {}
        for key, p in spec.params.items():
            if p.kind == "categorical":
                values = list(p.categorical)
                if all(isinstance(v, _PRIMITIVE) for v in values):
                    self.distributions[key] = D.CategoricalDistribution(values)
                else:
                    texts = [dump_value(v) for v in values]
                    self.decode[key] = dict(zip(texts, values, strict=False))
                    self.distributions[key] = D.CategoricalDistribution(texts)
            elif p.kind == "float":
                self.distributions[key] = D.FloatDistribution(p.float[0], p.float[1], log=p.log, step=p.step)
            else:
                self.distributions[key] = D.IntDistribution(
                    p.int[0], p.int[1], log=p.log, step=int(p.step or 1)
                )
        self.grid = (
            {
                key: [dump_value(v) if key in self.decode else v for v in p.grid()]
                for key, p in spec.params.items()
            }
            if spec.sampler == "grid"
            else None
        )

    def values(self, params: dict) -> dict:
        """A trial's params as config values, in the space's order."""
        return {
            k: self.decode[k].get(params[k], params[k]) if k in self.decode else params[k]
            for k in self.distributions
            if k in params
        }


def make_sampler(spec, space: Space, worker_seed: int | None):
    optuna = load_optuna()
    S = optuna.samplers
    if spec.sampler == "random":
        return S.RandomSampler(seed=worker_seed)
    if spec.sampler == "grid":
        return _GridSampler(space.grid, seed=worker_seed)
    if spec.sampler == "cmaes":
        require("cmaes", "sampler: cmaes")
        return S.CmaEsSampler(seed=worker_seed, n_startup_trials=_startup(spec.n_trials))
    return S.TPESampler(seed=worker_seed, n_startup_trials=_startup(spec.n_trials))


def _grid_sampler_class():
    from optuna.samplers import GridSampler

    class Grid(GridSampler):
        """Optuna's grid sampler, without its ``study.stop()`` once the grid is covered (only an
        ``optimize`` loop may be stopped; the workers stop at n_trials, which fits the grid)."""

        def after_trial(self, study, trial, state, values):
            pass

    return Grid


def _GridSampler(grid, seed=None):
    return _grid_sampler_class()(grid, seed=seed)


def _startup(n_trials: int) -> int:
    """Random trials before the model-based samplers take over: Optuna's 10, fewer in a small
    study (a third of it, at least 2) so the model gets some say."""
    return max(2, min(10, n_trials // 3))


def make_pruner(spec, epochs: int):
    optuna = load_optuna()
    P = optuna.pruners
    if spec.pruner == "none":
        return P.NopPruner()
    if spec.pruner == "hyperband":
        return P.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    return P.MedianPruner(n_startup_trials=max(2, min(5, spec.n_trials // 4)), n_warmup_steps=0)


def open_study(sweep: Sweep, worker_seed: int | None = None, create: bool = True):
    """The sweep's study (made on first use); ``create=False``: None when there is none yet."""
    optuna = load_optuna()
    path = journal_path(sweep)
    if not create and not path.is_file():
        return None
    spec = sweep.study
    assert spec is not None and sweep.shared_config is not None  # a study's sweep (load_sweep)
    space = Space(spec)
    study = optuna.create_study(
        study_name=sweep.name,
        storage=storage(path),
        direction=spec.direction,
        sampler=make_sampler(spec, space, worker_seed),
        pruner=make_pruner(spec, sweep.shared_config.train.epochs),
        load_if_exists=True,
    )
    if "mnist_hpc" not in study.user_attrs:
        study.set_user_attr(
            "mnist_hpc",
            {
                "metric": spec.metric,
                "target": spec.target,
                "n_trials": spec.n_trials,
                "sweep_file": str(sweep.path),
            },
        )
    return study


# --------------------------------------------------------------------------- values


def intermediate(spec, row) -> float | None:
    """What one epoch of metrics.csv reports to the pruner (None without a validation split)."""
    key = spec.report_key
    if key == "val_error":
        return None if row.val_acc is None else 1.0 - row.val_acc
    return getattr(row, key)


def objective(spec, summary, rows) -> float:
    """The trial's value: the metric, read from its summary and metrics.csv."""
    if spec.metric == "test_acc":
        return float(summary.test_accuracy)
    if spec.metric == "val_acc":
        vals = [r.val_acc for r in rows if r.val_acc is not None]
        return max(vals) if vals else float(summary.best_val_accuracy)
    if spec.metric == "val_loss":
        return min(r.val_loss for r in rows if r.val_loss is not None)
    spent = 0.0  # time_to_target: training seconds up to the first epoch at the target
    for r in rows:
        spent += r.seconds or 0.0
        if r.val_acc is not None and r.val_acc >= spec.target:
            return round(spent, 3)
    return math.inf  # never reached: worse than any trial that did


# --------------------------------------------------------------------------- owners


@dataclass(frozen=True)
class Me:
    """Who a worker is, as worker.json records it."""

    host: str
    pid: int
    task: str | None  # <array job id>_<task id> of a Slurm array task, else None
    worker: int  # the worker's number (thread of `sweep run -j N`, or array task index)

    @staticmethod
    def here(worker: int) -> Me:
        from mnist_hpc.cluster import env

        return Me(
            socket.gethostname(),
            os.getpid(),
            env.current().requeue_id if env.current().array_task_id else None,
            worker,
        )


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / OWNER).read_text())
    except (OSError, ValueError):
        return None


def write_owner(run_dir: Path, me: Me, child: int | None = None, since: float | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    atomic_write(
        run_dir / OWNER,
        json.dumps(
            {
                "host": me.host,
                "pid": me.pid,
                "task": me.task,
                "worker": me.worker,
                "child": child,
                "since": since or now,
                "beat": now,
            }
        )
        + "\n",
    )


def stale(owner: dict | None, me: Me, now: float | None = None, stale_after: float = STALE_AFTER) -> bool:
    """Whether a RUNNING trial whose worker.json says ``owner`` has lost its worker."""
    if not owner:
        return True  # claimed and never recorded: its worker died inside the claim
    if (owner.get("host"), owner.get("pid")) == (me.host, me.pid):
        return False  # this process's own (another thread's) trial
    if owner.get("task") and owner.get("task") == me.task:
        return True  # this very array task, started again after a requeue
    if owner.get("host") == me.host:
        return not (_alive(owner.get("pid")) or _alive(owner.get("child")))
    return (now or time.time()) - float(owner.get("beat") or 0) > stale_after


def dying(owner: dict | None, me: Me) -> bool:
    """A trial whose worker on this host is gone but whose trainer is still saving its checkpoint
    (it got SIGTERM when its worker died): stale in a moment."""
    if not owner:
        return False
    return owner.get("host") == me.host and not _alive(owner.get("pid")) and _alive(owner.get("child"))


# --------------------------------------------------------------------------- the worker


@dataclass
class Claim:
    trial_id: int
    number: int
    params: dict  # config values
    resumed: bool


@dataclass
class TrialResult:
    number: int
    run_dir: Path
    state: str  # completed, pruned, failed, stopped (left RUNNING for the next worker)
    value: float | None = None
    returncode: int | None = None
    seconds: float = 0.0


WAIT = "wait"  # claim(): nothing now, but a trial is about to be free (its trainer is exiting)


def claim(study, sweep: Sweep, space: Space, me: Me):
    """The next trial for ``me``: a stale RUNNING one, else a new one while fewer than n_trials;
    ``WAIT`` when the study is full but a trial's orphaned trainer is still exiting; else None."""
    from optuna.trial import TrialState

    lock = _lock(Path(sweep.output_dir) / CLAIMS)
    lock.acquire()
    try:
        trials = study.get_trials(deepcopy=False)
        wait = False
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            params = space.values(t.params)
            run_dir = sweep.trial_run(t.number, params).run_dir
            owner = read_owner(run_dir)
            if stale(owner, me):
                write_owner(run_dir, me)
                return Claim(t._trial_id, t.number, params, True)
            wait = wait or dying(owner, me)
        assert sweep.study is not None  # a study's sweep
        if len(trials) >= sweep.study.n_trials:
            return WAIT if wait else None
        trial = study.ask(space.distributions)
        params = space.values(trial.params)
        run = sweep.trial_run(trial.number, params)
        trial.set_user_attr("run", run.name)
        write_owner(run.run_dir, me)
        return Claim(trial._trial_id, trial.number, params, False)
    finally:
        lock.release()


def _prctl():
    """libc's prctl, looked up before any fork (the child only calls it)."""
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl() if sys.platform == "linux" else None


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """The trainer gets SIGTERM (checkpoint, stop) if its worker dies, even by SIGKILL."""
    assert _PRCTL is not None  # only passed to Popen when there is one
    _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Workers:
    """``count`` workers (threads) of one process sharing the study; ``run()`` returns the results."""

    def __init__(
        self,
        sweep: Sweep,
        count: int = 1,
        first_worker: int = 0,
        data_dir=None,
        echo: Callable[[str], None] = print,
    ):
        assert sweep.study is not None  # run_study checks it
        self.sweep, self.spec, self.count, self.first = sweep, sweep.study, max(1, count), first_worker
        self.data_dir, self.echo = data_dir, echo
        self.space = Space(self.spec)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.received: list[int] = []
        self.children: set = set()
        self.results: list[TrialResult] = []
        self.errors: list[BaseException] = []
        self.failures = 0  # trials failed in a row, over this process's workers
        self.threads = max(1, sw.available_cores() // self.count)
        self.gpus = sw.GpuPool(sw.visible_gpus() if self.count > 1 else [])

    def say(self, text: str) -> None:
        with self.lock:
            self.echo(text)

    def run(self) -> list[TrialResult]:
        load_optuna()
        previous = sw._install(self._pass_on)
        try:
            workers = [
                threading.Thread(target=self._work, args=(self.first + k,), daemon=True)
                for k in range(self.count)
            ]
            for t in workers:
                t.start()
            for t in workers:
                while t.is_alive():
                    t.join(0.2)
            if self.errors:  # a worker's mistake to report (one line for a UserError)
                raise self.errors[0]
        except KeyboardInterrupt:
            self.stopping.set()
            for proc in list(self.children):
                proc.terminate()
            raise
        finally:
            sw._restore(previous)
        return sorted(self.results, key=lambda r: r.number)

    def _pass_on(self, signum, frame):
        self.received.append(signum)
        self.stopping.set()
        for proc in list(self.children):
            proc.send_signal(signum)

    def _work(self, worker: int) -> None:
        try:
            self._loop(worker)
        except BaseException as e:
            self.errors.append(e)
            self.stopping.set()
            for proc in list(self.children):
                proc.terminate()

    def _loop(self, worker: int) -> None:
        seed = self.spec.seed
        existing = len(journal_path(self.sweep).read_bytes()) if journal_path(self.sweep).is_file() else 0
        # each worker draws its own sequence (the same seed would propose the same trials), and a
        # restarted worker another one than before (the journal has grown)
        worker_seed = None if seed is None else (seed + 7919 * worker + existing) % (2**32)
        study = open_study(self.sweep, worker_seed)
        me = Me.here(worker)
        while not self.stopping.is_set():
            got = claim(study, self.sweep, self.space, me)
            if got == WAIT:
                time.sleep(1.0)
                continue
            if got is None:
                break
            result = self._trial(study, got, me)
            with self.lock:
                self.results.append(result)
                self.failures = self.failures + 1 if result.state == "failed" else 0
                give_up = self.failures >= MAX_FAILURES and not self.stopping.is_set()
                if give_up:
                    self.stopping.set()  # the other workers finish their trials and stop
            if give_up:
                raise UserError(
                    f"{MAX_FAILURES} trials in a row failed, the last with: "
                    f"{sw.last_line(result.run_dir / 'train.log') or f'exit {result.returncode}'} "
                    f"(log {result.run_dir / 'train.log'}); fix the cause and run the sweep "
                    f"again (failed trials count towards n_trials)"
                )
            if result.state == "stopped":
                break

    def _trial(self, study, got: Claim, me: Me) -> TrialResult:
        """Train the claimed trial (unless its training ended already) and tell the study its outcome."""
        import optuna
        from optuna.trial import TrialState

        sweep, spec = self.sweep, self.spec
        run = sweep.trial_run(got.number, got.params)
        trial = optuna.trial.Trial(study, got.trial_id)
        reported = set(study._storage.get_trial(got.trial_id).intermediate_values)
        start = time.monotonic()
        label = f"[trial {got.number}] {run.name.split('_', 1)[-1]}"

        def feed(rows, prune_ok: bool) -> bool:
            """Report the epochs not reported yet; True when the pruner says stop."""
            prune = False
            for row in rows:
                value = intermediate(spec, row)
                if value is None or row.epoch in reported:
                    continue
                trial.report(value, row.epoch)
                reported.add(row.epoch)
                if prune_ok and row.epoch < run.config.train.epochs and trial.should_prune():
                    prune = True
            return prune

        done = sw.completed_summary(run.run_dir)
        code, pruned = 0, False
        if done is None:  # (a trial whose worker died after its training ended is only told)
            code, pruned = self._train(run, got, me, feed, label)
            done = sw.completed_summary(run.run_dir) if code == 0 else None
        rows = read_metrics_csv(run.run_dir)
        feed(rows, False)
        seconds = time.monotonic() - start
        if pruned:
            study.tell(got.number, state=TrialState.PRUNED)
            self.say(f"{label}: pruned at epoch {max(reported) if reported else 0} after {seconds:.0f} s")
            return TrialResult(got.number, run.run_dir, "pruned", None, code, seconds)
        if done is not None:
            value = objective(spec, done, rows)
            study.tell(got.number, value)
            self.say(f"{label}: {spec.metric} {value:.4g} in {seconds:.0f} s")
            return TrialResult(got.number, run.run_dir, "completed", value, code, seconds)
        if self.stopping.is_set():  # stopped by a signal: the trial stays RUNNING, to be resumed
            self.say(f"{label}: stopped (exit {code}); the next worker resumes it from its checkpoint")
            return TrialResult(got.number, run.run_dir, "stopped", None, code, seconds)
        why = sw.last_line(run.run_dir / "train.log")
        trial.set_user_attr("failure", why[:300])
        study.tell(got.number, state=TrialState.FAIL)
        self.say(f"{label}: FAILED (exit {code}) after {seconds:.0f} s, see {run.run_dir / 'train.log'}")
        return TrialResult(got.number, run.run_dir, "failed", None, code, seconds)

    def _train(
        self, run: SweepRun, got: Claim, me: Me, feed: Callable[[list, bool], bool], label: str
    ) -> tuple[int, bool]:
        """Train the trial as a subprocess on a GPU of the pool (if any); (its exit status, pruned)."""
        argv = self._argv(run)
        gpu = self.gpus.take()
        self.say(
            f"{label}: {'resumed' if got.resumed else 'started'}"
            + (f" on GPU {gpu}" if gpu is not None else "")
        )
        gate = run.run_dir / GATE_FILE  # the trainer waits at each epoch end for our word here
        gate.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", GATE_ENV: str(gate)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            proc = self._start(run, argv, env, got.number)
            code, pruned = self._watch(proc, run, me, gate, feed)
            with self.lock:
                self.children.discard(proc)
        finally:
            self.gpus.give_back(gpu)
        return code, pruned

    def _argv(self, run: SweepRun) -> list[str]:
        """The trial's trainer argv: its share of the cores with several workers, a resume after checkpoints."""
        extra = []
        if self.count > 1 and run.config.runtime.threads is None:
            extra.append(f"runtime.threads={self.threads}")
        argv = sw.train_argv(self.sweep, run, self.data_dir, extra)
        if any((run.run_dir / "checkpoints").glob("*.pt")):
            argv += ["--resume", "auto"]
        return argv

    def _start(self, run: SweepRun, argv: list[str], env: dict[str, str], number: int) -> subprocess.Popen:
        """Start the trainer, its output into train.log; a signal received already is passed on to it."""
        with open(run.run_dir / "train.log", "a") as log:
            log.write(
                f"# {time.strftime('%Y-%m-%d %H:%M:%S')} mnist-hpc sweep {self.sweep.name} "
                f"trial {number}: {' '.join(argv)}\n"
            )
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if _PRCTL is not None else None,
            )
        with self.lock:
            self.children.add(proc)
        if self.received:
            proc.send_signal(self.received[-1])
        return proc

    def _watch(
        self, proc: subprocess.Popen, run: SweepRun, me: Me, gate: Path, feed: Callable[[list, bool], bool]
    ) -> tuple[int, bool]:
        """Until the trainer exits: beat in worker.json, feed each new epoch to the pruner (SIGTERM
        when it says prune) and pass the epoch gate; (the exit status, pruned)."""
        pruned = False
        since, beat, passed = time.time(), 0.0, 0
        while True:
            code = proc.poll()
            if time.monotonic() - beat >= HEARTBEAT:
                write_owner(run.run_dir, me, proc.pid, since)
                beat = time.monotonic()
            if code is not None:
                return code, pruned
            rows = read_metrics_csv(run.run_dir)
            if not pruned and feed(rows, True):
                pruned = True
                proc.send_signal(signal.SIGTERM)  # the trainer's stop: checkpoint, exit
            if rows and rows[-1].epoch > passed:  # after the signal: it stops at the next step
                passed = rows[-1].epoch
                atomic_write(gate, f"{passed}\n")
            time.sleep(POLL)


def run_study(
    sweep: Sweep, workers: int = 1, first_worker: int = 0, data_dir=None, echo: Callable[[str], None] = print
) -> list[TrialResult]:
    """Run ``workers`` workers of the sweep's study here until it has n_trials trials, none of
    them left to resume; returns what these workers did."""
    if sweep.study is None:
        raise UserError(f"{sweep.path}: not a method: optuna sweep")
    return Workers(sweep, workers, first_worker, data_dir, echo).run()

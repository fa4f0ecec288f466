"""The public Python API of the cluster commands (re-exported by ``mnist_hpc.api`` and, lazily, by
``mnist_hpc``): what `mnist-hpc sweep submit`, `estimate`, `status`, `logs`, `cancel`, `preempt`,
`setup`, `push` and `data pack` do, as functions that return what the command prints.
``mnist_hpc.submit`` (a config as one job) lives in ``mnist_hpc.api``.

Each function takes the command's options as keyword arguments, with the command's defaults, and
raises the same one-line ``UserError`` the command prints. ``warn``/``note`` (where a command
streams lines while it works) get each warning and note as it comes; by default they go to stderr
as the command prints them. Nothing here imports torch at import time, nor the cluster modules:
each function imports what it needs, when it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.errors import UserError

if TYPE_CHECKING:
    from mnist_hpc.cluster.estimate import Estimate, Probe
    from mnist_hpc.cluster.jobs import Resources, Setup, SweepJobs
    from mnist_hpc.cluster.queue import Preempt, Status
    from mnist_hpc.config.schema import Config

Echo = Callable[[str], None]


def _quiet(text: str) -> None:
    """A ``warn``/``note`` that drops its line."""


def _echoes(warn: Echo | None, note: Echo | None) -> tuple[Echo, Echo]:
    """``warn``/``note``, each defaulting to ``cluster.jobs``' (lines on stderr, as the commands)."""
    from mnist_hpc.cluster import jobs

    return warn or jobs._WARN, note or jobs._NOTE


def _resources(account=None, given: dict[str, Any] | None = None, what: str = "submit") -> Resources:
    """The ``cluster.jobs.Resources`` of ``account`` and the keyword arguments ``given`` (gpus,
    nodes, tasks, time, mail, cpus, mem, data_dir); a misspelt one is a TypeError naming what exists."""
    from mnist_hpc.cluster.jobs import Resources

    given = given or {}
    try:
        return Resources(account=account, **given)
    except TypeError:  # a misspelt resource: name what exists
        known = ", ".join(f for f in Resources.__dataclass_fields__ if f != "account")
        unknown = ", ".join(sorted(set(given) - set(Resources.__dataclass_fields__)))
        raise TypeError(f"{what}() got unknown resources: {unknown} (known: {known})") from None


# --------------------------------------------------------------------------- sweep submit


def sweep_submit(
    sweep_file,
    cluster: str = "local",
    *,
    overrides: Sequence[str] = (),
    account=None,
    dry_run: bool = False,
    parallel: int = 4,
    pack: int | str = 1,
    task_time: str = "1:00:00",
    then: str | None = None,
    force: bool = False,
    warn: Echo | None = None,
    note: Echo | None = None,
    **resources_asked,
) -> SweepJobs:
    """Submit every run of a sweep file as Slurm job array(s) on ``cluster``, as `mnist-hpc sweep
    submit` does; return a ``SweepJobs``: ``.job_ids`` (None on a dry run), ``.jobs`` (each with
    its ``.script``), ``.folder``, ``.runs``, ``.pack``, ``.tasks``, ``.notes`` (how the sweep was
    fitted to the cluster's limits), ``.report_job`` (``then="report"``).

    ``pack``: runs per array task, K or ``"auto"`` (as many as fit ``task_time``, from the stored
    probes ``estimate`` makes); ``resources``: gpus, time, mail, cpus, mem, data_dir, as for
    ``submit``. ``force``: finished runs trained with another config are moved aside and trained
    anew (else refused)."""
    from mnist_hpc.cluster import jobs
    from mnist_hpc.config.loading import as_overrides

    overrides = as_overrides(overrides)
    warn, note = _echoes(warn, note)
    k = pack_value(pack, sweep_file, overrides, task_time, note=note)
    asked = _resources(account, resources_asked, "sweep_submit")
    return jobs.sweep_submit(
        sweep_file,
        cluster,
        asked,
        overrides=overrides,
        dry_run=dry_run,
        parallel=parallel,
        pack=k,
        then=then,
        force=force,
        warn=warn,
        note=note,
    )


def pack_value(
    pack: int | str, sweep_file, overrides: Sequence[str], task_time: str, note: Echo = _quiet
) -> int:
    """``--pack`` K (1 or more) as a number, or ``auto``: as many runs per array task as fit
    ``task_time``, from the stored probes of the sweep's runs (torch-free; ``note`` says why)."""
    from mnist_hpc.cluster import estimate as est
    from mnist_hpc.cluster.units import is_time

    text = str(pack).strip().lower()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text != "auto":
        raise UserError(f"--pack {pack}: expected a number of runs per array task (1 or more) or auto")
    if not is_time(task_time):
        raise UserError(f"--task-time {task_time}: expected minutes, H:MM:SS or D-HH:MM:SS")
    from mnist_hpc.experiments.sweepfile import load_sweep

    sweep = load_sweep(sweep_file, tuple(overrides))
    if getattr(sweep, "study", None) is not None:
        raise UserError("--pack auto: an optuna study's array tasks are workers claiming trials; drop --pack")
    cfgs = [run.config for run in sweep.runs]
    probes = [est.stored_probe(c) for c in cfgs]
    known = [p for p in probes if p is not None]
    if len(known) < len(probes):
        raise UserError(
            f"--pack auto needs the runs' time: run mnist-hpc estimate {sweep_file} --cluster NAME "
            "once (it times the model here), or give --pack K"
        )
    k, why = est.choose_pack(cfgs, known, task_time)
    note(why)
    return k


# --------------------------------------------------------------------------- estimate


def _probe(cfg: Config) -> Probe:
    """Seconds per step of ``cfg``'s model and batch here (``training.probe``, stored and reused;
    tests replace it)."""
    from mnist_hpc.training.probe import probe

    return probe(cfg)


def is_sweep_file(path) -> bool:
    """Whether ``path`` reads as a sweep file (a mapping with ``base:``); False for anything
    unreadable (``load_config`` then says what is wrong with it)."""
    from mnist_hpc.config import read_yaml

    try:
        raw = read_yaml(path)
    except Exception:  # not ours to judge here: load_config says what is wrong with it
        return False
    return isinstance(raw, dict) and "base" in raw


def estimate(
    source,
    cluster: str,
    *,
    gpus=None,
    pack: int = 1,
    time: str | None = None,
    overrides: Sequence[str] = (),
    stored_only: bool = False,
    warn: Echo | None = None,
    note: Echo | None = None,
) -> Estimate | None:
    """What a config (or every run of a sweep file) will cost on ``cluster``, as `mnist-hpc
    estimate` does: an ``Estimate`` whose ``.lines`` are what the command prints (per-run time,
    walltime to ask for, GPU- and RGU-hours, each saying how it was obtained), ``.warnings`` its
    warnings about ``time`` (the --time you mean to ask for), ``.walltime``, ``.gpu_hours``,
    ``.rgu_hours``. Each model is probed here once (a few timed steps, stored and reused);
    ``stored_only``: from stored probes only (torch-free, as dry runs show it), None where one
    is missing. ``gpus``: as for ``submit``, ``"auto"`` included (``note`` says what it chose);
    ``pack``: runs per array task (a sweep). A request ``submit`` would refuse is refused."""
    from mnist_hpc.cluster import estimate as est
    from mnist_hpc.cluster import jobs
    from mnist_hpc.config.loading import as_overrides

    overrides = as_overrides(overrides)
    warn, note = _echoes(warn, note)
    profile = jobs.profile_for(cluster, warn)
    sweep_file = is_sweep_file(source)
    if sweep_file:
        from mnist_hpc.experiments.sweepfile import load_sweep

        sweep = load_sweep(source, tuple(overrides))
        if getattr(sweep, "study", None) is not None:
            raise UserError(
                f"{source}: an optuna study has no fixed runs to estimate; estimate its base "
                "config (one trial) instead"
            )
        cfgs = [run.config for run in sweep.runs]
    else:
        from mnist_hpc.config import load_config

        cfgs = [load_config(source, overrides)]
        pack = 1
    seen: dict[tuple[str, int, str], est.Probe] = {}
    probes = []
    for cfg in cfgs:
        key = (repr(cfg.model), cfg.data.batch_size, cfg.data.dataset)
        if key not in seen:
            probe = est.stored_probe(cfg) if stored_only else _probe(cfg)
            if probe is None:
                return None
            seen[key] = probe
        probes.append(seen[key])
    if str(gpus).strip().lower() == "auto":  # what submit would choose (it says why itself)
        gpus = jobs.auto_gpus(cfgs, profile, time or "1:00:00", 1, None, note, pack, probe=probes[0])
    n_gpus, gpu_type = jobs.parse_gpus(gpus, profile)
    from mnist_hpc.cluster.spec import JobSpec, check_spec, kind_for

    # the request as submit would check it: a GPU type or slice the cluster lacks is refused here too
    check_spec(
        JobSpec(
            template="sweep_array" if sweep_file else kind_for(1, n_gpus, None),
            profile=profile,
            job_name="estimate",
            sweep="s",
            array="0-0",
            gpus_per_node=n_gpus,
            gpu_type=gpu_type,
            time=time or "1:00:00",
            account=(profile.account_prefixes or ("def-",))[0] + "estimate"
            if profile.account_required
            else None,
        )
    )
    return est.estimate(cfgs, probes, profile, n_gpus, gpu_type, pack=pack, time_limit=time)


# --------------------------------------------------------------------------- status, logs, cancel, preempt


def jobs_status(runs_dir="runs") -> Status:
    """Your jobs in the Slurm queue and the recent ones that left it, as `mnist-hpc status`
    prints them: a ``Status`` with ``.user``, ``.queued`` (each ``.job`` with squeue's fields and
    its run ``.folder``), ``.finished`` (state, elapsed, ``.usage`` from sacct, ``.result``,
    ``.folder``), ``.accounting`` and ``.notes``. One squeue call and one sacct call."""
    from mnist_hpc.cluster import queue

    return queue.status(runs_dir)


def watch_jobs_status(runs_dir="runs") -> Iterator[Status]:
    """``jobs_status`` again and again, once every ``STATUS_EVERY`` seconds (the first at once),
    as `mnist-hpc status --watch` prints it; never more often (the Alliance asks users not to
    poll squeue fast)."""
    from mnist_hpc.cluster import queue

    return queue.watch_status(runs_dir)


STATUS_EVERY = 60.0  # seconds between two refreshes of watch_jobs_status (cluster.queue.ASK_EVERY)


def log_file(job_id: str, runs_dir="runs") -> Path:
    """The output file (slurm-JOBID.out) of job ``job_id``, found through its run folder under
    ``runs_dir``; what `mnist-hpc logs JOBID` prints is its text. A UserError when there is none
    (a pending job: none yet)."""
    from mnist_hpc.cluster import queue

    return queue.log_file(job_id, runs_dir)


def follow_log(job_id: str, runs_dir="runs") -> Iterator[str]:
    """The output of job ``job_id`` as it grows, chunk by chunk, until the job has left the queue
    (`mnist-hpc logs JOBID -f`): the file is read every second; squeue is asked whether the job
    still runs at most once a minute. The log is looked for at once: a UserError when the job
    has none and is not queued."""
    from mnist_hpc.cluster import queue

    path = queue.log_file(job_id, runs_dir, True)
    return queue.follow_log(path, job_id)


def cancel(job_id: str) -> str:
    """Cancel one of your queued jobs (scancel), as `mnist-hpc cancel` does; return its (checked)
    job id. A UserError when it is not in your queue."""
    from mnist_hpc.cluster import queue

    return queue.cancel(job_id)


def preempt(job_id: str, runs_dir="runs", *, dry_run: bool = False) -> Preempt:
    """Send running job ``job_id`` (an array task: ``"JOBID_TASK"``) its time-limit signal now, as
    `mnist-hpc preempt` does: it checkpoints, requeues and resumes. Returns a ``Preempt``:
    ``.signal``, ``.batch`` (sent to the batch shell, else the job steps), ``.source`` (where the
    signal was read), ``.argv`` (the scancel command; with ``dry_run`` only that)."""
    from mnist_hpc.cluster import queue

    return queue.preempt(job_id, runs_dir, dry_run=dry_run)


# --------------------------------------------------------------------------- setup, push, data pack


def setup_cluster(
    cluster: str, configs: Sequence = (), *, dry_run: bool = False, warn: Echo | None = None
) -> Setup:
    """Make, on the login node, the virtualenv in $HOME that the jobs of ``cluster`` activate, with
    the packages ``configs`` (paths or names; default: the base ones) need, as `mnist-hpc setup`
    does. Returns a ``Setup``: ``.venv`` (None: the cluster's jobs build their own, nothing to
    set up), ``.script`` (the commands; with ``dry_run`` only those), ``.stamp``."""
    from mnist_hpc.cluster import jobs

    return jobs.setup(cluster, tuple(configs), dry_run=dry_run, warn=_echoes(warn, None)[0])


def push(
    target: str,
    *,
    project=".",
    with_data: bool = False,
    cluster: str | None = None,
    dry_run: bool = False,
    show: Echo | None = None,
) -> Path:
    """Copy ``project`` to ``target`` (``USER@HOST[:DIR]``) with rsync (scp without it), leaving
    out .venv, runs, data, .git and caches, as `mnist-hpc push` does; ``with_data``: the data
    archive too (packed first if missing). ``show`` gets each command before it runs (default:
    printed); with ``dry_run`` nothing runs. Returns the project folder."""
    from mnist_hpc.cluster import push as pushing

    shown = {"show": show} if show is not None else {}
    return pushing.push(
        target, project=project, with_data=with_data, dry_run=dry_run, cluster=cluster, **shown
    )


@dataclass(frozen=True)
class DataPack:
    """What ``pack_data`` wrote: the archive, the datasets in it, and the data folder they came
    from with why that one (``--data-dir``, ``$MNIST_HPC_DATA_DIR``, the user cache)."""

    path: Path
    datasets: list[str]
    data_dir: str
    data_dir_from: str
    size: int  # bytes

    def __str__(self) -> str:
        return (
            f"{self.path}: {', '.join(self.datasets)} from {self.data_dir} ({self.data_dir_from}), "
            f"{self.size / 2**20:.1f} MiB"
        )


def pack_data(datasets: Sequence[str] = (), *, data_dir=None, output=None) -> DataPack:
    """Pack datasets (default: every one present) into one tar archive for ``$SLURM_TMPDIR``
    staging, as `mnist-hpc data pack` does; ``output`` default: data/mnist-hpc-data.tar. Its
    ``str()`` is the line the command prints."""
    from mnist_hpc.cluster import datapack
    from mnist_hpc.config.datasets import resolve_data_root

    root, why = resolve_data_root(data_dir, None)
    path = datapack.pack(root, list(datasets), datapack.DEFAULT_ARCHIVE if output is None else output)
    return DataPack(path, datapack.contents(path), root, why, path.stat().st_size)


# inside the jobs that `sweep submit --pack K` and `--then report` queue (the hidden `sweep task`
# and `sweep report-job` commands)


def run_array_task(sweep_file, task: int, pack: int, *, data_dir=None, echo: Echo = print) -> int:
    """Train array task ``task``'s runs of a packed sweep (``pack`` runs per task: ``task * pack``
    to ``task * pack + pack - 1``) one after another, skipping completed ones and resuming an
    interrupted one, as the job's `mnist-hpc sweep task` does. Returns its exit status: 0 all
    completed, 75 requeued (the next start continues), 1 a run failed (the others still trained)."""
    from mnist_hpc.cluster import packed

    return packed.run_task(sweep_file, task, pack, data_dir, echo=echo)


def write_array_report(sweep_file) -> tuple[Path, list[str]]:
    """Write ``report.md`` in the sweep's folder once its array has ended (the comparison of the
    completed runs, then the runs that did not complete, with their state and log), as the job
    that `sweep submit --then report` queues does. Returns (its path, the runs not completed)."""
    from mnist_hpc.cluster import packed

    return packed.write_report(sweep_file)

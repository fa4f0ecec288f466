"""Submitting work to Slurm: one config as a job, or a whole sweep as job arrays.

``submit`` validates the config, renders the job script for the cluster profile, stages the
data archive, writes the run folder (resolved config, job.sh, job.json) and calls sbatch.
``sweep_submit`` does the same for every run of a sweep file as one job array (several, chained,
when the sweep is larger than the cluster's largest array). Both return what they made (a
``Job``, a ``SweepJobs``) and raise ``UserError`` for every mistake a user can make; a dry run
renders and checks everything and creates nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_hpc.cluster import datapack, env, nodeenv, slurm
from mnist_hpc.cluster.estimate import Probe
from mnist_hpc.cluster.profiles import Profile, get_profile
from mnist_hpc.cluster.render import render
from mnist_hpc.cluster.spec import JobSpec, kind_for
from mnist_hpc.config.extras import BASE_PACKAGES
from mnist_hpc.config.models import CustomModel
from mnist_hpc.config.schema import Config
from mnist_hpc.errors import DataError, UserError

if TYPE_CHECKING:  # imported where used: a sweep is read only when one is submitted
    from mnist_hpc.experiments.sweepfile import Sweep

Echo = Callable[[str], None]


def _stderr(prefix: str = "") -> Echo:
    import sys

    return lambda text: print(f"{prefix}{text}", file=sys.stderr)


_WARN, _NOTE = _stderr("warning: "), _stderr()  # the defaults: warnings and notes on stderr


@dataclass
class Job:
    """A submitted (or, on a dry run, rendered) Slurm job."""

    job_id: str | None  # None on a dry run
    script: str  # the rendered job script
    run_dir: Path  # the run folder (a sweep's: the folder of its scripts and logs)
    cluster: str  # the profile's name (a retired name's successor)
    template: str = "submit_job"  # the kind of job script
    output: str = ""  # the log file, with Slurm's %j / %A_%a patterns


@dataclass
class SweepJobs:
    """A sweep submitted as job arrays: one ``Job`` per array, each after the previous one."""

    name: str
    folder: Path  # runs/<sweep>-sweep-<time>/: job-K.sh, job.json and the array logs
    runs: int
    parallel: int  # array tasks running at once (the %K)
    cluster: str
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the sweep was fitted to the cluster's limits
    snapshot: Path | None = None  # <folder>/sweep.yaml: the copy the array tasks read (None: dry run)
    pack: int = 1  # runs per array task (cluster.packed), one after another
    tasks: int = 0  # array tasks in all (runs / pack, rounded up)
    report_job: Job | None = None  # --then report: the CPU job after the array(s)
    trials: int | None = None  # a method: optuna study's n_trials (then ``runs`` counts its workers)

    @property
    def job_ids(self) -> list[str | None]:
        return [j.job_id for j in self.jobs]


# --------------------------------------------------------------------------- shared steps


@dataclass(frozen=True)
class Resources:
    """What a job asks of the cluster: the flags `submit` and `sweep submit` share (--account,
    --gpus, --nodes, --tasks, --time, --mail, --cpus, --mem, --data-dir). ``gpus``: GPUs per node,
    N, TYPE:N or "auto" (None: 1 on GPU clusters); ``cpus``/``mem``: per task / per node (None:
    the profile's share); ``data_dir``: where the job reads the datasets (None: the staged archive)."""

    account: str | None = None
    gpus: int | str | None = None
    nodes: int = 1
    tasks: int | None = None
    time: str = "1:00:00"
    mail: str | None = None
    cpus: int | None = None
    mem: str | None = None
    data_dir: str | Path | None = None


@dataclass(frozen=True)
class _Target:
    """Where and how the jobs of one submission run: the profile, the folder sbatch is called from,
    the GPUs resolved from ``Resources.gpus`` and the packages the job's environment needs."""

    profile: Profile
    cwd: Path
    n_gpus: int
    gpu_type: str | None
    packages: tuple[str, ...]

    def spec(self, r: Resources, folder: Path, **fields: Any) -> JobSpec:
        """A JobSpec with the fields every job of this submission shares, then ``fields``."""
        shared: dict[str, Any] = {
            "profile": self.profile,
            "time": r.time,
            "gpus_per_node": self.n_gpus,
            "gpu_type": self.gpu_type,
            "cpus_per_task": r.cpus,
            "mem": r.mem,
            "account": r.account or env.default_account(),
            "mail_user": r.mail,
            "workdir": str(self.cwd),
            "data_archive": str(self.cwd / datapack.DEFAULT_ARCHIVE),
            "data_dir": str(Path(r.data_dir).resolve()) if r.data_dir else "",
            "code": nodeenv.code_dir(folder),
            "python": nodeenv.submitting_python(),
            "packages": self.packages,
        }
        return JobSpec(**{**shared, **fields})


def profile_for(cluster: str, warn: Echo) -> Profile:
    profile, warning = get_profile(cluster)
    if warning:
        warn(warning)
    return profile


def parse_gpus(value: int | str | None, profile: Profile) -> tuple[int, str | None]:
    """``--gpus``: None (the smallest count the cluster takes, 0 on CPU-only ones), N or TYPE:N."""
    if value is None:
        return (min(profile.gpu_counts or (1,)) if profile.gpus_per_node else 0), None
    kind, _, count = str(value).rpartition(":")
    if not count.isdigit():
        raise UserError(f"--gpus {value}: expected a number or TYPE:NUMBER, e.g. 2 or a100_3g.20gb:1")
    if kind and int(count) == 0:  # a typed request for no GPU would quietly become a CPU job
        raise UserError(
            f"--gpus {value}: a GPU type needs a count of at least 1, e.g. {kind}:1 "
            "(--gpus 0 asks for a CPU-only job)"
        )
    return int(count), (kind or None)


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def staged_name(cfg: Config) -> str:
    """What the data archive holds for ``cfg``: a dataset name, or ``folder:<path>`` for an image folder."""
    from mnist_hpc.config.datasets import FOLDER

    return f"{datapack.FOLDER_PREFIX}{cfg.data.root}" if cfg.data.dataset == FOLDER else cfg.data.dataset


def stage_data(
    profile: Profile, data_dir: str | Path | None, needed: list[str], archive: Path, warn: Echo, note: Echo
) -> Path:
    """Make sure the data archive holds the datasets the job needs (packing it if not)."""
    from mnist_hpc.config.datasets import resolve_data_root

    root, why = resolve_data_root(data_dir, None)
    try:
        path, written = datapack.ensure(archive, root, needed)
    except DataError as e:
        if profile.internet:
            warn(f"{e}; the job will have to download the data itself")
            return archive
        raise DataError(f"{e} (on a login node: compute nodes on {profile.name} have no internet)") from None
    if written:
        note(f"data: packed {', '.join(datapack.contents(path))} from {root} ({why}) into {path}")
    return path


def _write_script(path: Path, script: str) -> None:
    from mnist_hpc.runs.folder import atomic_write

    atomic_write(path, script)
    path.chmod(0o755)


def _record(folder: Path, record: dict[str, Any]) -> None:
    from mnist_hpc.runs.folder import write_json

    write_json(folder / "job.json", record)


def auto_gpus(
    cfgs: Iterable[Config],
    profile: Profile,
    time: str,
    nodes: int,
    tasks: int | None,
    note: Echo,
    pack: int = 1,
    probe: Probe | None = None,
) -> str:
    """``--gpus auto``: ``cluster.estimate.choose_gpus`` with this host's stored probe (if any);
    says what it chose and why."""
    from mnist_hpc.cluster import estimate

    cfgs = list(cfgs)
    probe = probe or (estimate.stored_probe(cfgs[0]) if cfgs else None)
    choice = estimate.choose_gpus(
        cfgs, profile, time_limit=time, nodes=nodes, tasks=tasks, probe=probe, pack=pack
    )
    extra = (
        ""
        if probe is not None
        else " (no stored probe here: mnist-hpc estimate makes one, which may choose the CPU)"
    )
    note(f"--gpus auto: {choice.gpus} -- {choice.why}{extra}")
    return choice.gpus


# --------------------------------------------------------------------------- chains


DEPENDENCY_KINDS = ("afterok", "afterany")


def dependency(after: str | None, dry_run: bool = False) -> str:
    """``--after JOBID[:afterany|afterok]`` as sbatch's ``--dependency`` value (afterok by default);
    the job must exist (asked once with ``scontrol``; a dry run without Slurm skips the check)."""
    if not after:
        return ""
    job_id, _, kind = str(after).strip().partition(":")
    kind = kind or "afterok"
    if kind not in DEPENDENCY_KINDS:
        raise UserError(f"--after {after}: expected JOBID, JOBID:afterok or JOBID:afterany")
    job_id = slurm.check_job_id(job_id)
    if not (dry_run and shutil.which("scontrol") is None) and slurm.scontrol_show_job(job_id) is None:
        raise UserError(
            f"--after {after}: job {job_id} does not exist (Slurm does not know it); "
            "check the id with mnist-hpc status or sq"
        )
    return f"{kind}:{job_id}"


# --------------------------------------------------------------------------- submit


def submit(
    config_or_source: str | Path | Config,
    overrides: Sequence[str] = (),
    cluster: str = "local",
    resources: Resources | None = None,
    *,
    dry_run: bool = False,
    cwd: str | Path | None = None,
    warn: Echo = _WARN,
    note: Echo = _NOTE,
    after: str | None = None,
) -> Job:
    """Submit a config (a path, a shipped config name or a ``Config``) as a Slurm job on the
    cluster profile ``cluster`` with ``resources``, in a new run folder under the config's
    output_dir. ``warn``/``note`` get the warnings (a retired cluster name) and notes (the data
    archive packed) as lines. ``after``: ``JOBID[:afterany]``, start after that job
    (``--dependency``, afterok by default)."""
    from mnist_hpc.config import load_config
    from mnist_hpc.runs.folder import create_run_dir, new_run_dir

    r = resources or Resources()
    profile = profile_for(cluster, warn)
    if isinstance(config_or_source, (str, Path)):
        cfg, source = load_config(config_or_source, overrides), str(config_or_source)
    elif overrides:
        raise UserError("overrides apply to a config file or name; apply them to the Config first")
    else:
        cfg, source = config_or_source, "(a Config object)"
    gpus = r.gpus
    if str(gpus).strip().lower() == "auto":
        gpus = auto_gpus([cfg], profile, r.time, r.nodes, r.tasks, note)
    n_gpus, gpu_type = parse_gpus(gpus, profile)
    depends = dependency(after, dry_run)
    check_model_before_queueing(cfg)
    cwd = Path(cwd or Path.cwd())
    run_dir = new_run_dir(str(cwd / cfg.experiment.output_dir), cfg.experiment.name).resolve()
    check_writable(profile, cwd, run_dir, r.data_dir)
    packages = nodeenv.job_packages([cfg])
    nodeenv.check_wheelhouse(packages, profile)  # before anything is queued
    if not dry_run:
        nodeenv.check_home_venv(profile, packages)
    target = _Target(profile, cwd, n_gpus, gpu_type, packages)

    def spec_for(run_dir: Path) -> JobSpec:
        return target.spec(
            r,
            run_dir,
            template=kind_for(r.nodes, n_gpus, r.tasks),
            job_name=cfg.experiment.name,
            config=str(run_dir / "config.yaml"),
            run_dir=str(run_dir),
            nodes=r.nodes,
            tasks_per_node=r.tasks,
            output=str(run_dir / "slurm-%j.out"),
            requeue_signal=cfg.runtime.requeue_signal,
            script_name=str(run_dir / "job.sh"),
            dependency=depends,
        )

    spec = spec_for(run_dir)
    job = Job(None, render(spec), run_dir, profile.name, spec.template, spec.output)
    if dry_run:
        return job
    stage_data(profile, r.data_dir, [staged_name(cfg)], cwd / datapack.DEFAULT_ARCHIVE, warn, note)
    made = create_run_dir(run_dir.parent, cfg.experiment.name, first=run_dir)  # exclusive: never shared
    if made != run_dir:  # another submit took the name meanwhile: the job gets the next one
        spec = spec_for(made)
        job.run_dir, job.script, job.output = made, render(spec), spec.output
    _queue_job(job, cfg, source, cwd)
    _record(
        job.run_dir,
        {
            "job_id": job.job_id,
            "cluster": profile.name,
            "template": spec.template,
            "run_dir": str(job.run_dir),
            "output": spec.output,
            "config": source,
            "overrides": list(overrides),
            "script": str(job.run_dir / "job.sh"),
            "submitted_at": _now(),
            **({"after": depends} if depends else {}),
            "argv": ["sbatch", "--parsable", str(job.run_dir / "job.sh")],
        },
    )
    return job


def _queue_job(job: Job, cfg: Config, source: str, cwd: Path) -> None:
    """Fill the (just created) run folder: the resolved config with the model's code, the code of an
    installed mnist_hpc, job.sh; then sbatch it. Any failure removes the folder: no half-made one."""
    from mnist_hpc.runs.folder import atomic_write

    run_dir = job.run_dir
    try:
        atomic_write(
            run_dir / "config.yaml",
            f"# resolved config, as submitted (source: {source})\n"
            + carry_model_code(cfg, run_dir).to_yaml(),
        )
        nodeenv.copy_code(run_dir)  # an installed mnist_hpc (no checkout): the job runs this copy
        script_path = run_dir / "job.sh"
        _write_script(script_path, job.script)
        job.job_id = slurm.sbatch(str(script_path), cwd=str(cwd))
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_model_before_queueing(cfg: Config) -> None:
    """A custom or torchvision model is built on the meta device and run on a tiny batch here, on
    the login node, so a mistake in the user's code (or missing pretrained weights) is one line
    now rather than a failed job after the queue (imports torch only for those models)."""
    if cfg.model.source == "builtin":
        return
    from mnist_hpc.config.datasets import data_shape
    from mnist_hpc.training.models import prepare_model

    shape = data_shape(cfg.data)
    if shape is None:
        raise UserError(f"data.root: {cfg.data.root}: not a folder of class subfolders")
    prepare_model(cfg, shape)


def carry_model_code(cfg: Config, folder: Path) -> Config:
    """The config as the job reads it: a custom model's file copied into ``folder``/model/ and
    named relative to the config there, so the job needs nothing from the caller's folders."""
    model = cfg.model
    if not isinstance(model, CustomModel):  # the one model of source "custom"
        return cfg
    import copy

    from mnist_hpc.runs.folder import atomic_write
    from mnist_hpc.training.usercode import SNAPSHOT_DIR, read_code

    code = read_code(model.file)
    (Path(folder) / SNAPSHOT_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(folder) / SNAPSHOT_DIR / code.name, code.text)
    carried_model = copy.deepcopy(model)
    carried_model.file = f"{SNAPSHOT_DIR}/{code.name}"
    carried = copy.deepcopy(cfg)
    carried.model = carried_model
    return carried


# --------------------------------------------------------------------------- sweep submit


def _requeue_signal(sweep: Sweep) -> str:
    """The one signal of the job array: every run's runtime.requeue_signal (they must agree)."""
    signals = sorted({cfg.runtime.requeue_signal for cfg in sweep.configs()})
    if len(signals) > 1:
        raise UserError(
            f"sweep {sweep.name}: its runs ask for different runtime.requeue_signal values "
            f"({', '.join(signals)}); a job array has one --signal: set it in the base config"
        )
    return signals[0] if signals else "USR1"


def plan_arrays(
    total: int, parallel: int, profile: Profile, queued: int = 0, what: str = "runs"
) -> tuple[list[tuple[int, int]], int, list[str]]:
    """Fit ``total`` runs to the cluster's limits: [(offset, size)] of each job array, the %K
    (tasks running at once) and notes on what was changed. ``queued``: the user's jobs already
    in the queue. Every array task counts as one job against the per-user limit, chained arrays
    included, so a sweep above it is refused rather than half submitted."""
    p = profile
    if p.max_jobs and total + queued > p.max_jobs:
        have = f" and {queued} of yours are queued or running already" if queued else ""
        raise UserError(
            f"sweep of {total} {what}: cluster {p.name} accepts at most {p.max_jobs} jobs per user, "
            f"queued and running together, every array task counted{have}; split the sweep "
            "into smaller files (fewer values or seeds) or wait for jobs to end"
        )
    notes: list[str] = []
    if p.max_running and parallel > p.max_running:
        notes.append(
            f"--parallel {parallel} lowered to {p.max_running}: cluster {p.name} runs at most "
            f"{p.max_running} jobs per user at once (--array ...%{p.max_running})"
        )
        parallel = p.max_running
    chunk = max(p.max_array_size, 1)  # array indices must stay below MaxArraySize
    arrays = [(offset, min(chunk, total - offset)) for offset in range(0, total, chunk)]
    return arrays, parallel, notes


def read_only_roots(environ: Mapping[str, str] | None = None) -> list[tuple[str, Path]]:
    """($NAME, folder) of the file systems some clusters' compute nodes see read-only: $HOME and
    $PROJECT (where set) [Trillium Quickstart § Storage; Data management at Trillium]."""
    env = os.environ if environ is None else environ
    roots = [("$HOME", Path.home())]
    if env.get("PROJECT"):
        roots.append(("$PROJECT", Path(env["PROJECT"])))
    return [(name, path.resolve()) for name, path in roots]


def check_writable(
    profile: Profile, *folders: str | Path | None, environ: Mapping[str, str] | None = None
) -> None:
    """Refuse folders a job cannot write (run folder, output, data cache): $HOME and $PROJECT are
    read-only on some clusters' compute nodes (Trillium), where jobs write to $SCRATCH."""
    if not profile.home_read_only:
        return
    roots = read_only_roots(environ)
    for folder in folders:
        if not folder:
            continue
        where = Path(folder).resolve()
        for name, root in roots:
            if where.is_relative_to(root):
                raise UserError(
                    f"{folder}: on cluster {profile.name} {name} is read-only on compute nodes, so "
                    "the job could not write there; submit from $SCRATCH (cd $SCRATCH, i.e. "
                    "/scratch/$USER or ~/links/scratch), with the data there too"
                )


def sweep_submit(
    sweep_file: str | Path,
    cluster: str = "local",
    resources: Resources | None = None,
    *,
    overrides: Sequence[str] = (),
    dry_run: bool = False,
    parallel: int = 4,
    cwd: str | Path | None = None,
    warn: Echo = _WARN,
    note: Echo = _NOTE,
    force: bool = False,
    pack: int = 1,
    then: str | None = None,
) -> SweepJobs:
    """Submit every run of ``sweep_file`` (with the ``--set`` ``overrides`` in every run) as a
    Slurm job array (task I runs run I), at most ``parallel`` at a time; a sweep larger than the
    cluster's largest array becomes several arrays, each starting when the previous one has ended.
    The tasks read a snapshot of the sweep file and its base config in the sweep's folder
    (``cluster.snapshot``): editing the originals afterwards changes nothing queued. Finished
    runs trained with another config are refused, or with ``force`` moved aside (not deleted)
    when the arrays are submitted, as `sweep run` does. ``pack`` K > 1: task I runs runs
    I*K .. I*K+K-1 one after another (``cluster.packed``); limits count tasks. ``then="report"``:
    a small CPU job, afterany on the (last) array, writes report.md there."""
    r = resources or Resources()
    if r.nodes > 1 or (r.tasks or 1) > 1:
        raise UserError("sweep array tasks run on one node with one process; drop --nodes/--tasks")
    profile = profile_for(cluster, warn)
    sweep, stale = _sweep_to_submit(sweep_file, overrides, force)
    gpus = r.gpus
    if str(gpus).strip().lower() == "auto":
        gpus = auto_gpus(list(sweep.configs()), profile, r.time, 1, None, note, pack)
    n_gpus, gpu_type = parse_gpus(gpus, profile)
    first_of_each: dict[str, Config] = {}  # each distinct custom/torchvision model, built once
    for run in sweep.runs:
        first_of_each.setdefault(repr(run.config.model.to_dict()), run.config)
    for cfg in first_of_each.values():
        check_model_before_queueing(cfg)
    cwd = Path(cwd or Path.cwd())
    from mnist_hpc.runs.folder import new_run_dir

    folder = new_run_dir(str(cwd / "runs"), f"{sweep.name}-sweep").resolve()
    check_writable(profile, cwd, folder, r.data_dir)
    signal = _requeue_signal(sweep)
    total, pack, tasks = _array_tasks(sweep, pack, parallel)
    queued = slurm.count_jobs() if profile.max_jobs and not dry_run else 0
    what = f"array tasks ({total} runs, {pack} per task)" if pack > 1 else "runs"
    arrays, parallel, notes = plan_arrays(tasks, parallel, profile, queued, what)
    packages = _sweep_packages(sweep)
    nodeenv.check_wheelhouse(packages, profile)  # before anything is queued
    if not dry_run:
        nodeenv.check_home_venv(profile, packages)
    _check_then(then, profile)
    scripts = _SweepScripts(
        _Target(profile, cwd, n_gpus, gpu_type, packages),
        r,
        sweep.name,
        arrays,
        parallel,
        pack,
        signal,
    )
    out = SweepJobs(
        sweep.name,
        folder,
        total,
        parallel,
        profile.name,
        jobs=scripts.arrays_for(folder),
        notes=notes,
        pack=pack,
        tasks=tasks,
        trials=sweep.study.n_trials if sweep.study is not None else None,
    )
    if then:
        out.report_job = scripts.report(folder, "afterany:ARRAY_JOB_ID")  # the id sbatch gives the array
    if dry_run:
        import tempfile

        from mnist_hpc.cluster import snapshot

        with tempfile.TemporaryDirectory() as tmp:  # the snapshot is checked as for a real submission
            snapshot.write(sweep, tmp, overrides)
        return out
    _queue_sweep(out, sweep, stale, scripts, sweep_file, overrides, r, warn, note)
    if then:
        _queue_report(out, scripts)
    return out


def _sweep_to_submit(
    sweep_file: str | Path, overrides: Sequence[str], force: bool
) -> tuple[Sweep, list[Any]]:
    """The sweep and its finished runs trained with another config (refused unless ``force``)."""
    from mnist_hpc.experiments import runguard
    from mnist_hpc.experiments.sweep import is_completed
    from mnist_hpc.experiments.sweepfile import load_sweep

    sweep = load_sweep(sweep_file, tuple(overrides))
    stale = runguard.stale_runs(sweep.runs, is_completed)
    if stale and not force:
        runguard.refuse_stale(sweep.name, stale)
    return sweep, stale


def _array_tasks(sweep: Sweep, pack: int, parallel: int) -> tuple[int, int, int]:
    """(runs, runs per task, array tasks): what the per-user job limit counts is tasks, not runs.
    An optuna study's tasks are its workers (task I is worker I), each claiming trials from the
    study's journal until it has n_trials; all of them run at once."""
    from mnist_hpc.cluster.packed import task_count

    if pack < 1:
        raise UserError(f"--pack {pack}: pack at least one run per array task")
    if sweep.study is not None and pack > 1:
        raise UserError(
            f"--pack {pack}: an optuna study's array tasks are workers claiming trials; "
            "packing does not apply: drop --pack (use --parallel for the workers)"
        )
    total = len(sweep.runs) if sweep.study is None else max(1, min(parallel, sweep.study.n_trials))
    pack = min(pack, total) if total else 1
    return total, pack, task_count(total, pack)


def _sweep_packages(sweep: Sweep) -> tuple[str, ...]:
    """What the tasks' environment needs: the runs' packages, and a study's sampler's."""
    packages = nodeenv.job_packages(sweep.configs())
    if sweep.study is not None:
        from mnist_hpc.config.extras import search_packages

        packages = tuple(dict.fromkeys([*packages, *search_packages(sweep.study.sampler)]))
    return packages


def _check_then(then: str | None, profile: Profile) -> None:
    if then not in (None, "report"):
        raise UserError(f"--then {then}: expected report")
    if then and profile.cpu_node_cores:
        raise UserError(
            f"--then report: cluster {profile.name} runs CPU jobs on whole {profile.cpu_node_cores}-core "
            "nodes, too much for a report; run mnist-hpc report on the login node after the array"
        )


@dataclass(frozen=True)
class _SweepScripts:
    """The job scripts of one sweep submission, rendered for the folder they will live in."""

    target: _Target
    resources: Resources
    name: str
    arrays: list[tuple[int, int]]  # (first run, size) of each array
    parallel: int
    pack: int
    signal: str

    def arrays_for(self, folder: Path) -> list[Job]:
        from mnist_hpc.cluster import snapshot

        output = str(folder / "slurm-%A_%a.out")
        made = []
        for k, (offset, size) in enumerate(self.arrays):
            spec = self.target.spec(
                self.resources,
                folder,
                template="sweep_array",
                job_name=self.name,
                sweep=str(folder / snapshot.SWEEP_FILE),
                output=output,
                array=f"0-{size - 1}%{min(self.parallel, size)}",
                index_offset=offset,
                pack=self.pack,
                requeue_signal=self.signal,
                script_name=str(folder / f"job-{k}.sh"),
            )
            made.append(Job(None, render(spec), folder, self.target.profile.name, "sweep_array", output))
        return made

    def report(self, folder: Path, after: str) -> Job:
        """The ``--then report`` job: a small CPU job (15 minutes, one core, no data) after ``after``."""
        from mnist_hpc.cluster import snapshot

        profile = self.target.profile
        output = str(folder / "slurm-report-%j.out")
        spec = self.target.spec(
            self.resources,
            folder,
            template="sweep_report",
            job_name=f"{self.name}-report",
            sweep=str(folder / snapshot.SWEEP_FILE),
            time="0:15:00",
            gpus_per_node=0,
            gpu_type=None,
            cpus_per_task=1,
            mem="2G" if profile.mem_cpu_job else None,
            output=output,
            requeue_signal=self.signal,
            data_archive="",
            data_dir="",
            script_name=str(folder / "report.sh"),
            dependency=after,
        )
        return Job(None, render(spec), folder, profile.name, "sweep_report", output)


def _queue_sweep(
    out: SweepJobs,
    sweep: Sweep,
    stale: list[Any],
    scripts: _SweepScripts,
    sweep_file: str | Path,
    overrides: Sequence[str],
    r: Resources,
    warn: Echo,
    note: Echo,
) -> None:
    """Move stale runs aside, stage the data, make the sweep's folder (its snapshot, the code) and
    sbatch the arrays one after another; a folder that another submit took gets the next name."""
    from mnist_hpc.cluster import snapshot
    from mnist_hpc.experiments import runguard
    from mnist_hpc.runs.folder import create_run_dir

    target = scripts.target
    moved = runguard.move_aside(stale)
    if moved is not None:
        note(f"--force: moved {len(stale)} finished run(s) trained with another config to {moved}/")
    needed = sorted({staged_name(cfg) for cfg in sweep.configs()})
    stage_data(target.profile, r.data_dir, needed, target.cwd / datapack.DEFAULT_ARCHIVE, warn, note)
    made = create_run_dir(out.folder.parent, "", first=out.folder)  # exclusive: never shared
    if made != out.folder:
        out.folder, out.jobs = made, scripts.arrays_for(made)
    try:
        out.snapshot = snapshot.write(sweep, out.folder, overrides)
        nodeenv.copy_code(out.folder)  # an installed mnist_hpc (no checkout): the tasks run this copy
    except BaseException:
        shutil.rmtree(out.folder, ignore_errors=True)
        raise
    _submit_arrays(out, sweep_file, scripts.arrays, target.cwd)


def _queue_report(out: SweepJobs, scripts: _SweepScripts) -> None:
    """sbatch the ``--then report`` job afterany on the last array; job.json records it."""
    out.report_job = scripts.report(out.folder, f"afterany:{out.jobs[-1].job_id}")
    path = out.folder / "report.sh"
    _write_script(path, out.report_job.script)
    out.report_job.job_id = slurm.sbatch(str(path), cwd=str(scripts.target.cwd))
    record = json.loads((out.folder / "job.json").read_text())
    record["then"] = {"job_id": out.report_job.job_id, "script": str(path), "after": out.jobs[-1].job_id}
    _record(out.folder, record)


def _submit_arrays(out: SweepJobs, sweep_file: str | Path, arrays: list[tuple[int, int]], cwd: Path) -> None:
    """sbatch each array after the previous one; job.json records those that were submitted."""
    submitted: list[dict[str, Any]] = []
    previous: str | None = None
    try:
        for k, (job, (offset, size)) in enumerate(zip(out.jobs, arrays, strict=False)):
            path = out.folder / f"job-{k}.sh"
            _write_script(path, job.script)
            extra = (f"--dependency=afterany:{previous}",) if previous else ()
            previous = job.job_id = slurm.sbatch(str(path), extra=extra, cwd=str(cwd))
            submitted.append(
                {
                    "job_id": previous,
                    "script": str(path),
                    "array": f"0-{size - 1}%{min(out.parallel, size)}",
                    "index_offset": offset,
                }
            )
    finally:
        if submitted:
            _record(
                out.folder,
                {
                    "job_id": submitted[0]["job_id"],
                    "cluster": out.cluster,
                    "template": "sweep_array",
                    "sweep": str(sweep_file),
                    "snapshot": str(out.snapshot),
                    "runs": out.runs,
                    "run_dir": str(out.folder),
                    "pack": out.pack,
                    "tasks": out.tasks,
                    "output": out.jobs[0].output,
                    "script": submitted[0]["script"],
                    "jobs": submitted,
                    "submitted_at": _now(),
                    "argv": ["sbatch", "--parsable", submitted[0]["script"]],
                },
            )
        else:
            shutil.rmtree(out.folder, ignore_errors=True)


# --------------------------------------------------------------------------- setup


@dataclass
class Setup:
    cluster: str
    venv: Path | None  # None: the cluster's jobs build their own virtualenv per start
    script: str = ""  # the bash commands (empty where there is nothing to set up)
    stamp: str = ""
    done: bool = False


def setup(
    cluster: str,
    configs: Sequence[str | Path] = (),
    *,
    dry_run: bool = False,
    home: Path | None = None,
    warn: Echo = _WARN,
) -> Setup:
    """Make, on the login node, the virtualenv in $HOME that jobs on ``cluster`` activate (a
    profile with ``home_venv``: Trillium), with the packages the ``configs`` (default: the base
    ones) need, from the wheelhouse; ``dry_run`` only returns the commands."""
    import subprocess

    from mnist_hpc.config import load_config

    profile = profile_for(cluster, warn)
    venv = nodeenv.home_venv_path(profile, home)
    if venv is None:
        return Setup(profile.name, None)
    packages = nodeenv.job_packages([load_config(c) for c in configs]) if configs else BASE_PACKAGES
    script = nodeenv.setup_script(profile, packages, venv)
    out = Setup(profile.name, venv, script, nodeenv.venv_stamp(profile.modules, packages))
    if dry_run:
        return out
    if shutil.which("bash") is None:
        raise UserError("mnist-hpc setup needs bash (run it on the cluster's login node)")
    proc = subprocess.run(["bash", "-lc", script], text=True)  # a login shell defines `module`
    if proc.returncode == 3:
        raise UserError(f"no `module` command here: run mnist-hpc setup on a login node of {profile.name}")
    if proc.returncode != 0:
        raise UserError(
            f"building the virtualenv {venv} failed (exit {proc.returncode}, its messages above); "
            "run it on the cluster's login node, where `module` and the wheelhouse exist"
        )
    out.done = True
    return out

"""Cluster commands: submit, status, logs, cancel, preempt, push, data pack and sweep submit.

Thin click commands over the public API (``mnist_hpc.api``: ``submit``, ``sweep_submit``,
``estimate``, ``jobs_status``, ``log_file``, ``cancel``, ``preempt``, ``setup_cluster``, ``push``,
``pack_data``; mnist_hpc/api_cluster.py): parse, call, print. Only the hidden job-internal
commands (`sweep task`, `sweep report-job`) call ``mnist_hpc.cluster.packed`` itself. cli/main.py registers them (``register(cli)``; ``sweep_submit_command`` belongs in the
`sweep` group). None imports torch. Every mistake a user can make ends in a
``UserError``/``ConfigError``: one line, a non-zero exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mnist_hpc import api
from mnist_hpc.cli.completion import complete_cluster, complete_config, complete_set, complete_yaml
from mnist_hpc.errors import UserError

FOLLOW_HINT = "follow it with: mnist-hpc status · mnist-hpc logs {job} -f · sq"


def resource_options(f):
    """--cluster, --gpus, --nodes, ... shared by `submit` and `sweep submit`."""
    options = [
        click.option(
            "--cluster",
            "-c",
            required=True,
            metavar="NAME",
            shell_complete=complete_cluster,
            help="Cluster profile: fir, nibi, rorqual, trillium, narval, tamia, alliance, generic, "
            "local, or one of yours (~/.config/mnist-hpc/clusters.yaml).",
        ),
        click.option(
            "--gpus",
            default=None,
            metavar="N|TYPE:N",
            help="GPUs per node, optionally typed (narval: a100_3g.20gb:1), or auto (the cheapest "
            "request the model fits: a MIG slice, a whole GPU, or the CPU; says why). "
            "Default: 1 on GPU clusters (4 where jobs take whole nodes), 0 on CPU-only ones.",
        ),
        click.option("--nodes", type=click.IntRange(1), default=1, show_default=True, help="Nodes."),
        click.option(
            "--tasks",
            type=click.IntRange(1),
            default=None,
            help="Processes per node (default: one per GPU; >1 without GPUs: CPU DDP).",
        ),
        click.option(
            "--time",
            "time_limit",
            default="1:00:00",
            show_default=True,
            help="Time limit: minutes, H:MM:SS or D-HH:MM:SS.",
        ),
        click.option(
            "--account",
            default=None,
            metavar="ACCOUNT",
            help="Slurm account, e.g. def-yourpi (default: $SBATCH_ACCOUNT, $SLURM_ACCOUNT).",
        ),
        click.option("--mail", default=None, metavar="ADDRESS", help="Mail at the end or on failure."),
        click.option(
            "--cpus",
            type=click.IntRange(1),
            default=None,
            help="CPU cores per task (default: the cluster's share per GPU).",
        ),
        click.option("--mem", default=None, help="Memory per node, e.g. 16G (default: the profile's)."),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Dataset folder to pack from (and to use when a job has no $SLURM_TMPDIR).",
        ),
        click.option("--dry-run", is_flag=True, help="Print the job script; create and submit nothing."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _warn(text: str) -> None:
    click.secho(f"warning: {text}", fg="yellow", err=True)


def _note(text: str) -> None:
    click.echo(text, err=True)


def _quiet(text: str) -> None:
    """A warn/note that drops its line (the command has said it already)."""


def _short(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())


# --------------------------------------------------------------------------- submit


@click.command()
@click.argument("config", type=click.Path(dir_okay=False), shell_complete=complete_config)
@resource_options
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    shell_complete=complete_set,
    help="Override a config value (repeatable), as for `train`.",
)
@click.option(
    "--after",
    metavar="JOBID[:afterany]",
    default=None,
    help="Start only after job JOBID completed successfully (afterok), or ended in any way "
    "(JOBID:afterany). The job must exist.",
)
def submit(
    config,
    cluster,
    gpus,
    nodes,
    tasks,
    time_limit,
    account,
    mail,
    cpus,
    mem,
    data_dir,
    dry_run,
    overrides,
    after,
):
    """Submit CONFIG as a Slurm job on CLUSTER and record it in a new run folder.

    \b
    The run folder <output_dir>/<name>-<time>/ gets the resolved config, the job script
    (job.sh), the job id (job.json) and the job's log (slurm-JOBID.out); the job trains into
    it and resumes there after a requeue.
      mnist-hpc submit configs/quickstart.yaml --cluster narval --account def-you --time 0:30:00
      mnist-hpc submit configs/quickstart.yaml --cluster local
    """
    job = api.submit(
        config,
        cluster,
        overrides=overrides,
        account=account,
        dry_run=dry_run,
        after=after,
        warn=_warn,
        note=_note,
        gpus=gpus,
        nodes=nodes,
        tasks=tasks,
        time=time_limit,
        mail=mail,
        cpus=cpus,
        mem=mem,
        data_dir=data_dir,
    )
    if job.job_id is None:
        click.echo(job.script, nl=False)
        _dry_run_estimate(config, overrides, cluster, gpus, 1, time_limit)
        click.echo(f"dry run: nothing submitted; the job would run in {job.run_dir}", err=True)
        return
    click.echo(f"submitted job {job.job_id} to {job.cluster}: {_short(job.run_dir)}/")
    click.echo(FOLLOW_HINT.format(job=job.job_id))


# --------------------------------------------------------------------------- estimate


def _dry_run_estimate(source, overrides, cluster, gpus, pack, time_limit) -> None:
    """The estimate under a dry run's script, from stored probes (a dry run stays torch-free and
    quick); without one, the line that makes it. Its warnings and --gpus auto note were said."""
    try:
        e = api.estimate(
            source,
            cluster,
            gpus=gpus,
            pack=pack,
            time=time_limit,
            overrides=overrides,
            stored_only=True,
            warn=_quiet,
            note=_quiet,
        )
    except UserError as err:
        _note(f"no cost estimate: {str(err).splitlines()[0]}")
        return
    if e is None:
        sets = "".join(f" --set {o}" for o in overrides)
        _note(
            f"no cost estimate yet (no stored probe of this model here): mnist-hpc estimate {source} "
            f"--cluster {cluster}{sets} times a few steps once; dry runs then show it"
        )
        return
    _show_estimate(e)


def _show_estimate(e, err: bool = True) -> None:
    for line in e.lines:
        click.echo(line, err=err)
    for text in e.warnings:
        _warn(text)


@click.command()
@click.argument(
    "source", metavar="CONFIG|SWEEP", type=click.Path(dir_okay=False), shell_complete=complete_yaml
)
@click.option(
    "--cluster",
    "-c",
    required=True,
    metavar="NAME",
    shell_complete=complete_cluster,
    help="The cluster profile whose GPUs, limits and RGU values to use.",
)
@click.option(
    "--gpus",
    default=None,
    metavar="N|TYPE:N|auto",
    help="As for submit (a MIG slice: a100_1g.5gb:1; auto: what submit --gpus auto would choose).",
)
@click.option(
    "--pack",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    metavar="K",
    help="Runs per array task (a sweep), as for sweep submit.",
)
@click.option(
    "--time",
    "time_limit",
    default=None,
    help="The --time you mean to ask for: warned about when below the estimate or far above it.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    shell_complete=complete_set,
    help="Override a config value (repeatable).",
)
def estimate(source, cluster, gpus, pack, time_limit, overrides):
    """What CONFIG (or every run of SWEEP) will cost on CLUSTER, before anything is queued.

    \b
    Per-run time from a short timed probe of the model and batch on this machine (stored and
    reused), the walltime to ask for (with margin), GPU-hours and RGU-hours from the RGU value of
    the GPU or MIG slice [Alliance wiki: Allocations and compute scheduling]. Every figure is an
    estimate and says how it was obtained; no GPU speed has been measured, so none is claimed.
    """
    e = api.estimate(
        source, cluster, gpus=gpus, pack=pack, time=time_limit, overrides=overrides, warn=_warn, note=_note
    )
    _show_estimate(e, err=False)


# --------------------------------------------------------------------------- sweep submit


@click.command("submit")
@click.argument("sweep_file", type=click.Path(dir_okay=False), shell_complete=complete_yaml)
@resource_options
@click.option(
    "--parallel",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Array tasks running at the same time (the %K of --array=0-N%K); for a "
    "method: optuna study, the number of worker tasks.",
)
@click.option(
    "--then",
    "then",
    type=click.Choice(["report"]),
    default=None,
    help="After the array has ended (afterany), a small CPU job writes the sweep's report.md "
    "into the sweep folder, naming the runs that did not complete.",
)
@click.option(
    "--pack",
    default="1",
    show_default=True,
    metavar="K|auto",
    help="Runs per array task, one after another (short runs make poor array tasks; give "
    "--time for K runs). A task's time-limit signal checkpoints the current run and "
    "requeues the task; its next start skips the finished runs. auto: as many as fit "
    "--task-time, from the stored estimate (mnist-hpc estimate makes it).",
)
@click.option(
    "--task-time",
    default="1:00:00",
    show_default=True,
    help="With --pack auto: how long each array task should last.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    shell_complete=complete_set,
    help="Override a config value in every run (repeatable), as for `sweep run`.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Train anew the finished runs whose stored config differs from the one asked for "
    "now (moved to <sweep folder>-replaced-<time>/, not deleted), as for `sweep run`.",
)
def sweep_submit_command(
    sweep_file,
    cluster,
    gpus,
    nodes,
    tasks,
    time_limit,
    account,
    mail,
    cpus,
    mem,
    data_dir,
    dry_run,
    parallel,
    then,
    pack,
    task_time,
    overrides,
    force,
):
    """Submit every run of SWEEP_FILE as one Slurm job array (task I runs run I; with --pack K,
    runs I*K .. I*K+K-1 one after another, each in its own run folder).

    A sweep larger than the cluster's largest array becomes several arrays, each starting
    when the previous one has ended, so that no more than --parallel runs at once. The tasks
    read a copy of SWEEP_FILE and its base config (--set folded in) kept in the sweep's folder
    runs/<sweep>-sweep-<time>/: editing the files afterwards changes nothing already submitted.
    """
    out = api.sweep_submit(
        sweep_file,
        cluster,
        overrides=overrides,
        account=account,
        dry_run=dry_run,
        parallel=parallel,
        pack=pack,
        task_time=task_time,
        then=then,
        force=force,
        warn=_warn,
        note=_note,
        gpus=gpus,
        nodes=nodes,
        tasks=tasks,
        time=time_limit,
        mail=mail,
        cpus=cpus,
        mem=mem,
        data_dir=data_dir,
    )
    for line in out.notes:
        _note(line)
    if dry_run:
        for job in out.jobs + ([out.report_job] if out.report_job else []):
            click.echo(job.script, nl=False)
        _dry_run_estimate(sweep_file, overrides, cluster, gpus, out.pack, time_limit)
        packing = f" ({out.tasks} task{'s' if out.tasks != 1 else ''} of {out.pack})" if out.pack > 1 else ""
        click.echo(
            f"dry run: nothing submitted; {out.runs} runs{packing} in {len(out.jobs)} job array(s)", err=True
        )
        return
    packing = f" in {out.tasks} task{'s' if out.tasks != 1 else ''} of {out.pack}" if out.pack > 1 else ""
    what = (
        f"{out.runs} runs{packing}"
        if out.trials is None
        else f"{out.runs} workers of a {out.trials}-trial study"
    )
    click.echo(
        f"submitted sweep {out.name}: {what} as job array {', '.join(str(j) for j in out.job_ids)} on "
        f"{out.cluster} ({out.parallel} at a time); scripts in {_short(out.folder)}/"
    )
    if out.report_job is not None:
        click.echo(
            f"then job {out.report_job.job_id} writes {_short(out.folder)}/report.md once the array has ended"
        )
    click.echo(FOLLOW_HINT.format(job=f"{out.job_ids[0]}_0"))


@click.command("task", hidden=True)
@click.argument("sweep_file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--task", "task", type=click.IntRange(0), required=True, help="The array task ($SLURM_ARRAY_TASK_ID)."
)
@click.option("--pack", type=click.IntRange(1), required=True, help="Runs per array task.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None, help="Dataset folder, for every run."
)
def sweep_task_command(sweep_file, task, pack, data_dir):
    """Run array task TASK of a packed sweep (`sweep submit --pack K`): runs TASK*K .. TASK*K+K-1
    one after another, skipping completed ones and resuming an interrupted one."""
    code = api.run_array_task(sweep_file, task, pack, data_dir=data_dir, echo=click.echo)
    if code:
        sys.exit(code)


@click.command("report-job", hidden=True)
@click.argument("sweep_file", type=click.Path(dir_okay=False, exists=True))
def sweep_report_job_command(sweep_file):
    """What `sweep submit --then report` runs after the array: report.md in the sweep folder,
    with the runs that did not complete named."""
    path, missing = api.write_array_report(sweep_file)
    click.echo(f"wrote {path}")
    if missing:
        click.echo(f"{len(missing)} run(s) did not complete: " + ", ".join(missing), err=True)


# --------------------------------------------------------------------------- status, logs, cancel


@click.command()
@click.option(
    "--runs",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to look for the run folders of your jobs.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Print it again every 60 s until Ctrl-C (never more often: one squeue and one "
    "sacct call a refresh, for all your jobs).",
)
def status(runs_dir, watch):
    """Your jobs in the Slurm queue (like `sq`) with their run folders, then the recent ones that
    left it, with Slurm's state, elapsed time, CPU and memory efficiency (like `seff`, where the
    cluster keeps accounting) and the run's result.

    Jobs submitted with plain sbatch are found by their run folder (<name>-job<JOBID>, under
    --runs) or, with accounting, by name. One call asks squeue about all your jobs (every task
    of a sweep's array with it) and one asks sacct; do not run this (or sq) in a fast loop:
    --watch refreshes once a minute, as the Alliance asks.
    """
    if not watch:
        _print_status(api.jobs_status(runs_dir))
        return
    try:
        for i, now in enumerate(api.watch_jobs_status(runs_dir)):
            if i:
                click.echo("")
            click.echo(f"-- {now.user}'s jobs (every {api.STATUS_EVERY:.0f} s; Ctrl-C to stop) --")
            _print_status(now)
    except KeyboardInterrupt:
        return


def _print_status(now) -> None:
    rows = [
        (
            q.job.job_id,
            q.job.name,
            q.job.state,
            q.job.elapsed,
            q.job.time_limit,
            q.job.reason,
            (_short(q.folder) if q.folder else "-") + (f" ({q.detail})" if getattr(q, "detail", "") else ""),
        )
        for q in now.queued
    ]
    if rows:
        _table(("JOBID", "NAME", "STATE", "TIME", "LIMIT", "NODES/REASON", "RUN FOLDER"), rows)
    else:
        click.echo(f"no jobs of {now.user} in the queue")
    if now.finished:
        click.echo("\nrecently finished (no longer queued):")
        header = ("JOBID", "NAME", "STATE", "ELAPSED") + (
            ("CPU AND MEMORY (sacct)",) if now.accounting else ()
        )
        _table(
            (*header, "RESULT", "RUN FOLDER"),
            [
                (f.job_id, f.name, f.state, f.elapsed)
                + ((f.usage,) if now.accounting else ())
                + (f.result, _short(f.folder) if f.folder else "-")
                for f in now.finished
            ],
        )
        if not now.accounting and not now.notes:
            click.echo("(no accounting on this cluster: sacct cannot tell CPU and memory efficiency)")
    for line in now.notes:
        click.echo(f"note: {line}", err=True)


@click.command()
@click.argument("job_id")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing new output until the job ends (like tail -f: the file is read as it "
    "grows; squeue is asked whether the job still runs once a minute).",
)
@click.option(
    "--runs",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to look for the run folders of your jobs.",
)
def logs(job_id, follow, runs_dir):
    """Print the output of job JOB_ID (its slurm-JOBID.out), like `cat slurm-JOBID.out`.

    With -f it follows the file itself and asks the scheduler at most once per 60 s (the Alliance
    asks users not to poll squeue at high frequency), so it ends up to a minute after the job.
    """
    if not follow:
        sys.stdout.write(api.log_file(job_id, runs_dir).read_text(errors="replace"))
        return
    chunks = api.follow_log(job_id, runs_dir)
    try:
        for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
def cancel(job_ids):
    """Cancel Slurm jobs (scancel), e.g. mnist-hpc cancel 123456."""
    for job_id in job_ids:
        click.echo(f"cancelled job {api.cancel(job_id)}")


@click.command()
@click.argument("job_id", metavar="JOBID[_TASK]")
@click.option(
    "--runs",
    "runs_dir",
    default="runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to look for the job's run folder (its job script names the signal).",
)
@click.option("--dry-run", is_flag=True, help="Print the scancel command; send nothing.")
def preempt(job_id, runs_dir, dry_run):
    """Rehearse the time limit: send running job JOBID (an array task: JOBID_TASK) the signal Slurm
    sends before its limit, now.

    \b
    It runs `scancel --signal=<the job's requeue signal> --batch JOBID` (--batch where the job
    script asks for --signal=B:..., as mnist-hpc's single-process scripts do; srun jobs get it in
    their steps, as at the limit). The job checkpoints at the next step, requeues itself and
    resumes in its next start: watch it with mnist-hpc status and mnist-hpc logs JOBID -f. Try it
    on a short job before trusting a long one to the time limit.
    """
    out = api.preempt(job_id, runs_dir, dry_run=dry_run)
    command = " ".join(out.argv)
    if dry_run:
        click.echo(command)
        click.echo(f"dry run: nothing sent (signal {out.signal} read from {_short(out.source)})", err=True)
        return
    to = "its batch shell" if out.batch else "its job steps"
    click.echo(
        f"sent SIG{out.signal} to {to} of job {out.job_id} ({command}; the signal read from "
        f"{_short(out.source)}): it checkpoints, requeues and resumes; follow it with "
        f"mnist-hpc status · mnist-hpc logs {out.job_id} -f"
    )


# --------------------------------------------------------------------------- setup


@click.command()
@click.option(
    "--cluster",
    "-c",
    required=True,
    metavar="NAME",
    shell_complete=complete_cluster,
    help="The cluster's profile (trillium: a virtualenv in $HOME).",
)
@click.argument("configs", nargs=-1, type=click.Path(dir_okay=False), shell_complete=complete_config)
@click.option("--dry-run", is_flag=True, help="Print the commands; build nothing.")
def setup(cluster, configs, dry_run):
    """Make, once on the login node, the virtualenv the jobs of CLUSTER activate.

    \b
    On Trillium jobs cannot build one at each start ($SLURM_TMPDIR is a RAM disk there) and
    $HOME is read-only but readable in jobs: this builds ~/.virtualenvs/mnist-hpc from the
    Alliance wheelhouse (module purge, StdEnv and python as the job loads them, pip --no-index)
    with the packages of CONFIGS (default: the base ones). A job refuses to start when it is
    missing or stale (built for other packages or another mnist-hpc); so does submit.
    Other clusters build the job's virtualenv in $SLURM_TMPDIR: nothing to set up.
    """
    out = api.setup_cluster(cluster, configs, dry_run=dry_run, warn=_warn)
    if out.venv is None:
        click.echo(
            f"cluster {out.cluster}: each job builds its virtualenv in $SLURM_TMPDIR from the "
            "wheelhouse; nothing to set up"
        )
        return
    if dry_run:
        click.echo(out.script, nl=False)
        click.echo(f"dry run: nothing built; the jobs of {out.cluster} would use {out.venv}", err=True)
        return
    click.echo(f"virtualenv {out.venv} ready for {out.cluster} jobs ({out.stamp})")


# --------------------------------------------------------------------------- push, data pack


@click.command()
@click.argument("target", metavar="USER@HOST[:DIR]")
@click.option(
    "--with-data", is_flag=True, help="Also copy the data archive (made by `data pack` if missing)."
)
@click.option(
    "--project",
    type=click.Path(file_okay=False, exists=True),
    default=".",
    show_default=True,
    help="The project folder to copy.",
)
@click.option(
    "--cluster",
    "-c",
    default=None,
    metavar="NAME",
    shell_complete=complete_cluster,
    help="The cluster's profile, for the default DIR (default: the one the host is named after).",
)
@click.option("--dry-run", is_flag=True, help="Print the commands; copy nothing.")
def push(target, with_data, project, cluster, dry_run):
    """Copy the project to a cluster (default DIR: scratch/<project folder name>; on Trillium
    and Rorqual links/scratch/<project folder name>).

    Uses rsync (scp when rsync is missing) and leaves out .venv, runs, data, .git and caches:
    on the cluster, build the environment there and run `mnist-hpc data download`, or pass
    --with-data to send the packed datasets along.
    """
    project_dir = api.push(
        target, project=project, with_data=with_data, dry_run=dry_run, cluster=cluster, show=_note
    )
    if not dry_run:
        click.echo(f"copied {project_dir.name} to {target}")


@click.command("pack")
@click.argument("datasets", nargs=-1)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder (beats $MNIST_HPC_DATA_DIR).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default="data/mnist-hpc-data.tar",  # api.pack_data's (cluster.datapack.DEFAULT_ARCHIVE)
    show_default=True,
    help="The archive to write.",
)
def pack(datasets, data_dir, output):
    """Pack datasets (default: every one present) into one archive for $SLURM_TMPDIR staging."""
    click.echo(str(api.pack_data(datasets, data_dir=data_dir, output=output)))


# --------------------------------------------------------------------------- registration


def register(cli: click.Group) -> None:
    """Add the cluster commands to the main CLI: submit, status, logs, cancel, push and setup at the
    top and `pack` in the `data` group. `sweep submit` is ``sweep_submit_command``, which
    cli/main.py adds to its `sweep` group."""
    for command in (submit, estimate, status, logs, cancel, preempt, push, setup):
        cli.add_command(command)
    data = cli.commands.get("data")
    if isinstance(data, click.Group):
        data.add_command(pack)
    sweep = cli.commands.get("sweep")
    if isinstance(sweep, click.Group):  # what a packed array task runs (sweep submit --pack K)
        sweep.add_command(sweep_task_command)
        sweep.add_command(sweep_report_job_command)

"""The `sweep` command group (plan, run) and the `report` command: thin click commands over
``experiments.sweepfile``, ``experiments.sweep`` and ``experiments.report``. Neither imports torch.

Registered on the main CLI by ``cli.add_command(sweep_group)`` and ``cli.add_command(report_command)``.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click

from mnist_hpc.cli.completion import complete_set, complete_yaml
from mnist_hpc.errors import ConfigError, UserError
from mnist_hpc.experiments import figures, pages, tables
from mnist_hpc.experiments.report import compare, find_runs, load_run
from mnist_hpc.experiments.sweep import is_completed, last_line, run_sweep
from mnist_hpc.experiments.sweepfile import MAX_RUNS, SweepRun, load_sweep
from mnist_hpc.experiments.tables import plural
from mnist_hpc.runs.folder import atomic_write

SET_HELP = "Override a config value in every run (repeatable), e.g. --set train.epochs=1."
LARGE_HELP = f"Allow a sweep of more than {MAX_RUNS:,} runs (refused otherwise: usually a typo)."


class _UserFacing(click.ClickException):
    """A UserError as click reports it: one line on stderr, the error's exit code."""

    def __init__(self, error: UserError):
        super().__init__(str(error))
        # click types exit_code a ClassVar, yet reads it off the instance (sys.exit(e.exit_code))
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def user_errors(fn):
    """Report a UserError as one line and its exit code, also when the group runs on its own."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise _UserFacing(e) from None

    return wrapper


@click.group("sweep")
def sweep_group():
    """Run many experiments from one sweep file (a base config plus the values to vary)."""


@sweep_group.command("plan")
@click.argument("sweep_file", type=click.Path(path_type=Path), shell_complete=complete_yaml)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, shell_complete=complete_set
)
@click.option("--allow-large", is_flag=True, help=LARGE_HELP)
@user_errors
def plan(sweep_file, overrides, allow_large):
    """List the runs of SWEEP_FILE without running anything."""
    sweep = load_sweep(sweep_file, overrides, allow_large=allow_large, validate=False)
    if sweep.study is not None:
        sweep.validate()
        _plan_study(sweep)
        return
    runs = sweep.runs
    if len(runs) <= MAX_RUNS:  # every run checked before a line is printed (a larger one streams)
        sweep.validate()
    click.echo(f"sweep {sweep.name}: {plural(len(runs), 'run')} of {sweep.base}, into {sweep.output_dir}/")
    if sweep.fixed:
        click.echo("every run: " + " ".join(f"--set {t}" for t in sweep.fixed))
    width = max(len(r.name) for r in runs) if len(runs) <= MAX_RUNS else 0
    digits = len(str(len(runs) - 1))
    for run in runs:
        varied = " ".join(run.overrides[len(sweep.fixed) :])
        done = "  (done)" if is_completed(run.run_dir) else ""
        click.echo(f"{run.index:>{digits}}  {run.name:<{width}}  {varied}{done}")


@sweep_group.command("run")
@click.argument("sweep_file", type=click.Path(path_type=Path), shell_complete=complete_yaml)
@click.option(
    "--parallel",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs to train at the same time (each gets cores / K threads); for a "
    "method: optuna study, its workers here.",
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    default=None,
    help="Run only the run with this index (a Slurm array task: $SLURM_ARRAY_TASK_ID); "
    "for a method: optuna study, be its worker number INDEX.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder, passed on to every run.",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, shell_complete=complete_set
)
@click.option("--allow-large", is_flag=True, help=LARGE_HELP)
@click.option(
    "--force",
    is_flag=True,
    help="Train anew the finished runs whose stored config differs from the one asked for "
    "now (their folders are moved to <sweep folder>-replaced-<time>/, not deleted).",
)
@user_errors
def run(sweep_file, parallel, index, data_dir, overrides, allow_large, force):
    """Train every run of SWEEP_FILE that has not completed yet, then compare them.

    Each run trains in its own process into <output_dir>/sweeps/<sweep>/<run>/, with its
    output in train.log there. Running the command again skips the completed runs, if they were
    trained with the same config (else it stops and names the keys that differ; --force trains
    them anew). Two runners on one sweep share it: a run the other is training is left to it. A
    method: optuna sweep runs its study until it has n_trials trials (study.journal in the
    sweep's folder), resuming trials whose worker was killed.
    """
    # an array task checks only its own run: the whole sweep was checked when it was submitted
    sweep = load_sweep(sweep_file, overrides, allow_large=allow_large, validate=index is None)
    if sweep.study is not None:
        _run_study(sweep, parallel, index, data_dir)
        return
    runs: Sequence[SweepRun] = sweep.runs
    if index is not None:
        if index >= len(runs):
            raise ConfigError(
                f"--index {index}: the sweep {sweep_file} has {plural(len(runs), 'run')} "
                f"(indices 0-{len(runs) - 1})"
            )
        runs = [runs[index]]
    at_once = f", {parallel} at a time" if parallel > 1 and len(runs) > 1 else ""
    click.echo(f"sweep {sweep.name}: {plural(len(runs), 'run')} into {sweep.output_dir}/{at_once}")
    try:
        results = run_sweep(sweep, runs, parallel, data_dir, echo=click.echo, force=force)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue", err=True)
        sys.exit(130)

    if index is None:
        _print_comparison(sweep)
    busy = [r for r in results if r.status == "busy"]
    if busy:
        click.echo(
            f"\n{plural(len(busy), 'run')} left to another runner of this sweep (see above); "
            "run the same command again once it has finished to compare them all",
            err=True,
        )
    failed = [r for r in results if not r.ok]
    requeued = [r for r in results if r.status == "requeued"]
    if requeued and not failed:
        for r in requeued:
            click.echo(
                f"[{r.run.index}] {r.run.name}: requeued at {r.where}; resumes in the next start", err=True
            )
        sys.exit(75)  # like `train` after a requeue: stopped after a checkpoint, to be continued
    if failed:
        click.echo(f"\n{plural(len(failed), 'run')} failed:", err=True)
        for r in failed:
            why = "stopped" if r.returncode is None else f"exit {r.returncode}"
            click.echo(f"  [{r.run.index}] {r.run.name}: {why}, log {r.log}", err=True)
            if last_line(r.log):
                click.echo(f"      {last_line(r.log)}", err=True)
        click.echo("Fix the cause and run the same command again: completed runs are skipped.", err=True)
        # a single run (an array task) exits like `train` did, so Slurm records its real state
        code = failed[0].returncode if index is not None else 1
        sys.exit(code if code and code > 0 else 1)


@sweep_group.command("status")
@click.argument("sweep_file", type=click.Path(path_type=Path), shell_complete=complete_yaml)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, shell_complete=complete_set
)
@click.option("--allow-large", is_flag=True, help=LARGE_HELP)
@user_errors
def sweep_status(sweep_file, overrides, allow_large):
    """Say where each run of SWEEP_FILE stands, from its folder alone (no scheduler call):
    pending (no folder yet), running (its trainer holds the run's lock), completed (with its test
    accuracy), failed (the error), interrupted or requeued, stale (completed with another config
    than the one asked for now: `sweep run --force` trains it anew) or damaged (an unreadable
    summary.json); then the count of each. For a method: optuna study, the study's trials.
    (`mnist-hpc status` asks Slurm about the jobs.)"""
    from mnist_hpc.experiments import overview

    sweep = load_sweep(sweep_file, overrides, allow_large=allow_large, validate=False)
    if sweep.study is not None:
        states, total = overview.study_states(sweep)
        made = len(states)
        click.echo(
            tables.wrap(
                f"sweep {sweep.name}: an Optuna study of {plural(total, 'trial')}, in {sweep.output_dir}/"
            )
        )
        if total > made:
            states += [overview.SweepRunStatus(-1, "", "pending")] * (total - made)
        shown = [s for s in states if s.index >= 0]
        noun = "trial"
    else:
        states = overview.sweep_states(sweep)
        total = len(states)
        click.echo(tables.wrap(f"sweep {sweep.name}: {plural(total, 'run')} in {sweep.output_dir}/"))
        shown = states
        noun = "run"
    width = tables.terminal_width()
    name_w = min(max((len(s.name) for s in shown), default=0), width // 2)
    digits = len(str(max((s.index for s in shown), default=0)))
    for s in shown:
        line = f"{s.index:>{digits}}  {s.name:<{name_w}}  {s.state:<11}  {s.detail}".rstrip()
        click.echo(line if len(line) <= width else line[: width - 3] + "...")
    click.echo(tables.wrap(overview.counts_line(states, total, noun)))


def _plan_study(sweep) -> None:
    from mnist_hpc.experiments import studyreport

    st = sweep.study
    click.echo(
        f"sweep {sweep.name}: an Optuna study of {plural(st.n_trials, 'trial')} of {sweep.base} "
        f"({st.sampler} sampler, {st.pruner} pruner, {st.direction} {st.metric}), "
        f"into {sweep.output_dir}/"
    )
    if sweep.fixed:
        click.echo("every trial: " + " ".join(f"--set {t}" for t in sweep.fixed))
    for key, p in st.params.items():
        click.echo(f"  {key}: {studyreport.describe_param(p)}")
    click.echo(studyreport.progress_line(sweep))


def _run_study(sweep, parallel, index, data_dir) -> None:
    from mnist_hpc.experiments import search, studyreport

    st = sweep.study
    who = f"worker {index}" if index is not None else plural(parallel, "worker")
    click.echo(
        f"sweep {sweep.name}: Optuna study of {plural(st.n_trials, 'trial')} ({st.sampler}, "
        f"{st.pruner} pruner), {who}, into {sweep.output_dir}/"
    )
    try:
        results = search.run_study(
            sweep,
            workers=1 if index is not None else parallel,
            first_worker=index or 0,
            data_dir=data_dir,
            echo=click.echo,
        )
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue the study", err=True)
        sys.exit(130)
    click.echo(studyreport.progress_line(sweep))
    if index is None:
        best = studyreport.best_line(sweep)
        if best:
            click.echo(best)
        click.echo(
            f"(mnist-hpc sweep report {sweep.path} writes the study's HTML report; "
            f"optuna-dashboard {search.journal_path(sweep)} shows it live)"
        )
    stopped = [r for r in results if r.state == "stopped"]
    if stopped:  # a requeued array task exits like its trainer did
        code = stopped[0].returncode
        sys.exit(code if code and code > 0 else 1)
    failed = [r for r in results if r.state == "failed"]
    if failed:
        for r in failed:
            click.echo(
                f"  trial {r.number} failed (exit {r.returncode}), log {r.run_dir / 'train.log'}", err=True
            )
        click.echo(
            "Failed trials count towards n_trials (the study went on without them); see their logs.", err=True
        )
        sys.exit(1)


def _print_comparison(sweep) -> None:
    completed = [r for r in sweep.runs if is_completed(r.run_dir)]
    if not completed:
        return
    comp = compare([load_run(r.run_dir) for r in completed])
    click.echo(f"\n{len(completed)} of {plural(len(sweep.runs), 'run')} completed\n")
    click.echo(tables.format_table(comp))
    click.echo("\n" + tables.wrap(tables.verdict(comp)))
    click.echo(
        f"(mnist-hpc report {sweep.output_dir} --format markdown --plots DIR "
        f"--out FILE writes a report with figures)"
    )


def _studies(dirs) -> list:
    """(folder, StudyView) of every Optuna study among ``dirs`` (a sweep folder holding
    study.journal); without optuna installed, a note and none."""
    from mnist_hpc.experiments import studyreport

    found = []
    for d in dirs:
        if not (Path(d) / studyreport.JOURNAL).is_file():
            continue
        try:
            view = studyreport.load_view(d)
        except UserError as e:
            click.echo(f"note: {d}: the study's part of the report is left out: {e}", err=True)
            continue
        if view is not None:
            found.append((Path(d), view))
    return found


def _study_sections(studies, tmp) -> str:
    """The HTML of each study (``_studies``), its figures embedded."""
    from mnist_hpc.experiments import studyreport

    out: list[str] = []
    for d, view in studies:
        drawn = studyreport.make_study_plots(view, Path(tmp) / f"study-{len(out)}")
        out.append(studyreport.html_section(view, d, pages.embed_images(drawn)))
    return "\n".join(out)


@sweep_group.command("report")
@click.argument("sweep_file", type=click.Path(path_type=Path), shell_complete=complete_yaml)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the HTML report (default: report.html in the sweep's folder).",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP, shell_complete=complete_set
)
@click.pass_context
@user_errors
def sweep_report(ctx, sweep_file, out, overrides):
    """Write the HTML report of SWEEP_FILE's runs (one self-contained file); for a method: optuna
    study also its best trial and config, history, parameter importance and slice plots, pruned
    trials marked."""
    sweep = load_sweep(sweep_file, overrides, allow_large=True, validate=False)
    if sweep.study is not None:
        from mnist_hpc.experiments import studyreport

        click.echo(studyreport.progress_line(sweep))
        best = studyreport.best_line(sweep)
        if best:
            click.echo(best)
    if not sweep.output_dir.is_dir():
        raise UserError(
            f"{sweep.output_dir}: no such folder: run the sweep first (mnist-hpc sweep run {sweep_file})"
        )
    ctx.invoke(
        report_command,
        dirs=(sweep.output_dir,),
        fmt="table",
        as_html=True,
        plots=None,
        title=f"Sweep {sweep.name}",
        out=out or sweep.output_dir / "report.html",
    )


@click.command("runs")
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR...]")
@user_errors
def runs_command(dirs):
    """List every run folder under DIRS (default: ./runs), at any depth, one line each, oldest
    first: its state (completed, running, failed with its error, interrupted, requeued), dataset,
    model, test accuracy, epochs, training seconds and when it finished. A damaged record is
    named on stderr and left out."""
    from mnist_hpc.experiments import overview

    dirs = list(dirs) or [Path("runs")]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise UserError(
            f"{missing[0]}: no such folder (give the folder your runs are in: mnist-hpc runs DIR)"
        )
    lines, damaged = overview.list_runs(dirs)
    for line in damaged:
        click.echo(f"note: skipped {line}", err=True)
    if not lines:
        click.echo(f"no run folders under {', '.join(map(str, dirs))}", err=True)
        return
    click.echo(overview.format_runs(lines))
    click.echo(tables.wrap(overview.counts_line(lines, len(lines))))


@click.command("report")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="DIR...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of the terminal.",
)
@click.option(
    "--html",
    "as_html",
    is_flag=True,
    help="Write a self-contained HTML report (figures embedded) to --out, "
    "or to report.html in the first DIR.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Draw the figures into this folder (a Markdown report links them).",
)
@click.option("--title", help="Report title (default: from the folder names).")
@user_errors
def report_command(dirs, fmt, out, as_html, plots, title):
    """Compare every run found under DIRS: table, figures and a report to hand in.

    DIRS are folders holding run folders at any depth, or sweep files (standing for their
    output folder). Runs whose configs differ only in experiment.seed are averaged
    (mean ± sd over the seeds).
    """
    if as_html and fmt != "table":
        raise click.UsageError("--html writes an HTML report; leave out --format")
    # a sweep file stands for its output folder
    dirs = [
        load_sweep(d, allow_large=True, validate=False).output_dir
        if d.suffix in (".yaml", ".yml") and d.is_file()
        else d
        for d in dirs
    ]
    studies = _studies(dirs)
    runs, skipped = find_runs(dirs)
    comp = compare(runs, skipped)
    pruned = {str(d / t.run) for d, view in studies for t in view.trials if t.state == "pruned" and t.run}
    for line in skipped:
        if line.split(":", 1)[0] not in pruned:
            click.echo(f"note: skipped {line}", err=True)
    if pruned:
        click.echo(
            f"note: {plural(len(pruned), 'pruned trial')} left out of the comparison of completed "
            f"runs (the study's table lists {'it' if len(pruned) == 1 else 'them'})",
            err=True,
        )
    title = title or "Run comparison: " + ", ".join(d.resolve().name or str(d) for d in dirs)
    if as_html and out is None:
        out = dirs[0] / "report.html"

    try:
        with tempfile.TemporaryDirectory() as tmp:
            found = []
            if plots is not None:
                found = figures.make_plots(comp, plots)
                click.echo(f"wrote {plural(len(found), 'figure')} to {plots}/", err=True)
            if as_html:
                drawn = found if plots is not None else figures.make_plots(comp, tmp)
                text = pages.html_report(comp, title, drawn, _study_sections(studies, tmp))
            elif fmt == "markdown":
                text = pages.markdown_report(
                    comp, title, found, relative_to=out.parent if out else Path.cwd()
                )
            elif fmt == "csv":
                text = comp.to_csv()
            else:
                text = comp.to_table()
        if out is None:
            click.echo(text, nl=not text.endswith("\n"))
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, text)
    except OSError as e:
        raise UserError(f"{e.filename or out}: cannot write: {e.strerror or e}") from None
    click.echo(f"wrote {out}", err=True)

"""The `sweep` command group (plan, run, status, report) and the `report` and `runs` commands:
click commands that parse, call the public API (``mnist_hpc.sweep_plan``, ``sweep``,
``sweep_status``, ``sweep_report``, ``report``, ``list_runs``) and print what it returns. None
imports torch.

Registered on the main CLI by ``cli.add_command(sweep_group)`` and ``cli.add_command(report_command)``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from mnist_hpc import api
from mnist_hpc.cli.completion import complete_set, complete_yaml
from mnist_hpc.errors import UserError

SET_HELP = "Override a config value in every run (repeatable), e.g. --set train.epochs=1."
LARGE_HELP = f"Allow a sweep of more than {api.MAX_SWEEP_RUNS:,} runs (refused otherwise: usually a typo)."


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
    for line in api.sweep_plan(sweep_file, overrides, allow_large=allow_large).lines():
        click.echo(line)


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
    try:
        done = api.sweep(
            sweep_file,
            overrides,
            parallel=parallel,
            index=index,
            data_dir=data_dir,
            allow_large=allow_large,
            force=force,
            echo=click.echo,
        )
    except KeyboardInterrupt as e:
        click.echo(e.args[0] if e.args else "interrupted: run the same command again to continue", err=True)
        sys.exit(130)
    for text in done.after:
        click.echo(text)
    for text in done.problems:
        click.echo(text, err=True)
    if done.exit_code:
        sys.exit(done.exit_code)


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
    for line in api.sweep_status(sweep_file, overrides, allow_large=allow_large).lines():
        click.echo(line)


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
@user_errors
def sweep_report(sweep_file, out, overrides):
    """Write the HTML report of SWEEP_FILE's runs (one self-contained file); for a method: optuna
    study also its best trial and config, history, parameter importance and slice plots, pruned
    trials marked."""
    done = api.sweep_report(sweep_file, overrides, out=out, echo=click.echo, warn=_note)
    click.echo(f"wrote {done.path}", err=True)


def _note(text: str) -> None:
    click.echo(f"note: {text}", err=True)


@click.command("runs")
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR...]")
@user_errors
def runs_command(dirs):
    """List every run folder under DIRS (default: ./runs), at any depth, one line each, oldest
    first: its state (completed, running, failed with its error, interrupted, requeued), dataset,
    model, test accuracy, epochs, training seconds and when it finished. A damaged record is
    named on stderr and left out."""
    dirs = list(dirs) or [Path("runs")]
    found = api.list_runs(dirs)
    for line in found.damaged:
        click.echo(f"note: skipped {line}", err=True)
    if not found:
        click.echo(f"no run folders under {', '.join(map(str, dirs))}", err=True)
        return
    click.echo(found.to_table())


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
    comp = api.report(dirs, title=title, warn=_note)
    if as_html:
        fmt, out = "html", out or comp.html_path()
    done = comp.render(fmt, plots=plots, out=out)
    if plots is not None:
        click.echo(done.figures_line(), err=True)
    if out is None:
        click.echo(done.text, nl=not done.text.endswith("\n"))
        return
    done.save(out)
    click.echo(f"wrote {out}", err=True)

"""What each `mnist-hpc sweep` command does with one loaded sweep file, as results: its plan
(``plan``), its training, grid or Optuna study, with the lines to print after and the exit status
(``train``), where each run stands (``status``) and its HTML report (``report``). The CLI prints
these results; ``mnist_hpc.sweep_plan``, ``sweep``, ``sweep_status`` and ``sweep_report`` return
them. Torch-free.

    plan_ = plan(load_sweep("sweep.yaml", validate=False)); for line in plan_.lines(): print(line)
    print(status(load_sweep("sweep.yaml", validate=False)).to_text())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mnist_hpc.errors import ConfigError, UserError
from mnist_hpc.experiments import overview, tables
from mnist_hpc.experiments.sweep import is_completed, last_line, run_sweep
from mnist_hpc.experiments.sweepfile import MAX_RUNS, Sweep
from mnist_hpc.experiments.tables import plural

# --------------------------------------------------------------------------- plan


@dataclass
class SweepPlan:
    """The runs of a sweep (or a study's search space), without running anything: ``lines()``
    yields what `mnist-hpc sweep plan` prints, one at a time (a sweep of more than MAX_RUNS
    runs streams)."""

    sweep: Sweep

    def lines(self) -> Iterator[str]:
        sweep = self.sweep
        if sweep.study is not None:
            yield from _study_plan(sweep)
            return
        runs = sweep.runs
        yield f"sweep {sweep.name}: {plural(len(runs), 'run')} of {sweep.base}, into {sweep.output_dir}/"
        if sweep.fixed:
            yield "every run: " + " ".join(f"--set {t}" for t in sweep.fixed)
        width = max(len(r.name) for r in runs) if len(runs) <= MAX_RUNS else 0
        digits = len(str(len(runs) - 1))
        for run in runs:
            varied = " ".join(run.overrides[len(sweep.fixed) :])
            done = "  (done)" if is_completed(run.run_dir) else ""
            yield f"{run.index:>{digits}}  {run.name:<{width}}  {varied}{done}"


def plan(sweep: Sweep) -> SweepPlan:
    """The plan of ``sweep`` (loaded with ``validate=False``): every run is checked here, before
    a line is made, unless there are more than MAX_RUNS of them (those stream unchecked)."""
    if sweep.study is not None or len(sweep.runs) <= MAX_RUNS:
        sweep.validate()
    return SweepPlan(sweep)


def _study_plan(sweep: Sweep) -> Iterator[str]:
    from mnist_hpc.experiments import studyreport

    st = sweep.study
    assert st is not None
    yield (
        f"sweep {sweep.name}: an Optuna study of {plural(st.n_trials, 'trial')} of {sweep.base} "
        f"({st.sampler} sampler, {st.pruner} pruner, {st.direction} {st.metric}), "
        f"into {sweep.output_dir}/"
    )
    if sweep.fixed:
        yield "every trial: " + " ".join(f"--set {t}" for t in sweep.fixed)
    for key, p in st.params.items():
        yield f"  {key}: {studyreport.describe_param(p)}"
    yield studyreport.progress_line(sweep)


# --------------------------------------------------------------------------- status


@dataclass
class SweepStatus:
    """Where each run (or trial) of a sweep stands, from the folders alone."""

    name: str
    output_dir: Path
    states: list  # [overview.SweepRunStatus] by index (a study's trials not made yet: pending, index -1)
    total: int  # runs, or the trials the study asks for
    noun: str  # "run" or "trial"

    @property
    def shown(self) -> list:
        """The runs (trials) that have a line: every one but a study's trials not made yet."""
        return [s for s in self.states if s.index >= 0]

    def counts(self) -> dict:
        """{state: how many}, e.g. {"completed": 150, "running": 2, "pending": 48}."""
        found: dict = {}
        for s in self.states:
            found[s.state] = found.get(s.state, 0) + 1
        return found

    def lines(self, width: int | None = None) -> list[str]:
        """What `mnist-hpc sweep status` prints, at most ``width`` (default: the terminal's) wide."""
        width = width or tables.terminal_width()
        if self.noun == "trial":
            head = (
                f"sweep {self.name}: an Optuna study of {plural(self.total, 'trial')}, in {self.output_dir}/"
            )
        else:
            head = f"sweep {self.name}: {plural(self.total, 'run')} in {self.output_dir}/"
        out = [tables.wrap(head, width)]
        shown = self.shown
        name_w = min(max((len(s.name) for s in shown), default=0), width // 2)
        digits = len(str(max((s.index for s in shown), default=0)))
        for s in shown:
            line = f"{s.index:>{digits}}  {s.name:<{name_w}}  {s.state:<11}  {s.detail}".rstrip()
            out.append(line if len(line) <= width else line[: width - 3] + "...")
        out.append(tables.wrap(overview.counts_line(self.states, self.total, self.noun), width))
        return out

    def to_text(self, width: int | None = None) -> str:
        return "\n".join(self.lines(width))


def status(sweep: Sweep) -> SweepStatus:
    """Where each run of ``sweep`` stands (for a study: its trials, from the journal)."""
    if sweep.study is not None:
        states, total = overview.study_states(sweep)
        if total > len(states):
            states += [overview.SweepRunStatus(-1, "", "pending")] * (total - len(states))
        return SweepStatus(sweep.name, sweep.output_dir, states, total, "trial")
    states = overview.sweep_states(sweep)
    return SweepStatus(sweep.name, sweep.output_dir, states, len(states), "run")


# --------------------------------------------------------------------------- training


@dataclass
class SweepDone:
    """What training a sweep did: one outcome per run (``SweepRunOutcome``, or a study's
    ``TrialResult``), the finished run folders, the lines `sweep run` prints after the runs
    (``after``: the comparison, a study's best trial; ``problems``: on stderr) and its exit status."""

    outcomes: list
    finished: list  # [Path] of the runs (trials) that completed (skipped and requeued ones included)
    after: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    exit_code: int = 0


def train(
    sweep: Sweep,
    *,
    parallel: int = 1,
    index: int | None = None,
    data_dir=None,
    echo: Callable[[str], None] = print,
    force: bool = False,
) -> SweepDone:
    """Train the runs of ``sweep`` that have not completed (``index``: only that one, an array
    task; for a study: be its worker ``index``), echoing a header line and each run's progress.
    Ctrl-C stops the runs and raises KeyboardInterrupt, its message saying how to continue."""
    if sweep.study is not None:
        return _train_study(sweep, parallel, index, data_dir, echo)
    runs = sweep.runs
    if index is not None:
        if index >= len(runs):
            raise ConfigError(
                f"--index {index}: the sweep {sweep.path} has {plural(len(runs), 'run')} "
                f"(indices 0-{len(runs) - 1})"
            )
        runs = [runs[index]]
    at_once = f", {parallel} at a time" if parallel > 1 and len(runs) > 1 else ""
    echo(f"sweep {sweep.name}: {plural(len(runs), 'run')} into {sweep.output_dir}/{at_once}")
    try:
        results = run_sweep(sweep, runs, parallel, data_dir, echo=echo, force=force)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted: run the same command again to continue") from None
    done = SweepDone(results, [r.run_dir for r in results if r.ok])
    if index is None:
        done.after = comparison_lines(sweep)
    busy = [r for r in results if r.status == "busy"]
    if busy:
        done.problems.append(
            f"\n{plural(len(busy), 'run')} left to another runner of this sweep (see above); "
            "run the same command again once it has finished to compare them all"
        )
    failed = [r for r in results if not r.ok]
    requeued = [r for r in results if r.status == "requeued"]
    if requeued and not failed:
        for r in requeued:
            done.problems.append(
                f"[{r.run.index}] {r.run.name}: requeued at {r.where}; resumes in the next start"
            )
        done.exit_code = 75  # like `train` after a requeue: stopped after a checkpoint, to be continued
    elif failed:
        done.problems.append(f"\n{plural(len(failed), 'run')} failed:")
        for r in failed:
            why = "stopped" if r.returncode is None else f"exit {r.returncode}"
            done.problems.append(f"  [{r.run.index}] {r.run.name}: {why}, log {r.log}")
            if last_line(r.log):
                done.problems.append(f"      {last_line(r.log)}")
        done.problems.append("Fix the cause and run the same command again: completed runs are skipped.")
        # a single run (an array task) exits like `train` did, so Slurm records its real state
        code = failed[0].returncode if index is not None else 1
        done.exit_code = code if code and code > 0 else 1
    return done


def comparison_lines(sweep: Sweep) -> list[str]:
    """The comparison of the sweep's completed runs that `sweep run` prints at its end ([] when
    none has completed), one string per printed chunk."""
    from mnist_hpc.experiments.report import compare, load_run

    completed = [r for r in sweep.runs if is_completed(r.run_dir)]
    if not completed:
        return []
    comp = compare([load_run(r.run_dir) for r in completed])
    return [
        f"\n{len(completed)} of {plural(len(sweep.runs), 'run')} completed\n",
        tables.format_table(comp),
        "\n" + tables.wrap(tables.verdict(comp)),
        f"(mnist-hpc report {sweep.output_dir} --format markdown --plots DIR "
        f"--out FILE writes a report with figures)",
    ]


def _train_study(sweep: Sweep, parallel: int, index: int | None, data_dir, echo) -> SweepDone:
    from mnist_hpc.experiments import search, studyreport

    st = sweep.study
    assert st is not None
    who = f"worker {index}" if index is not None else plural(parallel, "worker")
    echo(
        f"sweep {sweep.name}: Optuna study of {plural(st.n_trials, 'trial')} ({st.sampler}, "
        f"{st.pruner} pruner), {who}, into {sweep.output_dir}/"
    )
    try:
        results = search.run_study(
            sweep,
            workers=1 if index is not None else parallel,
            first_worker=index or 0,
            data_dir=data_dir,
            echo=echo,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted: run the same command again to continue the study") from None
    done = SweepDone(results, [r.run_dir for r in results if r.state == "completed"])
    done.after.append(studyreport.progress_line(sweep))
    if index is None:
        best = studyreport.best_line(sweep)
        if best:
            done.after.append(best)
        done.after.append(
            f"(mnist-hpc sweep report {sweep.path} writes the study's HTML report; "
            f"optuna-dashboard {search.journal_path(sweep)} shows it live)"
        )
    stopped = [r for r in results if r.state == "stopped"]
    failed = [r for r in results if r.state == "failed"]
    if stopped:  # a requeued array task exits like its trainer did
        code = stopped[0].returncode
        done.exit_code = code if code and code > 0 else 1
    elif failed:
        for r in failed:
            done.problems.append(
                f"  trial {r.number} failed (exit {r.returncode}), log {r.run_dir / 'train.log'}"
            )
        done.problems.append(
            "Failed trials count towards n_trials (the study went on without them); see their logs."
        )
        done.exit_code = 1
    return done


# --------------------------------------------------------------------------- report


@dataclass
class SweepReport:
    """The HTML report `mnist-hpc sweep report` writes: the file and the comparison in it."""

    path: Path
    comparison: object  # report.Comparison


def report(
    sweep: Sweep,
    out=None,
    *,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> SweepReport:
    """Write the HTML report of the sweep's runs to ``out`` (default: report.html in the sweep's
    folder); a study's progress and best trial are echoed first, and its part is in the page.
    ``warn`` gets the notes (folders left out), as ``report.build_report`` makes them."""
    from mnist_hpc.experiments.report import build_report

    if sweep.study is not None:
        from mnist_hpc.experiments import studyreport

        echo(studyreport.progress_line(sweep))
        best = studyreport.best_line(sweep)
        if best:
            echo(best)
    if not sweep.output_dir.is_dir():
        raise UserError(
            f"{sweep.output_dir}: no such folder: run the sweep first (mnist-hpc sweep run {sweep.path})"
        )
    comp = build_report([sweep.output_dir], title=f"Sweep {sweep.name}", warn=warn)
    target = out or sweep.output_dir / "report.html"
    path = comp.render("html", out=target).save(target)
    return SweepReport(path, comp)

"""Compare finished runs: gather run folders, group them, and hand out the comparison.

A run is a folder holding ``summary.json`` (read through ``runs.summary.read_summary``, so
every version of the file works), with ``config.yaml`` and ``metrics.csv`` beside it. Runs whose
configs differ only in ``experiment.seed`` form one group, reported as mean ± standard
deviation over its seeds. The columns of the table are the config values that differ between
groups. This module never imports torch; figures import matplotlib only to draw.

    from mnist_hpc.experiments.report import build_report
    comp = build_report(["runs/sweeps/learning_rate"])
    comp.rows[0]["test_accuracy"], print(comp.to_markdown()), comp.to_html("report.html")
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mnist_hpc.config import ConfigError, flatten, read_yaml
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import pages, tables
from mnist_hpc.runs.folder import atomic_write
from mnist_hpc.runs.state import read_state
from mnist_hpc.runs.summary import RunSummary, read_summary

# Settings that never change a result, or that identify rather than describe a run; a report
# does not list them as varied. Seeds are what a group averages over.
IGNORED_KEYS = {
    "experiment.name",
    "experiment.output_dir",
    "experiment.seed",
    "experiment.tensorboard",
    "experiment.loggers",
    "data.root",
    "data.eval_batch_size",
    "runtime.threads",
    "runtime.requeue_signal",
    "runtime.max_requeues",
    "runtime.dist_timeout",
}
IGNORED_PREFIXES = ("train.checkpoint.",)


@dataclass(eq=False)
class ReportedRun:
    """What a report reads of one run folder."""

    path: Path
    summary: RunSummary
    config: dict  # the resolved config, flattened to dotted keys; {} without config.yaml
    metrics: list  # the rows of metrics.csv as {column: float or None}

    @property
    def accuracy(self) -> float | None:
        """The test accuracy (None where summary.json has none: ``find_runs`` skips such runs)."""
        return self.summary.test_accuracy


@dataclass(eq=False)
class Group:
    """Runs with the same config except the seed."""

    params: dict  # {varied key: value}
    runs: list  # [ReportedRun]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(r.accuracy for r in self.runs)

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over the seeds (None for a single run)."""
        return statistics.stdev(r.accuracy for r in self.runs) if self.n > 1 else None

    def average(self, key: str) -> float | None:
        values = [r.summary.get(key) for r in self.runs]
        values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return statistics.fmean(values) if values else None

    def label(self) -> str:
        if self.params:
            return ", ".join(f"{k}={tables.format_value(v)}" for k, v in self.params.items())
        return self.runs[0].path.name if self.n == 1 else f"{self.runs[0].path.name} (+{self.n - 1})"


@dataclass(eq=False)
class Comparison:
    """Completed runs grouped by configuration, best first: the table, the verdict, the report."""

    runs: list  # [ReportedRun], completed ones
    varied: list  # dotted keys whose values differ between groups
    groups: list  # [Group], best first
    skipped: list = field(default_factory=list)  # one line per folder left out, and why
    heading: str | None = None  # the report's title (``build_report``: from the folders given)
    notes: list = field(default_factory=list)  # what `mnist-hpc report` prints as "note: ..." lines
    studies: list = field(default_factory=list)  # (sweep folder, StudyView) of each Optuna study found
    sources: list = field(default_factory=list)  # the folders (or run objects) it was built from

    @property
    def best(self) -> Group:
        return self.groups[0]

    @property
    def rows(self) -> list[dict]:
        """One dict per group, best first, with unrounded figures (accuracies as fractions)."""
        return tables.rows(self)

    def to_table(self) -> str:
        """The aligned plain-text table and the verdict, as `mnist-hpc report` prints them."""
        return tables.format_table(self) + "\n\n" + tables.wrap(tables.verdict(self)) + "\n"

    def to_csv(self) -> str:
        return tables.format_csv(self)

    def to_markdown(self, title: str | None = None, figures=(), relative_to=None) -> str:
        """A Markdown report: title, verdict, table and links to ``figures``."""
        return pages.markdown_report(self, title or self.title(), figures, relative_to)

    def to_html(self, path, title: str | None = None) -> Path:
        """Write a self-contained HTML report (figures embedded, an Optuna study's part
        included) to ``path``, as `mnist-hpc report --html --out PATH` does; returns it."""
        return self.render("html", title=title).save(path)

    def html_path(self) -> Path | None:
        """Where `mnist-hpc report --html` writes without --out: report.html in the first folder."""
        first = self.sources[0] if self.sources else None
        return first / "report.html" if isinstance(first, Path) else None

    def render(self, format: str = "table", *, plots=None, out=None, title: str | None = None) -> Rendering:
        """What `mnist-hpc report --format FORMAT [--plots DIR] [--out OUT]` prints or writes
        (``format="html"``: the page of ``--html``): a ``Rendering`` (``.text``, ``.figures``
        drawn into ``plots``; ``.save(path)``). ``out``: where the text will go, for the links of
        a Markdown report's figures (default: relative to the current folder)."""
        if format not in FORMATS:
            raise UserError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
        title = title or self.title()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                found: list = []
                if plots is not None:
                    found = self.figures(plots)
                if format == "html":
                    drawn = found if plots is not None else self.figures(tmp)
                    text = pages.html_report(self, title, drawn, self._study_sections(tmp))
                elif format == "markdown":
                    where = Path(out).parent if out is not None else Path.cwd()
                    text = pages.markdown_report(self, title, found, relative_to=where)
                elif format == "csv":
                    text = self.to_csv()
                else:
                    text = self.to_table()
        except OSError as e:
            raise UserError(f"{e.filename or out}: cannot write: {e.strerror or e}") from None
        return Rendering(text, found, None if plots is None else Path(plots))

    def _study_sections(self, tmp) -> str:
        """The HTML of each Optuna study found (``studies``), its figures embedded."""
        from mnist_hpc.experiments import studyreport

        out: list[str] = []
        for d, view in self.studies:
            drawn = studyreport.make_study_plots(view, Path(tmp) / f"study-{len(out)}")
            out.append(studyreport.html_section(view, d, pages.embed_images(drawn)))
        return "\n".join(out)

    def figures(self, out_dir) -> list:
        """Draw the comparison figures (accuracy against each varied setting, learning curves)
        as PNG files into ``out_dir``; returns their paths."""
        from mnist_hpc.experiments.figures import make_plots

        return make_plots(self, out_dir)

    def title(self) -> str:
        if self.heading:
            return self.heading
        folders = dict.fromkeys(r.path.parent.name or str(r.path.parent) for r in self.runs)
        return "Run comparison: " + ", ".join(list(folders)[:3]) + (" ..." if len(folders) > 3 else "")

    def _repr_markdown_(self) -> str:  # notebooks show the report
        return self.to_markdown()


FORMATS = ("table", "markdown", "csv", "html")


@dataclass
class Rendering:
    """A report as text (``Comparison.render``) and the figures drawn for it."""

    text: str
    figures: list  # the PNG files drawn into ``plots`` ([] without it)
    plots: Path | None = None

    def figures_line(self) -> str:
        """``wrote 2 figures to DIR/`` ("" when no figure folder was asked for)."""
        return (
            ""
            if self.plots is None
            else f"wrote {tables.plural(len(self.figures), 'figure')} to {self.plots}/"
        )

    def save(self, path) -> Path:
        """Write the text to ``path`` (its folders created, atomically); returns it."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return atomic_write(path, self.text)
        except OSError as e:
            raise UserError(f"{e.filename or path}: cannot write: {e.strerror or e}") from None


# --------------------------------------------------------------------------- finding runs


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load_run(folder) -> ReportedRun:
    """Read one run folder; raises ``UserError`` when its summary.json is missing or unreadable."""
    folder = Path(folder)
    summary = read_summary(folder)
    if summary is None:
        state = read_state(folder)  # running, failed (why), interrupted (by what, where)
        raise UserError(
            f"{folder}: {state.describe()}, no summary.json"
            if state
            else f"{folder}: no summary.json (the run has not finished)"
        )
    config = {}
    try:
        raw = read_yaml(folder / "config.yaml", fast=True)  # one per run: libyaml where present
        if isinstance(raw, dict):
            config = flatten(raw)
    except ConfigError:  # without a readable config the run only loses its columns
        pass
    metrics = []
    try:
        with open(folder / "metrics.csv", newline="") as f:
            metrics = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return ReportedRun(folder, summary, config, metrics)


def _is_fraction(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _folders(items) -> list[Path]:
    """Run folders under each item: a folder (searched at any depth) or a run object (``.path``)."""
    folders = []
    for item in items:
        if hasattr(item, "path") and not isinstance(item, (str, Path)):
            folders.append(Path(item.path))
            continue
        d = Path(item)
        if not d.is_dir():
            raise UserError(f"{d}: no such directory")
        # finished runs, and those that record a state without a summary (listed as skipped):
        # one walk of the tree (two rglob walks cost 0.4 s over 1,000 run folders)
        folders += sorted(
            Path(top) for top, _, files in os.walk(d) if "summary.json" in files or "state.json" in files
        )
    return folders


def find_runs(dirs) -> tuple[list, list]:
    """Every completed run under ``dirs`` (folders, or objects with a ``.path`` such as the API's
    ``Run``), and one line for each folder skipped, saying why."""
    runs, skipped, seen = [], [], set()
    for folder in _folders(dirs):
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        try:
            run = load_run(folder)
        except UserError as e:  # e names the file and what is wrong with it
            skipped.append(str(e))
            continue
        status = run.summary.status
        if status != "completed":
            skipped.append(f"{folder}: status {status!r}, not completed")
        elif not _is_fraction(run.accuracy):
            skipped.append(f"{folder}: summary.json has no test_accuracy (a fraction in [0, 1])")
        else:
            runs.append(run)
    if not runs:
        where = ", ".join(str(getattr(d, "path", d)) for d in dirs)
        detail = f"; skipped {len(skipped)} unfinished or unreadable" if skipped else ""
        raise UserError(f"no runs found under {where} (a run folder holds a completed summary.json){detail}")
    return runs, skipped


# --------------------------------------------------------------------------- comparing


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES)


def varied_keys(runs: list) -> list:
    """Config keys with more than one value across ``runs``, in config order.

    A model parameter (``model.hidden``) counts only if it differs between runs of the same
    model: comparing an MLP with a CNN varies ``model.name``, not every parameter of each.
    """
    keys = list(dict.fromkeys(k for run in runs for k in run.config))
    varied = []
    for key in keys:
        if _ignored(key):
            continue
        if key.startswith("model.") and key != "model.name":
            by_model: dict = {}
            for run in runs:
                if key in run.config:
                    by_model.setdefault(run.config.get("model.name"), set()).add(
                        tables.hashable(run.config[key])
                    )
            if any(len(values) > 1 for values in by_model.values()):
                varied.append(key)
        elif len({tables.hashable(run.config[key]) for run in runs if key in run.config}) > 1:
            varied.append(key)
    return varied


def compare(runs: list, skipped=()) -> Comparison:
    """Group runs that differ only in their seed and sort the groups, best accuracy first."""
    varied = varied_keys(runs)
    groups: dict = {}
    for run in runs:
        # a run without config.yaml cannot be matched with others: it stays on its own
        key = tuple(tables.hashable(run.config.get(k)) for k in varied) if run.config else (run.path,)
        if key not in groups:
            groups[key] = Group({k: run.config.get(k) for k in varied}, [])
        groups[key].runs.append(run)
    ordered = sorted(groups.values(), key=lambda g: (-g.mean, g.average("train_seconds") or math.inf))
    return Comparison(runs, varied, ordered, list(skipped))


def build_report(
    runs_or_dirs, *, title: str | None = None, warn: Callable[[str], None] | None = None
) -> Comparison:
    """The comparison of every completed run in ``runs_or_dirs``, as `mnist-hpc report` makes it:
    folders holding run folders at any depth, run folders, sweep files (standing for their output
    folder) or run objects with a ``.path`` (the API's ``Run``).

    ``title``: the report's (default, for folders: "Run comparison: " and their names). The
    Optuna studies among the folders (a ``study.journal``) are in ``.studies``; the lines the
    command prints as notes (a folder left out, pruned trials, a study that cannot be read) are
    in ``.notes``, and each is passed to ``warn`` as it comes. Raises ``UserError`` when no
    completed run is found; folders left out are in ``.skipped``.
    """
    if isinstance(runs_or_dirs, (str, Path)) or hasattr(runs_or_dirs, "path"):
        runs_or_dirs = [runs_or_dirs]
    items = [_as_folder(item) for item in runs_or_dirs]
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if warn is not None:
            warn(text)

    studies = _studies([d for d in items if isinstance(d, Path)], note)
    runs, skipped = find_runs(items)
    comp = compare(runs, skipped)
    pruned = {str(d / t.run) for d, view in studies for t in view.trials if t.state == "pruned" and t.run}
    for line in skipped:
        if line.split(":", 1)[0] not in pruned:
            note(f"skipped {line}")
    if pruned:
        note(
            f"{tables.plural(len(pruned), 'pruned trial')} left out of the comparison of completed "
            f"runs (the study's table lists {'it' if len(pruned) == 1 else 'them'})"
        )
    if title:
        comp.heading = title
    elif items and all(isinstance(d, Path) for d in items):
        comp.heading = "Run comparison: " + ", ".join(d.resolve().name or str(d) for d in items)
    comp.notes, comp.studies, comp.sources = notes, studies, items
    return comp


def _as_folder(item):
    """A folder as a ``Path``; a sweep file stands for its output folder; a run object as it is."""
    if not isinstance(item, (str, Path)):
        return item
    d = Path(item)
    if d.suffix in (".yaml", ".yml") and d.is_file():
        from mnist_hpc.experiments.sweepfile import load_sweep

        return load_sweep(d, allow_large=True, validate=False).output_dir
    return d


def _studies(dirs, note: Callable[[str], None]) -> list:
    """(folder, StudyView) of every Optuna study among ``dirs`` (a sweep folder holding
    study.journal); one that cannot be read (optuna not installed) is a note and left out."""
    from mnist_hpc.experiments import studyreport

    found = []
    for d in dirs:
        if not (Path(d) / studyreport.JOURNAL).is_file():
            continue
        try:
            view = studyreport.load_view(d)
        except UserError as e:
            note(f"{d}: the study's part of the report is left out: {e}")
            continue
        if view is not None:
            found.append((Path(d), view))
    return found

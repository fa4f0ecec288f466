"""Compare finished runs: tables (terminal, Markdown, CSV), plots, and a report to hand in.

A run is a folder holding ``summary.json`` (see docs/architecture.md), with ``config.yaml`` and
``metrics.csv`` beside it. Runs whose configs differ only in ``experiment.seed`` form one group,
reported as mean ± standard deviation over its seeds. The columns of the table are the config
values that differ between groups. This module never imports torch; matplotlib (Agg) is
imported only to draw.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from mnist_hpc.config import yaml_load
from mnist_hpc.errors import UserError

# Settings that never change a result, or that identify rather than describe a run; a report
# does not list them as varied. Seeds are what a group averages over.
IGNORED_KEYS = {
    "experiment.name", "experiment.output_dir", "experiment.seed", "experiment.tensorboard",
    "data.root", "data.eval_batch_size", "runtime.threads", "runtime.requeue_signal",
    "runtime.max_requeues", "runtime.dist_timeout",
}
IGNORED_PREFIXES = ("train.checkpoint.",)

# Settings worth stating in a report when all runs share them (and they are not off/none).
COMMON_KEYS = ("data.dataset", "model.name", "optim.name", "optim.lr", "optim.schedule",
               "data.batch_size", "train.epochs", "data.subset", "data.augment.shift",
               "data.augment.rotate", "data.augment.scale", "train.amp")


@dataclass(eq=False)
class Run:
    path: Path
    summary: dict
    config: dict  # the resolved config, flattened to dotted keys; {} without config.yaml
    metrics: list  # the rows of metrics.csv as {column: float or None}

    @property
    def accuracy(self) -> float:
        return self.summary["test_accuracy"]


@dataclass(eq=False)
class Group:
    """Runs with the same config except the seed."""

    params: dict  # {varied key: value}
    runs: list

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(r.accuracy for r in self.runs)

    @property
    def sd(self) -> Optional[float]:
        """Sample standard deviation over the seeds (None for a single run)."""
        return statistics.stdev(r.accuracy for r in self.runs) if self.n > 1 else None

    def average(self, key: str) -> Optional[float]:
        values = [r.summary.get(key) for r in self.runs]
        values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return statistics.fmean(values) if values else None

    def label(self) -> str:
        if self.params:
            return ", ".join(f"{k}={format_value(v)}" for k, v in self.params.items())
        return self.runs[0].path.name if self.n == 1 else f"{self.runs[0].path.name} (+{self.n - 1})"


@dataclass(eq=False)
class Comparison:
    runs: list  # [Run], completed ones
    varied: list  # dotted keys whose values differ between groups
    groups: list  # [Group], best first
    skipped: list = field(default_factory=list)  # one line per folder left out, and why

    @property
    def best(self) -> Group:
        return self.groups[0]


# --------------------------------------------------------------------------- finding runs


def flatten(data: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load_run(folder: Path) -> Run:
    """Read one run folder; raises ValueError when summary.json is unreadable."""
    summary = json.loads((folder / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError("summary.json is not a JSON object")
    config = {}
    try:
        raw = yaml_load((folder / "config.yaml").read_text())
        if isinstance(raw, dict):
            config = flatten(raw)
    except (OSError, yaml.YAMLError):  # without a readable config the run only loses its columns
        pass
    metrics = []
    try:
        with open(folder / "metrics.csv", newline="") as f:
            metrics = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except OSError:
        pass
    return Run(folder, summary, config, metrics)


def find_runs(dirs) -> tuple[list, list]:
    """Every completed run under ``dirs`` (a folder with summary.json), and lines on those skipped."""
    folders = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise UserError(f"{d}: no such directory")
        folders += sorted(p.parent for p in d.rglob("summary.json"))
    runs, skipped, seen = [], [], set()
    for folder in folders:
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        try:
            run = load_run(folder)
        except (OSError, ValueError) as e:
            skipped.append(f"{folder}: unreadable summary.json ({e})")
            continue
        status = run.summary.get("status")
        if status != "completed":
            skipped.append(f"{folder}: status {status!r}, not completed")
        elif not isinstance(run.summary.get("test_accuracy"), (int, float)):
            skipped.append(f"{folder}: summary.json has no test_accuracy")
        else:
            runs.append(run)
    if not runs:
        where = ", ".join(str(d) for d in dirs)
        detail = f"; skipped {len(skipped)} unfinished or unreadable" if skipped else ""
        raise UserError(f"no runs found under {where} (a run folder holds a completed "
                        f"summary.json){detail}")
    return runs, skipped


# --------------------------------------------------------------------------- comparing


def _hashable(value):
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


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
                        _hashable(run.config[key]))
            if any(len(values) > 1 for values in by_model.values()):
                varied.append(key)
        elif len({_hashable(run.config[key]) for run in runs if key in run.config}) > 1:
            varied.append(key)
    return varied


def compare(runs: list, skipped=()) -> Comparison:
    """Group runs that differ only in their seed and sort the groups, best accuracy first."""
    varied = varied_keys(runs)
    groups: dict = {}
    for run in runs:
        # a run without config.yaml cannot be matched with others: it stays on its own
        key = tuple(_hashable(run.config.get(k)) for k in varied) if run.config else (run.path,)
        if key not in groups:
            groups[key] = Group({k: run.config.get(k) for k in varied}, [])
        groups[key].runs.append(run)
    ordered = sorted(groups.values(),
                     key=lambda g: (-g.mean, g.average("train_seconds") or math.inf))
    return Comparison(runs, varied, ordered, list(skipped))


def common_settings(comp: Comparison) -> dict:
    """The notable settings every run shares (what a reader needs to reproduce them)."""
    out = {}
    for key in COMMON_KEYS:
        values = {_hashable(r.config.get(key)) for r in comp.runs}
        if key not in comp.varied and len(values) == 1:
            value = comp.runs[0].config.get(key)
            if value not in (None, 0, "none"):
                out[key] = value
    return out


# --------------------------------------------------------------------------- formatting


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if value is None:
        return "-"
    return str(value)


def percent(fraction: Optional[float]) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def accuracy_text(group: Group) -> str:
    sd = group.sd
    return percent(group.mean) + ("" if sd is None else f" ± {percent(sd)}")


def _count(value: Optional[float], digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _epoch(group: Group) -> str:
    value = group.average("best_epoch")
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


HEADERS = ["test acc %", "n", "best epoch", "train s", "params", "images/s"]


def table_rows(comp: Comparison) -> tuple[list, list]:
    """Header and rows of the comparison, as strings; the best group is marked."""
    ident = comp.varied or ["run"]
    header = ["#", *ident, *HEADERS, ""]
    rows = []
    for rank, group in enumerate(comp.groups, 1):
        ids = ([format_value(group.params[k]) for k in comp.varied] if comp.varied
               else [group.label()])
        rows.append([str(rank), *ids, accuracy_text(group), str(group.n), _epoch(group),
                     _count(group.average("train_seconds"), 1), _count(group.average("params")),
                     _count(group.average("images_per_s")), "best" if rank == 1 else ""])
    return header, rows


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,.]+( ± [\d.]+)?", text))


def format_table(comp: Comparison) -> str:
    """An aligned plain-text table for the terminal (numbers right-aligned)."""
    header, rows = table_rows(comp)
    header[-1] = ""
    rows = [r[:-1] + (["<- best"] if r[-1] else [""]) for r in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) or r[i] == "-" for r in rows) for i in range(len(header))]

    def line(cells):
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths).rstrip()
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_markdown_table(comp: Comparison) -> str:
    header, rows = table_rows(comp)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join("---:" if h in HEADERS or h == "#" else "---" for h in header) + "|"]
    for row in rows:
        if row[-1]:
            row = [f"**{c}**" if c else c for c in row]
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(out)


def format_csv(comp: Comparison) -> str:
    """One row per group with unrounded figures (accuracies as fractions, like summary.json)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", *comp.varied, "n", "test_accuracy_mean", "test_accuracy_sd",
                     "best_epoch", "train_seconds", "params", "images_per_s", "best", "runs"])
    for rank, g in enumerate(comp.groups, 1):
        writer.writerow([rank, *(format_value(g.params[k]) for k in comp.varied), g.n, g.mean,
                         "" if g.sd is None else g.sd,
                         *(_csv_number(g.average(k)) for k in ("best_epoch", "train_seconds",
                                                                "params", "images_per_s")),
                         int(rank == 1), ";".join(str(r.path) for r in g.runs)])
    return buf.getvalue()


def _csv_number(value: Optional[float]):
    if value is None:
        return ""
    return int(value) if float(value).is_integer() else value


def verdict(comp: Comparison) -> str:
    """One or two sentences: which configuration won, and by how much."""
    best = comp.best
    n = f", mean of {best.n} seeds" if best.n > 1 else ""
    text = f"Best: {best.label()} with {accuracy_text(best)}% test accuracy{n}"
    if len(comp.groups) == 1:
        return text + " (the only configuration)."
    second, worst = comp.groups[1], comp.groups[-1]
    gap = 100 * (best.mean - second.mean)
    text += (f", {gap:.2f} points ahead of the runner-up ({second.label()}, "
             f"{percent(second.mean)}%)")
    if len(comp.groups) > 2:
        text += f" and {100 * (best.mean - worst.mean):.2f} points ahead of the worst ({worst.label()})"
    text += "."
    spreads = [g.sd for g in (best, second) if g.sd is not None]
    if spreads and gap <= 100 * max(spreads):
        text += " That gap is within the seed-to-seed spread: not a clear win."
    elif not spreads:
        text += " Each configuration ran once; repeat with several seeds to tell a real gap from noise."
    return text


# --------------------------------------------------------------------------- plots


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(values) -> bool:
    """Learning rates and similar spans read better on a log axis."""
    return min(values) > 0 and max(values) / min(values) >= 20


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _val_curve(group: Group) -> tuple[list, list]:
    """Mean validation accuracy (%) per epoch over the group's runs."""
    per_epoch: dict = {}
    for run in group.runs:
        for row in run.metrics:
            if row.get("epoch") is not None and row.get("val_acc") is not None:
                per_epoch.setdefault(row["epoch"], []).append(row["val_acc"])
    epochs = sorted(per_epoch)
    return epochs, [100 * statistics.fmean(per_epoch[e]) for e in epochs]


def make_plots(comp: Comparison, out_dir) -> list:
    """Draw the figures into ``out_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []

    def save(fig, name):
        path = out_dir / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        figures.append(path)

    for key in comp.varied:
        values = [g.params[key] for g in comp.groups if g.params[key] is not None]
        if not _numeric(values) or len(set(values)) < 2:
            continue
        others = [k for k in comp.varied if k != key]
        series: dict = {}
        for g in comp.groups:
            if g.params[key] is not None:
                label = ", ".join(f"{k}={format_value(g.params[k])}" for k in others)
                series.setdefault(label, []).append(g)
        joined = len(series) <= 8
        if not joined:
            series = {"": [g for s in series.values() for g in s]}
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, groups in series.items():
            groups = sorted(groups, key=lambda g: g.params[key])
            ax.errorbar([g.params[key] for g in groups], [100 * g.mean for g in groups],
                        yerr=[100 * (g.sd or 0) for g in groups], marker="o", capsize=3,
                        linestyle="-" if joined else "none", label=label or None)
        if _log_scale(values):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Test accuracy vs {key}")
        ax.grid(alpha=0.3)
        if any(series):
            ax.legend(fontsize="small")
        save(fig, f"accuracy_vs_{_slug(key)}.png")

    if len(comp.groups) > 1 and any(not _numeric([g.params[k] for g in comp.groups])
                                    for k in comp.varied):
        groups = comp.groups[::-1]  # best at the top
        fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.35 * len(groups)))
        ax.barh([g.label() for g in groups], [100 * g.mean for g in groups],
                xerr=[100 * (g.sd or 0) for g in groups], capsize=3, color="tab:blue")
        low = min(100 * g.mean for g in groups)
        ax.set_xlim(max(0, low - 2), 100)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title("Test accuracy by configuration")
        ax.grid(axis="x", alpha=0.3)
        save(fig, "accuracy_by_configuration.png")

    curves = [(g, *_val_curve(g)) for g in comp.groups]
    curves = [c for c in curves if c[1]]
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for g, epochs, acc in curves:
            ax.plot(epochs, acc, marker=".", label=g.label() + (f" (mean of {g.n})" if g.n > 1 else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title("Learning curves")
        ax.grid(alpha=0.3)
        if len(curves) <= 12:
            ax.legend(fontsize="small")
        save(fig, "learning_curves.png")
    return figures


# --------------------------------------------------------------------------- reports


def _intro(comp: Comparison) -> str:
    n_runs, n_groups = len(comp.runs), len(comp.groups)
    text = f"{n_runs} runs in {n_groups} configuration{'s' if n_groups != 1 else ''}"
    if any(g.n > 1 for g in comp.groups):
        text += " (runs differing only in their seed are averaged: mean ± standard deviation)"
    if comp.varied:
        text += "; varied: " + ", ".join(f"`{k}`" for k in comp.varied)
    return text + "."


def _settings_line(comp: Comparison) -> str:
    common = common_settings(comp)
    devices = sorted({str(r.summary["device"]) for r in comp.runs if r.summary.get("device")})
    parts = [f"`{k}={format_value(v)}`" for k, v in common.items()]
    if devices:
        parts.append("device " + ", ".join(devices))
    return ("Shared settings: " + ", ".join(parts) + ".") if parts else ""


def markdown_report(comp: Comparison, title: str, figures=(), relative_to=None) -> str:
    """A Markdown report: title, the verdict, the table, the figures (linked)."""
    lines = [f"# {title}", "", _intro(comp), ""]
    settings = _settings_line(comp)
    if settings:
        lines += [settings, ""]
    lines += [verdict(comp), "", format_markdown_table(comp), ""]
    if figures:
        lines += ["## Figures", ""]
        for path in figures:
            link = Path(path)
            if relative_to is not None:
                link = Path(_relpath(link, Path(relative_to)))
            lines += [f"![{Path(path).stem.replace('_', ' ')}]({link.as_posix()})", ""]
    return "\n".join(lines)


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _markdown_inline(text: str) -> str:
    """Escape for HTML, keeping `code` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


def html_report(comp: Comparison, title: str, figures=()) -> str:
    """A self-contained HTML page: the same content, the figures embedded as base64 PNGs."""
    header, rows = table_rows(comp)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ("<tr class=best>" if row[-1] else "<tr>")
        + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    images = "".join(
        f'<figure><img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(p).read_bytes()).decode()}"></figure>' for p in figures)
    settings = _settings_line(comp)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
tr.best {{ font-weight: bold; background: #eef6ee; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{_markdown_inline(_intro(comp))}</p>
{f"<p>{_markdown_inline(settings)}</p>" if settings else ""}
<p>{_markdown_inline(verdict(comp))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"<h2>Figures</h2>" + images if figures else ""}
</body></html>
"""

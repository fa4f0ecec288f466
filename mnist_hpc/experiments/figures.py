"""The comparison's figures: accuracy against each numeric varied key, a bar chart when a
varied key is not numeric, and the groups' mean learning curves.

matplotlib is imported inside ``make_plots`` (importing this module is free) and figures are
built without pyplot, on the Agg canvas (no global state, no display needed on a compute
node). Each PNG is written through the one atomic writer.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from mnist_hpc.experiments.tables import format_value
from mnist_hpc.runs.folder import atomic_write_with
from mnist_hpc.runs.plots import integer_ticks, savefig_quietly

DPI = 120


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(values) -> bool:
    """Learning rates and similar spans read better on a log axis."""
    return min(values) > 0 and max(values) / min(values) >= 20


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _val_curve(group) -> tuple[list, list]:
    """Mean validation accuracy (%) per epoch over the group's runs."""
    per_epoch: dict = {}
    for run in group.runs:
        for row in run.metrics:
            if row.get("epoch") is not None and row.get("val_acc") is not None:
                per_epoch.setdefault(row["epoch"], []).append(row["val_acc"])
    epochs = sorted(per_epoch)
    return epochs, [100 * statistics.fmean(per_epoch[e]) for e in epochs]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    return atomic_write_with(
        path, lambda f: savefig_quietly(fig, f, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    )


def _accuracy_vs(comp, key: str):
    """Test accuracy against one numeric key, one line per combination of the other keys."""
    values = [g.params[key] for g in comp.groups if g.params[key] is not None]
    if not _numeric(values) or len(set(values)) < 2:
        return None
    others = [k for k in comp.varied if k != key]
    series: dict = {}
    for g in comp.groups:
        if g.params[key] is not None:
            label = ", ".join(f"{k}={format_value(g.params[k])}" for k in others)
            series.setdefault(label, []).append(g)
    joined = len(series) <= 8
    if not joined:
        series = {"": [g for s in series.values() for g in s]}
    fig, ax = _figure(6.4, 4.2)
    for label, groups in series.items():
        groups = sorted(groups, key=lambda g: g.params[key])
        ax.errorbar(
            [g.params[key] for g in groups],
            [100 * g.mean for g in groups],
            yerr=[100 * (g.sd or 0) for g in groups],
            marker="o",
            capsize=3,
            linestyle="-" if joined else "none",
            label=label or None,
        )
    if _log_scale(values):
        ax.set_xscale("log")
    elif all(isinstance(v, int) for v in values):
        integer_ticks(ax.xaxis, values)
    ax.set_xlabel(key)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy vs {key}")
    ax.grid(alpha=0.3)
    if any(series):
        ax.legend(fontsize="small")
    return fig


def _by_configuration(comp):
    groups = comp.groups[::-1]  # best at the top
    fig, ax = _figure(6.4, 1.2 + 0.35 * len(groups))
    ax.barh(
        [g.label() for g in groups],
        [100 * g.mean for g in groups],
        xerr=[100 * (g.sd or 0) for g in groups],
        capsize=3,
        color="tab:blue",
    )
    low = min(100 * g.mean for g in groups)
    ax.set_xlim(max(0, low - 2), 100)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("Test accuracy by configuration")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _learning_curves(curves):
    fig, ax = _figure(6.4, 4.2)
    for g, epochs, acc in curves:
        ax.plot(epochs, acc, marker=".", label=g.label() + (f" (mean of {g.n})" if g.n > 1 else ""))
    integer_ticks(ax.xaxis, [e for _, epochs, _ in curves for e in epochs])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize="small")
    return fig


def make_plots(comp, out_dir) -> list[Path]:
    """Draw the comparison's figures into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for key in comp.varied:
        fig = _accuracy_vs(comp, key)
        if fig is not None:
            figures.append(_save(fig, out_dir / f"accuracy_vs_{_slug(key)}.png"))
    if len(comp.groups) > 1 and any(not _numeric([g.params[k] for g in comp.groups]) for k in comp.varied):
        figures.append(_save(_by_configuration(comp), out_dir / "accuracy_by_configuration.png"))
    curves = [(g, *_val_curve(g)) for g in comp.groups]
    curves = [c for c in curves if c[1]]
    if curves:
        figures.append(_save(_learning_curves(curves), out_dir / "learning_curves.png"))
    return figures

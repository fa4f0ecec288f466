"""What a ``method: optuna`` study has found: status lines for the CLI, the best trial and its
config, and the study's figures and HTML section for the report (history with best-so-far,
parameter importance, a slice plot per parameter, each trial's epochs with pruned ones marked).

Read from the journal file alone (``study.journal`` in the sweep folder), so a report can be
made of a folder without its sweep file. Optuna is imported by the functions that read the
study; figures are drawn as ``figures`` draws them (Agg canvas, PNG, one atomic writer).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpc.experiments.figures import _figure, _save
from mnist_hpc.experiments.tables import format_value
from mnist_hpc.runs.plots import integer_ticks

if TYPE_CHECKING:
    from optuna import Study

JOURNAL = "study.journal"


def describe_param(p) -> str:
    if p.kind == "categorical":
        return "one of " + ", ".join(format_value(v) for v in p.categorical)
    low, high = getattr(p, p.kind)
    how = " (log scale)" if p.log else (f" (step {format_value(p.step)})" if p.step is not None else "")
    return f"{p.kind} from {format_value(low)} to {format_value(high)}{how}"


@dataclass
class TrialRow:
    number: int
    state: str  # complete, pruned, fail, running
    value: float | None
    params: dict
    run: str | None  # the run folder's name
    epochs: dict = field(default_factory=dict)  # epoch -> the value reported to the pruner
    failure: str = ""


@dataclass
class StudyView:
    name: str
    journal: Path
    direction: str  # maximize | minimize
    metric: str
    n_trials: int | None
    trials: list  # [TrialRow], by number
    _study: Study | None = field(default=None, init=False, repr=False, compare=False)  # for importances

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def best(self) -> TrialRow | None:
        done = [
            t
            for t in self.trials
            if t.state == "complete" and t.value is not None and not math.isnan(t.value)
        ]
        if not done:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(done, key=lambda t: t.value)

    def summary_line(self) -> str:
        parts = [
            f"{self.count(s)} {w}"
            for s, w in (
                ("complete", "complete"),
                ("pruned", "pruned"),
                ("fail", "failed"),
                ("running", "running"),
            )
            if self.count(s)
        ]
        of = f" of {self.n_trials}" if self.n_trials else ""
        return f"study {self.name}: {len(self.trials)}{of} trials" + (
            f" ({', '.join(parts)})" if parts else ""
        )


def load_view(journal) -> StudyView | None:
    """The study in ``journal`` (a study.journal file or a folder holding one), or None."""
    journal = Path(journal)
    if journal.is_dir():
        journal = journal / JOURNAL
    if not journal.is_file():
        return None
    from mnist_hpc.experiments.search import load_optuna, storage

    optuna = load_optuna()
    store = storage(journal)
    names = optuna.get_all_study_names(store)
    if not names:
        return None
    study = optuna.load_study(study_name=names[0], storage=store)
    info = study.user_attrs.get("mnist_hpc", {})
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            TrialRow(
                t.number,
                t.state.name.lower(),
                t.value if t.values else None,
                dict(t.params),
                t.user_attrs.get("run"),
                dict(t.intermediate_values),
                t.user_attrs.get("failure", ""),
            )
        )
    view = StudyView(
        names[0],
        journal,
        study.direction.name.lower(),
        info.get("metric", "value"),
        info.get("n_trials"),
        sorted(rows, key=lambda r: r.number),
    )
    view._study = study  # for parameter importance
    return view


def progress_line(sweep) -> str:
    from mnist_hpc.experiments.search import journal_path

    view = load_view(journal_path(sweep))
    if view is None:
        return f"study {sweep.name}: no trials yet ({journal_path(sweep)} does not exist)"
    return view.summary_line()


def best_line(sweep) -> str:
    from mnist_hpc.experiments.search import journal_path

    view = load_view(journal_path(sweep))
    best = view.best if view else None
    if view is None or best is None:
        return ""
    params = ", ".join(f"{k}={format_value(v)}" for k, v in best.params.items())
    config = Path(sweep.output_dir) / (best.run or "") / "config.yaml"
    return (
        f"best: trial {best.number} ({params}): {view.metric} {best.value:.4g}; its config, ready to "
        f"train: mnist-hpc train {config}"
    )


# --------------------------------------------------------------------------- figures


def _history(view: StudyView):
    fig, ax = _figure(6.4, 4.2)
    done = [
        t for t in view.trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)
    ]
    pruned = [t for t in view.trials if t.state == "pruned" and t.epochs]
    ax.plot([t.number for t in done], [t.value for t in done], "o", color="tab:blue", label="complete")
    if pruned:
        ax.plot(
            [t.number for t in pruned],
            [t.epochs[max(t.epochs)] for t in pruned],
            "x",
            color="tab:red",
            label="pruned (last epoch's report)",
        )
    best, xs, ys = None, [], []
    better = (lambda a, b: a > b) if view.direction == "maximize" else (lambda a, b: a < b)
    for t in view.trials:
        if t in done and (best is None or better(t.value, best)):
            best = t.value
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    integer_ticks(ax.xaxis, [t.number for t in view.trials])
    ax.set_xlabel("trial")
    ax.set_ylabel(view.metric)
    ax.set_title("Study history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def importances(view: StudyView) -> dict:
    """Parameter importance (Optuna's fANOVA evaluator) over the completed trials; {} when there
    are too few of them or a single parameter."""
    done = [
        t for t in view.trials if t.state == "complete" and t.value is not None and math.isfinite(t.value)
    ]
    if len(done) < 2 or not done[0].params or view._study is None:
        return {}
    import optuna

    try:
        return optuna.importance.get_param_importances(view._study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _importance(found: dict):
    fig, ax = _figure(6.4, 1.2 + 0.45 * len(found))
    keys = list(found)[::-1]
    ax.barh(keys, [found[k] for k in keys], color="tab:blue")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title("Parameter importance")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _slice(view: StudyView):
    keys = list(dict.fromkeys(k for t in view.trials for k in t.params))
    fig, _ = _figure(3.2 * max(1, len(keys)), 3.4)
    fig.clear()
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=False):
        for state, marker, color, label in (
            ("complete", "o", "tab:blue", "complete"),
            ("pruned", "x", "tab:red", "pruned"),
        ):
            ts = [t for t in view.trials if t.state == state and key in t.params]
            ys = [
                t.value if state == "complete" else (t.epochs[max(t.epochs)] if t.epochs else None)
                for t in ts
            ]
            pts = [
                (_plottable(t.params[key]), y)
                for t, y in zip(ts, ys, strict=False)
                if y is not None and math.isfinite(y)
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=color, label=label)
        values = [t.params[key] for t in view.trials if key in t.params]
        if (
            values
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            and min(values) > 0
            and max(values) / min(values) >= 20
        ):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(view.metric)
    axes[0].legend(fontsize="small")
    fig.suptitle("Slice plot: each trial's value against each parameter")
    return fig


def _plottable(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _epochs(view: StudyView):
    fig, ax = _figure(6.4, 4.2)
    for t in view.trials:
        if not t.epochs:
            continue
        es = sorted(t.epochs)
        pruned = t.state == "pruned"
        ax.plot(
            es,
            [t.epochs[e] for e in es],
            marker="x" if pruned else ".",
            color="tab:red" if pruned else "tab:blue",
            alpha=0.8,
            linestyle="--" if pruned else "-",
        )
    ax.plot([], [], "x--", color="tab:red", label="pruned")
    ax.plot([], [], ".-", color="tab:blue", label="not pruned")
    integer_ticks(ax.xaxis, [e for t in view.trials for e in t.epochs])
    ax.set_xlabel("epoch")
    ax.set_ylabel("reported to the pruner")
    ax.set_title("Each trial's epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def make_study_plots(view: StudyView, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [_save(_history(view), out_dir / "study_history.png")]
    found = importances(view)
    if found:
        made.append(_save(_importance(found), out_dir / "study_importance.png"))
    if any(t.params for t in view.trials):
        made.append(_save(_slice(view), out_dir / "study_slice.png"))
    if any(t.epochs for t in view.trials):
        made.append(_save(_epochs(view), out_dir / "study_epochs.png"))
    return made


# --------------------------------------------------------------------------- HTML


def html_section(view: StudyView, sweep_dir: Path, images_html: str) -> str:
    """The study's part of the HTML report: counts, the best trial and its config, the trials
    table (pruned ones marked) and the study's figures (``images_html``: embedded already)."""
    best = view.best
    keys = list(dict.fromkeys(k for t in view.trials for k in t.params))
    lines = [
        f'<section id="study"><h2>Optuna study {html.escape(view.name)}</h2>',
        f"<p>{html.escape(view.summary_line())}; {html.escape(view.direction)} "
        f"<code>{html.escape(view.metric)}</code>. Open it live with "
        f"<code>optuna-dashboard {html.escape(str(view.journal))}</code>.</p>",
    ]
    if best is not None:
        params = ", ".join(
            f"<code>{html.escape(k)}={html.escape(format_value(v))}</code>" for k, v in best.params.items()
        )
        config = Path(sweep_dir) / (best.run or "") / "config.yaml"
        lines.append(
            f'<p id="best-trial">Best: trial {best.number} ({params}), '
            f"{html.escape(view.metric)} {best.value:.4g}. Retrain it: "
            f"<code>mnist-hpc train {html.escape(str(config))}</code></p>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", view.metric, *keys, "epochs"])
    body = []
    for t in view.trials:
        cls = {"pruned": "pruned", "fail": "failed"}.get(t.state, "")
        cells = [
            str(t.number),
            t.state + (f": {t.failure}" if t.failure else ""),
            "" if t.value is None else f"{t.value:.4g}",
            *(format_value(t.params[k]) if k in t.params else "" for k in keys),
            str(len(t.epochs)),
        ]
        body.append(
            f"<tr class={cls or 'trial'}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        )
    lines.append(
        f'<table class="sortable" id="trials"><caption>Every trial of the study; pruned trials '
        f"are marked (red). Click a column heading to sort.</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
    lines.append(images_html)
    lines.append("</section>")
    return "\n".join(lines)

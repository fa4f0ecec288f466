"""The comparison as tables (terminal, Markdown, CSV, plain rows) and the one-line verdict.

Every function takes a ``report.Comparison`` (groups best first) and returns text or rows; none
reads files. Every column has a header; the best row is marked (``<- best`` after the terminal
table's last column, bold in Markdown).
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import textwrap

HEADERS = ["test acc %", "n", "best epoch", "train s", "params", "images/s"]
FIGURES = ("best_epoch", "train_seconds", "params", "images_per_s")  # summary keys, averaged


def plural(n: int, word: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def hashable(value):
    """A config value usable as a dict key (lists and mappings as tuples)."""
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, hashable(v)) for k, v in value.items())
    return value


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


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def accuracy_text(group) -> str:
    sd = group.sd
    return percent(group.mean) + ("" if sd is None else f" ± {percent(sd)}")


def _count(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _epoch(group) -> str:
    value = group.average("best_epoch")
    if value is None:
        return "-"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def table_rows(comp) -> tuple[list, list]:
    """Header and rows of the comparison, as strings, best first (no marker column)."""
    ident = comp.varied or ["run"]
    header = ["#", *ident, *HEADERS]
    rows = []
    for rank, group in enumerate(comp.groups, 1):
        ids = [format_value(group.params[k]) for k in comp.varied] if comp.varied else [group.label()]
        rows.append(
            [
                str(rank),
                *ids,
                accuracy_text(group),
                str(group.n),
                _epoch(group),
                _count(group.average("train_seconds"), 1),
                _count(group.average("params")),
                _count(group.average("images_per_s")),
            ]
        )
    return header, rows


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,.]+( ± [\d.]+)?", text))


def terminal_width() -> int:
    """The terminal's columns ($COLUMNS first), 100 where there is no terminal."""
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def format_table(comp, width: int | None = None) -> str:
    """An aligned plain-text table for the terminal (numbers right-aligned); the rule under the
    header spans exactly the columns, and ``<- best`` follows the best row. A table wider than
    ``width`` (default: the terminal's) keeps only the figures in its columns and lists each
    row's settings (those it has) on wrapped lines under it."""
    text = _aligned(*table_rows(comp))
    width = width or terminal_width()
    if not comp.varied or max(map(len, text.splitlines())) <= width:
        return text
    header, rows = table_rows(comp)
    cut = 1 + len(comp.varied)
    lines = _aligned([header[0], *header[cut:]], [[r[0], *r[cut:]] for r in rows]).splitlines()
    out = lines[:2]
    for group, line in zip(comp.groups, lines[2:], strict=False):
        out.append(line)
        settings = ", ".join(f"{k}={format_value(v)}" for k, v in group.params.items() if v is not None)
        out += textwrap.wrap(
            settings, width, initial_indent="   ", subsequent_indent="     ", break_on_hyphens=False
        )
    return "\n".join(out)


def _aligned(header: list, rows: list, best: bool = True) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) or r[i] == "-" for r in rows) for i in range(len(header))]

    def line(cells, note=""):
        out = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=False)]
        return "  ".join(out + ([note] if note else [])).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join(
        [line(header), rule, *(line(r, "<- best" if i == 0 and best else "") for i, r in enumerate(rows))]
    )


def format_markdown_table(comp) -> str:
    """A Markdown table, the best row in bold."""
    header, rows = table_rows(comp)

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = [
        "| " + " | ".join(cell(h) for h in header) + " |",
        "|" + "|".join("---:" if h in HEADERS or h == "#" else "---" for h in header) + "|",
    ]
    for i, row in enumerate(rows):
        if i == 0:
            row = [f"**{c}**" for c in row]
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(out)


def _number(value: float | None):
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


def rows(comp) -> list[dict]:
    """One dict per group, best first: rank, the varied values, n, the mean and sd of the test
    accuracy (fractions, unrounded), the averaged figures, best (bool), runs (folders)."""
    out = []
    for rank, g in enumerate(comp.groups, 1):
        out.append(
            {
                "rank": rank,
                **{k: g.params[k] for k in comp.varied},
                "n": g.n,
                "test_accuracy_mean": g.mean,
                "test_accuracy_sd": g.sd,
                **{k: _number(g.average(k)) for k in FIGURES},
                "best": rank == 1,
                "runs": [r.path for r in g.runs],
            }
        )
    return out


def format_csv(comp) -> str:
    """``rows`` as CSV: unrounded figures (accuracies as fractions, like summary.json)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = ["rank", *comp.varied, "n", "test_accuracy_mean", "test_accuracy_sd", *FIGURES, "best", "runs"]
    writer.writerow(columns)
    for row in rows(comp):
        cells = {
            **row,
            **{k: format_value(row[k]) for k in comp.varied},
            "best": int(row["best"]),
            "runs": ";".join(str(p) for p in row["runs"]),
        }
        writer.writerow(["" if cells[c] is None else cells[c] for c in columns])
    return buf.getvalue()


def wrap(text: str, width: int | None = None) -> str:
    """``text`` wrapped to ``width`` (default: the terminal's) columns, continuation lines indented."""
    return textwrap.fill(
        text,
        width or terminal_width(),
        subsequent_indent="  ",
        break_on_hyphens=False,
        break_long_words=False,
    )


def verdict(comp) -> str:
    """One or two sentences: which configuration won, and by how much."""
    best = comp.best
    n = f", mean of {best.n} seeds" if best.n > 1 else ""
    text = f"Best: {best.label()} with {accuracy_text(best)}% test accuracy{n}"
    if len(comp.groups) == 1:
        return text + " (the only configuration)."
    second, worst = comp.groups[1], comp.groups[-1]
    gap = 100 * (best.mean - second.mean)
    text += f", {gap:.2f} points ahead of the runner-up ({second.label()}, {percent(second.mean)}%)"
    if len(comp.groups) > 2:
        text += f" and {100 * (best.mean - worst.mean):.2f} points ahead of the worst ({worst.label()})"
    text += "."
    spreads = [g.sd for g in (best, second) if g.sd is not None]
    if spreads and gap <= 100 * max(spreads):
        text += " That gap is within the seed-to-seed spread: not a clear win."
    elif not spreads:
        text += " Each configuration ran once; repeat with several seeds to tell a real gap from noise."
    return text

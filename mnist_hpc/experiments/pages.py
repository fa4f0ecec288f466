"""The comparison as a document to hand in: Markdown (figures linked) or one self-contained
HTML page (figures embedded). Both say how many runs, what varied and what every run shared
(the data split included, as the runs recorded it), then the verdict and the table."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from mnist_hpc.experiments.tables import (
    format_markdown_table,
    format_value,
    hashable,
    plural,
    table_rows,
    verdict,
)

# Settings worth stating in a report when all runs share them (and they are not off/none).
COMMON_KEYS = (
    "data.dataset",
    "model.name",
    "optim.name",
    "optim.lr",
    "optim.schedule",
    "data.batch_size",
    "train.epochs",
    "data.subset",
    "data.augment.shift",
    "data.augment.rotate",
    "data.augment.scale",
    "train.amp",
)
SPLIT_KEYS = ("train_images", "val_images", "test_images")  # summary.json: the images each split held


def common_settings(comp) -> dict:
    """The notable settings every run shares (what a reader needs to reproduce them)."""
    out = {}
    for key in COMMON_KEYS:
        values = {hashable(r.config.get(key)) for r in comp.runs}
        if key not in comp.varied and len(values) == 1:
            value = comp.runs[0].config.get(key)
            if value not in (None, 0, "none"):
                out[key] = value
    return out


def split_text(comp) -> str:
    """``6,000 train / 600 val / 10,000 test images`` when every run recorded the same split
    (what was trained on, whatever ``data.subset`` and ``data.val_split`` asked), else ``""``."""
    splits = {tuple(r.summary.get(k) for k in SPLIT_KEYS) for r in comp.runs}
    if len(splits) != 1:
        return ""
    train, val, test = splits.pop()
    if not isinstance(train, int) or not isinstance(test, int):
        return ""
    return f"{train:,} train / {val or 0:,} val / {test:,} test images"


def intro(comp) -> str:
    text = f"{plural(len(comp.runs), 'run')} in {plural(len(comp.groups), 'configuration')}"
    if any(g.n > 1 for g in comp.groups):
        text += " (runs differing only in their seed are averaged: mean ± standard deviation)"
    if comp.varied:
        text += "; varied: " + ", ".join(f"`{k}`" for k in comp.varied)
    return text + "."


def settings_line(comp) -> str:
    parts = [f"`{k}={format_value(v)}`" for k, v in common_settings(comp).items()]
    split = split_text(comp)
    if split:
        parts.append("data " + split)
    devices = sorted({str(r.summary.device) for r in comp.runs if r.summary.device})
    if devices:
        parts.append("device " + ", ".join(devices))
    return ("Shared settings: " + ", ".join(parts) + ".") if parts else ""


def markdown_report(comp, title: str, figures=(), relative_to=None) -> str:
    """A Markdown report: title, the verdict, the table, the figures (linked)."""
    lines = [f"# {title}", "", intro(comp), ""]
    settings = settings_line(comp)
    if settings:
        lines += [settings, ""]
    lines += [verdict(comp), "", format_markdown_table(comp), ""]
    if figures:
        lines += ["## Figures", ""]
        for path in figures:
            link = Path(path)
            if relative_to is not None:
                link = Path(os.path.relpath(link.resolve(), Path(relative_to).resolve()))
            lines += [f"![{Path(path).stem.replace('_', ' ')}]({link.as_posix()})", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Escape for HTML, keeping `code` spans."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))


# Sorts a table.sortable by the column whose heading is clicked (again: the other way), numbers
# as numbers ("99.12", "1,234", "97.1 ± 0.2" by their first number); "#sort=N" (or "#sort=-N",
# descending) in the page's address sorts table N-th column at load. Inline: the page fetches nothing.
SORT_SCRIPT = """
function sortKey(text) {
  var m = text.replace(/,/g, "").match(/^\\s*[-+]?[0-9]*\\.?[0-9]+(e[-+]?[0-9]+)?/i);
  return m ? [0, parseFloat(m[0]), ""] : [1, 0, text.trim().toLowerCase()];
}
function sortTable(table, col, descending) {
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = sortKey(a.cells[col].textContent), y = sortKey(b.cells[col].textContent);
    var c = x[0] - y[0] || (x[1] - y[1]) || (x[2] < y[2] ? -1 : x[2] > y[2] ? 1 : 0);
    return descending ? -c : c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
  table.setAttribute("data-sorted", (descending ? "-" : "") + col);
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    th.style.cursor = "pointer";
    th.title = "sort by this column";
    th.addEventListener("click", function () {
      sortTable(table, col, table.getAttribute("data-sorted") === String(col));
    });
  });
});
var wanted = location.hash.match(/^#sort=(-?)([0-9]+)$/);
if (wanted) {
  document.querySelectorAll("table.sortable").forEach(function (t) { sortTable(t, +wanted[2], wanted[1] === "-"); });
}
"""


def html_report(comp, title: str, figures=(), sections: str = "") -> str:
    """A self-contained HTML page: the same content, the figures embedded as base64 PNGs, the
    table sortable by a click on a heading (inline script); ``sections``: HTML put before the
    table (a study's part)."""
    header, rows = table_rows(comp)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ("<tr class=best>" if i == 0 else "<tr>")
        + "".join(f"<td>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    images = embed_images(figures)
    settings = settings_line(comp)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .3em .6em; text-align: right; }}
tr.best {{ font-weight: bold; background: #eef6ee; }}
tr.pruned {{ color: #a33; background: #fbeeee; }}
tr.failed {{ color: #777; text-decoration: line-through; }}
caption {{ caption-side: bottom; text-align: left; color: #555; padding-top: .3em; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{_inline(intro(comp))}</p>
{f"<p>{_inline(settings)}</p>" if settings else ""}
{sections}
<p>{_inline(verdict(comp))}</p>
<table class="sortable" id="runs"><caption>Best first; the best configuration is in bold. Click a
column heading to sort.</caption>
<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"<h2>Figures</h2>" + images if figures else ""}
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def embed_images(figures) -> str:
    """``<figure>``s holding the PNGs themselves (base64 data: URLs)."""
    return "".join(
        f'<figure><img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(p).read_bytes()).decode()}"></figure>'
        for p in figures
    )

"""Reports that read well (issue 13 item 8) and the report object the Python API hands out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mnist_hpc.cli.experiments import report_command
from mnist_hpc.experiments import figures, pages, tables
from mnist_hpc.experiments.report import build_report
from mnist_hpc.runs import plots
from tests.run_fakes import make_run


@pytest.fixture
def two_lrs(tmp_path) -> Path:
    root = tmp_path / "sweep"
    make_run(root / "a", 0.97, lr=0.1)
    make_run(root / "b", 0.98, lr=0.01, seed=1)
    make_run(root / "c", 0.981, lr=0.01, seed=2)
    return root


def test_html_without_out_goes_into_the_first_folder(two_lrs, tmp_path):
    result = CliRunner().invoke(report_command, [str(two_lrs), str(tmp_path / "sweep" / "a"), "--html"])
    assert result.exit_code == 0, result.output
    page = two_lrs / "report.html"
    assert f"wrote {page}" in result.output
    assert page.read_text().startswith("<!DOCTYPE html>") and "<tr class=best>" in page.read_text()


def test_one_run_is_one_run(tmp_path):
    make_run(tmp_path / "only", 0.97)
    comp = build_report([tmp_path])
    assert pages.intro(comp) == "1 run in 1 configuration."
    assert tables.plural(2, "run") == "2 runs" and tables.plural(1000, "figure") == "1,000 figures"


def test_every_column_has_a_header_and_the_rule_matches(two_lrs):
    comp = build_report([two_lrs])
    header, rule, *rows = tables.format_table(comp).splitlines()
    widths = [len(dashes) for dashes in rule.split("  ")]
    assert len(widths) == len(tables.table_rows(comp)[0])  # one dash run per headed column
    assert rule == rule.rstrip() and len(header) <= len(rule)
    assert all(cell.strip() for cell in header.split("  ") if cell)
    assert rows[0].endswith("<- best") and len(rows[0]) > len(rule)  # the marker follows the table
    assert not rows[1].endswith("best")
    md = tables.format_markdown_table(comp).splitlines()
    assert "|  |" not in md[0] and all(line.count("|") == md[0].count("|") for line in md)
    html = comp.to_html(two_lrs.parent / "r.html").read_text()
    assert "<th></th>" not in html


def test_learning_curves_of_one_epoch_have_integer_ticks(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    make_run(tmp_path / "a", 0.97, lr=0.1, curve=(0.95,))
    make_run(tmp_path / "b", 0.98, lr=0.01, curve=(0.96,))
    figures.make_plots(build_report([tmp_path]), tmp_path / "fig")
    curves = drawn[-1].axes[0]
    assert curves.get_title() == "Learning curves"
    assert list(curves.get_xticks()) == [1]

    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
    plots.learning_curves(
        [{"epoch": 1, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.2, "val_acc": 0.95}],
        tmp_path / "curves.png",
    )
    for ax in saved[0].axes:
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_xticks()


@pytest.mark.parametrize("val_acc", [[0.95], [0.90, 0.93, 0.97], [0.97, 0.93, 0.90], [0.5, 0.9, 0.95, 0.99]])
def test_the_best_label_stays_inside_the_axes(tmp_path, monkeypatch, val_acc):
    pytest.importorskip("matplotlib")
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or path)
    rows = [
        {"epoch": e, "train_loss": 0.3, "train_acc": min(1.0, v + 0.02), "val_loss": 0.2, "val_acc": v}
        for e, v in enumerate(val_acc, 1)
    ]
    plots.learning_curves(rows, tmp_path / "curves.png")
    fig = saved[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[1]
    (label,) = [t for t in ax.texts if t.get_text().startswith("best ")]
    box, frame = label.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_a_subset_run_reports_the_split_it_trained_on(tmp_path):
    for name, lr in (("a", 0.1), ("b", 0.01)):
        folder = make_run(tmp_path / name, 0.9, lr=lr)
        summary = json.loads((folder / "summary.json").read_text())
        summary.update(train_images=6000, val_images=12000, test_images=10000)
        (folder / "summary.json").write_text(json.dumps(summary))
    comp = build_report([tmp_path])
    assert "data 6,000 train / 12,000 val / 10,000 test images" in pages.settings_line(comp)
    assert "6,000 train / 12,000 val / 10,000 test images" in comp.to_markdown()
    make_run(tmp_path / "older", 0.9, lr=0.5)  # a run that did not record its split: none claimed
    assert "train /" not in pages.settings_line(build_report([tmp_path]))


def test_the_report_object_for_the_api(two_lrs, tmp_path):
    class RunLike:  # the API's Run: anything with a .path
        def __init__(self, path):
            self.path = path

    comp = build_report([RunLike(two_lrs / "b"), RunLike(two_lrs / "c"), two_lrs / "a"])
    assert [r["optim.lr"] for r in comp.rows] == [0.01, 0.1]
    best = comp.rows[0]
    assert best["rank"] == 1 and best["best"] is True and best["n"] == 2
    assert best["test_accuracy_mean"] == pytest.approx(0.9805)
    assert best["runs"] == [two_lrs / "b", two_lrs / "c"] and best["params"] == 101770
    assert comp.to_markdown().startswith("# Run comparison: sweep\n")
    assert comp._repr_markdown_() == comp.to_markdown()
    assert comp.to_csv().splitlines()[0].startswith("rank,optim.lr,n,test_accuracy_mean")
    assert "<- best" in comp.to_table()
    page = comp.to_html(tmp_path / "out" / "report.html")
    assert page == tmp_path / "out" / "report.html" and "data:image/png;base64" in page.read_text()
    assert build_report(two_lrs).rows == comp.rows

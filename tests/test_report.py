"""The run comparison report, on synthetic run folders (summary.json, config.yaml, metrics.csv)."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest
from click.testing import CliRunner

from mnist_hpc.cli.experiments import report_command
from mnist_hpc.errors import UserError
from mnist_hpc.experiments import figures, tables
from mnist_hpc.experiments import report as rep
from tests.paths import ROOT
from tests.run_fakes import make_run


def row_of(table: str, text: str) -> str:
    (line,) = [line for line in table.splitlines() if text in line]
    return line


def test_groups_average_over_seeds_and_sort_best_first(lr_sweep):
    runs, skipped = rep.find_runs([lr_sweep])
    assert len(runs) == 5 and skipped == []
    comp = rep.compare(runs)
    assert comp.varied == ["optim.lr"]
    assert [g.params["optim.lr"] for g in comp.groups] == [0.001, 0.0001, 0.1]
    best = comp.best
    assert best.n == 3
    assert best.mean == pytest.approx(statistics.mean([0.9781, 0.9802, 0.9790]))
    assert best.sd == pytest.approx(statistics.stdev([0.9781, 0.9802, 0.9790]))
    assert comp.groups[1].sd is None


def test_table_shows_each_runs_summary_figures(lr_sweep):
    comp = rep.compare(rep.find_runs([lr_sweep])[0])
    table = tables.format_table(comp)
    for folder in ("lr=0.0001", "lr=0.1"):
        summary = json.loads((lr_sweep / folder / "summary.json").read_text())
        line = row_of(table, f" {folder.split('=')[1]} ")
        assert f"{100 * summary['test_accuracy']:.2f}" in line
        assert f"{summary['train_seconds']:.1f}" in line
        assert f"{summary['params']:,}" in line
        assert f" {summary['best_epoch']} " in line
        assert "best" not in line
    best = row_of(table, "<- best")
    mean = statistics.mean([0.9781, 0.9802, 0.9790])
    sd = statistics.stdev([0.9781, 0.9802, 0.9790])
    assert f"{100 * mean:.2f} ± {100 * sd:.2f}" in best  # 97.91 ± 0.11
    assert best.split()[:2] == ["1", "0.001"]
    assert "  3  " in best  # n
    assert "optim.lr" in table.splitlines()[0] and "seed" not in table


def test_markdown_and_csv(lr_sweep):
    comp = rep.compare(rep.find_runs([lr_sweep])[0])
    md = tables.format_markdown_table(comp)
    lines = md.splitlines()
    assert lines[0] == "| # | optim.lr | test acc % | n | best epoch | train s | params | images/s |"
    assert lines[1].count("|") == lines[0].count("|")  # every column has a header
    assert lines[2].startswith("| **1** | **0.001** | **97.91 ± 0.11** | **3** |")  # best in bold
    assert "**" not in lines[3] + lines[4]
    assert len(lines) == 2 + 3
    rows = list(csv.DictReader(io.StringIO(tables.format_csv(comp))))
    assert [r["optim.lr"] for r in rows] == ["0.001", "0.0001", "0.1"]
    assert float(rows[1]["test_accuracy_mean"]) == 0.9412  # unrounded, as in summary.json
    assert rows[1]["test_accuracy_sd"] == ""
    assert [r["best"] for r in rows] == ["1", "0", "0"]
    assert rows[0]["n"] == "3" and len(rows[0]["runs"].split(";")) == 3


def test_verdict_names_the_best_and_the_gap(lr_sweep):
    comp = rep.compare(rep.find_runs([lr_sweep])[0])
    text = tables.verdict(comp)
    gap = 100 * (statistics.mean([0.9781, 0.9802, 0.9790]) - 0.9412)
    assert text.startswith("Best: optim.lr=0.001 with 97.91 ± 0.11% test accuracy, mean of 3 seeds")
    assert f"{gap:.2f} points ahead of the runner-up (optim.lr=0.0001, 94.12%)" in text
    assert "ahead of the worst (optim.lr=0.1)" in text


def test_close_results_are_called_within_the_noise(tmp_path):
    for seed, acc in enumerate([0.980, 0.990]):
        make_run(tmp_path / f"a{seed}", acc, lr=0.001, seed=seed)
        make_run(tmp_path / f"b{seed}", acc - 0.001, lr=0.002, seed=seed)
    assert "within the seed-to-seed spread" in tables.verdict(rep.compare(rep.find_runs([tmp_path])[0]))


def test_model_parameters_vary_only_within_one_model(tmp_path):
    make_run(tmp_path / "mlp", 0.97, model={"name": "mlp", "hidden": [128]})
    make_run(tmp_path / "cnn", 0.99, model={"name": "cnn", "channels": [32, 64], "hidden": 128})
    make_run(tmp_path / "mlp64", 0.96, model={"name": "mlp", "hidden": [64]})
    comp = rep.compare(rep.find_runs([tmp_path])[0])
    assert comp.varied == ["model.name", "model.hidden"]
    assert tables.format_table(comp).splitlines()[2].split()[:3] == ["1", "cnn", "128"]
    make_run(tmp_path / "other" / "lenet", 0.98, model={"name": "lenet5"})
    only_models = rep.compare([r for r in rep.find_runs([tmp_path])[0] if r.path.name != "mlp64"])
    assert only_models.varied == ["model.name"]


def test_runs_without_differences_are_one_group(tmp_path):
    make_run(tmp_path / "x-1", 0.97, seed=1)
    make_run(tmp_path / "x-2", 0.98, seed=2)
    comp = rep.compare(rep.find_runs([tmp_path])[0])
    assert comp.varied == [] and len(comp.groups) == 1 and comp.best.n == 2
    assert "run" in tables.format_table(comp).splitlines()[0]
    assert "(the only configuration)" in tables.verdict(comp)


def test_unfinished_runs_are_skipped_and_no_runs_is_an_error(tmp_path):
    make_run(tmp_path / "done", 0.97)
    make_run(tmp_path / "stopped", 0.5, status="interrupted")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    runs, skipped = rep.find_runs([tmp_path])
    assert [r.path.name for r in runs] == ["done"]
    assert len(skipped) == 2 and any("'interrupted'" in s for s in skipped)

    empty = tmp_path / "empty"
    (empty / "nothing-here").mkdir(parents=True)
    with pytest.raises(UserError, match="no runs found under"):
        rep.find_runs([empty])
    result = CliRunner().invoke(report_command, [str(empty)])
    assert result.exit_code == 1
    assert f"no runs found under {empty}" in result.output
    result = CliRunner().invoke(report_command, [str(tmp_path / "absent")])
    assert result.exit_code == 1 and "no such directory" in result.output


def test_report_command_formats(lr_sweep, tmp_path):
    runner = CliRunner()
    table = runner.invoke(report_command, [str(lr_sweep)])
    assert table.exit_code == 0, table.output
    assert "<- best" in table.output and "Best: optim.lr=0.001" in table.output

    out = tmp_path / "out" / "table.csv"
    result = runner.invoke(report_command, [str(lr_sweep), "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0
    assert out.read_text().startswith("rank,optim.lr,n,test_accuracy_mean")

    bad = runner.invoke(report_command, [str(lr_sweep), "--html", "--format", "csv"])
    assert bad.exit_code == 2 and "leave out --format" in bad.output


def test_plots_and_reports_with_figures(lr_sweep, tmp_path):
    pytest.importorskip("matplotlib")
    report_md = tmp_path / "hand-in" / "report.md"
    figure_dir = tmp_path / "hand-in" / "figures"
    result = CliRunner().invoke(
        report_command,
        [
            str(lr_sweep),
            "--format",
            "markdown",
            "--plots",
            str(figure_dir),
            "--out",
            str(report_md),
            "--title",
            "Learning rate",
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in figure_dir.iterdir())
    assert pngs == ["accuracy_vs_optim_lr.png", "learning_curves.png"]
    assert all((figure_dir / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    md = report_md.read_text()
    assert md.startswith("# Learning rate\n")
    assert "5 runs in 3 configurations" in md
    assert "Best: optim.lr=0.001" in md and "| **1** | **0.001** |" in md
    assert "![accuracy vs optim lr](figures/accuracy_vs_optim_lr.png)" in md

    page = tmp_path / "report.html"
    result = CliRunner().invoke(report_command, [str(lr_sweep), "--html", "--out", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.count('src="data:image/png;base64,iVBOR') == 2
    assert "<tr class=best>" in html and "97.91 ± 0.11" in html


def test_categorical_sweeps_get_a_bar_chart(tmp_path):
    pytest.importorskip("matplotlib")
    make_run(tmp_path / "mlp", 0.97, model={"name": "mlp"})
    make_run(tmp_path / "cnn", 0.99, model={"name": "cnn"})
    make_run(tmp_path / "fast", 0.992, model={"name": "fast"}, curve=())
    drawn = figures.make_plots(rep.compare(rep.find_runs([tmp_path])[0]), tmp_path / "fig")
    assert [f.name for f in drawn] == ["accuracy_by_configuration.png", "learning_curves.png"]


def test_report_and_sweep_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, mnist_hpc.experiments.report, mnist_hpc.experiments.sweep, mnist_hpc.cli.experiments, "
        "mnist_hpc.experiments.figures, mnist_hpc.experiments.pages, mnist_hpc.experiments.sweepfile; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0

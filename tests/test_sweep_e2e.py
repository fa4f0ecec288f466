"""The workshop's architecture question, end to end on real MNIST (reduced to run in CI):
every model trains, and the report names the best with the figures of each run's summary.json."""

import csv
import io
import json

import pytest

pytestmark = pytest.mark.realdata


def test_reduced_architectures_sweep_and_report(cli, real_root, tmp_path):
    out = tmp_path / "runs"
    sets = [
        "--set",
        "train.epochs=1",
        "--set",
        "data.subset=1500",
        "--set",
        "data.val_split=null",
        "--set",
        f"experiment.output_dir={out}",
    ]
    r = cli("sweep", "run", "configs/sweeps/architectures.yaml", "--data-dir", real_root, *sets)
    assert r.code == 0, r
    sweep_dir = out / "sweeps" / "architectures"
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}
    assert {s["model"] for s in summaries.values()} == {"mlp", "cnn", "lenet5", "resnet18", "fast"}

    r = cli("report", sweep_dir, "--format", "csv")
    assert r.code == 0, r
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert len(rows) == 5
    by_model = {s["model"]: s for s in summaries.values()}
    for row in rows:
        assert float(row["test_accuracy_mean"]) == pytest.approx(
            by_model[row["model.name"]]["test_accuracy"], abs=1e-6
        )
        assert int(row["params"]) == by_model[row["model.name"]]["params"]
    best = max(summaries.values(), key=lambda s: s["test_accuracy"])
    assert [row["model.name"] for row in rows if row["best"] == "1"] == [best["model"]]
    r = cli("report", sweep_dir)
    best_line = next(line for line in r.out.splitlines() if "<- best" in line)
    assert best["model"] in best_line and f"{best['test_accuracy'] * 100:.2f}" in best_line, r.out
    # a second `sweep run` finds everything done and trains nothing
    r = cli("sweep", "run", "configs/sweeps/architectures.yaml", "--data-dir", real_root, *sets)
    assert r.code == 0 and "5 of 5 runs completed" in r.out


def test_report_over_empty_folder(cli, tmp_path):
    r = cli("report", tmp_path)
    assert r.code == 1 and "no runs found" in r.err, r

"""`report` over mixed runs fits the terminal (issue 27, defect 26): a table that would be
wider keeps the figures in columns and wraps each row's settings under it; the verdict wraps."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mnist_hpc.cli.experiments import report_command
from mnist_hpc.config import config_from_dict


def write_run(folder, cfg: dict, acc: float):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config_from_dict(cfg).to_yaml())
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "test_accuracy": acc,
                "best_epoch": 2,
                "train_seconds": 3.5,
                "params": 12345,
                "images_per_s": 900.0,
            }
        )
    )


def mixed_runs(tmp_path):
    hidden = [512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1]
    common = {"data": {"batch_size": 64}, "train": {"epochs": 3}}
    write_run(
        tmp_path / "runs" / "a",
        {
            **common,
            "model": {"name": "mlp", "hidden": hidden, "dropout": 0.1},
            "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.95, "weight_decay": 1e-4, "schedule": "cosine"},
            "data": {"batch_size": 256, "augment": {"shift": 2.0, "rotate": 10.0, "scale": 0.1}},
            "train": {"epochs": 3, "label_smoothing": 0.1, "grad_clip": 1.0},
        },
        0.97,
    )
    write_run(
        tmp_path / "runs" / "b",
        {
            **common,
            "model": {"name": "mlp", "hidden": hidden[:3], "dropout": 0.3},
            "optim": {"name": "adam", "lr": 0.001},
        },
        0.98,
    )
    write_run(
        tmp_path / "runs" / "c",
        {**common, "model": {"name": "cnn"}, "optim": {"name": "adamw", "lr": 0.003, "schedule": "onecycle"}},
        0.99,
    )
    return tmp_path / "runs"


def test_a_wide_comparison_fits_the_terminal(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    r = CliRunner().invoke(report_command, [str(mixed_runs(tmp_path))])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(map(len, lines)) <= 100, "\n".join(line for line in lines if len(line) > 100)
    assert lines[0].split() == [
        "#",
        "test",
        "acc",
        "%",
        "n",
        "best",
        "epoch",
        "train",
        "s",
        "params",
        "images/s",
    ]
    assert "model.name=cnn" in r.output and "optim.name=sgd" in r.output
    assert "model.hidden=[512, 256, 128" in r.output
    assert sum("<- best" in line for line in lines) == 1
    best = next(i for i, line in enumerate(lines) if line.startswith("Best:"))
    assert len(lines) > best + 1  # the verdict is wrapped, not one long line


def test_a_narrow_comparison_keeps_its_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    runs = tmp_path / "runs"
    base = {"model": {"name": "mlp", "hidden": [8]}}
    write_run(runs / "a", {**base, "optim": {"lr": 0.1}}, 0.9)
    write_run(runs / "b", {**base, "optim": {"lr": 0.01}}, 0.95)
    r = CliRunner().invoke(report_command, [str(runs)])
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[:2] == ["#", "optim.lr"], r.output

"""The one-time warm-up of a process is timed apart (issue 27, defect 28): the first step's
cost is not in an epoch's seconds or images/s, nor in the summary's train_seconds, so the
speed columns of a sweep report compare like with like; summary.json keeps it as warmup_seconds."""

from __future__ import annotations

import json
import time

import mnist_hpc
from mnist_hpc.config import config_from_dict
from mnist_hpc.training import trainer as trainer_mod


def test_the_first_step_is_off_the_clock(synth_root, tmp_path, monkeypatch):
    real, calls = trainer_mod.train_step, []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.5)  # what loading libraries and picking kernels cost the first step
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_step", slow_first)
    cfg = config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 32, "subset": 320},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 2},
            "runtime": {"threads": 1},
        }
    )
    said = []
    run = mnist_hpc.train(cfg, data_dir=synth_root, run_dir=tmp_path / "r", progress=False, echo=said.append)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["warmup_seconds"] >= 1.5
    assert summary["train_seconds"] < 1.5, summary["train_seconds"]
    epoch_lines = [s for s in said if s.startswith("epoch ")]
    assert "s warm-up)" in epoch_lines[0] and "warm-up" not in epoch_lines[1]
    assert float(epoch_lines[0].split(" s  ")[0].split()[-1]) < 1.5
    assert summary["images_per_s"] > 256 / 1.5  # not dragged down by the warm-up


def test_rate_without_steps_after_the_warm_up():
    assert trainer_mod.rate_of(100, 1.0, 20) == 80.0
    assert trainer_mod.rate_of(32, 0.0, 32, 2.0) == 16.0

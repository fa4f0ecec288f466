"""A stand-in for `mnist-hpc train` for sweep-runner tests: it writes a finished run folder
(config.yaml, metrics.csv, summary.json) the way the real trainer does, in a blink; with
$FAKE_TRAIN_WAIT set, it first waits (up to 20 s) until that file exists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mnist_hpc.experiments import sweep as sweep_mod
from tests.paths import ROOT

FAKE_TRAIN = """
import json, os, sys, time
from pathlib import Path
from mnist_hpc.config import load_config

args = sys.argv[1:]
base, overrides, run_dir = args[0], [], None
i = 1
while i < len(args):
    if args[i] == "--set":
        overrides.append(args[i + 1]); i += 2
    elif args[i] == "--run-dir":
        run_dir = Path(args[i + 1]); i += 2
    else:
        i += 1
with open(os.environ["FAKE_TRAIN_CALLS"], "a") as f:
    f.write(json.dumps({"run_dir": run_dir.name, "argv": args}) + "\\n")
wait = os.environ.get("FAKE_TRAIN_WAIT")
deadline = time.monotonic() + 20
while wait and not os.path.exists(wait) and time.monotonic() < deadline:
    time.sleep(0.05)
cfg = load_config(base, overrides)
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "config.yaml").write_text(cfg.to_yaml())
acc = round(0.9 + cfg.optim.lr, 6)
(run_dir / "metrics.csv").write_text(
    "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s\\n"
    f"1,0.5,0.8,0.4,{acc},{cfg.optim.lr},1.0,1000\\n")
(run_dir / "summary.json").write_text(json.dumps({
    "status": "completed", "test_accuracy": acc, "best_epoch": 1, "train_seconds": 1.5,
    "params": 1234, "images_per_s": 1000.0, "epochs": cfg.train.epochs}))
"""


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """Points the sweep runner at the stand-in; returns a function listing the calls so far."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setattr(sweep_mod, "TRAIN_COMMAND", [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))

    def runs_called() -> list:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return runs_called


def write_base(tmp_path: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(
        f"experiment: {{name: tiny, seed: 10, output_dir: {tmp_path / 'runs'}}}\n"
        "model: {name: mlp, hidden: [8]}\ntrain: {epochs: 3}\n"
    )
    return path


def write_sweep(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    write_base(tmp_path)
    path = tmp_path / name
    path.write_text("base: base.yaml\n" + body)
    return path

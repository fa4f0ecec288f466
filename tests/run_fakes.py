"""Synthetic run folders for the report tests (a pytest plugin: conftest.py registers it, so the
`lr_sweep` fixture is there for every test file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mnist_hpc.config import Config


def make_run(
    folder: Path,
    acc: float,
    lr: float = 0.001,
    seed: int = 0,
    model=None,
    train_seconds: float = 10.0,
    params: int = 101770,
    best_epoch: int = 3,
    status: str = "completed",
    curve=(0.9, 0.95, 0.97),
) -> Path:
    """A run folder as `mnist-hpc train` writes it (only the files and keys a report reads)."""
    cfg = Config().to_dict()
    cfg["experiment"].update(name=folder.name, seed=seed, output_dir=str(folder.parent))
    cfg["optim"]["lr"] = lr
    cfg["model"] = model or {"name": "mlp", "hidden": [128], "activation": "relu", "dropout": 0.0}
    cfg["runtime"]["threads"] = seed + 1  # differs between runs, but never a varied parameter
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,images_per_s"]
    rows += [f"{e},0.3,0.9,0.2,{v},{lr},3.0,5000" for e, v in enumerate(curve, 1)]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "status": status,
                "test_accuracy": acc,
                "best_epoch": best_epoch,
                "train_seconds": train_seconds,
                "params": params,
                "images_per_s": 5123.4,
                "device": "cpu",
                "model": cfg["model"]["name"],
            }
        )
    )
    return folder


@pytest.fixture
def lr_sweep(tmp_path) -> Path:
    """Three learning rates, the middle one with three seeds."""
    root = tmp_path / "runs" / "sweeps" / "learning_rate"
    make_run(root / "lr=0.0001", 0.9412, lr=0.0001, train_seconds=11.0)
    for seed, acc in enumerate([0.9781, 0.9802, 0.9790]):
        make_run(root / f"lr=0.001_seed={seed}", acc, lr=0.001, seed=seed, train_seconds=10 + seed)
    make_run(root / "lr=0.1", 0.8870, lr=0.1, best_epoch=1)
    return root

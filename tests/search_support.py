"""Optuna studies for the search tests: a study file and its base config on the synthetic data, its
trials as the journal has them, and how many times a trial's trainer was started. Importing it
skips a test module where optuna is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="method: optuna needs the [search] extra (pip install optuna)")

BASE = """\
experiment: {{name: tiny, seed: 0, output_dir: {out}}}
data: {{dataset: mnist, val_split: 0.2, batch_size: 64, eval_batch_size: 256}}
model: {{name: cnn, channels: [4, 8], hidden: 32}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: {epochs}}}
runtime: {{threads: 1}}
"""

STUDY = """\
base: base.yaml
method: optuna
n_trials: {n}
sampler: tpe
seed: 0
metric: val_acc
pruner: median
params:
  optim.lr: {{float: [1.0e-5, 0.1], log: true}}
  model.hidden: {{int: [16, 64], step: 16}}
"""


def make_study(folder: Path, n: int = 12, epochs: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(BASE.format(out=folder / "runs", epochs=epochs))
    path = folder / "study.yaml"
    path.write_text(STUDY.format(n=n))
    return path


def trials_of(sweep_dir: Path) -> list:
    """The study's trials; none while the journal is absent or only just created (no study in it yet)."""
    journal = sweep_dir / "study.journal"
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    if not names:
        return []
    (name,) = names
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def launches(run_dir: Path) -> int:
    """How many times a worker started this trial's trainer (one header line in train.log each)."""
    log = run_dir / "train.log"
    return (
        sum(line.startswith("# ") and " mnist-hpc sweep " in line for line in log.read_text().splitlines())
        if log.exists()
        else 0
    )

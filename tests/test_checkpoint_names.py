"""Checkpoint names count as the log does (issue 27, defect 25): the log's "epoch 1, step 102"
is the file last-epoch0001-step000102.pt (it was last-e0000-s000102.pt); files of earlier
versions are still found, in the right order."""

from __future__ import annotations

import signal

import pytest
import torch

from mnist_hpc.config import config_from_dict
from mnist_hpc.errors import Interrupted
from mnist_hpc.runs import read_state
from mnist_hpc.training import checkpoint as ckpt
from mnist_hpc.training.context import TrainContext
from mnist_hpc.training.run import run_training
from mnist_hpc.training.stopflag import StopFlag


def test_the_name_says_what_the_log_says():
    assert ckpt.checkpoint_name(0, 102) == "last-epoch0001-step000102.pt"  # epoch 1 in progress
    assert ckpt.checkpoint_name(1, 0) == "last-epoch0002-step000000.pt"  # epoch 1 done: epoch 2, step 0


def test_a_stopped_run_names_its_position_and_file_alike(synth_root, tmp_path):
    flag = StopFlag()
    flag.received = signal.SIGUSR1
    cfg = config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 32, "subset": 256},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 1},
            "runtime": {"threads": 1},
        }
    )
    said = []
    with pytest.raises(Interrupted):
        run_training(
            cfg,
            ctx=TrainContext(stop=flag),
            data_dir=synth_root,
            run_dir=tmp_path / "r",
            progress=False,
            echo=said.append,
        )
    st = read_state(tmp_path / "r")
    assert (st.epoch, st.step) == (1, 1)
    assert st.describe().endswith("at epoch 1, step 1; checkpoint last-epoch0001-step000001.pt")
    assert any("stopped by signal at epoch 1, step 1" in line for line in said)


def test_files_of_earlier_versions_are_ordered_with_the_new_ones(tmp_path):
    for name, epoch, step in [
        ("last-e0001-s000000.pt", 1, 0),
        ("last-epoch0002-step000005.pt", 1, 5),
        ("last-e0001-s000010.pt", 1, 10),
        ("last-epoch0001-step000030.pt", 0, 30),
    ]:
        torch.save(
            {"format": ckpt.FORMAT, "version": ckpt.VERSION, "epoch": epoch, "step": step}, tmp_path / name
        )
    (tmp_path / "last-notes.pt").write_bytes(b"not ours")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "last-e0001-s000010.pt",
        "last-epoch0002-step000005.pt",
        "last-e0001-s000000.pt",
        "last-epoch0001-step000030.pt",
    ]

"""Messages about the checkpoint a command starts from (issue 27, defect 24): --init-from of
another model's weights names both models; a run folder without checkpoints names the folder
they would be in and how the run ended."""

from __future__ import annotations

import pytest

import mnist_hpc
from mnist_hpc.config import config_from_dict
from mnist_hpc.errors import UserError
from mnist_hpc.runs.state import RunState, write_state
from mnist_hpc.training.inference import find_checkpoint


def tiny(tmp_path, model):
    return config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 32, "subset": 128},
            "model": model,
            "train": {"epochs": 1},
            "runtime": {"threads": 1},
        }
    )


def test_init_from_another_models_weights_names_both(synth_root, tmp_path):
    mlp = mnist_hpc.train(
        tiny(tmp_path, {"name": "mlp", "hidden": [8]}),
        data_dir=synth_root,
        run_dir=tmp_path / "mlp",
        progress=False,
        echo=lambda m: None,
    )
    with pytest.raises(UserError) as e:
        mnist_hpc.train(
            tiny(tmp_path, {"name": "cnn"}),
            data_dir=synth_root,
            run_dir=tmp_path / "cnn",
            init_from=mlp.path,
            progress=False,
            echo=lambda m: None,
        )
    text = str(e.value)
    assert "the checkpoint holds a `mlp` net; this config builds `cnn`" in text and "\n" not in text
    assert "--set model.name=mlp" in text
    with pytest.raises(UserError) as e:  # the same model with other settings
        mnist_hpc.train(
            tiny(tmp_path, {"name": "mlp", "hidden": [16]}),
            data_dir=synth_root,
            run_dir=tmp_path / "mlp16",
            init_from=mlp.path,
            progress=False,
            echo=lambda m: None,
        )
    assert "model `mlp` (the checkpoint holds a `mlp` net with other settings)" in str(e.value)


def test_a_failed_run_without_checkpoints_says_where_and_that_it_failed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_state(run, RunState("failed", "r1", error="training diverged"))
    with pytest.raises(UserError) as e:
        find_checkpoint(run)
    text = str(e.value)
    assert f"expected best.pt or last-*.pt in {run / 'checkpoints'}/" in text
    assert "the run failed: training diverged" in text and "train it again" in text
    (run / "checkpoints").mkdir()
    with pytest.raises(UserError, match=r"in .*run/checkpoints/\)"):
        find_checkpoint(run / "checkpoints")

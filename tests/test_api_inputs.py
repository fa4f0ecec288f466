"""What the Python API is handed (issue 27, defects 5 and 6): one override given as a string is
one override (never its characters), a dataset name given as a string is one name; a Config
changed after loading is validated again when training starts (MAX_PARAMS included), before
anything is written."""

from __future__ import annotations

import time

import pytest

import mnist_hpc
from mnist_hpc.config import apply_overrides
from mnist_hpc.errors import ConfigError


def test_one_override_as_a_string_is_one_override(tiny_config):
    assert mnist_hpc.load_config(tiny_config, "train.epochs=1").train.epochs == 1
    assert mnist_hpc.load_config(tiny_config, ["train.epochs=1", "optim.lr=0.5"]).optim.lr == 0.5
    assert apply_overrides({}, "train.epochs=3")["train"]["epochs"] == 3
    from mnist_hpc.api import _as_config

    cfg = mnist_hpc.load_config(tiny_config)
    assert _as_config(cfg, "train.epochs=1").train.epochs == 1
    assert _as_config(cfg.to_dict(), "model.hidden=[8]").model.hidden == [8]
    with pytest.raises(ConfigError, match=r'overrides: 3 is not a "key=value" string; give a list of them'):
        mnist_hpc.load_config(tiny_config, ["train.epochs=1", 3])
    with pytest.raises(ConfigError, match=r'overrides=\{.*\}: expected a list of "key=value" strings'):
        mnist_hpc.load_config(tiny_config, {"train.epochs": 1})


def test_a_submit_takes_one_override_as_a_string(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    job = mnist_hpc.submit(
        tiny_config, "local", overrides="train.epochs=1", dry_run=True
    )  # once: 't' had no '='
    assert job.job_id is None and "#SBATCH --job-name=tiny" in job.script


def test_notebook_setup_takes_one_dataset_name_as_a_string(synth_root):
    from mnist_hpc import notebook

    assert str(notebook.setup("mnist", data_dir=synth_root, quiet=True)) == str(synth_root)


def test_a_config_changed_after_loading_is_validated_again_at_train(tiny_config, tmp_path, synth_root):
    cfg = mnist_hpc.load_config(tiny_config)
    cfg.model.hidden = [10**9]
    t0 = time.time()
    with pytest.raises(ConfigError, match=r"as changed after loading\): model.hidden: .*MAX_PARAMS"):
        mnist_hpc.train(cfg, data_dir=synth_root, run_dir=tmp_path / "r", progress=False, echo=lambda m: None)
    assert time.time() - t0 < 10 and not (tmp_path / "r").exists()
    cfg = mnist_hpc.load_config(tiny_config)
    cfg.optim.lr = -1.0
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        mnist_hpc.train(cfg, data_dir=synth_root, run_dir=tmp_path / "r", progress=False, echo=lambda m: None)
    cfg = mnist_hpc.load_config(tiny_config)
    cfg.model.hidden = [10**9]
    with pytest.raises(ConfigError, match="MAX_PARAMS"):
        mnist_hpc.submit(cfg, "local", dry_run=True)

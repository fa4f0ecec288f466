"""The Python API draws a progress bar only in a notebook or on a terminal, never into a log
file (issue 27, defect 22): `mnist_hpc.train(cfg)` in a script with its output redirected
writes no bar lines."""

from __future__ import annotations

import sys
import types

import mnist_hpc
from mnist_hpc.config import config_from_dict
from mnist_hpc.training import trainer


def tiny(tmp_path):
    return config_from_dict(
        {
            "experiment": {"name": "tiny", "seed": 0, "output_dir": str(tmp_path / "runs")},
            "data": {"dataset": "mnist", "val_split": 0.2, "batch_size": 32, "subset": 256},
            "model": {"name": "mlp", "hidden": [8]},
            "train": {"epochs": 1},
            "runtime": {"threads": 1},
        }
    )


def test_the_api_draws_no_bar_into_a_log(synth_root, tmp_path, capfd):
    mnist_hpc.train(tiny(tmp_path), data_dir=synth_root, echo=lambda m: None)  # progress left to its default
    out, err = capfd.readouterr()
    assert "step/s" not in err + out and "it/s" not in err + out and "\r" not in err + out


class _Tty:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty

    def write(self, text):
        pass

    def flush(self):
        pass


def test_a_bar_by_default_on_a_terminal_or_in_a_notebook(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.setattr(sys, "stdout", _Tty(True))
    monkeypatch.setattr(sys, "stderr", _Tty(True))
    assert trainer.shows_progress()
    monkeypatch.setattr(sys, "stderr", _Tty(False))  # `script.py 2> log`: the bar's stream is a file
    assert not trainer.shows_progress()
    monkeypatch.setattr(sys, "stdout", _Tty(False))
    assert not trainer.shows_progress()

    class ZMQInteractiveShell:  # what a Jupyter kernel's get_ipython() returns
        pass

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    assert trainer.shows_progress()

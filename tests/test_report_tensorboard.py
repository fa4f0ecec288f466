"""The optional TensorBoard logger: a clear error without the extra, tags per metric with it."""

from __future__ import annotations

import sys
import types

import pytest

from mnist_hpc.errors import UserError
from mnist_hpc.runs.tblog import TensorBoardLogger


def test_missing_tensorboard_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    with pytest.raises(UserError, match=r"pip install 'mnist-hpc\[tensorboard\]'"):
        TensorBoardLogger(tmp_path)


def test_logs_each_numeric_metric_per_epoch(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append("closed")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    import torch.utils

    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(torch.utils, "tensorboard", fake, raising=False)
    tb = TensorBoardLogger(tmp_path)
    assert tb.writer.log_dir == str(tmp_path / "tensorboard")
    tb.log_epoch(2, {"epoch": 2, "train_loss": 0.5, "val_acc": 0.97, "val_loss": None, "lr": 1e-3})
    tb.close()
    assert written == [("loss/train", 0.5, 2), ("accuracy/val", 0.97, 2), ("optim/lr", 1e-3, 2),
                       "closed"]
